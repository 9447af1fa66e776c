"""Best-model selection: evaluate, log, keep the best model so far, and count towards early stopping."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hftransfer.training.meters import record_evaluation
from hftransfer.training.state import LoopState
from hftransfer.training.tracking import MetricsLog

logger = logging.getLogger("hftransfer")


@dataclass
class BestModelSelection:
    """``evaluate(model, loader, state, epoch) -> saved``: the loop's validation step.

    ``evaluate_fn(model, loader)`` returns the metrics (on every process); ``save_model(model)`` exports the
    model when ``metric`` improved on the best so far (``greater_is_better``); ``patience`` evaluations without
    an improvement stop training early (``state.stopped_early``).
    """

    evaluate_fn: Callable[..., dict[str, Any]]
    save_model: Callable[[torch.nn.Module], None]
    metric: str
    greater_is_better: bool
    patience: int | None
    log: MetricsLog

    def evaluate(self, model: torch.nn.Module, loader: Any, state: LoopState, epoch: float) -> bool:
        metrics = self.evaluate_fn(model, loader)
        # Logged with the training time so far (earlier evaluations included) for time-to-target curves; kept out
        # of the metrics themselves, which metric_for_best chooses from.
        self.log.log(
            "validation",
            {**metrics, "train_seconds": round(state.train_seconds, 2)},
            step=state.step,
            epoch=epoch,
        )
        better = record_evaluation(state, metrics, self.metric, self.greater_is_better, self.patience)
        if better:
            self.save_model(model)
            logger.info(
                "New best %s=%.4f at step %d: model saved", self.metric, state.best_metric, state.step
            )
        return better

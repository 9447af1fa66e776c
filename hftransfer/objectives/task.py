"""The training objective of a batch: the task's summed cross-entropy plus weighted regularisers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from hftransfer.evaluation.inference import IGNORE_INDEX, model_inputs


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy *summed* over labelled items (``labels != -100``): the loop divides by the step's item count.

    Args:
        logits: ``[batch, (seq,) num_labels]``; labels: ``[batch, (seq)]``.
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


class Penalty(Protocol):
    name: str

    def __call__(self, model: torch.nn.Module, batch: dict, outputs) -> torch.Tensor: ...


class TaskObjective:
    """``objective(model, batch) -> (summed task loss, {"penalty_<name>": weighted penalty})``.

    The task loss is *summed* over labelled items (the loop normalises it over the accumulated global batch); each
    penalty is a per-batch value the loop adds once per optimizer step, so its weight means the same whatever the
    batch size or accumulation.
    """

    def __init__(self, penalties: Sequence[tuple[Penalty, float]] = ()) -> None:
        self.penalties = [(penalty, weight) for penalty, weight in penalties if weight > 0]
        self.needs_hidden_states = any(getattr(p, "needs_hidden_states", False) for p, _ in self.penalties)

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = model_inputs(batch)
        if self.needs_hidden_states:
            inputs["output_hidden_states"] = True
        outputs = model(**inputs)
        loss = summed_cross_entropy(outputs.logits, batch["labels"])
        penalties = {
            f"penalty_{penalty.name}": weight * penalty(model, batch, outputs)
            for penalty, weight in self.penalties
        }
        return loss, penalties

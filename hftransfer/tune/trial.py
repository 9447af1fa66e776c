"""One trial of a study: the recipe's run, in this process, with its validation scores reported to optuna and the
run stopped where the pruner says so.

Running trials one after another in one process is what the recipe tests do too; what must not leak from one
trial into the next is handled by the run itself (``start_run`` seeds every run, logging is configured once,
Accelerate's shared state is reused with the same settings) or here: every trial ends its trackers and releases
its run directory whether it finished, was pruned or raised, and drops its model before the next one starts.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from typing import Any

from hftransfer.errors import ConfigError
from hftransfer.training.callbacks import Callback
from hftransfer.tune.flows import RecipeFlow

logger = logging.getLogger("hftransfer")

STEPS_PER_EPOCH = 1000
"""Optuna's "step" of a report is the training progress in thousandths of an epoch, not the optimizer step: trials
with other batch sizes then report their epoch-end evaluations at the same steps, which is where the median
pruner compares them (it compares only values reported at the same step)."""


class PruneOnValidation(Callback):
    """After each validation, report the best score so far to the trial and end training when it should be pruned.

    The best score so far, not the latest: it is what the trial's value will be (the run keeps its best model), so
    a trial is not pruned for one evaluation that dipped below its own earlier best.
    """

    def __init__(self, trial: Any, loop: Any) -> None:
        self.trial = trial
        self.loop = loop
        self.pruned_at_epoch: float | None = None

    def on_evaluate(self, state: Any) -> None:
        if state.best_metric is None:
            return
        epochs = self.loop.epoch_progress()
        self.trial.report(float(state.best_metric), round(epochs * STEPS_PER_EPOCH))
        if self.pruned_at_epoch is None and self.trial.should_prune():
            self.pruned_at_epoch = round(epochs, 3)
            state.stopped_early = True  # the loop ends after this evaluation, as with early stopping
            logger.info(
                "Trial %d pruned at epoch %.2f (best so far %.4f)",
                self.trial.number,
                epochs,
                state.best_metric,
            )


@dataclass
class TrialResult:
    value: float | None
    """The best validation score (``best_validation_<metric>``)."""
    pruned_at_epoch: float | None
    seconds: float


def run_trial(flow: RecipeFlow, argv: list[str], trial: Any) -> TrialResult:
    """Parse, set up and train the recipe's run of ``argv``; a finished trial is scored like the recipe
    (``evaluate_best`` writes ``metrics.json``), a pruned one stops after the validation that pruned it.

    Raises:
        ConfigError: the run has no validation split to score trials on; whatever the run raises.
    """
    from hftransfer.flow import evaluate_best, finish, train

    started = time.perf_counter()
    run = flow.setup(flow.parse(argv))
    finished = False
    try:
        if run.loop.eval_loader is None:
            raise ConfigError(
                "tune scores trials on the validation split, and this run has none: set data.validation_file "
                "or data.validation_size"
            )
        pruning = PruneOnValidation(trial, run.loop)
        run.loop.callbacks.append(pruning)
        train(run)
        value = run.loop.state.best_metric
        if pruning.pruned_at_epoch is None:
            evaluate_best(run)
            finish(run)  # ends the trackers, releases the run directory
            finished = True
    finally:
        if not finished:
            _close(run)
        run.loop.model = None  # the model and optimizer go with the trial, not with the study
        del run
        gc.collect()
    return TrialResult(value, pruning.pruned_at_epoch, time.perf_counter() - started)


def _close(run: Any) -> None:
    """End what a run that did not reach ``finish`` (pruned, or raised) still holds: the accelerator's references
    to its model and optimizer, its trackers (open event files) and its run directory's lock."""
    from hftransfer.runs import end_run

    run.accelerator.free_memory()
    run.accelerator.end_training()
    end_run(run.run_dir)

"""The loop state: what a resumed run needs besides tensors, and what objectives and callbacks read; and what a
checkpoint's ``trainer_state.json`` holds with it (all JSON: nothing of the loop's own is pickled)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hftransfer.errors import ConfigError
from hftransfer.training.meters import TrainMeter
from hftransfer.training.tracking import MetricsLog

# trainer_state.json holds the LoopState fields and these three entries.
SCHEDULER = "scheduler"
"""The LR schedule's ``state_dict`` (LambdaLR: ``last_epoch``, ``base_lrs``, ``_last_lr``, ...)."""
TRAIN_METER = "train_meter"
"""The train meter's sums since the last log (see :meth:`TrainMeter.state_dict`)."""
LOG_RECORDS = "metrics_log_records"
"""How many records ``metrics.jsonl`` held when the checkpoint was saved."""


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue exactly where it stopped; objectives and
    callbacks read it (a schedule over ``step / total_steps``)."""

    step: int = 0
    micro_batch: int = 0
    """Which micro-batch of the optimizer step being accumulated the loss function sees (0 without accumulation):
    with ``step``, what an objective seeds per-batch randomness from (MLM masks) so a resumed run repeats it."""
    total_steps: int = 0
    """The run's optimizer steps (set by the loop; a resumed run keeps the current config's)."""
    epoch: int = 0
    batches_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    last_eval_step: int | None = None
    """The step of the latest validation: training ends with one unless the last step had it."""
    train_seconds: float = 0.0
    step_seconds: float = 0.0
    samples_seen: int = 0
    tokens_seen: int = 0
    padded_tokens_seen: int = 0


def checkpoint_state(
    state: LoopState, scheduler: torch.optim.lr_scheduler.LRScheduler, meter: TrainMeter, log: MetricsLog
) -> dict[str, Any]:
    """``trainer_state.json`` of a checkpoint: the loop state, the LR schedule's state, the train meter's sums
    since the last log and the number of records in ``metrics.jsonl``. A collective (the meter gathers every
    process's sums): call it on every process."""
    meter.sync_tokens(state)  # the count pending on the device belongs to the saved state
    return {
        **dataclasses.asdict(state),
        SCHEDULER: scheduler.state_dict(),
        TRAIN_METER: meter.state_dict(),
        LOG_RECORDS: log.records(),
    }


def restore_state(
    saved: dict[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    meter: TrainMeter,
    log: MetricsLog,
    checkpoint: Path,
) -> LoopState:
    """The loop state of a loaded checkpoint, with the LR schedule and the train meter restored and
    ``metrics.jsonl`` cut back to the records it held when the checkpoint was saved.

    Fields a newer or older release does not know are ignored, so checkpoints survive upgrades; one without the
    meter's sums (an earlier release) resumes with empty sums, its first record then averaging fewer steps.

    Raises:
        ConfigError: the checkpoint holds no LR schedule state.
    """
    if SCHEDULER not in saved:
        raise ConfigError(f"{checkpoint} holds no LR schedule state: it was not written by hftransfer's loop")
    scheduler.load_state_dict(saved[SCHEDULER])
    if TRAIN_METER in saved:
        meter.load_state_dict(saved[TRAIN_METER])
    known = {field.name for field in dataclasses.fields(LoopState)}
    state = LoopState(**{key: value for key, value in saved.items() if key in known})
    log.truncate_after(state.step, saved.get(LOG_RECORDS))
    return state

"""The loop state: what a resumed run needs besides tensors, and what objectives and callbacks read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator

from hftransfer.training.checkpoint import load_checkpoint


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
    train_seconds: float = 0.0
    step_seconds: float = 0.0
    samples_seen: int = 0
    tokens_seen: int = 0
    padded_tokens_seen: int = 0


def load_loop_state(accelerator: Accelerator, checkpoint: Path) -> LoopState:
    """The state saved with a checkpoint (and its tensors loaded into the prepared objects); fields a newer or
    older release does not know are ignored, so checkpoints survive upgrades."""
    saved = load_checkpoint(accelerator, checkpoint)
    known = {field.name for field in dataclasses.fields(LoopState)}
    return LoopState(**{key: value for key, value in saved.items() if key in known})

"""The loop state: what a resumed run needs besides tensors, and what objectives and callbacks read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue exactly where it stopped; objectives and
    callbacks read it (a schedule over ``step / total_steps``)."""

    step: int = 0
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

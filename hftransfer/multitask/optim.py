"""One AdamW state per task over the shared encoder (``optimizer_state: per_task``).

With one shared AdamW, the moment estimates of every encoder weight mix the tasks: on a sentiment step the
momentum still carries the last NER steps' gradients, and the second moment is dominated by whichever task has the
larger gradients. Each task keeping its own moments makes a multitask step the step its single-task run would
take from the same weights (same momentum history, same normalisation), which is what a step budget copied from
the single-task runs assumes. Costs one extra pair of moment buffers per task for the encoder.

On WNUT-16 + Rotten Tomatoes it did worse than the shared state (measured: docs/results.md), likely because every
task then takes full-size Adam steps on the shared encoder; the shared state stays the default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from hftransfer.config import TrainConfig
from hftransfer.training.optim import adamw


class PerTaskAdamW(torch.optim.Optimizer):
    """An AdamW per task; :attr:`active` (set before each step) says whose moments this step uses and updates.

    ``param_groups`` lists every task's groups, so one learning-rate schedule drives them all. The shared encoder's
    parameters therefore appear once per task there: use it with fp32 or bf16, not with an fp16 gradient scaler
    (which would unscale a shared gradient once per task).

    Args:
        groups: task name -> that task's AdamW parameter groups (the encoder's and its own head's).
        config: the run's optimizer settings.
    """

    def __init__(self, groups: dict[str, list[dict]], config: TrainConfig) -> None:
        self.optimizers = {name: adamw(task_groups, config) for name, task_groups in groups.items()}
        self.active: str | None = None
        unique = {id(p): p for opt in self.optimizers.values() for g in opt.param_groups for p in g["params"]}
        super().__init__(list(unique.values()), defaults={})
        # The tasks' own group dicts (not copies): the scheduler's learning rates reach every task's AdamW.
        self.param_groups = [group for opt in self.optimizers.values() for group in opt.param_groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if self.active not in self.optimizers:
            raise RuntimeError(f"PerTaskAdamW: no task selected for this step (active={self.active!r})")
        return self.optimizers[self.active].step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"per_task": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("per_task")
        if saved is None or set(saved) != set(self.optimizers):
            raise ValueError(
                "this checkpoint's optimizer state is not per task for tasks "
                f"{sorted(self.optimizers)} (was it written with optimizer_state: shared?)"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(saved[name])


def groups_per_task(
    groups: list[dict], encoder: torch.nn.Module, heads: dict[str, torch.nn.Module]
) -> dict[str, list[dict]]:
    """Each task's share of the run's parameter groups: every encoder parameter plus that task's own head."""
    shared = {id(p) for p in encoder.parameters()}
    result = {}
    for name, task_model in heads.items():
        own = {id(p) for p in task_model.parameters()} - shared
        task_groups = []
        for group in groups:
            params = [p for p in group["params"] if id(p) in shared or id(p) in own]
            if params:
                task_groups.append({**group, "params": params, "name": f"{name}:{group['name']}"})
        result[name] = task_groups
    return result


def task_step(
    scales: dict[str, float], optimizer: PerTaskAdamW | None
) -> Callable[[list[dict]], float] | None:
    """The loop's ``before_update``: selects the step's task in a per-task optimizer and returns the step's
    learning-rate factor (its task's; the mean when accumulation mixes tasks in one step). None when neither
    applies, so the loop does nothing extra per step."""
    if optimizer is None and all(scale == 1.0 for scale in scales.values()):
        return None

    def before_update(window: list[dict]) -> float:
        if optimizer is not None:  # per-task state needs single-task steps (grad_accum_steps=1, checked)
            optimizer.active = window[0]["task"]
        return sum(scales[batch["task"]] for batch in window) / len(window)

    return before_update

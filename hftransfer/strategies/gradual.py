"""Gradual unfreezing (ULMFiT; Howard & Ruder, 2018): train the head alone, then unfreeze one more layer group
from the top every ``strategy.unfreeze_every`` epochs or optimizer steps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from hftransfer.config import EncoderStrategyConfig
from hftransfer.errors import ConfigError
from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan, encoder_plan, finish_plan
from hftransfer.strategies.layers import EncoderLayout
from hftransfer.training.state import LoopState

logger = logging.getLogger("hftransfer")


@dataclass
class GradualConfig(EncoderStrategyConfig):
    """ULMFiT gradual unfreezing: the head trains alone first, then one more layer group from the top at a time."""

    name: str = "gradual"
    unfreeze_every: int = 1
    """Unfreeze one more layer group (from the top) every this many ``unfreeze_unit``s."""
    unfreeze_unit: Literal["epoch", "step"] = "epoch"
    """``epoch`` or ``step`` (optimizer steps)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unfreeze_every < 1:
            raise ConfigError(f"strategy.unfreeze_every must be >= 1, got {self.unfreeze_every}")


class GradualUnfreezing:
    """Groups: head, top layer (+ pooler), ..., bottom layer, embeddings; one more trains every ``every`` units.

    The unfrozen set is a pure function of the step/epoch, so a resumed run unfreezes exactly as the original.
    """

    def __init__(self, model: torch.nn.Module, layout: EncoderLayout, every: int, unit: str) -> None:
        self.layout, self.every, self.unit = layout, every, unit
        self.num_groups = layout.num_layers + 2
        self.unfrozen = -1
        self.apply(model, step=0, epoch=0)

    def groups_unfrozen(self, step: int, epoch: int) -> int:
        count = step if self.unit == "step" else epoch
        return min(self.num_groups, 1 + count // self.every)

    def apply(self, model: torch.nn.Module, *, step: int, epoch: int) -> bool:
        """Set ``requires_grad`` for the current step; returns True when the set changed."""
        target = self.groups_unfrozen(step, epoch)
        if target == self.unfrozen:
            return False
        for name, param in model.named_parameters():
            param.requires_grad_(self.layout.group(name) < target)
        if self.unfrozen >= 0:
            logger.info("Gradual unfreezing: %d of %d layer groups trainable", target, self.num_groups)
        self.unfrozen = target
        return True


def unfreezing_hook(model: torch.nn.Module, every: int, unit: str) -> tuple[Callable[[LoopState], None], int]:
    """Start ``model`` (plain, peft or multitask) with the head alone; returns the per-step hook that unfreezes
    the rest on schedule, and the number of layer groups."""
    schedule = GradualUnfreezing(model, EncoderLayout.of(model), every, unit)
    # ``model`` holds the same parameter objects as its DDP wrapper, with the plain names the layout reads.
    return (lambda state: schedule.apply(model, step=state.step, epoch=state.epoch)), schedule.num_groups


def build_gradual(context: StrategyContext) -> StrategyPlan:
    plan = encoder_plan(context)
    strategy = context.strategy
    plan.on_step_start, plan.report["layer_groups"] = unfreezing_hook(
        plan.model, strategy.unfreeze_every, strategy.unfreeze_unit
    )
    finish_plan(plan, context, include_frozen=True)
    # Training starts with the head alone and ends with every parameter trainable; report both.
    report = plan.report
    report["parameters_at_start"] = report["parameters"]
    report["parameters"] = {**report["parameters"], "trainable": report["parameters"]["total"]}
    report["parameters"]["trainable_fraction"] = 1.0
    return plan


register_strategy(
    "gradual",
    config=GradualConfig,
    build=build_gradual,
    changes_trainable_set=True,
    describe=lambda strategy, report: "gradual unfreezing (ULMFiT)",
)

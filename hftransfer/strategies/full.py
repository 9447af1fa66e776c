"""Full fine-tuning: every weight of the encoder and the new head trains."""

from __future__ import annotations

from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan, encoder_plan, finish_plan


def build_full(context: StrategyContext) -> StrategyPlan:
    """Full fine-tuning: every weight of the encoder and the new head trains."""
    return finish_plan(encoder_plan(context), context)


register_strategy("full", build=build_full, describe=lambda strategy, report: "full fine-tuning")

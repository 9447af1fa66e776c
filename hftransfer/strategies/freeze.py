"""Layer transfer: the embeddings and the bottom N encoder layers stay at their pretrained values; the layers above
and the head train (``strategy.freeze_layers``; negative N keeps only the top |N| layers trainable)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hftransfer.config import EncoderStrategyConfig
from hftransfer.errors import ConfigError
from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan, encoder_plan, finish_plan
from hftransfer.strategies.layers import EncoderLayout


@dataclass
class FreezeConfig(EncoderStrategyConfig):
    """Layer transfer: the embeddings and the bottom encoder layers stay fixed, the rest trains."""

    name: str = "freeze"
    freeze_layers: int | None = None
    """Fix the embeddings and the bottom N encoder layers; negative N fixes all but the top |N|. Required."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.freeze_layers is None:
            raise ConfigError(
                "strategy.name=freeze needs strategy.freeze_layers=N (negative: all but the top |N|)"
            )


def resolve_freeze_count(freeze_layers: int, num_layers: int) -> int:
    """Bottom layers to freeze: N, or ``L + N`` for negative N (all but the top |N|)."""
    count = freeze_layers if freeze_layers >= 0 else num_layers + freeze_layers
    if not 0 <= count <= num_layers:
        raise ConfigError(
            f"strategy.freeze_layers={freeze_layers} does not fit a model with {num_layers} encoder layers "
            f"(use 0..{num_layers}, or -{num_layers}..-1 to keep the top layers trainable)"
        )
    return count


def freeze_bottom(model: torch.nn.Module, layout: EncoderLayout, count: int) -> None:
    """Fix the embeddings and encoder layers ``0..count-1``; everything else stays trainable."""
    for name, param in model.named_parameters():
        if layout.is_head(name):
            continue
        layer = layout.layer_of(name)
        if layout.is_embedding(name) or (layer is not None and layer < count):
            param.requires_grad_(False)


def apply_freeze(model: torch.nn.Module, freeze_layers: int) -> int:
    """Freeze the bottom of ``model`` (a plain, peft or multitask model); returns the number of frozen layers."""
    layout = EncoderLayout.of(model)
    count = resolve_freeze_count(freeze_layers, layout.num_layers)
    freeze_bottom(model, layout, count)
    return count


def build_freeze(context: StrategyContext) -> StrategyPlan:
    plan = encoder_plan(context)
    plan.report["frozen_layers"] = apply_freeze(plan.model, context.strategy.freeze_layers)
    return finish_plan(plan, context)


def describe_freeze(strategy: dict, report: dict) -> str:
    return f"layer transfer: embeddings and the bottom {strategy.get('freeze_layers')} layers frozen"


register_strategy("freeze", config=FreezeConfig, build=build_freeze, describe=describe_freeze)

"""Attention-map distillation (as in TinyBERT, Jiao et al., 2020): the mean squared error between the student's
and the teacher's attention probabilities at mapped layers, over real query/key pairs.

Maps are compared head by head and position by position, so the student needs the teacher's tokenizer and head
count; both models run the eager attention kernel (the only one that returns the probabilities). The layer pairs
are the run's ``distill.layer_map`` (1-based layers; pairs with the embeddings, 0, are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hftransfer.config import ObjectiveConfig
from hftransfer.distill.losses import attention_mse
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.registry import register_objective


@dataclass
class DistillAttentionConfig(ObjectiveConfig):
    """Match the teacher's attention maps at mapped layers."""

    name: str = "distill_attention"
    weight: float = 1.0
    """Multiplier of the mean over mapped layers of the attention-map MSE (a per-step term, logged as ``loss_attention``)."""


class AttentionMaps(Objective):
    """``weight * attention_mse(student maps, teacher maps)`` over the layer map's pairs of encoder layers."""

    name = "distill_attention"
    needs_attentions = True

    def __init__(self, context: ObjectiveContext) -> None:
        context.teacher.require(self.name, "attentions")
        self.teacher = context.teacher
        self.weight = context.objective.weight
        self.pairs = [(s, t) for s, t in context.teacher.layer_map if s > 0 and t > 0]

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        teacher = self.teacher.forward(batch)  # the pass distill_hidden reads too, when both are listed
        mse = attention_mse(outputs.attentions, teacher.attentions, self.pairs, batch["attention_mask"])
        return {"loss_attention": self.weight * mse}


register_objective(
    "distill_attention",
    config=DistillAttentionConfig,
    build=AttentionMaps,
    requires=lambda strategy: (
        None
        if strategy.trains_encoder
        else "a fixed encoder's attention maps cannot move towards the teacher's; use a strategy that trains the encoder"
    ),
    teacher_outputs=("attentions",),
    legacy_keys={"distill.attention_weight": ("weight", 0.0)},
    describe=lambda config: f"attention-map matching with the teacher (MSE, weight {config.get('weight')})",
)

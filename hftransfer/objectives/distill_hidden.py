"""Hidden-state distillation (as in TinyBERT, Jiao et al., 2020): the mean squared error between the student's
hidden states and the teacher's at mapped layers, over real tokens. A learned linear map per matched layer takes
the student's width to the teacher's (the identity when they agree); the objective owns it
(``hftransfer/objectives/owned.py``): it trains with the student and stays out of the export.

Positions are compared one to one, so the student needs the teacher's tokenizer; the layer pairs are the run's
``distill.layer_map`` (default: uniform).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from hftransfer.config import ObjectiveConfig
from hftransfer.distill.losses import HiddenProjection, hidden_mse
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.registry import register_objective


@dataclass
class DistillHiddenConfig(ObjectiveConfig):
    """Match the teacher's hidden states at mapped layers."""

    name: str = "distill_hidden"
    weight: float = 1.0
    """Multiplier of the mean over mapped layers of the hidden-state MSE (a per-step term, logged as ``loss_hidden``)."""


class HiddenStates(Objective):
    """``weight * hidden_mse(projected student states, teacher states)`` over the layer map's pairs."""

    name = "distill_hidden"
    needs_hidden_states = True

    def __init__(self, context: ObjectiveContext) -> None:
        context.teacher.require(self.name, "hidden_states")
        self.teacher = context.teacher
        self.weight = context.objective.weight
        self.layer_map = list(context.teacher.layer_map)
        self.widths = (context.model.config.hidden_size, context.teacher.model.config.hidden_size)

    @functools.cached_property
    def module(self) -> HiddenProjection:  # type: ignore[override]
        # Created when the flow first asks for it, as it attaches the owned modules after the strategy: a
        # projection of other widths draws its random start after the strategy's own (LoRA's) draws.
        return HiddenProjection(*self.widths, len(self.layer_map))

    def extend_outputs(self, outputs: Any, module: torch.nn.Module) -> None:
        # One projected state per mapped pair, in map order: [batch, seq, teacher width] each.
        outputs["projected_hidden"] = tuple(
            module(index, outputs.hidden_states[s]) for index, (s, _) in enumerate(self.layer_map)
        )

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        teacher = self.teacher.forward(batch)
        pairs = [(index, t) for index, (_, t) in enumerate(self.layer_map)]
        mse = hidden_mse(
            outputs["projected_hidden"], teacher.hidden_states, pairs, batch["attention_mask"].bool()
        )
        return {"loss_hidden": self.weight * mse}


register_objective(
    "distill_hidden",
    config=DistillHiddenConfig,
    build=HiddenStates,
    requires=lambda strategy: (
        None
        if strategy.trains_encoder
        else "a fixed encoder's hidden states cannot move towards the teacher's; use a strategy that trains the encoder"
    ),
    teacher_outputs=("hidden_states",),
    legacy_keys={"distill.hidden_weight": ("weight", 0.0)},
    describe=lambda config: f"hidden-state matching with the teacher (MSE, weight {config.get('weight')})",
)

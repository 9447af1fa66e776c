"""L2-SP (Li et al., 2018, "Explicit inductive bias for transfer learning"): ``weight * sum ||theta - theta_0||^2``
over the encoder's trainable weights, theta_0 the pretrained starting point (not zero, as plain weight decay would
pull to)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hftransfer.config import ObjectiveConfig
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.objectives.owned import inner_model
from hftransfer.registry import register_objective
from hftransfer.strategies.layers import EncoderLayout


@dataclass
class L2SPConfig(ObjectiveConfig):
    """Keep the encoder's weights near their pretrained values."""

    name: str = "l2sp"
    weight: float = 0.01
    """Multiplier of the summed squared distance to the pretrained weights (a per-step term)."""


class L2SP(Objective):
    """``sum ||theta - theta_pretrained||^2`` over encoder parameters (head excluded: it has no pretrained value).

    The snapshot is taken when this object is created, so create it before training (and before loading a
    checkpoint to resume: the reference must stay the *pretrained* weights).
    """

    name = "l2sp"
    replaces_weight_decay = True

    def __init__(self, model: torch.nn.Module, weight: float = 1.0) -> None:
        layout = EncoderLayout.of(model)
        self.weight = weight
        self.reference = {
            name: param.detach().clone()
            for name, param in model.named_parameters()
            if not layout.is_head(name)
        }

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> L2SP:
        return cls(context.model, context.objective.weight)

    def penalty(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """The unweighted distance."""
        total = None
        # Under DDP / torch.compile / owned-module wrappers, the names that match the snapshot of the plain model.
        for name, param in inner_model(model).named_parameters():
            reference = self.reference.get(name)
            if reference is None or not param.requires_grad:
                continue
            if reference.device != param.device:
                reference = self.reference[name] = reference.to(param.device)
            term = (param.float() - reference.float()).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros((), device=batch["input_ids"].device)
        return total

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        return {"penalty_l2sp": self.weight * self.penalty(model, batch)}


def _requires(strategy: Any) -> str | None:
    if strategy.updates_pretrained_weights:
        return None
    return "the strategy never changes the pretrained weights, so L2-SP has nothing to hold back" + (
        " (an adapter's scale is set by its own options)" if strategy.trains_encoder else ""
    )


register_objective(
    "l2sp",
    config=L2SPConfig,
    build=L2SP.from_context,
    regulariser=True,
    requires=_requires,
    legacy_keys={"l2sp_weight": ("weight", 0.0)},
    describe=lambda config: f"L2-SP {config.get('weight')}",
)

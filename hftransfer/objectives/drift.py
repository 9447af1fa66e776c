"""Output drift: the distance between the current encoder's last hidden states and those of a frozen copy of the
original encoder on the same batch (a feature-level variant of LwF, "learning without forgetting")."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from hftransfer.config import ObjectiveConfig
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.registry import register_objective


@dataclass
class DriftConfig(ObjectiveConfig):
    """Keep the encoder's outputs near the original encoder's."""

    name: str = "drift"
    weight: float = 1.0
    """Multiplier of the distance (a per-step term)."""
    distance: Literal["mse", "kl"] = "mse"
    """``mse`` between last hidden states (mean over tokens and units), or ``kl`` between the softmaxes of the two
    hidden states over the hidden units."""


class OutputDrift(Objective):
    """Distance between the encoder's last hidden states and a frozen original encoder's, over real tokens.

    ``mse``: mean over tokens of the mean squared difference over hidden units. ``kl``: mean over tokens of
    ``KL(softmax(original) || softmax(current))`` over the hidden units, a scale-free alternative.
    """

    name = "drift"
    needs_hidden_states = True

    def __init__(self, model: torch.nn.Module, distance: str = "mse", weight: float = 1.0) -> None:
        base = getattr(model, "get_base_model", lambda: model)()
        # A multitask model keeps its one shared encoder as ``encoder``; a transformers model under its prefix.
        encoder = base.encoder if hasattr(base, "task_models") else getattr(base, base.base_model_prefix)
        self.original = copy.deepcopy(encoder).eval()
        self.original.requires_grad_(False)
        self.distance = distance
        self.weight = weight

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> OutputDrift:
        return cls(context.model, context.objective.distance, context.objective.weight)

    def penalty(self, model: torch.nn.Module, batch: dict, outputs: Any) -> torch.Tensor:
        """The unweighted distance."""
        current = outputs.hidden_states[-1].float()
        device = current.device
        if next(self.original.parameters()).device != device:
            self.original.to(device)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        with torch.no_grad():
            original = self.original(**inputs).last_hidden_state.float()
        mask = batch["attention_mask"].to(current.dtype)  # [batch, seq]
        if self.distance == "mse":
            per_token = (current - original).pow(2).mean(dim=-1)
        else:
            per_token = F.kl_div(
                current.log_softmax(dim=-1), original.log_softmax(dim=-1), log_target=True, reduction="none"
            ).sum(dim=-1)
        return (per_token * mask).sum() / mask.sum().clamp(min=1)

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        return {"penalty_drift": self.weight * self.penalty(model, batch, outputs)}


def _requires(strategy: Any) -> str | None:
    return None if strategy.trains_encoder else "the encoder never changes, so its outputs cannot drift"


register_objective(
    "drift",
    config=DriftConfig,
    build=OutputDrift.from_context,
    regulariser=True,
    requires=_requires,
    legacy_keys={"drift_weight": ("weight", 0.0), "drift_distance": ("distance", "mse")},
    describe=lambda config: f"output-drift penalty {config.get('weight')} ({config.get('distance')})",
)

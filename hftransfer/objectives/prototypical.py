"""Prototypical-network loss (Snell et al., 2017): a text is classified by its similarity to each class's prototype,
the mean embedding of that class's other texts, and the cross-entropy of that classification is the loss.

Similarity is the cosine scaled by ``scale`` (a temperature): sentence encoders are trained to be compared by
cosine, and the classifier a prototype stands for at inference (``hftransfer zero-shot`` with example texts as the
label's descriptions) compares the same way. Prototypes average unit vectors.

The ``protonet`` strategy trains on episodes (support texts first, then queries:
``hftransfer.fewshot.losses.episode_loss``); this objective scores an ordinary batch, where every text is a query
against prototypes of the *other* texts of the batch (leave-one-out: the batch is its own support set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hftransfer.config import ObjectiveConfig
from hftransfer.errors import ConfigError
from hftransfer.fewshot.losses import leave_one_out_loss
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.objectives.representation import (
    Pooling,
    check_single_label_sequences,
    encoder_must_train,
    pool,
)
from hftransfer.registry import register_objective


@dataclass
class PrototypicalConfig(ObjectiveConfig):
    """Classify each text of the batch by the nearest prototype of the other texts (cosine, scaled)."""

    name: str = "prototypical"
    weight: float = 1.0
    """Multiplier of the loss (a per-step term)."""
    scale: float = 10.0
    """Temperature of the scaled cosine: the logits are ``scale * cos``; cosines within [-1, 1] need a scale to give
    confident probabilities."""
    pooling: Pooling = "mean"
    """How a text becomes one embedding: the mean over real tokens, or the first token's state (``cls``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.scale > 0:
            raise ConfigError(f"objectives.prototypical.scale must be > 0, got {self.scale}")
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(
                f"objectives.prototypical.pooling must be 'cls' or 'mean', got {self.pooling!r}"
            )


class Prototypical(Objective):
    """The leave-one-out prototypical loss of the batch's pooled last hidden states."""

    name = "prototypical"
    needs_hidden_states = True

    def __init__(self, weight: float = 1.0, scale: float = 10.0, pooling: Pooling = "mean") -> None:
        self.weight, self.scale, self.pooling = weight, scale, pooling

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> Prototypical:
        check_single_label_sequences(context.config, "prototypical", "groups")
        objective = context.objective
        return cls(objective.weight, objective.scale, objective.pooling)

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        rows = pool(outputs.hidden_states[-1], batch["attention_mask"], self.pooling)
        return {"prototypical": self.weight * leave_one_out_loss(rows, batch["labels"], self.scale)}


register_objective(
    "prototypical",
    config=PrototypicalConfig,
    build=Prototypical.from_context,
    # It trains no classifier, so a run needs the task's objective besides it (what ``regulariser`` enforces).
    regulariser=True,
    requires=encoder_must_train("the loss"),
    describe=lambda config: f"prototypical loss (weight {config.get('weight')}, scale {config.get('scale')})",
)

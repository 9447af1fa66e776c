"""Contrastive pair loss on pooled sentence embeddings: the loss SetFit trains its encoder with (Tunstall et al.,
2022), as an objective.

Every unordered pair of a batch's texts is a training pair: its cosine similarity is pulled towards 1 when the two
share a label and towards 0 when they do not (squared error, sentence-transformers' ``CosineSimilarityLoss``). The
positive and the negative pairs are averaged separately and the two averages weigh equally, so a batch with many
more pairs of one kind does not drown the other (SetFit balances by oversampling pairs; here each text is encoded
once and every pair of the batch counts, see ``hftransfer/fewshot/pairs.py``).

The ``setfit`` strategy trains its encoder on this loss before fitting a head; as an objective next to ``task`` it
shapes the embedding while the classifier trains (``objectives: [{name: task}, {name: contrastive}]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hftransfer.config import ObjectiveConfig
from hftransfer.errors import ConfigError
from hftransfer.fewshot.losses import cosine_pair_loss
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.objectives.representation import (
    Pooling,
    check_single_label_sequences,
    encoder_must_train,
    pool,
)
from hftransfer.registry import register_objective


@dataclass
class ContrastiveConfig(ObjectiveConfig):
    """Pull same-label texts' embeddings together and different-label ones apart (cosine pair loss)."""

    name: str = "contrastive"
    weight: float = 1.0
    """Multiplier of the pair loss (a per-step term)."""
    pooling: Pooling = "mean"
    """How a text becomes one embedding: the mean over real tokens (what sentence encoders are trained to compare)
    or the first token's state (``cls``)."""
    layer: int = -1
    """Which hidden state is pooled: -1 the last layer's output."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"objectives.contrastive.pooling must be 'cls' or 'mean', got {self.pooling!r}")


class Contrastive(Objective):
    """The cosine pair loss of the batch's pooled hidden states (sequence classification, one label per text)."""

    name = "contrastive"
    needs_hidden_states = True

    def __init__(self, weight: float = 1.0, pooling: Pooling = "mean", layer: int = -1) -> None:
        self.weight, self.pooling, self.layer = weight, pooling, layer

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> Contrastive:
        check_single_label_sequences(context.config, "contrastive", "pairs")
        objective = context.objective
        return cls(objective.weight, objective.pooling, objective.layer)

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        rows = pool(outputs.hidden_states[self.layer], batch["attention_mask"], self.pooling)
        return {"contrastive": self.weight * cosine_pair_loss(rows, batch["labels"])}


register_objective(
    "contrastive",
    config=ContrastiveConfig,
    build=Contrastive.from_context,
    # It trains no classifier, so a run needs the task's objective besides it (what ``regulariser`` enforces).
    regulariser=True,
    requires=encoder_must_train("the pair loss"),
    describe=lambda config: (
        f"contrastive pair loss (weight {config.get('weight')}, {config.get('pooling')} pooling)"
    ),
)

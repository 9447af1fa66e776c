"""Deep CORAL (Sun & Saenko, 2016, "Deep CORAL: correlation alignment for deep domain adaptation"): make the
second-order statistics of the labelled batch's features match those of a batch of unlabelled target-domain text.

``coral_loss(S, T) = ||C_S - C_T||_F^2 / (4 d^2)``, with ``C`` the unbiased (``n - 1``) covariance of the rows and
``d`` their width. The rows are the encoder's hidden states at one layer: one pooled row per text for sequence
tasks, one per real token for token tasks (``representation.py``). The target text comes from a named source
(``sources: [{name: target, data: ...}]``), run through the model in the same forward call as the task's batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.objectives.representation import (
    AlignmentConfig,
    aligned_task,
    paired_rows,
    requires_encoder_training,
)
from hftransfer.registry import register_objective


@dataclass
class CoralConfig(AlignmentConfig):
    """Align the covariance of the labelled text's features with the target domain's."""

    name: str = "coral"
    weight: float = 1.0
    """Multiplier of the CORAL distance (a per-step term)."""


def covariance(rows: torch.Tensor) -> torch.Tensor:
    """``[n, d] -> [d, d]``: the unbiased covariance of the rows (``n >= 2``)."""
    centred = rows - rows.mean(dim=0, keepdim=True)
    return centred.T @ centred / (rows.shape[0] - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The CORAL distance ``||C_s - C_t||_F^2 / (4 d^2)`` between two sets of rows of the same width.

    Computed in float32 (outside autocast too): a covariance sums ``n`` products per entry, and in half precision
    those sums lose the small differences between domains the loss is about.

    Args:
        source: ``[n_s, d]`` rows of one domain.
        target: ``[n_t, d]`` rows of the other.

    Returns:
        A scalar; 0 when a side has fewer than 2 rows (no covariance to estimate), so a short batch adds nothing
        rather than NaN.
    """
    if source.shape[0] < 2 or target.shape[0] < 2:
        return torch.zeros((), device=source.device)
    width = source.shape[-1]
    with torch.autocast(device_type=source.device.type, enabled=False):
        difference = covariance(source.float()) - covariance(target.float())  # [d, d]
        return difference.pow(2).sum() / (4 * width * width)


class Coral(Objective):
    """``weight * coral_loss(labelled rows, target rows)`` at every training step, under the term ``coral``."""

    name = "coral"
    needs_hidden_states = True

    def __init__(
        self,
        task: str,
        source: str = "target",
        pooling: Literal["cls", "mean"] = "mean",
        layer: int = -1,
        weight: float = 1.0,
    ) -> None:
        self.task = task
        self.sources = (source,)
        self.pooling = pooling
        self.layer = layer
        self.weight = weight

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> Coral:
        config = context.objective
        return cls(aligned_task(context), config.source, config.pooling, config.layer, config.weight)

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        rows = paired_rows(outputs, batch, self.sources[0], self.task, self.pooling, self.layer)
        if rows is None:  # a forward pass without the source's batch (outside training)
            return {"coral": torch.zeros((), device=batch["input_ids"].device)}
        return {"coral": self.weight * coral_loss(*rows)}


register_objective(
    "coral",
    config=CoralConfig,
    build=Coral.from_context,
    regulariser=True,
    requires=requires_encoder_training,
    describe=lambda config: (
        f"CORAL feature alignment to source {config.get('source')} (weight {config.get('weight')})"
    ),
)

"""Distillation from the teacher's soft labels (Hinton et al., 2015, "Distilling the knowledge in a neural
network"): ``weight * T² * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the items the teacher
labelled (first-subword positions for token tasks, rows for sequence tasks).

The teacher's logits are those a distillation run computed once on the training (and transfer) features, looked
up per batch by example id and word, so the teacher may tokenise differently from the student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hftransfer.config import ObjectiveConfig
from hftransfer.distill.losses import soft_kl
from hftransfer.distill.teacher import aligned_teacher_logits
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.registry import register_objective


@dataclass
class DistillSoftConfig(ObjectiveConfig):
    """Match the teacher's temperature-softened predictions."""

    name: str = "distill_soft"
    weight: float = 0.5
    """Multiplier of ``T² · KL(teacher || student)`` (a per-step term, logged as ``loss_soft``)."""
    temperature: float = 2.0
    """Softmax temperature T of both distributions: above 1 it shows how the teacher ranks the wrong labels; the
    T² factor keeps gradient sizes comparable across temperatures."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ConfigError(f"objectives: distill_soft.temperature must be > 0, got {self.temperature}")


class SoftLabels(Objective):
    """``weight * soft_kl(student logits, teacher logits, T)`` at the positions (rows) the teacher labelled."""

    name = "distill_soft"

    def __init__(self, context: ObjectiveContext) -> None:
        context.teacher.require(self.name, "logits")
        self.teacher = context.teacher
        self.weight = context.objective.weight
        self.temperature = context.objective.temperature

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        logits = outputs.logits  # [batch, (seq,) num_labels]
        teacher_logits, mask = aligned_teacher_logits(self.teacher.logits, batch)
        soft = soft_kl(logits, teacher_logits.to(logits.device), self.temperature, mask.to(logits.device))
        return {"loss_soft": self.weight * soft}


def describe_soft(config: dict) -> str:
    return (
        f"distillation from the teacher's soft labels (T={config.get('temperature')}, "
        f"weight {config.get('weight')})"
    )


register_objective(
    "distill_soft",
    config=DistillSoftConfig,
    build=SoftLabels,
    teacher_outputs=("logits",),
    legacy_keys={"distill.soft_weight": ("weight", 0.5), "distill.temperature": ("temperature", 2.0)},
    describe=describe_soft,
)

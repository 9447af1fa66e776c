"""The task's own loss, summed over labelled items (the loop normalises it): cross-entropy on class labels; on
float labels the loss of their problem type (binary cross-entropy per label of multi-hot rows, squared error of
regression targets), as the Hugging Face model's own ``problem_type`` loss computes it before its mean."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hftransfer.evaluation.inference import IGNORE_INDEX, float_label_losses, model_inputs
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.registry import register_objective


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy *summed* over labelled items (``labels != -100``): the loop divides by the step's item count.

    Args:
        logits: ``[batch, (seq,) num_labels]``; labels: ``[batch, (seq)]``.
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def summed_task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`summed_cross_entropy` of class ids; the summed :func:`float_label_losses` of float labels
    (multi-hot ``[batch, num_labels]`` or regression targets ``[batch]``)."""
    if labels.is_floating_point():
        return float_label_losses(logits, labels).sum()
    return summed_cross_entropy(logits, labels)


def task_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], state: Any = None) -> torch.Tensor:
    """The task's loss alone, as a loop loss function (the default of ``TrainingLoop``)."""
    return summed_task_loss(model(**model_inputs(batch)).logits, batch["labels"])


class TaskLoss(Objective):
    """The task's loss of the model's logits against the batch's labels (tokens or examples); in a run of several
    tasks, times the batch's task's ``loss_weight``."""

    name = "task"
    reduction = "sum"

    def __init__(self, context: ObjectiveContext) -> None:
        self.weight = context.objective.weight
        tasks = getattr(context.config, "tasks", None) or []
        self.task_weights = {task.name: task.loss_weight for task in tasks}

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        loss = summed_task_loss(outputs.logits, batch["labels"])
        if self.weight != 1.0:
            loss = self.weight * loss
        if self.task_weights:
            loss = loss * self.task_weights[batch["task"]]
        return {"loss": loss}


def describe_task(config: dict) -> str:
    weight = config.get("weight", 1.0)
    return "cross-entropy on the labels" + (f" (weight {weight})" if weight != 1.0 else "")


# A distillation run weighted the task's loss with ``distill.hard_weight`` before it was this objective's weight.
register_objective(
    "task",
    build=TaskLoss,
    legacy_keys={"distill.hard_weight": ("weight", 0.5)},
    describe=describe_task,
    on_cached_features=True,
)

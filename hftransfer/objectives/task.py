"""The task's own loss, summed over labelled items (the loop normalises it): cross-entropy on class labels; on
float labels the loss of their problem type (binary cross-entropy per label of multi-hot rows, squared error of
regression targets), as the Hugging Face model's own ``problem_type`` loss computes it before its mean.

With ``model.head=crf`` (token classification) the term is instead the negative log-likelihood of each window's gold
word tags under a linear-chain CRF on the model's logits, summed over windows (the loop divides it by the labelled
words, as the cross-entropy). The objective owns the CRF's scores (:mod:`hftransfer.modeling.crf`): they train with
the model and, unlike other owned modules, are saved next to it (``crf.safetensors``), because decoding needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hftransfer.config import ObjectiveConfig
from hftransfer.config.problem import SINGLE_LABEL
from hftransfer.errors import ConfigError
from hftransfer.evaluation.inference import IGNORE_INDEX, float_label_losses, model_inputs
from hftransfer.modeling.crf import CRF, CRF_FILE, crf_nll
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.registry import register_objective


def summed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy *summed* over labelled items (``labels != -100``): the loop divides by the step's item count.

    Args:
        logits: ``[batch, (seq,) num_labels]``; labels: ``[batch, (seq)]``.
        label_smoothing: ε of the target ``(1 - ε)·one-hot + ε/K``.
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
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


@dataclass
class TaskConfig(ObjectiveConfig):
    """The task's own loss."""

    name: str = "task"
    label_smoothing: float = 0.0
    """ε in [0, 1): cross-entropy against ``(1 - ε)·one-hot + ε/K`` over the K labels (Szegedy et al. 2016; the
    ``label_smoothing_factor`` of transformers' Trainer). Single-label classification and NER with a linear head."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"objectives: task.label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )


class TaskLoss(Objective):
    """The task's loss of the model's logits against the batch's labels (tokens or examples); in a run of several
    tasks, times the batch's task's ``loss_weight``. With ``model.head=crf``, the CRF's negative log-likelihood."""

    name = "task"
    reduction = "sum"

    def __init__(self, context: ObjectiveContext) -> None:
        self.weight = context.objective.weight
        self.label_smoothing = getattr(context.objective, "label_smoothing", 0.0)
        tasks = getattr(context.config, "tasks", None) or []
        self.task_weights = {task.name: task.loss_weight for task in tasks}
        model_config = getattr(context.config, "model", None)
        crf = getattr(model_config, "head", "linear") == "crf"
        problem_type = getattr(getattr(context.config, "data", None), "problem_type", SINGLE_LABEL)
        if self.label_smoothing and (crf or problem_type != SINGLE_LABEL):
            what = "model.head=crf" if crf else f"data.problem_type={problem_type}"
            raise ConfigError(
                f"objectives: task.label_smoothing smooths a softmax over class labels; {what} has none (remove it)"
            )
        if crf:
            id2label = context.model.config.id2label
            self.module = CRF([id2label[i] for i in range(len(id2label))])
            self.exported_file = CRF_FILE  # saved with the model (owned.py): decoding needs it

    def extend_outputs(self, outputs: Any, module: torch.nn.Module) -> None:
        outputs["crf"] = module()  # inside the forward pass, so that DDP sees the CRF's parameters

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        if self.module is not None:
            scores = outputs["crf"] if "crf" in outputs else self.module()  # a flow's own forward pass
            loss = crf_nll(outputs.logits, batch["labels"], scores, batch.get("word_index")).sum()
        elif self.label_smoothing:  # class ids only: refused for float labels above
            loss = summed_cross_entropy(outputs.logits, batch["labels"], self.label_smoothing)
        else:
            loss = summed_task_loss(outputs.logits, batch["labels"])
        if self.weight != 1.0:
            loss = self.weight * loss
        if self.task_weights:
            loss = loss * self.task_weights[batch["task"]]
        return {"loss": loss}

    def save_exported(self, path: Path) -> None:
        """Write the CRF's scores to ``path`` (``crf.safetensors`` in the model's directory)."""
        self.module.save(path)

    def load_exported(self, path: Path) -> None:
        """Read back what :meth:`save_exported` wrote (the best model's scores)."""
        self.module.load(path)


def describe_task(config: dict) -> str:
    notes = [f"label smoothing {config['label_smoothing']}"] if config.get("label_smoothing") else []
    weight = config.get("weight", 1.0)
    notes += [f"weight {weight}"] if weight != 1.0 else []
    return "cross-entropy on the labels" + (f" ({', '.join(notes)})" if notes else "")


# A distillation run weighted the task's loss with ``distill.hard_weight`` before it was this objective's weight.
register_objective(
    "task",
    build=TaskLoss,
    config=TaskConfig,
    legacy_keys={"distill.hard_weight": ("weight", 0.5)},
    describe=describe_task,
    on_cached_features=True,
)

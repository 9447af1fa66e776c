"""Several Hugging Face task models that share one encoder module (the same parameters, not copies).

Each task keeps its own ordinary ``AutoModelFor{Token,Sequence}Classification``; only the encoder attribute
(``model.bert``, ``model.mpnet``, ...) of every task model is set to one shared module. So a task is exported by
saving its task model as it is, and a step of task A updates the encoder that task B's head reads.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import PreTrainedModel


def encoder_of(model: PreTrainedModel) -> nn.Module:
    return getattr(model, model.base_model_prefix)


class MultitaskModel(nn.Module):
    """``forward(task=name, **inputs)`` runs task ``name``'s model on the shared encoder.

    The shared encoder is taken from a sequence-classification task when there is one: BERT-style token models
    are built without the pooler that sequence heads read, so sharing a token model's encoder would drop it.
    """

    def __init__(self, task_models: Mapping[str, PreTrainedModel]) -> None:
        super().__init__()
        if not task_models:
            raise ValueError("a multitask model needs at least one task")
        # Keys each task model's own architecture has: exports keep exactly these (a token model does not save
        # the shared pooler it never reads).
        self.own_keys = {name: set(model.state_dict()) for name, model in task_models.items()}
        with_pooler = [m for m in task_models.values() if getattr(encoder_of(m), "pooler", None) is not None]
        shared = encoder_of(with_pooler[0] if with_pooler else next(iter(task_models.values())))
        for model in task_models.values():
            setattr(model, model.base_model_prefix, shared)
        self.task_models = nn.ModuleDict(task_models)
        self.encoder = shared

    @property
    def task_names(self) -> list[str]:
        return list(self.task_models)

    def forward(self, task: str, **inputs: torch.Tensor):
        return self.task_models[task](**inputs)

    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        """The state dict of task ``task`` alone, as its ordinary HF model saves and loads it."""
        own = self.own_keys[task]
        return {k: v for k, v in self.task_models[task].state_dict().items() if k in own}


class TaskView(nn.Module):
    """One task of a (possibly DDP-wrapped) multitask model, callable like that task's HF model."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, **inputs: torch.Tensor):
        return self.model(task=self.task, **inputs)

"""Masked language modelling on a named source while fine-tuning (UDALM, Karouzos et al., 2021): the task's loss on
the labelled batch plus MLM on a batch of unlabelled (target-domain) text at every step, so the encoder keeps
modelling the target domain while it learns the task.

    objectives: [{name: task}, {name: mlm, weight: 1.0, source: target}]
    sources: [{name: target, data: target_domain.txt}]

The source batch is masked in :meth:`MaskedLM.source_inputs` (whole words, 80/10/10, seeded from the run seed and the
step: ``hftransfer/pretrain/masking.py``) and runs in the same forward call as the task batch. The prediction head
is this objective's own module (a transform and a bias, trained in their own AdamW group, left out of the export):
it starts from the checkpoint's MLM head when it has one (a ``recipes/pretrain_mlm.py`` export), else new. Its
decoder is the model's word-embedding matrix itself, held by reference rather than as a parameter of the head, so
the optimizer sees that matrix once, as the model's.

Registered as a regulariser: on its own it teaches the task nothing (the classifier gets no gradient from it), so a
run must list a teaching objective too; MLM alone is ``recipes/pretrain_mlm.py``. Its term is per step: the mean
cross-entropy over the source batch's predicted tokens, times ``weight``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hftransfer.config import ObjectiveConfig
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.objectives.owned import inner_model
from hftransfer.pretrain.masking import (
    IGNORE_INDEX,
    WholeWordMasker,
    continuation_table,
    mask_generator,
    word_ids_from_vocab,
)
from hftransfer.pretrain.mlm_head import HeadParts, build_masked_lm, prediction_head_parts
from hftransfer.registry import register_objective

logger = logging.getLogger("hftransfer")


@dataclass
class MLMConfig(ObjectiveConfig):
    """Masked language modelling on a named source of unlabelled text (UDALM)."""

    name: str = "mlm"
    weight: float = 1.0
    """Multiplier of the MLM loss (a per-step term beside the task's loss)."""
    source: str = "target"
    """The named source (``sources: [{name: target, data: ...}]``) whose text is masked and predicted."""
    mask_probability: float = 0.15
    """Fraction of the source's words predicted (every piece of a chosen word)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mask_probability < 1.0:
            raise ConfigError(
                f"objectives: mlm.mask_probability must be in (0, 1), got {self.mask_probability}"
            )


class TiedPredictionHead(nn.Module):
    """``hidden -> LayerNorm(act(dense(hidden))) @ word_embeddings.T + bias``: an MLM head whose decoder is the
    model's word-embedding matrix, read at every call."""

    def __init__(self, parts: HeadParts, embeddings: nn.Module) -> None:
        super().__init__()
        self.dense, self.norm = copy.deepcopy(parts.dense), copy.deepcopy(parts.norm)
        self.activation = parts.activation
        self.bias = nn.Parameter(parts.bias.detach().clone())
        # In a list, not as a submodule: the matrix is the model's parameter, and the optimizer and the checkpoints
        # must see it once.
        self.tied = [embeddings]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [n, hidden] -> [n, vocab]
        return F.linear(self.norm(self.activation(self.dense(hidden))), self.tied[0].weight, self.bias)


class MaskedLM(Objective):
    """MLM on source ``source``'s batch: masked by :meth:`source_inputs`, predicted by the owned head."""

    name = "mlm"
    reduction = "mean"
    needs_hidden_states = True

    def __init__(self, context: ObjectiveContext) -> None:
        settings = context.objective
        if context.tokenizer is None:
            raise ConfigError("objectives: mlm needs the run's tokenizer (a run of the fine-tuning flow)")
        self.weight, self.source = settings.weight, settings.source
        self.sources = (settings.source,)
        self.masker = WholeWordMasker.for_tokenizer(
            context.tokenizer, mask_probability=settings.mask_probability
        )
        self.continues = continuation_table(context.tokenizer)
        self.special_ids = torch.tensor(sorted(context.tokenizer.all_special_ids))
        self.seed = context.config.train.seed
        self.process = context.accelerator.process_index if context.accelerator is not None else 0
        model = inner_model(context.model)
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if embeddings is None:
            raise ConfigError(
                f"objectives: mlm needs a model with word embeddings, not {type(model).__name__}"
            )
        # The head's start comes from a second load of the checkpoint as a masked LM; its own RNG, so that adding
        # this objective leaves the other random initialisations (adapters, dropout) as they were.
        with torch.random.fork_rng(devices=[]):
            masked_lm, head = build_masked_lm(context.config.model)
        self.module = TiedPredictionHead(prediction_head_parts(masked_lm), embeddings)
        del masked_lm
        whole_words = self.continues is not None
        self.report = {"head": head["head"], "new_weights": head["new_weights"], "whole_words": whole_words}
        logger.info(
            "mlm objective: prediction head %s; its decoder is the model's word embeddings; masks %s",
            head["head"],
            "whole words" if whole_words else "single tokens (the vocabulary marks no word pieces)",
        )
        self._labels: torch.Tensor | None = None

    def source_inputs(
        self, name: str, inputs: dict[str, torch.Tensor], state: Any
    ) -> dict[str, torch.Tensor]:
        # Seeded by (step, micro-batch): a resumed run (which starts at a step) draws the same masks.
        step, micro = (state.step, state.micro_batch) if state is not None else (0, 0)
        ids = inputs["input_ids"]
        not_words = torch.isin(ids, self.special_ids.to(ids.device))
        if "attention_mask" in inputs:
            not_words |= inputs["attention_mask"] == 0
        word_ids = word_ids_from_vocab(ids, not_words, self.continues)
        generator = mask_generator(self.seed, "mlm", name, self.process, step, micro)
        masked, self._labels = self.masker(ids, word_ids, generator)  # labels kept for extend_outputs
        return {**inputs, "input_ids": masked}

    def extend_outputs(self, outputs: Any, module: nn.Module) -> None:
        hidden = outputs["sources"][self.source].hidden_states[-1]  # [batch, seq, hidden]
        predicted = self._labels != IGNORE_INDEX
        # The head on the predicted tokens only: [predicted, vocab]
        outputs["mlm_logits"] = module(hidden[predicted])
        outputs["mlm_targets"] = self._labels[predicted]

    def terms(self, model: nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        logits, targets = outputs["mlm_logits"], outputs["mlm_targets"]
        if (
            targets.numel() == 0
        ):  # nothing masked in this batch: a zero that keeps the head in the graph (DDP)
            return {"mlm": logits.sum() * 0.0}
        return {"mlm": self.weight * F.cross_entropy(logits.float(), targets)}


def _requires(strategy: Any) -> str | None:
    if strategy.trains_encoder:
        return None
    return "the encoder never trains, so MLM would train only its own head; use a strategy that trains the encoder"


register_objective(
    "mlm",
    config=MLMConfig,
    build=MaskedLM,
    regulariser=True,
    requires=_requires,
    describe=lambda config: (
        f"masked LM on source {config.get('source', 'target')} (weight {config.get('weight')})"
    ),
)

"""The distillation objective of a student batch: hard labels, the teacher's soft labels, hidden states, attention.

The training loop divides the returned *summed* hard-label loss by the number of gold-labelled items of the step
(transfer-set rows have none, so they add nothing there), and adds the other terms as per-batch means; each term is
logged on its own (``loss_soft``, ``loss_hidden``, ``loss_attention``, already weighted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hftransfer.distill.losses import HiddenProjection, attention_mse, hidden_mse, soft_kl
from hftransfer.distill.teacher import TeacherLogits, aligned_teacher_logits
from hftransfer.evaluation.inference import model_inputs
from hftransfer.objectives.base import ObjectiveSet
from hftransfer.objectives.task import summed_cross_entropy


class DistillObjective:
    """``objective(model, batch) -> (weighted summed hard-label loss, {"loss_soft": ..., ...})``.

    Args:
        teacher_logits: the teacher's predictions per example (word level for token tasks).
        teacher: the frozen teacher, run on the same batch when hidden states or attention maps are matched
            (the student must then share its tokenizer).
        layer_map: ``(student, teacher)`` hidden-state indices (0 = embeddings; attention uses 1..L).
        projection: the learned projections of the student's mapped hidden states into the teacher's width; the
            objective owns it (``hftransfer/objectives/owned.py``), so it trains with the student and is not
            exported.
        regularisers: the run's per-step objectives (L2-SP, drift), applied to the student.
    """

    def __init__(
        self,
        teacher_logits: TeacherLogits | None,
        *,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        teacher: nn.Module | None = None,
        hidden_weight: float = 0.0,
        attention_weight: float = 0.0,
        layer_map: Sequence[tuple[int, int]] = (),
        regularisers: ObjectiveSet | None = None,
        projection: HiddenProjection | None = None,
    ) -> None:
        if (hidden_weight or attention_weight) and teacher is None:
            raise ValueError("hidden-state or attention matching needs the teacher model")
        if soft_weight and teacher_logits is None:
            raise ValueError("the soft term needs the teacher's logits")
        self.teacher_logits, self.teacher = teacher_logits, teacher
        self.hard_weight, self.soft_weight, self.temperature = hard_weight, soft_weight, temperature
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        self.layer_map = list(layer_map)
        self.module = projection if hidden_weight else None
        self.regularisers = regularisers or ObjectiveSet([])
        self.needs_hidden_states = bool(hidden_weight) or self.regularisers.needs_hidden_states

    name = "projection"  # the name its owned module trains under (an AdamW group of its own)

    def extend_outputs(self, outputs: Any, module: nn.Module) -> None:
        # One projected state per mapped pair, in map order (the identity when the widths agree).
        outputs["projected_hidden"] = tuple(
            module(index, outputs.hidden_states[s]) for index, (s, _) in enumerate(self.layer_map)
        )

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], state: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = model_inputs(batch)
        extra: dict[str, Any] = {}
        if self.needs_hidden_states:
            extra["output_hidden_states"] = True
        if self.attention_weight:
            extra["output_attentions"] = True
        if self.module is not None:
            extra["objective_outputs"] = True
        outputs = model(**inputs, **extra)
        logits = outputs.logits  # [batch, (seq,) num_labels]
        hard = summed_cross_entropy(logits, batch["labels"])
        terms: dict[str, torch.Tensor] = {}
        if self.soft_weight:
            teacher_logits, mask = aligned_teacher_logits(self.teacher_logits, batch)
            terms["loss_soft"] = self.soft_weight * soft_kl(
                logits, teacher_logits.to(logits.device), self.temperature, mask.to(logits.device)
            )
        if self.hidden_weight or self.attention_weight:
            with torch.no_grad():
                teacher_out = self.teacher(
                    **inputs,
                    output_hidden_states=bool(self.hidden_weight),
                    output_attentions=bool(self.attention_weight),
                )
            if self.hidden_weight:
                pairs = [(index, t) for index, (_, t) in enumerate(self.layer_map)]
                terms["loss_hidden"] = self.hidden_weight * hidden_mse(
                    outputs["projected_hidden"],
                    teacher_out.hidden_states,
                    pairs,
                    inputs["attention_mask"].bool(),
                )
            if self.attention_weight:
                pairs = [(s, t) for s, t in self.layer_map if s > 0 and t > 0]
                terms["loss_attention"] = self.attention_weight * attention_mse(
                    outputs.attentions, teacher_out.attentions, pairs, inputs["attention_mask"]
                )
        terms.update(self.regularisers.terms(model, batch, outputs, state)[1])
        return self.hard_weight * hard, terms

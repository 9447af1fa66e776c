"""Relational knowledge distillation (Park et al., CVPR 2019, "Relational Knowledge Distillation"): the student
matches the *structure* of the teacher's representations of a batch, not the representations themselves: their
pairwise distances (each model's divided by its own mean) and the angles of their triplets, each compared with the
Huber loss (``hftransfer/distill/losses.py``). Both are unchanged by scaling, rotating or shifting either model's
space, so the two widths may differ and nothing is projected.

The items compared: for sequence tasks, each example's pooled hidden state; for token tasks, each word's state at
its first subword (a random subset of at most ``max_items``, as the angle term grows with the cube of their
number). Both are looked up by example and word, never by position, so the teacher runs on its own tokenisation
and the student may use another tokenizer (for words: one that splits the text into the same words, as pre-split
NER tokens are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from hftransfer.config import ObjectiveConfig
from hftransfer.distill.losses import rkd_angle, rkd_distance
from hftransfer.errors import ConfigError, DataError
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.registry import register_objective

Key = tuple[int, ...]


@dataclass
class DistillRelationConfig(ObjectiveConfig):
    """Match the distances and angles between the teacher's representations of a batch's examples (or words)."""

    name: str = "distill_relation"
    weight: float = 1.0
    """Multiplier of ``distance_weight · distance term + angle_weight · angle term`` (a per-step term, logged as
    ``loss_relation``)."""
    # Park et al. (2019), Sec. 4.2 (image classification, on the final pooled embedding): lambda_D = 25,
    # lambda_A = 50; also the defaults of RepDistiller's RKDLoss (Tian et al., 2020). Their metric-learning
    # experiments (Sec. 4.1) use 1 and 2.
    distance_weight: float = 25.0
    """Weight of the distance-wise term (Huber loss between normalised pairwise distances)."""
    angle_weight: float = 50.0
    """Weight of the angle-wise term (Huber loss between the cosines of the triplets' angles)."""
    pooling: Literal["mean", "cls"] = "mean"
    """Sequence tasks: an example's representation is the mean of its real tokens' states (``mean``) or its first
    token's (``cls``); windows of one long text are averaged. Token tasks compare words' first subwords."""
    student_layer: int = -1
    """The student's hidden state compared (0 = embeddings, 1..L = layers, -1 = the last)."""
    teacher_layer: int = -1
    """The teacher's hidden state compared (0 = embeddings, 1..L = layers, -1 = the last)."""
    max_items: int = 64
    """At most this many items (examples or words) per batch, drawn at random (seeded by ``train.seed`` and the
    step) when there are more: the angle term costs n³."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("distance_weight", "angle_weight"):
            if getattr(self, field) < 0:
                raise ConfigError(
                    f"objectives: distill_relation.{field} must be >= 0, got {getattr(self, field)}"
                )
        if self.distance_weight == 0 and self.angle_weight == 0:
            raise ConfigError("objectives: distill_relation.distance_weight and angle_weight are both 0")
        if self.max_items < 3:
            raise ConfigError(
                f"objectives: distill_relation.max_items must be >= 3 (an angle needs three items), got {self.max_items}"
            )


def _layer(index: int, layers: int, field: str) -> int:
    if not -(layers + 1) <= index <= layers:
        raise ConfigError(
            f"objectives: distill_relation.{field}={index}: that model has hidden states 0..{layers} (-1 = last)"
        )
    return index


def example_states(
    hidden: torch.Tensor, batch: dict[str, torch.Tensor], pooling: str
) -> tuple[list[Key], torch.Tensor]:
    """One pooled vector per example of ``batch`` (its windows averaged), in order of first appearance.

    Args:
        hidden: ``[batch, seq, width]`` hidden states of ``batch``.

    Returns:
        The examples as ``(example_id,)`` keys and their vectors ``[examples, width]``.
    """
    mask = batch["attention_mask"].to(hidden.device)  # [batch, seq]
    if pooling == "cls":  # the first real token, whichever side the tokenizer pads
        pooled = hidden[torch.arange(len(hidden), device=hidden.device), mask.argmax(-1)]
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    ids = batch["example_id"].tolist()
    order = list(dict.fromkeys(ids))
    position = {example_id: index for index, example_id in enumerate(order)}
    index = torch.tensor([position[e] for e in ids], device=hidden.device)
    sums = pooled.new_zeros(len(order), pooled.shape[-1]).index_add(0, index, pooled)
    counts = torch.bincount(index, minlength=len(order)).to(pooled.dtype)
    return [(e,) for e in order], sums / counts[:, None]


def word_states(hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[list[Key], torch.Tensor]:
    """Each word's state at its first subword (``word_index >= 0``), keyed ``(example_id, word)``.

    Returns:
        The keys and the states ``[words, width]``.
    """
    word_index = batch["word_index"].to(hidden.device)
    rows, columns = (word_index >= 0).nonzero(as_tuple=True)
    example_ids = batch["example_id"].to(hidden.device)[rows].tolist()
    return list(zip(example_ids, word_index[rows, columns].tolist())), hidden[rows, columns]


def aligned(keys: list[Key], other_keys: list[Key], other: torch.Tensor) -> torch.Tensor:
    """The rows of ``other`` (keyed by ``other_keys``) in the order of ``keys``.

    Raises:
        DataError: a key the other side lacks (tokenisations that do not split the text into the same words).
    """
    where = {key: index for index, key in enumerate(other_keys)}
    missing = [key for key in keys if key not in where]
    if missing:
        raise DataError(
            f"the teacher has no state for (example, word) {missing[:5]}: relational distillation of words needs both "
            "tokenizers to split the text into the same words (pre-split NER tokens are)"
        )
    return other[torch.tensor([where[key] for key in keys], device=other.device)]


class Relations(Objective):
    """``weight · (distance_weight · rkd_distance + angle_weight · rkd_angle)`` of the student's and the teacher's
    representations of the batch's examples (sequence tasks) or words (token tasks)."""

    name = "distill_relation"
    needs_hidden_states = True

    def __init__(self, context: ObjectiveContext) -> None:
        context.teacher.require(self.name, "example_states")
        if not context.teacher.teacher.is_transformers_model:
            raise ConfigError(
                "objectives: distill_relation needs a transformers teacher (its hidden states); this one is an "
                "encoder + custom head"
            )
        config = context.objective
        self.teacher = context.teacher
        self.weight, self.distance_weight, self.angle_weight = (
            config.weight,
            config.distance_weight,
            config.angle_weight,
        )
        self.pooling, self.max_items = config.pooling, config.max_items
        self.words = context.config.task == "token-classification"
        self.student_layer = _layer(
            config.student_layer, context.model.config.num_hidden_layers, "student_layer"
        )
        self.teacher_layer = _layer(
            config.teacher_layer, context.teacher.model.config.num_hidden_layers, "teacher_layer"
        )
        self.seed = context.config.train.seed

    def items(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[list[Key], torch.Tensor]:
        """The keys and representations this objective compares, of one model's ``hidden`` states on ``batch``."""
        return word_states(hidden, batch) if self.words else example_states(hidden, batch, self.pooling)

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        keys, student = self.items(outputs.hidden_states[self.student_layer], batch)
        teacher_outputs, teacher_batch = self.teacher.forward_examples(batch)
        teacher_keys, teacher = self.items(teacher_outputs.hidden_states[self.teacher_layer], teacher_batch)
        teacher = aligned(keys, teacher_keys, teacher).to(student.device)
        if len(keys) > self.max_items:  # the same subset for a given seed and step: reproducible, resumable
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + getattr(state, "step", 0))
            keep = torch.randperm(len(keys), generator=generator)[: self.max_items].to(student.device)
            student, teacher = student[keep], teacher[keep]
        relation = student.sum() * 0.0
        if self.distance_weight:
            relation = relation + self.distance_weight * rkd_distance(student, teacher)
        if self.angle_weight:  # skipped at weight 0: it is the n³ part
            relation = relation + self.angle_weight * rkd_angle(student, teacher)
        return {"loss_relation": self.weight * relation}


def describe_relation(config: dict) -> str:
    return (
        f"relational distillation: distances and angles of the teacher's representations (distance weight "
        f"{config.get('distance_weight')}, angle weight {config.get('angle_weight')}, weight {config.get('weight')})"
    )


register_objective(
    "distill_relation",
    config=DistillRelationConfig,
    build=Relations,
    requires=lambda strategy: (
        None
        if strategy.trains_encoder
        else "a fixed encoder's representations cannot take the teacher's structure; use a strategy that trains the "
        "encoder"
    ),
    teacher_outputs=("example_states",),
    describe=describe_relation,
)

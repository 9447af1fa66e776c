"""Instance re-weighting for domain adaptation: the task's cross-entropy with each training example's loss times its
importance weight, an estimate of ``p_target(x) / p_source(x)`` (covariate shift: ``hftransfer/adaptation``).

Before training, the pretrained encoder embeds the training examples and the named source of target-domain text
(``sources: [{name: target, data: ...}]``); a cross-fitted domain classifier turns the embeddings into one weight
per ``example_id`` (a token task's example puts its weight on each of its labelled tokens). With ``select_top``
the weights are sample matching instead: the fraction of training examples most like the target text trains, the
rest gets weight 0. The weights are rescaled so that they average 1 per labelled item: the loss keeps the scale of
the ``task`` objective it replaces, and so does the learning rate that suits it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hftransfer.adaptation.density_ratio import (
    DEFAULT_CLIP,
    clip_and_normalise,
    domain_auc,
    domain_log_odds,
    nearest_to_target,
    ratios_from_log_odds,
    weight_summary,
)
from hftransfer.adaptation.encode import PooledFeatures
from hftransfer.config import ObjectiveConfig
from hftransfer.errors import ConfigError
from hftransfer.evaluation.inference import IGNORE_INDEX, per_row_loss
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.registry import register_objective

logger = logging.getLogger("hftransfer")

NAME = "importance_weighted_task"
# A cross-fitted domain AUC this close to 1 means the two texts hardly overlap: the ratios are then mostly the clip
# bounds, and importance weighting (which assumes the target's inputs occur in the training data) has little to use.
SEPARABLE_AUC = 0.98
# Below this share of the training set, the weighted loss rests on few examples: its gradient is noisy and the
# model may overfit them. Worth a warning, not a refusal (a strong shift can need it).
LOW_ESS_FRACTION = 0.1


@dataclass
class ImportanceWeightedTaskConfig(ObjectiveConfig):
    """The task's cross-entropy, each training example weighted towards a target domain (replaces ``task``)."""

    name: str = NAME
    weight: float = 1.0
    """Multiplier of the weighted cross-entropy."""
    source: str = "target"
    """The named source (``sources``) of unlabelled target-domain text."""
    clip: list[float] | None = field(default_factory=lambda: list(DEFAULT_CLIP))
    """``[low, high]`` bounds of the estimated density ratios before they are normalised (``0 <= low <= 1 <=
    high``); null: unclipped. A wide range follows the shift more closely and leaves fewer effective examples."""
    folds: int = 5
    """Folds of the cross-fitted domain classifier: each example is weighted by a classifier that never saw it."""
    select_top: float | None = None
    """Sample matching instead of density ratios: keep this fraction (0, 1] of the training examples, those most
    like the target text (cosine kNN of the pooled features), with equal weights; ``clip`` and ``folds`` unused."""

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"objectives.{NAME}"
        if not self.source or not all(c.isalnum() or c in "_-" for c in self.source):
            raise ConfigError(
                f"{where}.source must name a source in sources (letters, digits, '_', '-'), got {self.source!r}"
            )
        if self.clip is not None and not _clip_range(self.clip):
            raise ConfigError(
                f"{where}.clip must be [low, high] with 0 <= low <= 1 <= high, low < high (the ratios average 1), "
                f"or null; got {self.clip}"
            )
        if self.folds < 2:
            raise ConfigError(
                f"{where}.folds must be >= 2 (cross-fitting needs another fold), got {self.folds}"
            )
        if self.select_top is not None and not 0 < self.select_top <= 1:
            raise ConfigError(f"{where}.select_top must be a fraction in (0, 1], got {self.select_top}")


def _clip_range(clip: list[float]) -> bool:
    return len(clip) == 2 and 0 <= clip[0] <= 1 <= clip[1] and clip[0] < clip[1]


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over labelled items, each item's loss times its example's weight.

    Args:
        logits: ``[batch, (seq,) num_labels]``; labels: ``[batch, (seq)]`` with ``-100`` for ignored items.
        weights: ``[batch]``, one per row (a token task's row puts it on each of its labelled tokens).
    """
    row_losses, _ = per_row_loss(logits, labels)  # [batch], summed over a row's tokens
    return (row_losses * weights.to(row_losses.dtype)).sum()


class ImportanceWeightedTask(Objective):
    """The task's summed cross-entropy with per-example weights looked up by the batch's ``example_id``."""

    name = NAME
    reduction = "sum"

    def __init__(
        self,
        weights: dict[int, float],
        weight: float = 1.0,
        summary: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        self.weight = weight
        self.reads_at_build = (source,) if source else ()  # once, when built: no batch of it at each step
        self.weights = weights
        self.report = summary or weight_summary(np.array(list(weights.values())))
        # A dense table indexed by example id (ids are row numbers of the training split, so it is compact). Every
        # training id has an entry; the default 1 only fills the gaps between them.
        table = torch.ones(max(weights, default=-1) + 1, dtype=torch.float32)
        if weights:
            table[torch.tensor(list(weights))] = torch.tensor(list(weights.values()), dtype=torch.float32)
        self.table = table

    @property
    def summary(self) -> dict[str, Any]:
        """The weights' min / mean / max and effective sample size (the run reports it)."""
        return self.report

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> ImportanceWeightedTask:
        options = context.objective
        _check_run(context, options)
        device = context.accelerator.device if context.accelerator is not None else None
        encode = context.encode or PooledFeatures(context.model, context.tokenizer, device)
        target = context.source(options.source)  # before any encoding: an unlisted source fails at once
        train = context.features["train"]
        train_x, train_ids = encode(train)
        target_x, _ = encode(target)
        weights, summary = example_weights(
            train_x, target_x, options, seed=getattr(context.config.train, "seed", 0)
        )
        weights = per_item_mean_one(weights, train_ids, train)
        summary = {**summary, **weight_summary(weights)}
        _log_summary(summary, options.source)
        return cls(dict(zip(train_ids.tolist(), weights.tolist())), options.weight, summary, options.source)

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        if self.table.device != batch["example_id"].device:
            self.table = self.table.to(batch["example_id"].device)
        loss = weighted_cross_entropy(outputs.logits, batch["labels"], self.table[batch["example_id"]])
        return {"loss": self.weight * loss if self.weight != 1.0 else loss}


def example_weights(
    train_x: np.ndarray, target_x: np.ndarray, options: ImportanceWeightedTaskConfig, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """One weight per training row of ``train_x`` (mean 1) and what the run reports about how they were made: the
    method, the example counts and, for density ratios, the domain classifier's cross-fitted AUC and the share of
    ratios the clip range cut."""
    summary: dict[str, Any] = {"examples": len(train_x), "target_examples": len(target_x)}
    if options.select_top is not None:
        keep = max(1, round(options.select_top * len(train_x)))
        weights = np.zeros(len(train_x))
        weights[nearest_to_target(train_x, target_x, keep)] = 1.0
        return weights / weights.mean(), {"method": "select_top", **summary}
    source_odds, target_odds = domain_log_odds(train_x, target_x, folds=options.folds, seed=seed)
    ratios = ratios_from_log_odds(source_odds, len(train_x), len(target_x))
    clip = tuple(options.clip) if options.clip is not None else None
    clipped = float(((ratios < clip[0]) | (ratios > clip[1])).mean()) if clip else 0.0
    summary.update(
        method="domain_classifier", domain_auc=domain_auc(source_odds, target_odds), clipped=clipped
    )
    return clip_and_normalise(ratios, clip), summary


def _log_summary(summary: dict[str, Any], source: str) -> None:
    logger.info(
        "%s: weights of %d training examples against %d of source %r (%s): min %.3g, mean %.3g, max %.3g; "
        "effective sample size %.1f (%.0f%%)",
        NAME,
        summary["examples"],
        summary["target_examples"],
        source,
        summary["method"],
        summary["min"],
        summary["mean"],
        summary["max"],
        summary["ess"],
        100 * summary["ess_fraction"],
    )
    if summary.get("domain_auc", 0.0) >= SEPARABLE_AUC:
        logger.warning(
            "%s: a domain classifier tells the training text from source %r apart (cross-fitted AUC %.3f): the "
            "domains barely overlap, %.0f%% of the ratios hit the clip range and the weights say little. "
            "Re-weighting helps when the target's kind of text also occurs in the training data; otherwise "
            "adapt the representation instead (e.g. continued pretraining on the target text)",
            NAME,
            source,
            summary["domain_auc"],
            100 * summary["clipped"],
        )
    if summary["ess_fraction"] < LOW_ESS_FRACTION:
        logger.warning(
            "%s: the weighted loss rests on %.1f effective examples of %d; its gradient is noisy and the model "
            "may overfit them (narrow clip, or raise select_top)",
            NAME,
            summary["ess"],
            summary["examples"],
        )


def per_item_mean_one(weights: np.ndarray, example_ids: np.ndarray, features: Any) -> np.ndarray:
    """``weights`` (one per example of ``example_ids``) rescaled to average 1 per labelled item of ``features``.

    The loop divides the summed loss by the labelled items (a token task's tokens), so this keeps the weighted
    loss on the scale of the unweighted one; for sequence tasks (one item per example) it is a mean of 1.
    """
    items = np.zeros(len(example_ids))
    position = {example_id: index for index, example_id in enumerate(example_ids.tolist())}
    for example_id, labels in zip(features["example_id"], features["labels"]):
        count = (
            sum(label != IGNORE_INDEX for label in labels)
            if isinstance(labels, list)
            else labels != IGNORE_INDEX
        )
        items[position[example_id]] += count
    total = float((weights * items).sum())
    return weights * (items.sum() / total) if total > 0 else weights


def _check_run(context: ObjectiveContext, options: ImportanceWeightedTaskConfig) -> None:
    listed = [objective.name for objective in getattr(context.config, "objectives", [])]
    if "task" in listed:
        raise ConfigError(
            f"objectives: {NAME} replaces task (it is the task's cross-entropy, weighted); list one of task and "
            f"{NAME}, e.g. objectives=[{{name: {NAME}, source: {options.source}}}]"
        )
    if not context.features or "train" not in context.features:
        raise ConfigError(
            f"objectives: {NAME} weights one task's training examples; it needs a run of one task"
        )


def describe(config: dict) -> str:
    source = config.get("source", "target")
    if config.get("select_top") is not None:
        return (
            f"cross-entropy on the {config['select_top']:.0%} of training examples most like source {source}"
        )
    clip = config.get("clip")
    clipped = f", ratios clipped to {clip}" if clip else ""
    return f"cross-entropy importance-weighted towards source {source} (domain-classifier density ratios{clipped})"


register_objective(
    NAME,
    config=ImportanceWeightedTaskConfig,
    build=ImportanceWeightedTask.from_context,
    describe=describe,
    on_cached_features=False,
)

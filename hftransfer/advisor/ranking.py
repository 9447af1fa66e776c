"""Rank encoders and their layers for a labelled task without fine-tuning any of them.

For each candidate encoder: tokenise the task's data with its tokenizer, encode the training and validation splits
once at every hidden state (through the frozen strategy's feature cache, so a later ``strategy.name=frozen`` run on
the chosen layer starts from the cache), then score each layer choice with the transferability estimators. The
scores rank the encoders (each encoder's best choice) and, within an encoder, its layers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hftransfer.advisor import estimators as est
from hftransfer.advisor import probes
from hftransfer.advisor.layers import LabelledVectors, LayerChoice, labelled_vectors, layer_choices
from hftransfer.advisor.sampling import limit_examples, sample_size  # noqa: F401 - importable here
from hftransfer.data.sources import TaskData, load_task_data
from hftransfer.errors import ConfigError
from hftransfer.strategies.feature_cache import cached_layer_features

logger = logging.getLogger("hftransfer")

DEFAULT_ESTIMATORS = tuple(est.ESTIMATORS)
TOKEN_TASK = "token-classification"
OUTSIDE = "O"  # the non-entity tag: left out of the probe's averaged classes, as entity F1 leaves it out


@dataclass
class LayerScores:
    """The estimators' scores of one encoder at one layer choice."""

    encoder: str
    choice: LayerChoice
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        # NaN (an estimator that could not score) is written as null: strict JSON readers reject NaN.
        scores = {name: value if np.isfinite(value) else None for name, value in self.scores.items()}
        return {"encoder": self.encoder, "layer": self.choice.name, **self.choice.as_strategy(), **scores}


@dataclass
class Ranking:
    """Every encoder x layer choice scored; ``seconds`` per encoder (encoding + scoring), ``timings`` per encoder
    split into ``encode`` (loading, tokenising and encoding every hidden state) and each estimator's share."""

    task: str
    estimators: tuple[str, ...]
    rows: list[LayerScores] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def encoders(self) -> list[str]:
        return list(dict.fromkeys(row.encoder for row in self.rows))

    def best(self, encoder: str, estimator: str) -> LayerScores:
        """``encoder``'s layer choice that ``estimator`` scores highest."""
        rows = [row for row in self.rows if row.encoder == encoder and np.isfinite(row.scores[estimator])]
        if not rows:
            raise ValueError(f"no finite {estimator} score for {encoder}")
        return max(rows, key=lambda row: row.scores[estimator])

    def encoder_scores(self, estimator: str, aggregate: str = "best") -> dict[str, float]:
        """One score per encoder: its best layer choice's (``best``), its last layer's (``last``) or the mean of
        all its layers' (``mean``)."""
        scores = {}
        for encoder in self.encoders():
            rows = [row for row in self.rows if row.encoder == encoder]
            if aggregate == "best":
                scores[encoder] = self.best(encoder, estimator).scores[estimator]
            else:
                single = [row for row in rows if row.choice.num_layers == 1]
                last = max(row.choice.layer for row in single)
                wanted = (
                    LayerChoice(last)
                    if aggregate == "last"
                    else LayerChoice(last, last)
                    if last > 1
                    else None
                )
                row = next((row for row in rows if row.choice == wanted), single[-1])
                scores[encoder] = row.scores[estimator]
        return scores

    def ordered(self, estimator: str) -> list[str]:
        """Encoders best first by ``estimator`` (each at its best layer choice)."""
        scores = self.encoder_scores(estimator)
        return sorted(scores, key=scores.get, reverse=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "estimators": list(self.estimators),
            "rows": [row.to_dict() for row in self.rows],
            "best": {
                estimator: {encoder: self.best(encoder, estimator).choice.name for encoder in self.encoders()}
                for estimator in self.estimators
            },
            "order": {estimator: self.ordered(estimator) for estimator in self.estimators},
            "seconds": self.seconds,
            "timings": self.timings,
            "data": self.data,
        }


def outside_label(task: str, label_names: Sequence[str]) -> int | None:
    """The id of a token task's ``O`` tag (None for sequence tasks or a tag set without one)."""
    if task != TOKEN_TASK or OUTSIDE not in label_names:
        return None
    return list(label_names).index(OUTSIDE)


def score_choices(
    train: LabelledVectors,
    validation: LabelledVectors | None,
    choices: Sequence[LayerChoice],
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    *,
    ignore_label: int | None = None,
    seed: int = 0,
    timings: dict[str, float] | None = None,
) -> dict[LayerChoice, dict[str, float]]:
    """Each estimator's score of each layer choice. The label-only estimators read the training vectors; the linear
    probe trains on them and is scored on the validation vectors (NaN when there is no validation split).
    ``timings`` (when given) receives each estimator's seconds over all choices."""
    scorers: dict[str, Callable[[np.ndarray, LayerChoice], float]] = {
        "logme": lambda x, c: est.logme(x, train.labels),
        "h_score": lambda x, c: est.h_score(x, train.labels),
        "knn": lambda x, c: probes.knn_score(x, train.labels, seed=seed),
        "linear_probe": lambda x, c: (
            float("nan")
            if validation is None
            else probes.linear_probe_score(
                x, train.labels, validation.of(c), validation.labels, seed=seed, ignore_label=ignore_label
            )
        ),
    }
    unknown = [name for name in estimators if name not in scorers]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; known: {', '.join(scorers)}")
    results: dict[LayerChoice, dict[str, float]] = {}
    timings = {} if timings is None else timings
    for choice in choices:
        vectors = train.of(choice)
        results[choice] = {}
        for name in estimators:
            started = time.perf_counter()
            results[choice][name] = float(scorers[name](vectors, choice))
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
    return results


def encode_splits(
    encoder_name: str,
    data: TaskData,
    task: str,
    data_config: Any,
    *,
    splits: Sequence[str] = ("train", "validation"),
    batch_size: int = 64,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    max_items: int | None = 10000,
    seed: int = 0,
) -> tuple[dict[str, LabelledVectors], int]:
    """``{split: LabelledVectors}`` of ``encoder_name`` at every hidden state, and its number of layers."""
    from transformers import AutoModel

    from hftransfer.assets import resolve_model_name
    from hftransfer.config import ModelConfig
    from hftransfer.flow.layout import tokenize_task
    from hftransfer.modeling.build import load_tokenizer, without_load_report

    tokenizer = load_tokenizer(ModelConfig(name_or_path=encoder_name))
    with without_load_report():
        encoder = AutoModel.from_pretrained(resolve_model_name(encoder_name))
    total = encoder.config.num_hidden_layers
    singles = [(index, 1) for index in range(total + 1)]
    wanted = TaskData(
        data.splits.__class__({s: data.splits[s] for s in splits if s in data.splits}),
        data.label_names,
        data.report,
    )
    features, _ = tokenize_task(wanted, tokenizer, task, data_config)
    vectors = {}
    for split, split_features in features.items():
        stores, _ = cached_layer_features(
            encoder,
            tokenizer,
            split_features,
            singles,
            cache_dir=cache_dir,
            pooling="mean",
            task=task,
            batch_size=batch_size,
            device=device,
        )
        vectors[split] = labelled_vectors(dict(zip(range(total + 1), stores)), max_items=max_items, seed=seed)
    return vectors, total


def rank(
    config: Any,
    encoders: Sequence[str],
    *,
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    averages: bool = True,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    max_items: int | None = 10000,
    max_examples: int | str | None = "auto",
    seed: int = 0,
) -> Ranking:
    """Score every encoder x layer choice on ``config``'s task and data (a :class:`~hftransfer.config.RunConfig`).

    Args:
        encoders: aliases (``minilm-l6``), Hub ids or local directories.
        estimators: any of ``logme``, ``h_score``, ``knn``, ``linear_probe``.
        averages: also score the mean of all layers and of the top four.
        max_items: at most this many labelled items (words or texts) per split are scored.
        max_examples: at most this many examples (sentences or texts) per split are encoded, drawn with ``seed``
            (None: all); ``"auto"``: 500, and at most half the training set unless that is under 250 (see
            :func:`sample_size`). Estimates settle long before a large training set is exhausted, and encoding
            is the cost.

    Raises:
        ConfigError / DataError: an encoder or the data cannot be loaded.
    """
    if not encoders:
        raise ValueError("rank needs at least one encoder")
    data = limit_examples(load_task_data(config.data, config.task), max_examples, seed)
    if "linear_probe" in estimators and "validation" not in data.splits:
        logger.warning(
            "rank: the data has no validation split, so the linear_probe estimator is left out (give "
            "data.validation_file or a data.validation_size above 0 to score it)"
        )
        estimators = [name for name in estimators if name != "linear_probe"]
        if not estimators:
            raise ConfigError(
                "rank: linear_probe needs a validation split, and it was the only estimator asked for"
            )
    ignore = outside_label(config.task, data.label_names)
    ranking = Ranking(config.task, tuple(estimators))
    ranking.data = {split: len(rows) for split, rows in data.splits.items()}
    for name in encoders:
        started = time.perf_counter()
        logger.info("rank: encoding %s", name)
        # Only the linear probe reads the validation split: the label-only estimators need no second encoding.
        needs_eval = any(est.ESTIMATORS[name].needs_eval for name in estimators)
        splits = ("train", "validation") if needs_eval else ("train",)
        vectors, total = encode_splits(
            name,
            data,
            config.task,
            config.data,
            splits=splits,
            batch_size=batch_size,
            device=device,
            cache_dir=cache_dir,
            max_items=max_items,
            seed=seed,
        )
        timings = {"encode": time.perf_counter() - started}
        choices = layer_choices(total, averages=averages)
        scores = score_choices(
            vectors["train"],
            vectors.get("validation"),
            choices,
            estimators,
            ignore_label=ignore,
            seed=seed,
            timings=timings,
        )
        ranking.timings[name] = {key: round(value, 2) for key, value in timings.items()}
        ranking.rows += [LayerScores(name, choice, scores[choice]) for choice in choices]
        ranking.seconds[name] = round(time.perf_counter() - started, 2)
        logger.info("rank: %s scored in %.1f s", name, ranking.seconds[name])
    return ranking

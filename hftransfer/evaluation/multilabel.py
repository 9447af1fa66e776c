"""Multi-label decisions: one probability threshold for every label, chosen on the validation split.

A multi-label head gives each label a sigmoid probability; a label set needs a threshold. 0.5 suits a calibrated
model of balanced labels, which a model trained on mostly-absent labels is not (its probabilities stay low), so
the validation split chooses the threshold that maximises the selection metric (micro-F1, or macro-F1 when that
selects the model) among :data:`CANDIDATES`. One threshold for all labels rather than one per label: a per-label
threshold is fitted to that label's few validation positives (three positives, three points to overfit), while
one threshold is one number fitted to every decision of the split.

The threshold goes with the model: the evaluation of the validation split writes it into the model's config as
``multilabel_threshold`` (so ``config.json`` of the export holds the one of the best model), the test split and
:class:`~hftransfer.predict.Predictor` use it. ``transformers.pipeline`` knows no threshold: with ``top_k=None``
it returns every label's sigmoid score, to compare with ``config.multilabel_threshold`` yourself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hftransfer.evaluation.metrics import multilabel_classification_metrics

THRESHOLD_KEY = "multilabel_threshold"
"""The model config's field (``config.json``) holding the threshold chosen on validation."""
DEFAULT_THRESHOLD = 0.5
"""Until a validation split chose one (and for runs without one)."""
CANDIDATES = tuple(round(0.05 * step, 2) for step in range(1, 20))
"""Thresholds tried on validation: 0.05 to 0.95 in steps of 0.05; finer steps only fit the split's noise."""


def f1_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Micro- and macro-F1 of boolean ``[examples, labels]`` arrays; an F1 of no positives at all is 0, as in
    scikit-learn with ``zero_division=0`` (what the ``multilabel_f1`` metric reports)."""
    tp = (true & pred).sum(axis=0).astype(np.float64)
    wrong = (true ^ pred).sum(axis=0).astype(np.float64)  # false positives + false negatives, per label
    per_label = np.divide(2 * tp, 2 * tp + wrong, out=np.zeros_like(tp), where=(2 * tp + wrong) > 0)
    total = 2 * tp.sum() + wrong.sum()
    return {
        "micro_f1": float(2 * tp.sum() / total) if total else 0.0,
        "macro_f1": float(per_label.mean()) if per_label.size else 0.0,
    }


def choose_threshold(probabilities: np.ndarray, true: np.ndarray, metric: str = "micro_f1") -> float:
    """The candidate threshold with the best ``metric`` (``micro_f1`` or ``macro_f1``) on these rows; of equal
    scores the one nearest 0.5.

    Args:
        probabilities: ``[examples, labels]`` sigmoid outputs; true: ``[examples, labels]`` gold multi-hot rows.
    """
    metric = metric if metric in ("micro_f1", "macro_f1") else "micro_f1"
    gold = np.asarray(true, dtype=bool)
    scored = [
        (f1_scores(gold, probabilities >= t)[metric], -abs(t - DEFAULT_THRESHOLD), t) for t in CANDIDATES
    ]
    return max(scored)[2]


def model_threshold(config: Any) -> float:
    """The threshold an exported model's config holds (the default when it holds none)."""
    value = getattr(config, THRESHOLD_KEY, None)
    return DEFAULT_THRESHOLD if value is None else float(value)


def multi_hot(labels: Sequence[Sequence[str]], label_names: Sequence[str]) -> np.ndarray:
    """``[examples, labels]`` 0/1 rows of lists of label names (names not in ``label_names`` are left out)."""
    index = {name: i for i, name in enumerate(label_names)}
    rows = np.zeros((len(labels), len(label_names)), dtype=np.int64)
    for row, names in enumerate(labels):
        for name in names:
            if name in index:
                rows[row, index[name]] = 1
    return rows


def multilabel_metrics(
    probabilities: np.ndarray,
    labels: Sequence[Sequence[str]],
    label_names: Sequence[str],
    threshold: float | None = None,
    metric: str = "micro_f1",
) -> dict[str, Any]:
    """The ``multilabel_f1`` metrics of thresholded probabilities, and the ``threshold`` used.

    Args:
        probabilities: ``[examples, labels]``; labels: each example's gold label names.
        threshold: None chooses it on these rows (the validation split), maximising ``metric``.
    """
    true = multi_hot(labels, label_names)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(len(true), len(label_names))
    if threshold is None:
        threshold = choose_threshold(probabilities, true, metric)
    pred = (probabilities >= threshold).astype(np.int64)
    return {**multilabel_classification_metrics(true, pred, label_names), "threshold": threshold}

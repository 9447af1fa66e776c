"""Transferability estimators that fit a small classifier on the features: cross-validated kNN and a
logistic-regression linear probe (LogME and H-score, which need no classifier, are in ``estimators.py``)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler, normalize

from hftransfer.advisor.estimators import _check_features, _check_labels


def knn_score(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 5,
    folds: int = 5,
    seed: int = 0,
    max_samples: int | None = 5000,
) -> float:
    """Cross-validated k-nearest-neighbour macro-F1 over the classes present.

    Every row is predicted by a cosine kNN fitted on the other folds; the out-of-fold predictions are scored
    together. Folds are stratified when every class has at least ``folds`` rows, else plain shuffled folds.
    Rows beyond ``max_samples`` are dropped first by a seeded random permutation (which keeps the class
    proportions in expectation): brute-force kNN is quadratic in ``n``.

    Raises:
        ValueError: bad input, ``folds < 2``, or fewer rows than folds.
    """
    f = _check_features(features)
    y = _check_labels(labels, len(f))
    if max_samples is not None and len(f) > max_samples:
        keep = np.sort(np.random.RandomState(seed).permutation(len(f))[:max_samples])
        f, y = f[keep], _check_labels(y[keep], max_samples, "labels (after subsampling to max_samples)")
    if folds < 2 or len(f) < folds:
        raise ValueError(f"folds must be >= 2 and <= the number of rows ({len(f)}), got {folds}")
    x = normalize(f)  # L2 rows: cosine neighbours, and the metric ignores vector length
    classes, counts = np.unique(y, return_counts=True)
    splitter_cls = StratifiedKFold if counts.min() >= folds else KFold
    splitter = splitter_cls(n_splits=folds, shuffle=True, random_state=seed)
    predicted = np.empty_like(y)
    for train_rows, held_out in splitter.split(x, y):
        knn = KNeighborsClassifier(n_neighbors=min(k, len(train_rows)), metric="cosine", algorithm="brute")
        predicted[held_out] = knn.fit(x[train_rows], y[train_rows]).predict(x[held_out])
    return float(f1_score(y, predicted, labels=classes, average="macro", zero_division=0))


def linear_probe_score(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    *,
    max_iter: int = 200,
    seed: int = 0,
    ignore_label: int | None = None,
) -> float:
    """Macro-F1 on the evaluation split of a logistic regression (standardised features, C=1, lbfgs) trained on
    the training split: the closest cheap stand-in for training a head on the frozen features.

    Args:
        ignore_label: a class left out of the macro average (still predicted, so it still costs the other
            classes recall and precision). For NER the advisor passes the ``O`` id, which would otherwise
            dominate the average with a near-perfect F1.

    Raises:
        ValueError: bad input, a single-class training split, different feature widths, or no class left to
            average over.
    """
    x_train = _check_features(train_features, "train_features")
    x_eval = _check_features(eval_features, "eval_features")
    if x_train.shape[1] != x_eval.shape[1]:
        raise ValueError(f"train_features have width {x_train.shape[1]}, eval_features {x_eval.shape[1]}")
    y_train = _check_labels(train_labels, len(x_train), "train_labels")
    y_eval = _check_labels(eval_labels, len(x_eval), "eval_labels", min_classes=1)
    classes = [c for c in np.unique(y_eval) if c != ignore_label]
    if not classes:
        raise ValueError(f"eval_labels hold only the ignored class {ignore_label}; nothing to average over")
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, solver="lbfgs", max_iter=max_iter, random_state=seed)
    )
    # max_iter is a budget: a probe stopped there still ranks layers consistently, and one warning per layer
    # per encoder would drown the advisor's output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x_train, y_train)
    predicted = probe.predict(x_eval)
    return float(f1_score(y_eval, predicted, labels=classes, average="macro", zero_division=0))

"""Density ratios between a target domain and the labelled (source) data, from feature vectors.

Covariate shift: the labelled examples come from ``p_source(x)``, the texts a model will meet from ``p_target(x)``,
and ``p(y | x)`` is shared. Weighting each source example's loss by ``w(x) = p_target(x) / p_source(x)`` makes the
source risk an unbiased estimate of the target risk (Shimodaira 2000). The ratio is estimated here with a
probabilistic domain classifier (Bickel et al. 2007): by Bayes' rule

    w(x) = (n_s / n_t) * p(target | x) / p(source | x)

where the factor ``n_s / n_t`` undoes the classifier's prior of the two sample sizes. The classifier is
*cross-fitted*: the rows are cut into folds and each row is scored by a classifier trained on the other folds, so a
row the classifier memorised never gets the extreme ratio that memorising gives.

Pure numpy and scikit-learn; the feature vectors come from anywhere (``encode.py`` pools a pretrained encoder's).
"""

from __future__ import annotations

import numpy as np

DEFAULT_CLIP = (0.1, 10.0)
"""No source example counts more than ten times, or less than a tenth, of an unshifted one: a few examples with
huge ratios would otherwise carry the whole loss (see :func:`effective_sample_size`)."""

# exp() of a log-ratio beyond this overflows float64 long before; every useful clip range lies far inside it.
_MAX_LOG_RATIO = 50.0


def domain_log_odds(
    source_x: np.ndarray,
    target_x: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted log-odds ``log p(target | x) / p(source | x)`` of every source and every target row.

    A logistic regression on standardised features (``C``: its inverse L2 strength) is trained ``folds`` times,
    each time on all rows outside one fold (stratified by domain, so every fold keeps the domains' proportions and
    the classifier's prior stays ``n_t / n_s``), and scores the rows of that fold only.

    Args:
        source_x: ``[n_s, dim]`` features of the source (labelled) rows.
        target_x: ``[n_t, dim]`` features of the target rows.
        folds: number of folds (>= 2; each domain needs at least that many rows).
        seed: seed of the fold assignment.

    Returns:
        ``(source_log_odds [n_s], target_log_odds [n_t])``.

    Raises:
        ValueError: fewer than 2 folds, a domain with fewer rows than folds, or feature widths that differ.
    """
    # scikit-learn is imported where it is used: every run imports this module (through the objectives' registry),
    # few use it, and importing it takes a noticeable part of a second.
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    source_x, target_x = np.asarray(source_x, dtype=np.float64), np.asarray(target_x, dtype=np.float64)
    if folds < 2:
        raise ValueError(
            f"folds must be >= 2 (a row is never scored by a classifier trained on it), got {folds}"
        )
    if min(len(source_x), len(target_x)) < folds:
        raise ValueError(
            f"{folds} folds need at least {folds} rows of each domain; got {len(source_x)} source and "
            f"{len(target_x)} target rows"
        )
    if source_x.shape[1:] != target_x.shape[1:]:
        raise ValueError(
            f"source rows {source_x.shape[1:]} and target rows {target_x.shape[1:]} differ in width"
        )
    x = np.concatenate([source_x, target_x])
    domain = np.concatenate([np.zeros(len(source_x), dtype=int), np.ones(len(target_x), dtype=int)])
    log_odds = np.empty(len(x))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_rows, held_out in splitter.split(x, domain):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
        classifier.fit(x[train_rows], domain[train_rows])
        log_odds[held_out] = classifier.decision_function(x[held_out])
    return log_odds[: len(source_x)], log_odds[len(source_x) :]


def clip_and_normalise(
    ratios: np.ndarray, clip: tuple[float, float] | None = DEFAULT_CLIP, *, normalise: bool = True
) -> np.ndarray:
    """``ratios`` clipped to ``[low, high]`` (None: not clipped), then divided by their mean (``normalise``).

    The clip range applies to the estimated ratios, whose true mean over the source is 1; after normalisation the
    largest weight is at most ``high / low`` times the smallest.

    Raises:
        ValueError: a clip range that is not ``0 <= low < high``, or ratios that are all zero.
    """
    weights = np.asarray(ratios, dtype=np.float64)
    if clip is not None:
        low, high = clip
        if not 0 <= low < high:
            raise ValueError(f"clip must be (low, high) with 0 <= low < high, got {clip}")
        weights = np.clip(weights, low, high)
    if normalise:
        mean = weights.mean() if len(weights) else 1.0
        if mean <= 0:
            raise ValueError("every ratio is 0; they cannot be normalised to mean 1")
        weights = weights / mean
    return weights


def domain_classifier_ratios(
    source_x: np.ndarray,
    target_x: np.ndarray,
    *,
    clip: tuple[float, float] | None = DEFAULT_CLIP,
    folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    normalise: bool = True,
) -> np.ndarray:
    """Estimated density ratios ``p_target(x) / p_source(x)`` of the source rows (see the module docstring).

    Args:
        source_x: ``[n_s, dim]`` features of the rows to weight.
        target_x: ``[n_t, dim]`` features of target-domain rows.
        clip: ``(low, high)`` bounds of the estimated ratios, or None (see :data:`DEFAULT_CLIP`).
        folds / seed / C: the cross-fitted classifier's (:func:`domain_log_odds`).
        normalise: divide by the mean so the weights average 1 over the source rows (self-normalised importance
            weighting: the weighted loss keeps the scale of the plain one). Leave it off for :func:`dev_risk
            <hftransfer.adaptation.selection.dev_risk>`, which relies on the ratios' own mean.

    Returns:
        ``[n_s]`` non-negative weights.
    """
    source_log_odds, _ = domain_log_odds(source_x, target_x, folds=folds, seed=seed, C=C)
    ratios = ratios_from_log_odds(source_log_odds, len(source_x), len(target_x))
    return clip_and_normalise(ratios, clip, normalise=normalise)


def ratios_from_log_odds(source_log_odds: np.ndarray, n_source: int, n_target: int) -> np.ndarray:
    """Density ratios ``(n_s / n_t) * exp(log_odds)`` of source rows from their domain log-odds (unclipped)."""
    log_ratio = np.log(n_source / n_target) + np.asarray(source_log_odds, dtype=np.float64)
    return np.exp(np.clip(log_ratio, -_MAX_LOG_RATIO, _MAX_LOG_RATIO))


def domain_auc(source_log_odds: np.ndarray, target_log_odds: np.ndarray) -> float:
    """ROC AUC of the cross-fitted domain classifier: 0.5 when it cannot tell the domains apart (weights near 1),
    1.0 when it separates them (the domains do not overlap, and density ratios say little)."""
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([source_log_odds, target_log_odds])
    domains = np.concatenate([np.zeros(len(source_log_odds)), np.ones(len(target_log_odds))])
    return float(roc_auc_score(domains, scores))


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``: how many equally weighted examples the weighted ones
    are worth. Equal weights give ``n``; a weighted loss resting on a few large weights gives a small number, and
    its estimate (and gradient) is then as noisy as one from that many examples."""
    weights = np.asarray(weights, dtype=np.float64)
    squares = float((weights**2).sum())
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


def weight_summary(weights: np.ndarray) -> dict[str, float]:
    """``min``, ``mean``, ``max``, ``ess`` (:func:`effective_sample_size`) and ``ess_fraction`` (of the rows)."""
    weights = np.asarray(weights, dtype=np.float64)
    ess = effective_sample_size(weights)
    return {
        "min": float(weights.min()),
        "mean": float(weights.mean()),
        "max": float(weights.max()),
        "ess": ess,
        "ess_fraction": ess / len(weights),
    }


def nearest_to_target(
    source_x: np.ndarray, target_x: np.ndarray, k: int, *, neighbours: int = 10, chunk: int = 1024
) -> np.ndarray:
    """Indices of the ``k`` source rows most like the target (sample matching), most similar first.

    A source row's score is its mean cosine similarity to its ``neighbours`` most similar target rows: a row is
    kept when target text like it exists, even when the target has several clusters (a similarity to the target's
    centroid would favour rows between them). The vectors are centred on the mean of all rows first: pooled
    transformer features share a large common component that makes every raw cosine close to 1.

    Args:
        source_x: ``[n_s, dim]``; target_x: ``[n_t, dim]``.
        k: how many source rows to return (at most ``n_s``).
        neighbours: target rows each score averages over (at most ``n_t``).
        chunk: source rows compared at once (memory: ``chunk * n_t`` floats).

    Returns:
        ``[k]`` int64 indices into ``source_x``.

    Raises:
        ValueError: ``k`` or ``neighbours`` below 1, or no target rows.
    """
    source_x, target_x = np.asarray(source_x, dtype=np.float64), np.asarray(target_x, dtype=np.float64)
    if k < 1 or neighbours < 1 or len(target_x) == 0:
        raise ValueError(f"need k >= 1, neighbours >= 1 and target rows; got k={k}, neighbours={neighbours}")
    centre = np.concatenate([source_x, target_x]).mean(axis=0)

    def unit(x: np.ndarray) -> np.ndarray:
        x = x - centre
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    source_u, target_u = unit(source_x), unit(target_x)
    neighbours = min(neighbours, len(target_u))
    scores = np.empty(len(source_u))
    for start in range(0, len(source_u), chunk):
        similarity = source_u[start : start + chunk] @ target_u.T  # [chunk, n_t]
        top = np.partition(similarity, len(target_u) - neighbours, axis=1)[:, -neighbours:]
        scores[start : start + chunk] = top.mean(axis=1)
    # A stable sort on the negated scores: ties keep the row order, so the selection is reproducible.
    return np.argsort(-scores, kind="stable")[: min(k, len(source_u))].astype(np.int64)

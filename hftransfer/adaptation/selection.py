"""Model selection under covariate shift: estimates of a model's *target* risk from labelled *source* validation
examples and their density ratios ``w = p_target(x) / p_source(x)``.

* Importance-weighted validation (Sugiyama, Krauledat and Müller 2007, IWCV): the validation losses (or
  correctness) averaged with weights ``w`` estimate the target's. Unbiased, but its variance grows with the
  weights' spread.
* DEV, deep embedded validation (You et al. 2019, "Towards accurate model selection in deep unsupervised domain
  adaptation"): the same weighted losses with a control variate. The true ratios average 1 over the source, so
  ``mean(w) - 1`` is a zero-mean variable correlated with the weighted losses; subtracting ``eta`` times it, with
  the ``eta`` that minimises the variance, lowers the variance at no cost in bias.

The weights come from :func:`validation_ratios`: the validation rows' features against the target's. Inputs are
one value per item: per example for sequence tasks; for token tasks per labelled token, each token carrying its
example's weight.
"""

from __future__ import annotations

import numpy as np

from hftransfer.adaptation.density_ratio import DEFAULT_CLIP, domain_classifier_ratios


def _checked(values: np.ndarray, weights: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    values, weights = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if values.shape != weights.shape or values.ndim != 1 or len(values) == 0:
        raise ValueError(
            f"{what} and weights must be non-empty 1-D arrays of one shape, got {values.shape} and {weights.shape}"
        )
    if (weights < 0).any():
        raise ValueError("weights must be >= 0")
    if weights.sum() <= 0:
        raise ValueError("weights sum to 0: no validation item carries any weight")
    return values, weights


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """``sum(w * v) / sum(w)``: the self-normalised importance-weighted mean (equal to ``mean(w * v)`` when the
    weights average 1; dividing by their sum keeps it a mean when they do not)."""
    values, weights = _checked(values, weights, "values")
    return float((weights * values).sum() / weights.sum())


def importance_weighted_validation(
    losses: np.ndarray, correct: np.ndarray, weights: np.ndarray
) -> dict[str, float]:
    """Importance-weighted validation loss and accuracy (IWCV), to rank checkpoints or runs by target risk.

    Args:
        losses: ``[items]`` per-item validation losses (cross-entropy).
        correct: ``[items]`` 1 where the prediction is right, 0 where not (bools accepted).
        weights: ``[items]`` density ratios of the items (any positive scale: the means are self-normalised).

    Returns:
        ``{"iw_loss", "iw_accuracy", "iw_ess"}``: the weighted means, and the weights' effective sample size (how
        many equally weighted items the estimate is worth; a small one means a noisy estimate).

    Raises:
        ValueError: arrays of different shapes, negative weights, or weights summing to 0.
    """
    losses, weights = _checked(losses, weights, "losses")
    correct, _ = _checked(np.asarray(correct, dtype=np.float64), weights, "correct")
    return {
        "iw_loss": weighted_mean(losses, weights),
        "iw_accuracy": weighted_mean(correct, weights),
        "iw_ess": float(weights.sum() ** 2 / (weights**2).sum()),
    }


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """Deep embedded validation risk (You et al. 2019): the importance-weighted loss with a control variate.

    With ``L_i = w_i * loss_i`` the weighted losses::

        eta  = -Cov(L, w) / Var(w)
        risk = mean(L) + eta * mean(w) - eta

    ``eta * (mean(w) - 1)`` has mean 0 when ``w`` are true density ratios, so it changes the variance, not the
    expectation. Pass the ratios as estimated (``domain_classifier_ratios(..., normalise=False)``, clipping
    allowed): weights normalised to mean 1 make the correction vanish, and equal weights (no variance) give the
    plain mean loss.

    Args:
        losses: ``[items]`` per-item validation losses.
        weights: ``[items]`` their density ratios.

    Returns:
        The estimated target risk (lower is better).

    Raises:
        ValueError: arrays of different shapes, negative weights, or weights summing to 0.
    """
    losses, weights = _checked(losses, weights, "losses")
    weighted = weights * losses
    if len(weights) < 2:
        return float(weighted.mean())
    variance = float(np.var(weights, ddof=1))
    # Equal weights carry no information about the correction (and Var = 0 leaves eta undefined): no correction.
    eta = -float(np.cov(weighted, weights, ddof=1)[0, 1]) / variance if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


def validation_ratios(
    validation_x: np.ndarray,
    target_x: np.ndarray,
    *,
    train_x: np.ndarray | None = None,
    clip: tuple[float, float] | None = DEFAULT_CLIP,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Density ratios ``p_target / p_source`` of the validation rows, as estimated (clipped, not normalised), for
    :func:`importance_weighted_validation` and :func:`dev_risk`.

    Args:
        validation_x: ``[n_val, dim]`` features of the labelled validation examples (one row per example).
        target_x: ``[n_t, dim]`` features of the unlabelled target text.
        train_x: the training examples' features; when given, the domain classifier learns the source side from
            training and validation rows together (more rows, a steadier classifier; the source distribution is
            the same), and only the validation rows' ratios are returned.
        clip / folds / seed: as in :func:`~hftransfer.adaptation.density_ratio.domain_classifier_ratios`.

    Returns:
        ``[n_val]`` ratios.
    """
    source_x = validation_x if train_x is None else np.concatenate([train_x, validation_x])
    ratios = domain_classifier_ratios(source_x, target_x, clip=clip, folds=folds, seed=seed, normalise=False)
    return ratios[len(source_x) - len(validation_x) :]

"""Transferability estimators: how well do frozen features suit a labelled task, without fine-tuning?

Each estimator takes features ``[n, dim]`` (one pooled vector per example or token, from one encoder layer) and
the task's labels, and returns one number where higher means "transfers better". The advisor ranks encoders and
layers by these numbers; fine-tuning every candidate would cost hours, these cost seconds.

- :func:`logme`: the log evidence of a Bayesian linear model on the features (You et al., ICML 2021).
- :func:`h_score`: between-class over total feature covariance (Bao et al., ICIP 2019), by default with the
  shrinkage of Ibrahim, Ponomareva & Bhatt (ICLR 2022), which keeps it stable when ``dim`` nears ``n``.
- :func:`~hftransfer.advisor.probes.knn_score`: cross-validated kNN macro-F1, a non-parametric check that needs no evaluation split.
- :func:`~hftransfer.advisor.probes.linear_probe_score`: macro-F1 of a logistic regression trained on one split and scored on another.

Pure numpy and scikit-learn. Labels follow the Hugging Face convention, so ``-100`` (the ignore index) must be
dropped before scoring: a position nobody labelled is not a class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf

IGNORE_INDEX = -100

# alpha and beta stay inside [1e-100, 1e100]: keeps logs and divisions finite in degenerate cases (constant
# features give gamma = 0; a target inside F's span gives a zero residual); real cases stay far inside.
_BOUNDS = (1e-100, 1e100)


@dataclass(frozen=True)
class Estimator:
    """What the advisor needs to know about an estimator besides its function."""

    name: str
    needs_eval: bool  # scored on a separate evaluation split (else on the training features alone)
    description: str


ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
        Estimator("logme", False, "log evidence of a Bayesian linear model on the features (per sample)"),
        Estimator("h_score", False, "between-class / total feature covariance, Ledoit-Wolf shrunk"),
        Estimator("knn", False, "cross-validated kNN macro-F1 (cosine)"),
        Estimator("linear_probe", True, "logistic-regression macro-F1 on the evaluation split"),
    )
}


def _check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, dim], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf ({int((~np.isfinite(x)).sum())} values)")
    return x


def _check_labels(labels: np.ndarray, n: int, name: str = "labels", min_classes: int = 2) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be 1-D with one label per feature row ({n}), got shape {y.shape}")
    # Whole floats (1.0, from a float column) are accepted as ids; anything else is not a class label.
    whole_floats = y.dtype.kind == "f" and np.isfinite(y).all() and (y % 1 == 0).all()
    if y.dtype.kind not in "iub" and not whole_floats:
        raise ValueError(f"{name} must be integer class ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if (y == IGNORE_INDEX).any():
        raise ValueError(
            f"{name} contain {IGNORE_INDEX} (the ignore index) at {int((y == IGNORE_INDEX).sum())} "
            "positions; drop ignored positions first"
        )
    classes = np.unique(y)
    if len(classes) < min_classes:
        raise ValueError(
            f"{name} hold {len(classes)} class(es) {classes.tolist()}; at least {min_classes} are needed"
        )
    return y


def log_evidence(features: np.ndarray, targets: np.ndarray, alpha: float, beta: float) -> float:
    """Log marginal likelihood ``log p(y | F, alpha, beta)`` of Bayesian linear regression, computed directly.

    Model: ``y = F w + noise``, ``w ~ N(0, alpha^-1 I)``, noise precision ``beta``. With ``A = alpha I + beta F^T F``
    and the posterior mean ``m = beta A^-1 F^T y``::

        L = n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 |F m - y|^2 - alpha/2 m^T m - 1/2 log|A|

    The reference that :func:`logme_fit`'s SVD shortcut is checked against; ``O(d^3)``.

    Args:
        features: ``[n, d]``.
        targets: ``[n]``, or ``[n, k]`` for ``k`` independent columns sharing alpha and beta (their L summed).

    Returns:
        The total log evidence ``L`` (not divided by ``n``).
    """
    f = _check_features(features)
    y = np.asarray(targets, dtype=np.float64).reshape(len(f), -1)  # [n, k]
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f  # [d, d]
    m = beta * np.linalg.solve(a, f.T @ y)  # [d, k]
    _, logdet = np.linalg.slogdet(a)
    per_column = (
        n / 2 * np.log(beta)
        + d / 2 * np.log(alpha)
        - n / 2 * np.log(2 * np.pi)
        - 0.5 * logdet
        - beta / 2 * ((f @ m - y) ** 2).sum(axis=0)
        - alpha / 2 * (m**2).sum(axis=0)
    )
    return float(per_column.sum())


def _fit_column(
    s2: np.ndarray, z: np.ndarray, res_out: float, n: int, d: int, max_iter: int, tol: float
) -> tuple[float, float, float]:
    """MacKay's fixed point for one target column, in the SVD basis of F (You et al. 2021, Algorithm 1).

    ``s2``: squared singular values ``[r]``; ``z = U^T y`` ``[r]``; ``res_out``: ``|y|^2`` outside F's column
    space. In this basis ``A`` is diagonal (``alpha + beta s2``, and ``alpha`` on the ``d - r`` directions F
    never reaches), so one iteration costs ``O(r)`` instead of a ``d x d`` solve.

    When ``n < d`` the evidence can have several local maxima, one often at ``beta -> inf`` (F interpolates y);
    like the paper we start at ``alpha = beta = 1`` and return the fixed point reached, so scores stay
    comparable with the reference implementation.
    """

    def terms(alpha: float, beta: float) -> tuple[np.ndarray, float, float]:
        t = alpha + beta * s2  # [r] eigenvalues of A along F's right singular vectors
        mm = (beta**2 * s2 * z**2 / t**2).sum()  # m^T m
        return t, mm, ((alpha * z / t) ** 2).sum() + res_out  # |F m - y|^2

    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        t, mm, res = terms(alpha, beta)
        gamma = (beta * s2 / t).sum()  # effective number of well-determined weights
        new_alpha = float(np.clip(gamma / max(mm, _BOUNDS[0]), *_BOUNDS))
        new_beta = float(np.clip((n - gamma) / max(res, _BOUNDS[0]), *_BOUNDS))
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    t, mm, res = terms(alpha, beta)
    logdet = np.log(t).sum() + (d - len(s2)) * np.log(alpha)
    evidence = (
        n / 2 * np.log(beta / (2 * np.pi)) + d / 2 * np.log(alpha) - (beta * res + alpha * mm + logdet) / 2
    )
    return alpha, beta, float(evidence / n)


def _svd_parts(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of ``f [n, d]`` projected onto targets ``y [n, k]``: ``(s2 [r], z [r, k], res_out [k])``."""
    n, d = f.shape
    if n > 2 * d:
        # Many more rows than features (labelled words of a corpus): the eigendecomposition of the d x d Gram
        # matrix gives the same s^2 and U^T y as the thin SVD of f, at a small fraction of its cost.
        s2, v = np.linalg.eigh(f.T @ f)  # ascending; F^T F = V diag(s2) V^T
        s2 = np.clip(s2, 0.0, None)
        reached = s2 > s2.max() * 1e-12  # directions F spans numerically; the others carry no target signal
        vty = v.T @ (f.T @ y)  # [d, k] = diag(s) U^T y
        z = np.zeros_like(vty)
        z[reached] = vty[reached] / np.sqrt(s2[reached])[:, None]
        # The least-squares fit F w (w = V diag(1/s2) V^T F^T y), so the residual is y - F w, as below.
        w = v[:, reached] @ (vty[reached] / s2[reached][:, None])  # [d, k]
        res_out = ((y - f @ w) ** 2).sum(axis=0)
        return s2, z, res_out
    u, s, _ = np.linalg.svd(f, full_matrices=False)  # u [n, r], r = min(n, d)
    z = u.T @ y  # [r, k]
    # The residual is taken from y - U z, not |y|^2 - |z|^2, which cancels badly when y lies nearly in span(F).
    res_out = ((y - u @ z) ** 2).sum(axis=0)  # [k]
    return s**2, z, res_out


def logme_fit(
    features: np.ndarray, target: np.ndarray, *, max_iter: int = 100, tol: float = 1e-5
) -> tuple[float, float, float]:
    """Maximise the evidence of one target column over ``alpha, beta``: returns ``(alpha, beta, L / n)``."""
    f = _check_features(features)
    y = np.asarray(target, dtype=np.float64).reshape(len(f), 1)
    s2, z, res_out = _svd_parts(f, y)
    return _fit_column(s2, z[:, 0], float(res_out[0]), *f.shape, max_iter, tol)


def logme(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    regression: bool = False,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> float:
    """LogME (You et al., ICML 2021): the maximised log evidence per sample of a linear model on the features.

    A Bayesian linear regression is fitted to each target column (one-hot class indicators, or the regression
    targets) and its evidence ``L / n`` maximised over the prior and noise precisions; the score is the mean over
    columns. The evidence rewards fit and penalises complexity, so it needs no held-out split. One SVD of the
    features serves every column.

    Args:
        features: ``[n, dim]``.
        labels: ``[n]`` integer class ids, or with ``regression=True`` ``[n]`` / ``[n, k]`` float targets.
        max_iter, tol: fixed-point budget and relative tolerance on ``alpha`` and ``beta``.

    Raises:
        ValueError: bad shapes, NaN/inf, fewer than 2 classes, or ``-100`` labels.
    """
    f = _check_features(features)
    if regression:
        y = np.asarray(labels, dtype=np.float64)
        if y.ndim not in (1, 2) or len(y) != len(f):
            raise ValueError(
                f"regression targets must be [n] or [n, k] with n = {len(f)}, got shape {y.shape}"
            )
        if not np.isfinite(y).all():
            raise ValueError("regression targets contain NaN or inf")
        y = y.reshape(len(f), -1)
    else:
        ids = _check_labels(labels, len(f))
        y = (ids[:, None] == np.unique(ids)[None, :]).astype(np.float64)  # [n, num_classes] one-hot
    s2, z, res_out = _svd_parts(f, y)
    n, d = f.shape
    return float(
        np.mean(
            [_fit_column(s2, z[:, j], float(res_out[j]), n, d, max_iter, tol)[2] for j in range(y.shape[1])]
        )
    )


def h_score(features: np.ndarray, labels: np.ndarray, *, shrinkage: bool = True) -> float:
    """H-score (Bao et al., ICIP 2019): ``tr(cov(f)^-1 cov(E[f | y]))``, how much of the feature variance the
    class means explain, in whitened units; at most ``num_classes - 1``.

    With ``shrinkage=True`` (Ibrahim et al., ICLR 2022) ``cov(f)`` is Ledoit-Wolf shrunk, ``(1 - a) S + a mu I``,
    and the between-class covariance scaled by the same ``1 - a``: the plain inverse is dominated by the noise
    directions when ``dim`` is close to ``n`` (a 768-dim encoder on a few hundred examples), and ranks wrongly.
    Covariances use ``1/n`` throughout (as Ledoit-Wolf does); with ``shrinkage=False`` the choice cancels.
    """
    f = _check_features(features)
    ids = _check_labels(labels, len(f))
    f = f - f.mean(axis=0)
    classes, inverse = np.unique(ids, return_inverse=True)
    means = np.stack([f[inverse == c].mean(axis=0) for c in range(len(classes))])  # [num_classes, d]
    g = means[inverse]  # [n, d] each row replaced by its class mean
    cov_g = g.T @ g / len(f)
    if shrinkage:
        lw = LedoitWolf(assume_centered=True).fit(f)
        cov_f, cov_g = lw.covariance_, (1 - lw.shrinkage_) * cov_g
    else:
        cov_f = f.T @ f / len(f)
    return float(np.sum(np.linalg.pinv(cov_f, hermitian=True) * cov_g.T))  # trace of the product

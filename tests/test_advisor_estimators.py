"""Transferability estimators: LogME against its closed form and the Gaussian marginal likelihood, H-score by hand,
kNN / linear probe on separable vs random data, and input validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal
from sklearn.covariance import LedoitWolf
from sklearn.metrics import f1_score

from hftransfer.advisor.estimators import (
    ESTIMATORS,
    h_score,
    log_evidence,
    logme,
    logme_fit,
)
from hftransfer.advisor.probes import knn_score, linear_probe_score


def _regression(n: int, d: int, seed: int = 0, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, d))
    return f, f @ rng.normal(size=d) + noise * rng.normal(size=n)


def _clusters(n: int, num_classes: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classes around distinct axis directions: separable by direction (cosine kNN) and linearly."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    return 5.0 * np.eye(d)[labels] + 0.3 * rng.normal(size=(n, d)), labels


@pytest.mark.parametrize(("n", "d"), [(20, 1), (15, 4), (5, 12)])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.3, 7.0), (20.0, 0.05)])
def test_log_evidence_is_the_gaussian_marginal_likelihood(n, d, alpha, beta):
    # Integrating w out of y = F w + noise leaves y ~ N(0, F F^T / alpha + I / beta), for any alpha and beta.
    f, y = _regression(n, d, seed=n + d)
    covariance = f @ f.T / alpha + np.eye(n) / beta
    expected = multivariate_normal.logpdf(y, mean=np.zeros(n), cov=covariance)
    assert log_evidence(f, y, alpha, beta) == pytest.approx(expected, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize(("n", "d", "seed", "max_iter"), [(40, 3, 0, 100), (10, 20, 1, 3000)])
def test_logme_fit_is_the_evidence_maximum(n, d, seed, max_iter):
    # With n < d the maximum can lie on the boundary (beta -> inf when F interpolates y): this seed is one with an
    # interior maximum. It converges slowly (the posterior is barely determined), hence the larger budget.
    f, y = _regression(n, d, seed=seed)
    alpha, beta, evidence = logme_fit(f, y, max_iter=max_iter, tol=1e-5 if n > d else 1e-9)
    # The SVD shortcut's evidence is the closed form at the same alpha, beta.
    assert evidence == pytest.approx(log_evidence(f, y, alpha, beta) / n, abs=1e-10)
    # An independent optimiser over log alpha, log beta of the closed form, started elsewhere, agrees.
    result = minimize(
        lambda p: -log_evidence(f, y, np.exp(p[0]), np.exp(p[1])) / n,
        x0=[2.0, -2.0],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20_000},
    )
    assert np.exp(result.x) == pytest.approx([alpha, beta], rel=1e-3)
    assert evidence == pytest.approx(-result.fun, abs=1e-6)


def test_logme_fit_follows_a_maximum_on_the_boundary():
    # n < d and y inside F's span: from alpha = beta = 1 the iteration climbs to a local maximum at beta -> inf
    # (F interpolates y). The evidence stays finite, and no nearby point of the closed form does better. (This
    # data also has a higher interior maximum at alpha ~ 3.5, beta ~ 0.08: the paper's iteration is local.)
    f, y = _regression(10, 20, seed=0)
    # beta grows by a roughly constant factor per step and never meets tol; 1000 steps take it to ~1e13.
    alpha, beta, evidence = logme_fit(f, y, max_iter=1000)
    assert np.isfinite(evidence) and beta > 1e6
    # beta up to 1e4 only: the direct closed form loses digits once beta F^T F dwarfs alpha I.
    nearby = [
        log_evidence(f, y, a, b) / 10
        for a in alpha * np.exp(np.linspace(-0.5, 0.5, 11))
        for b in np.exp(np.linspace(0, 9, 10))
    ]
    assert evidence >= max(nearby) - 1e-9


def test_logme_averages_the_per_column_evidence():
    f, _ = _regression(60, 5)
    labels = np.random.default_rng(1).integers(0, 3, 60)
    one_hot = [(labels == c).astype(float) for c in range(3)]
    assert logme(f, labels) == pytest.approx(np.mean([logme_fit(f, y)[2] for y in one_hot]), abs=1e-12)
    targets = np.stack(one_hot, axis=1) * 2.5 - 1.0
    per_column = [logme_fit(f, targets[:, j])[2] for j in range(3)]
    assert logme(f, targets, regression=True) == pytest.approx(np.mean(per_column), abs=1e-12)


def test_logme_ranks_informative_features_above_noise():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 16))
    labels = np.argmax(f @ rng.normal(size=(16, 4)), axis=1)  # linearly separable in f
    noise = rng.normal(size=f.shape)
    assert logme(f, labels) > logme(noise, labels)
    f, y = _regression(300, 16)
    assert logme(f, y, regression=True) > logme(noise, y, regression=True)


def test_h_score_by_hand_in_one_dimension():
    # In 1-D, tr(cov(f)^-1 cov(E[f|y])) is the between-class variance over the total variance.
    f = np.array([1.0, 2.0, 3.0, 7.0, 8.0, 9.0, 4.0, 6.0])
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    between = sum((labels == c).mean() * (f[labels == c].mean() - f.mean()) ** 2 for c in range(3))
    assert h_score(f[:, None], labels, shrinkage=False) == pytest.approx(between / f.var(), rel=1e-12)


def test_h_score_shrinkage_follows_its_definition():
    # H_a = tr(((1 - a) S + a mu I)^-1 (1 - a) B), mu = tr(S) / d, with a the Ledoit-Wolf shrinkage.
    rng = np.random.default_rng(0)
    f = rng.normal(size=(30, 20))
    labels = np.arange(30) % 3
    f[:, 0] += labels
    centred = f - f.mean(axis=0)
    s = centred.T @ centred / len(f)
    class_means = np.stack([centred[labels == c].mean(axis=0) for c in range(3)])
    b = sum((labels == c).mean() * np.outer(class_means[c], class_means[c]) for c in range(3))
    a = LedoitWolf().fit(f).shrinkage_
    shrunk = (1 - a) * s + a * np.trace(s) / s.shape[0] * np.eye(s.shape[0])
    expected = np.trace(np.linalg.solve(shrunk, (1 - a) * b))
    assert 0 < a < 1
    assert h_score(f, labels) == pytest.approx(expected, rel=1e-8)


def test_h_score_shrinkage_close_to_plain_when_well_conditioned_and_ranks_informative_first():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 5000)
    f = rng.normal(size=(5000, 4))
    f[:, 0] += labels
    plain, shrunk = h_score(f, labels, shrinkage=False), h_score(f, labels)
    assert shrunk == pytest.approx(plain, rel=0.05)
    noise = rng.normal(size=f.shape)
    assert plain > h_score(noise, labels, shrinkage=False)
    assert shrunk > h_score(noise, labels)


def test_knn_scores_separable_data_near_one_and_random_labels_near_chance():
    f, labels = _clusters(300, 3, 8)
    assert knn_score(f, labels) > 0.99
    noise = np.random.default_rng(0).normal(size=(600, 8))
    random_labels = np.random.default_rng(1).integers(0, 3, 600)
    assert abs(knn_score(noise, random_labels) - 1 / 3) < 0.1


def test_knn_subsamples_deterministically_and_tolerates_rare_classes():
    f, labels = _clusters(400, 4, 8)
    labels[:2] = 9  # a class with fewer rows than folds: plain folds instead of stratified ones
    first = knn_score(f, labels, max_samples=200, seed=3)
    assert first == knn_score(f, labels, max_samples=200, seed=3)
    assert 0.0 <= first <= 1.0


def test_linear_probe_scores_separable_data_near_one_and_random_labels_near_chance():
    f, labels = _clusters(400, 3, 8)
    assert linear_probe_score(f[:200], labels[:200], f[200:], labels[200:]) > 0.99
    rng = np.random.default_rng(0)
    noise, random_labels = rng.normal(size=(1200, 8)), rng.integers(0, 3, 1200)
    score = linear_probe_score(noise[:600], random_labels[:600], noise[600:], random_labels[600:])
    assert abs(score - 1 / 3) < 0.1


def test_linear_probe_ignore_label_leaves_that_class_out_of_the_average():
    # Trained on three clean clusters; in eval, the class-2 rows sit in class 1's cluster, so the probe predicts
    # 0 -> 0, 1 -> 1, 2 -> 1. Class 0 (the "O" of NER) is perfect and would lift the average.
    train_f, train_labels = _clusters(300, 3, 6)
    rng = np.random.default_rng(1)
    eval_labels = np.array([0] * 40 + [1] * 10 + [2] * 10)
    cluster = np.where(eval_labels == 2, 1, eval_labels)
    eval_f = 5.0 * np.eye(6)[cluster] + 0.3 * rng.normal(size=(60, 6))
    with_o = f1_score(eval_labels, cluster, average="macro", zero_division=0)
    without_o = f1_score(eval_labels, cluster, labels=[1, 2], average="macro", zero_division=0)
    assert with_o != pytest.approx(without_o)
    args = (train_f, train_labels, eval_f, eval_labels)
    assert linear_probe_score(*args) == pytest.approx(with_o)
    assert linear_probe_score(*args, ignore_label=0) == pytest.approx(without_o)


def test_estimator_table():
    assert sorted(ESTIMATORS) == ["h_score", "knn", "linear_probe", "logme"]
    assert [name for name, e in ESTIMATORS.items() if e.needs_eval] == ["linear_probe"]
    assert all(e.name == name and e.description for name, e in ESTIMATORS.items())


_SCORERS = {
    "logme": logme,
    "h_score": h_score,
    "knn": lambda f, y: knn_score(f, y, folds=2),
    "linear_probe": lambda f, y: linear_probe_score(f, y, f, y),
}


@pytest.mark.parametrize("name", sorted(_SCORERS))
@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.zeros(8), np.arange(8) % 2, "2-D"),
        (np.zeros((8, 3)), np.arange(7) % 2, "one label per feature row"),
        (np.zeros((8, 3)), np.zeros(8, dtype=int), "at least 2"),
        (np.full((8, 3), np.nan), np.arange(8) % 2, "NaN or inf"),
        (np.ones((8, 3)), np.array([0, 1, 0, 1, -100, 1, 0, 1]), "drop ignored positions first"),
        (np.ones((8, 3)), np.arange(8) % 2 + 0.5, "integer class ids"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(name, features, labels, message):
    with pytest.raises(ValueError, match=message):
        _SCORERS[name](features, labels)


def test_linear_probe_names_a_single_class_train_split_and_width_mismatch():
    f = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="train_labels hold 1 class"):
        linear_probe_score(f, np.full(10, 4), f, np.arange(10) % 2)
    with pytest.raises(ValueError, match="width"):
        linear_probe_score(f, np.arange(10) % 2, f[:, :2], np.arange(10) % 2)
    with pytest.raises(ValueError, match="only the ignored class"):
        linear_probe_score(f, np.arange(10) % 2, f, np.zeros(10, dtype=int), ignore_label=0)


def test_logme_regression_rejects_non_finite_targets():
    with pytest.raises(ValueError, match="NaN or inf"):
        logme(np.ones((4, 2)), np.array([0.0, np.inf, 1.0, 2.0]), regression=True)

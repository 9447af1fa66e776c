"""Label-shift adaptation: estimate the target domain's class frequencies from unlabelled target text and move the
classifier's decision boundary to them (``label_shift.method=em``).

When the classes are not as frequent in the target domain as in the labelled source data (Drugs.com reviews are
72% positive, movie reviews 58% fresh), a classifier trained on the source draws its boundary for the source's
frequencies. If ``p(x | y)`` is the same in both domains, Bayes' rule says the target posterior is the source one
re-weighted by ``pi_target(y) / pi_source(y)``, and the target frequencies are the fixed point of averaging those
re-weighted posteriors over the unlabelled target texts: the EM procedure of Saerens, Latinne & Decaestecker
(2002). EM trusts the posteriors, so they are calibrated first on the labelled source validation split: one
temperature and one bias per class fitted by negative log-likelihood (bias-corrected temperature scaling, which
Alexandari, Kundaje & Shrikumar (2020) found makes EM's estimates reliable).

EM's estimate is only as good as the source model's posteriors on target texts, and under covariate shift they are
biased (the movie-review model reads drug reviews as mostly negative, and EM amplifies that: docs/results.md). The
``zeroshot`` estimate asks a classifier that never saw the source domain instead: a sentence encoder comparing
each target text with the labels' descriptions (``hftransfer/zeroshot.py``), and counts its answers.

Everything folds into the classifier's output layer: ``logits' = logits / T + b + log(pi_target / pi_source)`` is
``W / T`` and a new bias, so the exported model stays a plain transformers model that ``pipeline`` loads and that
predicts with the adapted boundary. No target label is read: the texts come from a named source.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from scipy.special import softmax

logger = logging.getLogger("hftransfer")
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_calibration(
    logits: np.ndarray, labels: np.ndarray, kind: str = "bcts", steps: int = 200
) -> tuple[float, np.ndarray]:
    """``(temperature, per-class bias)`` minimising the negative log-likelihood of ``softmax(logits / T + b)`` on
    labelled examples (``kind``: ``bcts`` fits both, ``temperature`` the temperature alone, ``none`` neither).

    ``T`` stays within ``TEMPERATURE_RANGE``: on a validation split the model separates perfectly (or one it
    scores almost constantly) the likelihood keeps improving as ``T`` goes to 0, and folding ``1 / T`` into the
    output layer would then blow its weights up."""
    classes = logits.shape[1]
    if kind == "none":
        return 1.0, np.zeros(classes)
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=kind == "bcts")
    parameters = [log_t, bias] if kind == "bcts" else [log_t]
    optimizer = torch.optim.LBFGS(parameters, lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / _bounded(log_t).exp() + bias, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    centred = (bias - bias.mean()).detach().numpy()  # softmax ignores a common shift
    bounded = _bounded(log_t.detach())
    temperature = float(bounded.exp())
    # Compared in log space: exp(log(bound)) need not equal the bound bit for bit.
    if bounded != log_t.detach():
        logger.warning("label shift: the calibration temperature stopped at its bound %.3g", temperature)
    return temperature, centred


def _bounded(log_t: torch.Tensor) -> torch.Tensor:
    return log_t.clamp(math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1]))


def em_target_prior(
    probabilities: np.ndarray, source_prior: np.ndarray, max_iter: int = 200, tol: float = 1e-6
) -> tuple[np.ndarray, int]:
    """The target class frequencies that make the re-weighted posteriors of the target texts average to
    themselves (Saerens et al. 2002), starting from ``source_prior``; ``(prior, iterations)``.

    Args:
        probabilities: ``[texts, classes]`` calibrated source-model posteriors of the unlabelled target texts.
        source_prior: the class frequencies the posteriors were trained under.
    """
    source_prior = np.asarray(source_prior, dtype=np.float64)
    prior = source_prior.copy()
    for iteration in range(1, max_iter + 1):
        weighted = probabilities * (prior / source_prior)
        weighted /= weighted.sum(axis=1, keepdims=True)
        updated = weighted.mean(axis=0)
        if np.abs(updated - prior).max() < tol:
            return updated, iteration
        prior = updated
    return prior, max_iter


def predicted_shares(predicted: np.ndarray, classes: int) -> np.ndarray:
    """Each class's share of ``predicted`` (class ids), add-one smoothed so that no class's frequency is 0 (its
    shift would be infinite: it could never be predicted again)."""
    counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=classes)[:classes]
    return (counts + 1.0) / (counts.sum() + classes)


def fold_into_output_layer(layer: torch.nn.Linear, temperature: float, bias: np.ndarray) -> None:
    """Make ``layer`` compute ``layer(x) / temperature + bias`` (in place)."""
    with torch.no_grad():
        layer.weight.div_(temperature)
        layer.bias.div_(temperature).add_(
            torch.as_tensor(bias, dtype=layer.bias.dtype, device=layer.bias.device)
        )


def adapt_to_label_shift(
    layer: torch.nn.Linear,
    validation: tuple[np.ndarray, np.ndarray],
    target_logits: np.ndarray,
    source_prior: np.ndarray | None,
    label_names: list[str],
    settings: Any,
    target_prior: np.ndarray | None = None,
) -> dict[str, Any]:
    """Calibrate on ``validation`` (logits, labels), estimate the target prior from ``target_logits`` (EM; or take
    ``target_prior``, estimated otherwise) and fold the calibration and the prior shift into ``layer``; returns
    what ``metrics.json`` records under ``label_shift``.

    The source frequencies EM starts from are the calibrated posteriors' mean on the validation split (with a
    fitted bias it equals the split's class frequencies), so that target texts the model sees as it sees source
    texts move nothing; uncalibrated (``calibration: none``), the training split's frequencies ``source_prior``.
    """
    temperature, calibration_bias = fit_calibration(*validation, kind=settings.calibration)
    if settings.calibration != "none":
        source_prior = softmax(validation[0] / temperature + calibration_bias, axis=1).mean(axis=0)
    iterations = None
    if target_prior is None:
        probabilities = softmax(target_logits / temperature + calibration_bias, axis=1)
        target_prior, iterations = em_target_prior(
            probabilities, source_prior, max_iter=settings.max_iter, tol=settings.tol
        )
    # Floors keep a class EM drove to ~0 from an infinite shift (it would never be predicted again).
    shift = np.log(np.maximum(target_prior, 1e-6) / np.maximum(source_prior, 1e-6))
    total = calibration_bias + shift
    fold_into_output_layer(layer, temperature, total - total.mean())
    before = np.bincount(target_logits.argmax(axis=1), minlength=len(label_names)) / len(target_logits)
    after = np.bincount((target_logits / temperature + total).argmax(axis=1), minlength=len(label_names))
    report = {
        "method": settings.method,
        "calibration": settings.calibration,
        "temperature": round(temperature, 5),
        "calibration_bias": _by_label(calibration_bias, label_names),
        "source_prior": _by_label(source_prior, label_names),
        "target_prior": _by_label(target_prior, label_names),
        **({"em_iterations": iterations} if iterations is not None else {}),
        "target_texts": len(target_logits),
        "predicted_share_before": _by_label(before, label_names),
        "predicted_share_after": _by_label(after / len(target_logits), label_names),
    }
    logger.info(
        "label shift: target class frequencies estimated at %s by %s (source %s, temperature %.3f); "
        "predicted shares on the target texts %s -> %s",
        report["target_prior"],
        f"EM ({iterations} iterations)" if iterations is not None else settings.method,
        report["source_prior"],
        temperature,
        report["predicted_share_before"],
        report["predicted_share_after"],
    )
    return report


def _by_label(values: np.ndarray, label_names: list[str]) -> dict[str, float]:
    return {name: round(float(value), 5) for name, value in zip(label_names, values)}

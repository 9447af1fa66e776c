"""Mean squared error, Pearson and Spearman correlation of real-valued predictions, as an ``evaluate`` metric.

Load it with ``evaluate.load(hftransfer.evaluation.metric_path("regression"))``; a local file, so it loads offline.
Self-contained on purpose: ``evaluate.load`` copies this one file and imports the copy.

MSE is in the squared units of the target; the two correlations ignore scale and offset (Pearson: linear
agreement; Spearman: agreement of the ranks, what a ranking or an ordinal rating cares about). A correlation of
constant predictions or references is undefined and reported as NaN, not as an error: a model that collapsed to one
value early in training must still be evaluable.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr

_DESCRIPTION = """Mean squared error, Pearson and Spearman correlation between predictions and references."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted values.
    references: gold values.
Returns:
    ``mse``, ``pearson``, ``spearman`` (NaN where undefined: fewer than two values, or a constant input).
Examples:
    >>> metric = evaluate.load(hftransfer.evaluation.metric_path("regression"))
    >>> metric.compute(predictions=[1.0, 2.0, 4.0], references=[1.0, 2.0, 3.0])["spearman"]
    1.0
"""


def regression_scores(references: Sequence[float], predictions: Sequence[float]) -> dict:
    """The metric's result for gold and predicted values.

    Raises:
        ValueError: ``references`` and ``predictions`` differ in length.
    """
    true = np.asarray(references, dtype=np.float64)
    pred = np.asarray(predictions, dtype=np.float64)
    if true.shape != pred.shape:
        raise ValueError(f"references {true.shape} and predictions {pred.shape} differ in shape")
    mse = float(np.mean((pred - true) ** 2)) if true.size else math.nan
    defined = true.size >= 2 and np.ptp(true) > 0 and np.ptp(pred) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on near-constant input; the NaN rule above decides
        pearson = float(pearsonr(pred, true)[0]) if defined else math.nan
        spearman = float(spearmanr(pred, true)[0]) if defined else math.nan
    return {"mse": mse, "pearson": pearson, "spearman": spearman}


class Regression(evaluate.Metric):
    """MSE / Pearson / Spearman (see the module docstring)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/stats.html"],
        )

    def _compute(self, predictions: list[float], references: list[float]) -> dict:
        return regression_scores(references, predictions)

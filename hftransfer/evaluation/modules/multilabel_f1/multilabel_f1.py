"""Micro- and macro-F1 of multi-label classification (any number of labels per example), with per-label scores,
as an ``evaluate`` metric.

Load it with ``evaluate.load(hftransfer.evaluation.metric_path("multilabel_f1"), label_names=[...])``; a local
file, so it loads offline. Self-contained on purpose: ``evaluate.load`` copies this one file and imports the copy.

Inputs are multi-hot rows (``[0, 1, 1]``: labels 1 and 2). Micro-F1 pools every (example, label) decision, so
frequent labels dominate it; macro-F1 averages the labels' F1, so a rare label counts as much as a common one.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import precision_recall_fscore_support

_DESCRIPTION = """Micro precision / recall / F1, macro-F1 and per label precision / recall / F1 / support of
multi-hot predictions, with flat keys (``per_class/<name>/f1``)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one multi-hot row (0/1 per label) per example.
    references: gold multi-hot rows, same shape.
    label_names (optional): the name of each label; overrides the one given to ``evaluate.load``. Without either,
        labels are named by their index.
Returns:
    ``micro_precision``, ``micro_recall``, ``micro_f1``, ``macro_f1`` and
    ``per_class/<name>/{precision,recall,f1,support}``.
Examples:
    >>> metric = evaluate.load(hftransfer.evaluation.metric_path("multilabel_f1"))
    >>> metric.compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]])["micro_f1"]
    0.8
"""


def multilabel_scores(
    references: Sequence[Sequence[int]], predictions: Sequence[Sequence[int]], label_names: Sequence[str]
) -> dict:
    """The metric's result for gold and predicted multi-hot rows and the name of every label.

    Raises:
        ValueError: the rows do not all have one entry per label, or the two differ in shape.
    """
    shape = (len(references), len(label_names))
    true, pred = np.asarray(references, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if true.shape != shape or pred.shape != shape:
        raise ValueError(
            f"references {true.shape} and predictions {pred.shape}: expected {shape} (examples, labels)"
        )
    metrics: dict = {}
    for average in ("micro", "macro"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            true, pred, average=average, zero_division=0
        )
        if average == "micro":
            metrics["micro_precision"], metrics["micro_recall"] = float(precision), float(recall)
        metrics[f"{average}_f1"] = float(f1)
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, average=None, zero_division=0
    )
    for index, name in enumerate(label_names):
        metrics[f"per_class/{name}/precision"] = float(precision[index])
        metrics[f"per_class/{name}/recall"] = float(recall[index])
        metrics[f"per_class/{name}/f1"] = float(f1[index])
        metrics[f"per_class/{name}/support"] = int(support[index])
    return metrics


class MultilabelF1(evaluate.Metric):
    """Multi-label micro / macro F1 (see the module docstring).

    Args:
        label_names: the name of each label, the default of every ``compute``.
    """

    def __init__(self, label_names: Sequence[str] | None = None, **kwargs) -> None:
        self.label_names = list(label_names) if label_names is not None else None
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/model_evaluation.html#multilabel-ranking-metrics"
            ],
        )

    def _compute(
        self,
        predictions: list[list[int]],
        references: list[list[int]],
        label_names: Sequence[str] | None = None,
    ) -> dict:
        names = label_names if label_names is not None else self.label_names
        if names is None:
            names = [str(i) for i in range(len(references[0]) if references else 0)]
        return multilabel_scores(references, predictions, names)

"""Accuracy, macro-F1 and per-class precision / recall / F1 of single-label classification, as an ``evaluate``
metric.

Load it with ``evaluate.load(hftransfer.evaluation.metric_path("accuracy_f1"), label_names=[...])``; a local file,
so it loads offline. Self-contained on purpose: ``evaluate.load`` copies this one file and imports the copy.

Inputs are class ids (the ``label_mapping`` of ``evaluate.evaluator("text-classification")`` turns a pipeline's
label names into ids). Macro-F1 averages over every class of ``label_names``, present in the data or not, so that
a class the model never predicts and the split never contains still counts (as 0), and scores of two splits are
comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

_DESCRIPTION = """Accuracy, macro-F1 over all classes, and per class precision / recall / F1 / support, with flat
keys (``per_class/<name>/f1``)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids.
    references: gold class ids.
    label_names (optional): the name of each class id; overrides the one given to ``evaluate.load``. Without
        either, the classes are ``0 .. max id`` named by their ids.
Returns:
    ``accuracy``, ``macro_f1`` and ``per_class/<name>/{precision,recall,f1,support}``.
Examples:
    >>> metric = evaluate.load(hftransfer.evaluation.metric_path("accuracy_f1"), label_names=["neg", "pos"])
    >>> metric.compute(predictions=[0, 1], references=[0, 0])["accuracy"]
    0.5
"""


def classification_scores(
    references: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
) -> dict:
    """The metric's result for gold and predicted class ids and the name of every class.

    Raises:
        ValueError: ``references`` and ``predictions`` differ in length.
    """
    if len(references) != len(predictions):
        raise ValueError("true and predicted labels differ in length")
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        references, predictions, labels=ids, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(references, predictions)) if len(references) else 0.0,
        "macro_f1": float(f1.mean()) if len(ids) else 0.0,
    }
    for index, name in enumerate(label_names):
        metrics[f"per_class/{name}/precision"] = float(precision[index])
        metrics[f"per_class/{name}/recall"] = float(recall[index])
        metrics[f"per_class/{name}/f1"] = float(f1[index])
        metrics[f"per_class/{name}/support"] = int(support[index])
    return metrics


class AccuracyF1(evaluate.Metric):
    """Accuracy / macro-F1 / per-class scores (see the module docstring).

    Args:
        label_names: the name of each class id (``id2label`` in order), the default of every ``compute``.
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
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(
        self, predictions: list[int], references: list[int], label_names: Sequence[str] | None = None
    ) -> dict:
        names = label_names if label_names is not None else self.label_names
        if names is None:
            names = [str(i) for i in range(max([*references, *predictions], default=-1) + 1)]
        return classification_scores(references, predictions, names)

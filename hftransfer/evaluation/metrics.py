"""Task metrics: entity-level seqeval for tagging, accuracy and F1 for classification, micro/macro F1 for
multi-label classification, MSE and correlations for regression.

Both are computed by the packaged ``evaluate`` modules (``evaluation/modules/``, loaded by
:func:`~hftransfer.evaluation.loading.load_metric`), so the numbers a run reports are the ones a user gets from
``evaluate.load(metric_path(...))`` or ``evaluate.evaluator(...)`` on the exported model.

Metric names are flat (``f1``, ``per_type/person/f1``) so they log to trackers as-is and any of them can be
chosen as ``train.metric_for_best``.
"""

from __future__ import annotations

from collections.abc import Sequence

from hftransfer.evaluation.loading import load_metric


def token_classification_metrics(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict:
    """Entity-level precision/recall/F1 (seqeval, strict IOB2: an entity counts only if its span and type match).

    Args:
        true_tags: gold IOB2 tags per sentence.
        pred_tags: predicted tags per sentence, same shapes.

    Returns:
        ``precision``, ``recall``, ``f1`` (micro over entities), ``accuracy`` (per word), ``num_entities`` and
        ``per_type/<type>/{precision,recall,f1,support}``.

    Raises:
        ValueError: the two differ in shape.
    """
    if len(true_tags) != len(pred_tags):  # evaluate's own message names neither argument
        raise ValueError("true and predicted tag sequences differ in shape")
    return load_metric("seqeval_strict").compute(
        predictions=[list(tags) for tags in pred_tags], references=[list(tags) for tags in true_tags]
    )


def sequence_classification_metrics(
    true_labels: Sequence[int], pred_labels: Sequence[int], label_names: Sequence[str]
) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1 (every class of ``label_names``, present or not).

    Returns:
        ``accuracy``, ``macro_f1``, ``per_class/<name>/{precision,recall,f1,support}``.

    Raises:
        ValueError: the two differ in length.
    """
    if len(true_labels) != len(pred_labels):
        raise ValueError("true and predicted labels differ in length")
    return load_metric("accuracy_f1", label_names=list(label_names)).compute(
        predictions=[int(label) for label in pred_labels], references=[int(label) for label in true_labels]
    )


def multilabel_classification_metrics(
    true_rows: Sequence[Sequence[int]], pred_rows: Sequence[Sequence[int]], label_names: Sequence[str]
) -> dict:
    """Micro precision/recall/F1, macro-F1 and per-label scores of multi-hot rows (``[0, 1, 1]``: labels 1, 2).

    Returns:
        ``micro_precision``, ``micro_recall``, ``micro_f1``, ``macro_f1``,
        ``per_class/<name>/{precision,recall,f1,support}``.
    """
    return load_metric("multilabel_f1", label_names=list(label_names)).compute(
        predictions=[list(map(int, row)) for row in pred_rows],
        references=[list(map(int, row)) for row in true_rows],
    )


def regression_metrics(true_values: Sequence[float], pred_values: Sequence[float]) -> dict:
    """``mse``, ``pearson`` and ``spearman`` (NaN where a correlation is undefined: constant values)."""
    return load_metric("regression").compute(
        predictions=[float(value) for value in pred_values],
        references=[float(value) for value in true_values],
    )

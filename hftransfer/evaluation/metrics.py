"""Task metrics: entity-level seqeval for tagging, accuracy and F1 for classification.

Metric names are flat (``f1``, ``per_type/person/f1``) so they log to trackers as-is and any of them can be
chosen as ``train.metric_for_best``.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqeval.metrics import classification_report as entity_report
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


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
    """
    if len(true_tags) != len(pred_tags) or any(len(t) != len(p) for t, p in zip(true_tags, pred_tags)):
        raise ValueError("true and predicted tag sequences differ in shape")
    words = sum(len(tags) for tags in true_tags)
    correct = sum(t == p for tags, preds in zip(true_tags, pred_tags) for t, p in zip(tags, preds))
    report = entity_report(
        [list(t) for t in true_tags],
        [list(p) for p in pred_tags],
        mode="strict",
        scheme=IOB2,
        output_dict=True,
        zero_division=0,
    )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
    metrics = {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": correct / words if words else 0.0,
        "num_entities": int(micro["support"]),
    }
    for entity_type, scores in sorted(report.items()):
        if entity_type.endswith(" avg"):
            continue
        metrics[f"per_type/{entity_type}/precision"] = float(scores["precision"])
        metrics[f"per_type/{entity_type}/recall"] = float(scores["recall"])
        metrics[f"per_type/{entity_type}/f1"] = float(scores["f1-score"])
        metrics[f"per_type/{entity_type}/support"] = int(scores["support"])
    return metrics


def sequence_classification_metrics(
    true_labels: Sequence[int], pred_labels: Sequence[int], label_names: Sequence[str]
) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1 (every class of ``label_names``, present or not).

    Returns:
        ``accuracy``, ``macro_f1``, ``per_class/<name>/{precision,recall,f1,support}``.
    """
    if len(true_labels) != len(pred_labels):
        raise ValueError("true and predicted labels differ in length")
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true_labels, pred_labels, labels=ids, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(true_labels, pred_labels)) if len(true_labels) else 0.0,
        "macro_f1": float(f1.mean()) if len(ids) else 0.0,
    }
    for index, name in enumerate(label_names):
        metrics[f"per_class/{name}/precision"] = float(precision[index])
        metrics[f"per_class/{name}/recall"] = float(recall[index])
        metrics[f"per_class/{name}/f1"] = float(f1[index])
        metrics[f"per_class/{name}/support"] = int(support[index])
    return metrics

"""Entity-level precision / recall / F1 under strict IOB2, with per-type scores, as an ``evaluate`` metric.

Load it with ``evaluate.load(hftransfer.evaluation.metric_path("seqeval_strict"))`` (a local file: no Hub, works
offline). It is self-contained on purpose: ``evaluate.load`` copies this one file into its modules cache and
imports it from there, so it may import installed libraries but nothing next to it.

Strict mode (seqeval's ``mode="strict", scheme=IOB2``) counts an entity only when its first tag is ``B-``, its
span and its type match; the lenient default of seqeval (and of the Hub's ``seqeval`` metric) also accepts an
entity that starts with ``I-``, which inflates scores of models that never learned where entities begin.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

_DESCRIPTION = """Entity-level precision, recall and F1 (micro over entities) under strict IOB2, per-word accuracy,
the number of gold entities, and per entity type precision / recall / F1 / support. Keys are flat
(``per_type/<type>/f1``) so they log to trackers as they are."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted IOB2 tags, one list per sentence (``[["B-per", "O"], ...]``).
    references: gold IOB2 tags, same shapes.
Returns:
    ``precision``, ``recall``, ``f1``, ``accuracy``, ``num_entities`` and
    ``per_type/<type>/{precision,recall,f1,support}``.
Examples:
    >>> metric = evaluate.load(hftransfer.evaluation.metric_path("seqeval_strict"))
    >>> metric.compute(predictions=[["I-per", "O"]], references=[["B-per", "O"]])["f1"]
    0.0
"""

_CITATION = """@misc{seqeval, title={seqeval: A Python framework for sequence labeling evaluation},
url={https://github.com/chakki-works/seqeval}, author={Hiroki Nakayama}, year={2018}}"""


def strict_entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict:
    """The metric's result for gold ``references`` and ``predictions`` (lists of tags per sentence).

    Raises:
        ValueError: a sentence has a different number of gold and predicted tags.
    """
    if len(references) != len(predictions) or any(len(t) != len(p) for t, p in zip(references, predictions)):
        raise ValueError("true and predicted tag sequences differ in shape")
    words = sum(len(tags) for tags in references)
    correct = sum(t == p for tags, preds in zip(references, predictions) for t, p in zip(tags, preds))
    report = classification_report(
        [list(t) for t in references],
        [list(p) for p in predictions],
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


class SeqevalStrict(evaluate.Metric):
    """Strict-IOB2 entity metrics (see the module docstring)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions: list[list[str]], references: list[list[str]]) -> dict:
        return strict_entity_scores(references, predictions)

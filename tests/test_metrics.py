"""seqeval (strict IOB2) and classification metrics."""

from __future__ import annotations

import pytest

from hftransfer.evaluation.metrics import sequence_classification_metrics, token_classification_metrics


def test_strict_entity_metrics_and_per_type():
    gold = [["B-per", "I-per", "O", "B-loc"], ["B-loc", "O"]]
    pred = [
        ["B-per", "I-per", "O", "O"],
        ["I-loc", "O"],
    ]  # strict IOB2: an entity starting with I- does not count
    metrics = token_classification_metrics(gold, pred)
    assert metrics["precision"] == pytest.approx(1.0)
    assert metrics["recall"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(0.5)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["per_type/per/f1"] == pytest.approx(1.0)
    assert metrics["per_type/loc/recall"] == pytest.approx(0.0)
    assert metrics["per_type/loc/support"] == 2


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        token_classification_metrics([["O", "O"]], [["O"]])


def test_classification_metrics_cover_absent_classes():
    metrics = sequence_classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["neg", "pos", "neutral"])
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["per_class/pos/precision"] == pytest.approx(2 / 3)
    assert metrics["per_class/neutral/support"] == 0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)

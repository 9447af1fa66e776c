"""Zero-shot classification by label descriptions: rows, prototypes of several descriptions, batch invariance,
any label set per call, the command line and its errors (tiny random encoder: behaviour, not accuracy)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hftransfer.cli import main
from hftransfer.errors import ConfigError
from hftransfer.toy import make_classification_examples, write_jsonl
from hftransfer.zeroshot import ZeroShotClassifier, describe

TEXTS = [
    "a film was very good",
    "this plot was very bad",
    "a movie",
    "this film was very very very good indeed",
]


@pytest.fixture(scope="module")
def classifier(tiny_model_dir) -> ZeroShotClassifier:
    return ZeroShotClassifier(str(tiny_model_dir), cpu=True, batch_size=2)


def test_each_text_gets_its_most_similar_label(classifier):
    rows = classifier.predict(TEXTS, ["good", "bad", "neutral"])
    assert [row["text"] for row in rows] == TEXTS
    for row in rows:
        assert list(row["scores"]) == ["good", "bad", "neutral"]
        assert row["label"] == max(row["scores"], key=row["scores"].get)
        assert row["score"] == max(row["scores"].values()) and -1.0 <= row["score"] <= 1.0
    # Another label set in the next call, with descriptions of its own.
    rows = classifier.predict(TEXTS, {"cinema": "a text about films", "food": "a text about cooking"})
    assert {row["label"] for row in rows} <= {"cinema", "food"}


def test_scores_are_cosines_to_normalised_prototypes(classifier):
    vectors = classifier.embed(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    descriptions = {"pos": ["great", "I loved it"], "neg": "awful"}
    names, prototypes = classifier.label_prototypes(descriptions)
    great, loved, awful = classifier.embed(["great", "I loved it", "awful"])
    expected = (great + loved) / np.linalg.norm(great + loved)
    assert names == ["pos", "neg"] and np.allclose(prototypes[0], expected, atol=1e-5)
    assert np.allclose(prototypes[1], awful, atol=1e-5)
    rows = classifier.predict(TEXTS, descriptions)
    assert rows[0]["scores"]["pos"] == pytest.approx(float(vectors[0] @ expected), abs=1e-4)


def test_a_threshold_calibrated_on_known_classes_labels_the_rest_none(classifier):
    labels = ["good", "bad"]
    threshold = classifier.calibrate(TEXTS, labels, keep=0.75)
    best = np.array([max(row["scores"].values()) for row in classifier.predict(TEXTS, labels)])
    assert threshold == pytest.approx(np.quantile(best, 0.25), abs=1e-4)
    rows = classifier.predict(TEXTS, labels, none_below=threshold, none_label="other")
    # The rows' scores are rounded: compare against the threshold with the unrounded similarities.
    names, prototypes = classifier.label_prototypes(labels)
    exact = (classifier.embed(TEXTS) @ prototypes.T).max(axis=1)
    assert [row["label"] == "other" for row in rows] == [value < threshold for value in exact]
    assert sum(row["label"] == "other" for row in rows) == 1  # one of four below the 25% quantile
    assert classifier.calibrate(TEXTS, labels, keep=1.0) == pytest.approx(exact.min(), abs=1e-6)
    with pytest.raises(ConfigError, match="keep=0"):
        classifier.calibrate(TEXTS, labels, keep=0)


def test_batching_does_not_change_the_embeddings(tiny_model_dir, classifier):
    whole = ZeroShotClassifier(str(tiny_model_dir), cpu=True, batch_size=64).embed(TEXTS)
    assert np.allclose(classifier.embed(TEXTS), whole, atol=1e-5)


def test_bad_labels_and_templates_are_refused():
    with pytest.raises(ConfigError, match="no \\{label\\}"):
        describe(["a", "b"], "This is it.")
    with pytest.raises(ConfigError, match="at least two labels"):
        describe(["a"], "{label}")
    with pytest.raises(ConfigError, match="each label once"):
        describe(["a", "a"], "{label}")
    with pytest.raises(ConfigError, match=r"\['b'\] have no description"):
        describe({"a": "x", "b": []}, "{label}")


def test_the_command_labels_and_scores_a_file(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "reviews.jsonl", make_classification_examples(12, seed=4))
    out = tmp_path / "pred.jsonl"
    argv = ["zero-shot", str(data), str(out), "--model", str(tiny_model_dir), "--cpu"]
    assert main([*argv, "--labels", "positive", "negative", "--template", "It was {label}."]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(
        row["label"] in ("positive", "negative") and "gold_label" in row for row in rows
    )
    metrics = json.loads((tmp_path / "pred.jsonl.metrics.json").read_text())
    accuracy = np.mean([row["label"] == row["gold_label"] for row in rows])
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert main([*argv, "--labels", "positive", "negative", "--none-below", "1.01"]) == 0  # above any cosine
    assert {json.loads(line)["label"] for line in out.read_text().splitlines()} == {"none"}
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"positive": ["good", "great"], "negative": "bad"}))
    assert main([*argv, "--label-file", str(labels)]) == 0
    capsys.readouterr()
    assert main([*argv, "--labels", "a", "b", "--label-file", str(labels)]) == 2
    assert "either as --labels" in capsys.readouterr().err

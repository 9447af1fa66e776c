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


@pytest.fixture(scope="module")
def nli_model_dir(tmp_path_factory, tiny_model_dir):
    """A tiny random BERT NLI classifier (entailment / neutral / contradiction) with the toy tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    directory = tmp_path_factory.mktemp("tiny-nli")
    config = BertConfig.from_pretrained(tiny_model_dir)
    config.id2label = {0: "ENTAILMENT", 1: "neutral", 2: "contradiction"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(3)
    BertForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


def test_an_nli_model_scores_each_text_with_each_description(nli_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    nli = ZeroShotClassifier(str(nli_model_dir), cpu=True, batch_size=3, template="this film was {label}")
    assert nli.nli == (0, 2)
    labels = {"good": ["this film was good", "a very good movie"], "bad": "this plot was bad"}
    rows = nli.predict(TEXTS, labels)
    model = AutoModelForSequenceClassification.from_pretrained(nli_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(nli_model_dir)

    def entail(text: str, hypothesis: str) -> float:
        with torch.no_grad():
            logits = model(**tokenizer(text, hypothesis, return_tensors="pt")).logits[0]
        return float(logits[[2, 0]].softmax(-1)[1])

    for text, row in zip(TEXTS, rows):
        good = (entail(text, "this film was good") + entail(text, "a very good movie")) / 2
        assert row["scores"]["good"] == pytest.approx(good, abs=1e-4)
        assert row["scores"]["bad"] == pytest.approx(entail(text, "this plot was bad"), abs=1e-4)
    names, scores = nli.scores(TEXTS, labels)  # unrounded: the rows' scores are rounded to 4 places
    assert [row["label"] for row in rows] == [names[i] for i in scores.argmax(axis=1)]
    # label names go through the template; a threshold works on entailment probabilities alike
    threshold = nli.calibrate(TEXTS, ["good", "bad"], keep=0.5)
    assert 0.0 <= threshold <= 1.0
    assert {r["label"] for r in nli.predict(TEXTS, ["good", "bad"], none_below=1.01)} == {"none"}
    with pytest.raises(ConfigError, match="no embeddings"):
        nli.embed(TEXTS)


@pytest.fixture(scope="module")
def designed_encoder_dir(tmp_path_factory):
    """An encoder whose embeddings are known: no layers, and word vectors that only positive and negative words
    have (two orthogonal zero-mean patterns that LayerNorm leaves as they are); every other token, position and
    segment embedding is zero, so a text's mean-pooled vector points along the patterns of its sentiment words."""
    import torch
    from transformers import BertModel

    from hftransfer.toy import NEGATIVE, POSITIVE, VOCAB, write_tiny_bert

    directory = write_tiny_bert(tmp_path_factory.mktemp("designed"), num_hidden_layers=0)
    model = BertModel.from_pretrained(directory)
    width = model.config.hidden_size
    positive = torch.tensor([1.0, -1.0] * (width // 2))
    negative = torch.tensor([1.0, 1.0, -1.0, -1.0] * (width // 4))
    with torch.no_grad():
        embeddings = model.embeddings
        for table in (
            embeddings.word_embeddings,
            embeddings.position_embeddings,
            embeddings.token_type_embeddings,
        ):
            table.weight.zero_()
        for word in POSITIVE:
            embeddings.word_embeddings.weight[VOCAB.index(word)] = positive
        for word in NEGATIVE:
            embeddings.word_embeddings.weight[VOCAB.index(word)] = negative
        embeddings.LayerNorm.weight.fill_(1.0)
        embeddings.LayerNorm.bias.zero_()
    model.save_pretrained(directory)
    return directory


def test_the_label_whose_description_shares_the_texts_meaning_wins(designed_encoder_dir):
    classifier = ZeroShotClassifier(str(designed_encoder_dir), cpu=True, template="this film was {label}")
    texts = ["a good movie", "this plot was awful", "a very dull film", "superb", "a film"]
    rows = classifier.predict(texts, ["great", "bad"])
    assert [row["label"] for row in rows[:4]] == ["great", "bad", "bad", "great"]
    assert rows[0]["scores"]["great"] == pytest.approx(1.0, abs=1e-3)  # the same direction as "great"
    assert rows[0]["scores"]["bad"] == pytest.approx(0.0, abs=1e-3)  # orthogonal patterns
    # "a film" has no sentiment word: its vector is zero, as similar to nothing as can be, so "none"
    threshold = classifier.calibrate(texts[:4], ["great", "bad"], keep=1.0)
    assert threshold == pytest.approx(1.0, abs=1e-3)
    predictions = classifier.predict(texts, ["great", "bad"], none_below=0.5)
    assert [row["label"] for row in predictions] == ["great", "bad", "bad", "great", "none"]

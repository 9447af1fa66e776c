"""data.train_per_class: K examples per class, drawn with a seed."""

from __future__ import annotations

from collections import Counter

import pytest
from datasets import Dataset

from hftransfer.config import DataConfig
from hftransfer.data.per_class import sample_per_class
from hftransfer.data.sources import load_task_data
from hftransfer.errors import ConfigError


def test_k_texts_per_label_seeded():
    train = Dataset.from_dict({"text": [f"t{i}" for i in range(30)], "label": ["a"] * 20 + ["b"] * 10})
    sampled, report = sample_per_class(train, "sequence-classification", 4, seed=1, source="train.jsonl")
    assert Counter(sampled["label"]) == {"a": 4, "b": 4} and report["counts"] == {"a": 4, "b": 4}
    again, _ = sample_per_class(train, "sequence-classification", 4, seed=1, source="train.jsonl")
    other, _ = sample_per_class(train, "sequence-classification", 4, seed=2, source="train.jsonl")
    assert again["text"] == sampled["text"] and other["text"] != sampled["text"]
    with pytest.raises(ConfigError, match=r"train.jsonl has fewer examples of \['b'\] \(b: 10\)"):
        sample_per_class(train, "sequence-classification", 11, seed=1, source="train.jsonl")


def test_ner_keeps_sentences_until_every_type_has_k():
    tags = [["B-PER", "O"], ["B-LOC"], ["O", "O"], ["B-PER", "B-LOC"], ["I-PER"], ["B-LOC", "I-LOC"]] * 3
    train = Dataset.from_dict({"tokens": [["w"] * len(t) for t in tags], "tags": tags})
    sampled, report = sample_per_class(train, "token-classification", 2, seed=0, source="train.conll")
    assert all(report["counts"][name] >= 2 for name in ("PER", "LOC"))
    assert all(any(tag != "O" for tag in sentence) for sentence in sampled["tags"])  # no entity-free sentence
    # each kept sentence counted for a type still short of K: at most 2 types x K = 4 sentences
    assert len(sampled) <= 4


def test_run_config_draws_from_the_training_split(tmp_path):
    rows = [f'{{"text": "text {i}", "label": "{"pos" if i % 3 else "neg"}"}}' for i in range(60)]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    config = DataConfig(train_file=str(tmp_path / "train.jsonl"), train_per_class=5, sample_seed=3)
    data = load_task_data(config, "sequence-classification")
    assert Counter(data.splits["train"]["label"]) == {"pos": 5, "neg": 5}
    assert data.report["splits"]["train"]["sampled_from"] == 48  # after carving validation and test out
    with pytest.raises(ConfigError, match="train_per_class draws K examples"):
        DataConfig(train_file="x.jsonl", train_per_class=5, problem_type="regression")


def test_label_descriptions_weigh_as_much_as_each_labels_examples(tmp_path):
    rows = [f'{{"text": "text {i}", "label": "{"pos" if i % 3 else "neg"}"}}' for i in range(60)]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    config = DataConfig(
        train_file=str(tmp_path / "train.jsonl"),
        train_per_class=4,
        label_descriptions={"neg": ["bad", "awful"]},
        label_template="It is {label}.",
    )
    data = load_task_data(config, "sequence-classification")
    train = data.splits["train"]
    added = Counter(zip(train["text"][8:], train["label"][8:]))
    assert added == {("bad", "neg"): 2, ("awful", "neg"): 2, ("It is pos.", "pos"): 4}
    assert data.report["label_descriptions"]["repeats"] == {"neg": 2, "pos": 4}
    with pytest.raises(ConfigError, match=r"describe every label"):
        load_task_data(
            DataConfig(train_file=str(tmp_path / "train.jsonl"), label_descriptions={"neg": "bad"}),
            "sequence-classification",
        )
    with pytest.raises(ConfigError, match=r"names \['neutral'\]"):
        load_task_data(
            DataConfig(
                train_file=str(tmp_path / "train.jsonl"),
                label_descriptions={"neutral": "meh"},
                label_template="{label}",
            ),
            "sequence-classification",
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"label_template": "no slot"}, "has no {label}"),
        ({"label_descriptions": {"pos": []}}, "must be a text or a list"),
        ({"label_descriptions": ["pos"]}, "must map label names"),
        (
            {"label_template": "{label}", "problem_type": "multi_label_classification"},
            "one class label per single",
        ),
    ],
)
def test_label_description_fields_are_checked(fields, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(train_file="train.jsonl", **fields)

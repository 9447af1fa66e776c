"""hftransfer.toy: the offline toy model and data that the notebooks and smoke runs use."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from transformers import AutoModelForTokenClassification, AutoTokenizer

from hftransfer.toy import ToyAssets, make_toy_assets


def test_toy_assets_are_written_and_load(tmp_path):
    toy = make_toy_assets(tmp_path / "toy")
    assert isinstance(toy, ToyAssets)
    assert set(toy.ner_files) == set(toy.sentiment_files) == {"train", "validation", "test"}
    assert all(path.is_file() for path in [*toy.ner_files.values(), *toy.sentiment_files.values()])

    sentences = toy.ner_files["train"].read_text().strip().split("\n\n")
    assert len(sentences) == 48
    tags = {line.split("\t")[1] for sentence in sentences for line in sentence.splitlines()}
    assert tags == {"O", "B-per", "I-per", "B-loc", "I-loc"}
    rows = [json.loads(line) for line in toy.sentiment_files["test"].read_text().splitlines()]
    assert len(rows) == 24 and {row["label"] for row in rows} == {"positive", "negative"}

    model = AutoModelForTokenClassification.from_pretrained(
        toy.model_dir, num_labels=5, id2label=dict(enumerate(["O", "B-per", "I-per", "B-loc", "I-loc"]))
    )
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    tokenizer = AutoTokenizer.from_pretrained(toy.model_dir)
    inputs = tokenizer(["alice lives in parisville ."], return_tensors="pt")
    assert (
        tokenizer.unk_token_id not in inputs["input_ids"][0].tolist()
    )  # every toy word is in the vocabulary
    with torch.no_grad():
        assert model(**inputs).logits.shape == (1, inputs["input_ids"].shape[1], 5)


def test_toy_assets_are_deterministic_and_leave_the_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = make_toy_assets(tmp_path / "a")
    assert torch.equal(
        torch.rand(3), expected
    )  # writing the model did not consume the caller's random numbers
    second = make_toy_assets(tmp_path / "b")

    for split in ("train", "validation", "test"):
        assert first.ner_files[split].read_bytes() == second.ner_files[split].read_bytes()
        assert first.sentiment_files[split].read_bytes() == second.sentiment_files[split].read_bytes()
    assert first.ner_files["train"].read_bytes() != first.ner_files["test"].read_bytes()
    weights = [load_file(toy.model_dir / "model.safetensors") for toy in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert (first.model_dir / "tokenizer.json").read_bytes() == (
        second.model_dir / "tokenizer.json"
    ).read_bytes()

    other = load_file(make_toy_assets(tmp_path / "c", seed=1).model_dir / "model.safetensors")
    assert not all(torch.equal(weights[0][name], other[name]) for name in other)

"""Starting from an earlier run (``model.name_or_path=<run dir>``): the run's exported model is used, the encoder is
kept weight for weight, and a head fine-tuned for other labels is replaced even when its size fits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from hftransfer.config import ModelConfig
from hftransfer.errors import ConfigError
from hftransfer.modeling.build import build_model, load_tokenizer
from hftransfer.modeling.source_model import model_directory


def _source_run(
    tiny_model_dir: Path, run: Path, labels: list[str], head_cls=AutoModelForSequenceClassification
):
    """A run directory whose ``model/`` is a task model fine-tuned for ``labels`` (its head set to a known value)."""
    model = head_cls.from_pretrained(
        tiny_model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    with torch.no_grad():
        model.classifier.weight.fill_(0.5)
        model.classifier.bias.fill_(0.25)
    model.save_pretrained(run / "model")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run / "model")
    (run / "metrics.json").write_text("{}")
    return model


def _encoder_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for (_, x), (_, y) in zip(a.bert.named_parameters(), b.bert.named_parameters())
    )


def test_a_run_directory_stands_for_its_exported_model(tiny_model_dir, tmp_path, caplog):
    source = _source_run(tiny_model_dir, tmp_path / "run", ["neg", "pos"])
    assert model_directory(str(tmp_path / "run")) == str(tmp_path / "run" / "model")
    assert model_directory(str(tmp_path / "run" / "model")) == str(tmp_path / "run" / "model")
    assert model_directory("minilm-l6") == "minilm-l6"  # aliases and Hub ids pass through
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        model = build_model(
            ModelConfig(name_or_path=str(tmp_path / "run")), "sequence-classification", ["neg", "pos"]
        )
    assert _encoder_equal(model, source)
    assert torch.equal(model.classifier.weight, source.classifier.weight)  # same labels: the head is kept
    assert "is a run directory" in caplog.text
    assert load_tokenizer(ModelConfig(name_or_path=str(tmp_path / "run"))).vocab_size > 0


def test_a_head_for_other_labels_is_replaced_even_when_its_size_fits(tiny_model_dir, tmp_path, caplog):
    source = _source_run(tiny_model_dir, tmp_path / "run", ["fresh", "rotten"])
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        model = build_model(
            ModelConfig(name_or_path=str(tmp_path / "run")),
            "sequence-classification",
            ["negative", "positive"],
        )
    assert _encoder_equal(model, source)
    assert not torch.equal(model.classifier.weight, source.classifier.weight)
    assert torch.count_nonzero(model.classifier.bias) == 0  # a new head's start
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert (
        "kept the encoder" in caplog.text and "new head (classifier.weight, classifier.bias)" in caplog.text
    )


def test_token_run_to_sequence_task_keeps_the_encoder(tiny_model_dir, tmp_path):
    source = _source_run(
        tiny_model_dir, tmp_path / "ner", ["O", "B-PER", "I-PER"], AutoModelForTokenClassification
    )
    model = build_model(
        ModelConfig(name_or_path=str(tmp_path / "ner")), "sequence-classification", ["a", "b", "c"]
    )
    assert _encoder_equal(model, source)
    assert not torch.equal(model.classifier.weight, source.classifier.weight)


def test_a_multitask_run_must_name_its_task(tmp_path, tiny_model_dir):
    root = tmp_path / "mt" / "model"
    for task in ("ner", "sentiment"):
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).save_pretrained(
            root / task
        )
    (root / "tasks.json").write_text(json.dumps({"tasks": ["ner", "sentiment"]}))
    with pytest.raises(ConfigError, match=r"multitask run.*model/ner.*tasks: ner, sentiment"):
        model_directory(str(tmp_path / "mt"))


def test_an_adapter_only_run_says_what_to_start_from(tmp_path):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="peft adapter only"):
        model_directory(str(tmp_path / "run"))


def test_a_lora_run_starts_the_next_task_from_its_merged_encoder(
    tiny_model_dir, classification_files, tmp_path
):
    # LoRA's default export (both): model/ is the merged model, adapter/ the adapter; the merged encoder is kept.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
    import finetune_classifier

    finetune_classifier.main(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={tmp_path / 'lora'}",
            f"data.train_file={classification_files['train']}",
            f"data.validation_file={classification_files['validation']}",
            "data.test_size=0",
            "strategy.name=lora",
            "strategy.r=2",
            "train.epochs=1",
            "train.lr=5e-3",
            "train.trackers=[]",
        ]
    )
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "lora" / "model")
    model = build_model(
        ModelConfig(name_or_path=str(tmp_path / "lora")), "token-classification", ["O", "B-PER", "I-PER"]
    )
    assert _encoder_equal(model, merged)
    pretrained = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    assert not _encoder_equal(model, pretrained)  # the adapter was folded in: this is not the base encoder

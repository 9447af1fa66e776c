"""Every strategy through the real recipes on a tiny model: what is exported, and that it loads and predicts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForTokenClassification, PeftModel
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from hftransfer.predict import predict_file
from hftransfer.strategies.lora import base_model_kwargs
from tests.conftest import recipe_argv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

_argv = recipe_argv


def test_frozen_ner_trains_from_the_cache_and_exports_a_plain_model(tiny_model_dir, ner_files, tmp_path):
    cache = tmp_path / "cache"
    argv = ["strategy.name=frozen", f"strategy.cache_dir={cache}", "train.epochs=20", "train.lr=5e-2"]
    first = finetune_ner.main(_argv(tiny_model_dir, ner_files, tmp_path / "a", *argv))
    assert not any(split["hit"] for split in first["strategy"]["feature_cache"].values())
    assert len(list(cache.glob("*.safetensors"))) == 3  # train, validation, test
    second = finetune_ner.main(_argv(tiny_model_dir, ner_files, tmp_path / "b", *argv))
    assert all(split["hit"] for split in second["strategy"]["feature_cache"].values())
    assert second["validation"]["f1"] == pytest.approx(first["validation"]["f1"])
    # another layer is another key: a miss
    third = finetune_ner.main(
        _argv(tiny_model_dir, ner_files, tmp_path / "c", *argv, "strategy.feature_layer=1")
    )
    assert not third["strategy"]["feature_cache"]["train"]["hit"]
    assert third["export"]["truncated_to_layer"] == 1

    assert first["export"]["kind"] == "native" and first["export"]["pipeline"]
    assert first["parameters"]["trainable_fraction"] < 0.05
    assert first["test"]["f1"] > 0.3  # the toy entities are separable from random features of their words
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "a" / "model")
    # the exported model scores the test file like the head did on cached features
    predicted = predict_file(
        str(tmp_path / "a" / "model"), str(ner_files["test"]), str(tmp_path / "pred.jsonl"), cpu=True
    )
    assert predicted.metrics["f1"] == pytest.approx(first["test"]["f1"], abs=1e-6)
    assert set(model.config.id2label.values()) == set(first["label_names"])


def test_frozen_classifier_mean_pooling_exports_encoder_and_head(
    tiny_model_dir, classification_files, tmp_path
):
    run_dir = tmp_path / "run"
    metrics = finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "strategy.name=frozen",
            "strategy.head=linear",
            "strategy.pooling=mean",
            f"strategy.cache_dir={tmp_path / 'cache'}",
            "train.epochs=10",
            "train.lr=1e-4",
            "strategy.head_lr=5e-2",  # the head is all that trains: its rate is the one that counts
        )
    )
    assert set(metrics["strategy"]["lr_groups"].values()) == {5e-2}
    assert metrics["export"]["kind"] == "encoder+head" and not metrics["export"]["pipeline"]
    predicted = predict_file(
        str(run_dir / "model"), str(classification_files["test"]), str(tmp_path / "pred.jsonl"), cpu=True
    )
    assert predicted.metrics["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)


def test_frozen_classifier_mlp_cls_is_native(tiny_model_dir, classification_files, tmp_path):
    run_dir = tmp_path / "run"
    metrics = finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "strategy.name=frozen",
            "strategy.head=mlp",
            "strategy.pooling=cls",
            f"strategy.cache_dir={tmp_path / 'cache'}",
            "train.epochs=5",
            "train.lr=1e-2",
        )
    )
    assert metrics["export"]["kind"] == "native"
    classifier = pipeline("text-classification", model=str(run_dir / "model"))
    assert classifier("a great film")[0]["label"] in metrics["label_names"]


@pytest.mark.parametrize("export", ["both", "adapter"])
def test_lora_ner_exports_adapter_and_merged_model(tiny_model_dir, ner_files, tmp_path, export):
    run_dir = tmp_path / "run"
    metrics = finetune_ner.main(
        _argv(
            tiny_model_dir,
            ner_files,
            run_dir,
            "strategy.name=lora",
            "strategy.r=4",
            f"strategy.lora_export={export}",
            "strategy.head_lr=1e-2",
            "strategy.layer_lr_decay=0.8",
            "train.epochs=6",
            "train.lr=1e-2",
        )
    )
    assert metrics["parameters"]["trainable_fraction"] < 0.2
    groups = metrics["strategy"]["lr_groups"]
    assert groups["head/decay"] == pytest.approx(1e-2) and groups["layer.0/decay"] == pytest.approx(
        1e-2 * 0.8
    )
    adapter_dir = run_dir / ("adapter" if export == "both" else "model")
    assert (adapter_dir / "adapter_model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    inputs = tokenizer(["alice lives in paris ."], return_tensors="pt")
    adapter = AutoPeftModelForTokenClassification.from_pretrained(
        adapter_dir, **base_model_kwargs(adapter_dir)
    )
    assert isinstance(adapter, PeftModel)
    with torch.no_grad():
        adapter_logits = adapter.eval()(**inputs).logits
    if export == "both":
        merged = AutoModelForTokenClassification.from_pretrained(run_dir / "model").eval()
        with torch.no_grad():
            assert torch.allclose(merged(**inputs).logits, adapter_logits, atol=1e-4)
        ner = pipeline("token-classification", model=str(run_dir / "model"), aggregation_strategy="simple")
        assert all(e["entity_group"] in {"per", "loc"} for e in ner("alice lives in paris ."))
    # the exported artefact scores the test split exactly as the run reported
    predicted = predict_file(
        str(run_dir / "model"), str(ner_files["test"]), str(tmp_path / "pred.jsonl"), cpu=True
    )
    assert predicted.metrics["f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-6)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["strategy"]["lora"]["target_modules"] == ["query", "value"]

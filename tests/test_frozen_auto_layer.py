"""``strategy.name=frozen strategy.feature_layer=auto`` through the real recipes, on tiny BERTs whose best layer is
known: the probe's choice lands in ``metrics.json`` and becomes the run's ``feature_layer``, the probe's encodings
are the run's feature cache, and the settings it cannot serve are refused with a ConfigError before any encoding.

An encoder layer whose output LayerNorm has zero weight and bias outputs zeros whatever its input, so zeroing every
layer leaves only the embeddings knowing the words that decide the labels.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel

from hftransfer.errors import ConfigError
from tests.conftest import PERSONS, PLACES, write_jsonl, write_tiny_bert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402


def zeroed_bert(directory: Path, layers: list[int]) -> Path:
    """The tiny BERT of ``conftest.py`` (seed 0) with encoder ``layers`` (0-based) outputting zeros."""
    write_tiny_bert(directory, seed=0)
    model = AutoModel.from_pretrained(directory)
    with torch.no_grad():
        for index in layers:
            model.encoder.layer[index].output.LayerNorm.weight.zero_()
            model.encoder.layer[index].output.LayerNorm.bias.zero_()
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def only_embeddings_dir(tmp_path_factory) -> Path:
    return zeroed_bert(tmp_path_factory.mktemp("only-emb"), [0, 1])


@pytest.fixture(scope="module")
def dead_top_dir(tmp_path_factory) -> Path:
    return zeroed_bert(tmp_path_factory.mktemp("dead-top"), [1])


def _argv(
    model_dir: Path, files: dict[str, Path], run_dir: Path, *extra: str, validation: bool = True
) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={run_dir}",
        f"data.train_file={files['train']}",
        *([f"data.validation_file={files['validation']}"] if validation else []),
        f"data.test_file={files['test']}",
        "train.batch_size=8",
        "train.epochs=1",
        "train.trackers=[]",
        "train.warmup_ratio=0",
        "strategy.name=frozen",
        "strategy.feature_layer=auto",
        f"strategy.cache_dir={run_dir.parent / 'cache'}",
        *extra,
    ]


def test_auto_layer_ner_run_uses_the_embeddings_and_reads_its_features_from_the_cache(
    only_embeddings_dir, ner_files, tmp_path
):
    extra = ("train.epochs=4", "train.lr=5e-2")
    first = finetune_ner.main(_argv(only_embeddings_dir, ner_files, tmp_path / "a", *extra))
    strategy = first["strategy"]
    auto = strategy["feature_layer_auto"]
    assert auto["chosen"] == "emb" and auto["metric"] == "linear probe macro-F1 on validation"
    assert list(auto["scores"]) == ["emb", "layer 1", "layer 2", "mean 1-2"]
    assert auto["scores"]["emb"] >= 0.9
    assert all(
        score <= auto["scores"]["emb"] - 0.4 for name, score in auto["scores"].items() if name != "emb"
    )
    assert strategy["feature_layer"] == 0 and strategy["feature_layers"] == 1  # absolute index of the choice
    on_disk = json.loads((tmp_path / "a" / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk["strategy"]["feature_layer_auto"] == auto and on_disk["strategy"]["feature_layer"] == 0
    # the saved config holds the concrete layer: the run can be repeated without probing again
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["strategy"]["feature_layer"] == 0 and saved["strategy"]["feature_layers"] == 1
    # The probe encoded train and validation at every layer: the run reads the chosen one from the cache.
    cache = strategy["feature_cache"]
    assert cache["train"]["hit"] and cache["validation"]["hit"] and not cache["test"]["hit"]
    # Trained on the embeddings, the head finds the entities; the export keeps no encoder layer.
    assert first["export"]["truncated_to_layer"] == 0 and first["export"]["max_abs_diff"] < 1e-4
    assert first["validation"]["f1"] > 0.6, first["validation"]  # zero features (layers 1-2) would find none

    second = finetune_ner.main(_argv(only_embeddings_dir, ner_files, tmp_path / "b", *extra))
    assert second["strategy"]["feature_layer_auto"] == auto
    assert all(split["hit"] for split in second["strategy"]["feature_cache"].values())
    assert second["strategy"]["feature_cache"]["train"]["key"] == cache["train"]["key"]
    assert second["strategy"]["feature_layer"] == 0


def test_auto_layer_classifier_run_avoids_a_dead_top_layer(dead_top_dir, classification_files, tmp_path):
    metrics = finetune_classifier.main(_argv(dead_top_dir, classification_files, tmp_path / "run"))
    strategy = metrics["strategy"]
    auto = strategy["feature_layer_auto"]
    assert auto["chosen"] != "layer 2"
    assert auto["scores"][auto["chosen"]] >= auto["scores"]["layer 2"] + 0.4, auto
    names = {"emb": (0, 1), "layer 1": (1, 1), "mean 1-2": (2, 2)}
    assert (strategy["feature_layer"], strategy["feature_layers"]) == names[auto["chosen"]]
    # an averaged choice was written to the cache under its own key by the probe
    assert strategy["feature_cache"]["train"]["hit"] and strategy["feature_cache"]["validation"]["hit"]


def test_auto_layer_classifier_run_on_the_embeddings_exports(
    only_embeddings_dir, classification_files, tmp_path
):
    metrics = finetune_classifier.main(_argv(only_embeddings_dir, classification_files, tmp_path / "run"))
    assert metrics["strategy"]["feature_layer_auto"]["chosen"] == "emb"
    assert metrics["strategy"]["feature_layer"] == 0
    assert metrics["export"]["truncated_to_layer"] == 0 and metrics["export"]["max_abs_diff"] < 1e-4


def test_auto_layer_with_feature_layers_is_refused(tiny_model_dir, classification_files, tmp_path):
    argv = _argv(tiny_model_dir, classification_files, tmp_path / "run", "strategy.feature_layers=2")
    with pytest.raises(ConfigError, match="feature_layer=auto chooses feature_layers too"):
        finetune_classifier.main(argv)
    assert not (tmp_path / "cache").exists()


def test_auto_layer_without_a_validation_split_names_it(tiny_model_dir, classification_files, tmp_path):
    argv = _argv(
        tiny_model_dir, classification_files, tmp_path / "run", "data.validation_size=0", validation=False
    )
    with pytest.raises(ConfigError, match="validation split.*data.validation_file.*data.validation_size"):
        finetune_classifier.main(argv)
    assert not (tmp_path / "cache").exists()  # refused before encoding anything


def _multilabel_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, labels = ["this"], []
        if rng.random() < 0.5:
            words.append(rng.choice(PERSONS))
            labels.append("person")
        if rng.random() < 0.5:
            words += ["in", rng.choice(PLACES)]
            labels.append("place")
        rows.append({"text": " ".join(words + ["today"]), "labels": labels})
    return rows


@pytest.mark.parametrize(
    ("problem_type", "extra"),
    [
        ("multi_label_classification", ["data.label_column=labels", "train.metric_for_best=micro_f1"]),
        ("regression", ["data.label_column=score", "train.metric_for_best=mse"]),
    ],
)
def test_auto_layer_refuses_float_labels(tiny_model_dir, tmp_path, problem_type, extra):
    files = {}
    for split, (n, seed) in {"train": (24, 1), "validation": (8, 2), "test": (8, 3)}.items():
        rows = _multilabel_rows(n, seed)
        for row in rows:
            row["score"] = float(len(row["labels"]))
        files[split] = write_jsonl(tmp_path / f"{split}.jsonl", rows)
    argv = _argv(tiny_model_dir, files, tmp_path / "run", f"data.problem_type={problem_type}", *extra)
    with pytest.raises(
        ConfigError, match=f"feature_layer=auto probes class labels; data.problem_type={problem_type}"
    ):
        finetune_classifier.main(argv)
    assert not (tmp_path / "cache").exists()

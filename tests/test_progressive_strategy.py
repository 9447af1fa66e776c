"""Progressive networks through the real recipes: a chain NER -> sentiment -> NER on a tiny model, where every
earlier task predicts exactly as before, every column loads through ``Predictor``, and bad sources are refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForTokenClassification, pipeline

from hftransfer.config import parse_config
from hftransfer.errors import ConfigError
from hftransfer.predict import Predictor, predict_file
from hftransfer.progressive.export import load_progressive
from tests.conftest import recipe_argv, toy_classification_files, toy_ner_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402


def _argv(model_dir: Path, files: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return recipe_argv(model_dir, files, run_dir, "train.epochs=2", "train.lr=1e-3", *extra)


def _rows(model: str | Path, data: Path, out: Path) -> list[dict]:
    predict_file(str(model), str(data), str(out), cpu=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory) -> dict[str, Path]:
    return toy_ner_files(tmp_path_factory.mktemp("ner-data"))


@pytest.fixture(scope="module")
def classification_files(tmp_path_factory) -> dict[str, Path]:
    return toy_classification_files(tmp_path_factory.mktemp("classification-data"))


@pytest.fixture(scope="module")
def chain(tiny_model_dir, ner_files, classification_files, tmp_path_factory) -> dict[str, Path]:
    """Three runs: NER (plain), then sentiment as column 1 reading it, then NER again as column 2 (read only)."""
    root = tmp_path_factory.mktemp("chain")
    runs = {name: root / name for name in ("ner", "sentiment", "ner2")}
    finetune_ner.main(_argv(tiny_model_dir, ner_files, runs["ner"]))
    progressive = ["strategy.name=progressive", "strategy.rank=4"]
    finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            runs["sentiment"],
            *progressive,
            f"strategy.columns={runs['ner']}",
            "strategy.lateral_lr=null",  # the head's
            "strategy.head_lr=2e-3",
        )
    )
    finetune_ner.main(
        _argv(
            tiny_model_dir,
            ner_files,
            runs["ner2"],
            *progressive,
            f"strategy.columns={runs['sentiment']}",
            "strategy.lateral_lr=5e-3",
        )
    )
    return runs


def test_a_chain_of_three_tasks_keeps_every_earlier_task_exactly(
    chain, ner_files, classification_files, tmp_path
):
    sentiment = json.loads((chain["sentiment"] / "metrics.json").read_text())
    assert sentiment["strategy"]["name"] == "progressive" and sentiment["strategy"]["columns"] == 2
    assert sentiment["export"] == {
        "kind": "progressive",
        "directory": str(chain["sentiment"] / "model"),
        "columns": 2,
        "pipeline": False,
    }
    assert {"laterals/decay", "laterals/no_decay"} <= set(sentiment["strategy"]["lr_groups"])
    trainable = sentiment["strategy"]["parameters"]["trainable"]
    column, laterals = sentiment["strategy"]["column_parameters"], sentiment["strategy"]["lateral_parameters"]
    assert trainable == column + laterals  # column 0 trains nothing
    ner2 = json.loads((chain["ner2"] / "metrics.json").read_text())
    assert ner2["strategy"]["columns"] == 3 and 0.0 <= ner2["test"]["f1"] <= 1.0
    # laterals at strategy.lateral_lr (null: the head's); the column keeps its own
    lr_groups = {run["strategy"]["lr_groups"]["laterals/decay"] for run in (sentiment, ner2)}
    assert lr_groups == {2e-3, 5e-3} and ner2["strategy"]["lr_groups"]["head/decay"] == 1e-3

    # Column 0 of both later exports is the first run's model, weight for weight, and a plain pipeline model.
    first = load_file(str(chain["ner"] / "model" / "model.safetensors"))
    for run in ("sentiment", "ner2"):
        copied = load_file(str(chain[run] / "model" / "column_0" / "model.safetensors"))
        assert first.keys() == copied.keys() and all(torch.equal(first[k], copied[k]) for k in first)
    tagger = pipeline("token-classification", model=str(chain["ner2"] / "model" / "column_0"), device="cpu")
    assert isinstance(tagger("alice lives in paris"), list)

    # Each earlier task predicts exactly as its own run did, through the later runs' exports.
    ner_test, sentiment_test = ner_files["test"], classification_files["test"]
    before = _rows(chain["ner"] / "model", ner_test, tmp_path / "a.jsonl")
    assert _rows(chain["ner2"] / "model" / "column_0", ner_test, tmp_path / "b.jsonl") == before
    before = _rows(chain["sentiment"] / "model", sentiment_test, tmp_path / "c.jsonl")
    assert _rows(chain["ner2"] / "model" / "column_1", sentiment_test, tmp_path / "d.jsonl") == before
    # The run directory and the model directory predict with the last column, which the run scored.
    rows = _rows(chain["ner2"], ner_test, tmp_path / "e.jsonl")
    assert rows == _rows(chain["ner2"] / "model" / "column_2", ner_test, tmp_path / "f.jsonl")
    assert Predictor(str(chain["ner2"] / "model"), cpu=True).task == "token-classification"
    assert (
        Predictor(str(chain["ner2"] / "model" / "column_1"), cpu=True).label_names == sentiment["label_names"]
    )


def test_a_column_can_start_from_the_earlier_tasks_column(chain, classification_files, tmp_path):
    # Warm start: model.name_or_path is the earlier column, so the new column begins where sequential fine-tuning
    # would (its head new) while the earlier column stays frozen next to it. An lr near 0 keeps the start visible.
    run = tmp_path / "warm"
    finetune_classifier.main(
        _argv(
            chain["ner"] / "model",
            classification_files,
            run,
            "strategy.name=progressive",
            "strategy.rank=4",
            f"strategy.columns={chain['ner']}",
            "train.lr=1e-12",
            "strategy.lateral_lr=1e-12",
        )
    )
    earlier = load_file(str(run / "model" / "column_0" / "model.safetensors"))
    new = load_file(str(run / "model" / "column_1" / "model.safetensors"))
    encoder = [key for key in earlier if key.startswith("bert.encoder.")]
    assert encoder and all(torch.allclose(new[key], earlier[key], atol=1e-6) for key in encoder)
    assert "classifier.weight" in new and new["classifier.weight"].shape != earlier["classifier.weight"].shape


def test_laterals_train_at_a_lora_like_rate_by_default():
    config = parse_config(["strategy.name=progressive", "strategy.columns=runs/x", "data.dataset=wnut16"])
    assert config.strategy.lateral_lr == 1e-3
    with pytest.raises(ConfigError, match="strategy.lateral_lr"):
        parse_config(
            [
                "strategy.name=progressive",
                "strategy.columns=x",
                "strategy.lateral_lr=0",
                "data.dataset=wnut16",
            ]
        )


def test_the_export_reloads_with_every_column_frozen(chain):
    network = load_progressive(chain["ner2"] / "model")
    assert network.num_columns == 3 and network.column_ranks == [None, 4, 4]
    assert not any(p.requires_grad for p in network.parameters())
    # Without its laterals column 1 is another function: transformers alone does not reproduce it.
    assert any(p.abs().sum() > 0 for p in network.laterals[1].parameters())
    plain = AutoModelForTokenClassification.from_pretrained(chain["ner2"] / "model" / "column_0")
    assert plain.config.id2label == network.columns[0].config.id2label


def test_bad_sources_are_refused_with_the_field_named(tiny_model_dir, classification_files, tmp_path):
    with pytest.raises(ConfigError, match="strategy.columns"):
        finetune_classifier.main(
            _argv(tiny_model_dir, classification_files, tmp_path / "a", "strategy.name=progressive")
        )
    with pytest.raises(ConfigError, match="strategy.columns=.*no such run"):
        finetune_classifier.main(
            _argv(
                tiny_model_dir,
                classification_files,
                tmp_path / "b",
                "strategy.name=progressive",
                f"strategy.columns={tmp_path / 'missing'}",
            )
        )
    # The pretrained encoder itself has no task head: it is not an earlier task's column.
    with pytest.raises(ConfigError, match="fine-tuned token- or sequence-classification model"):
        finetune_classifier.main(
            _argv(
                tiny_model_dir,
                classification_files,
                tmp_path / "c",
                "strategy.name=progressive",
                f"strategy.columns={tiny_model_dir}",
            )
        )

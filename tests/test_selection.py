"""Label-free model selection (``selection.method``): validation examples weighted towards an unlabelled target
source choose the best checkpoint by importance-weighted accuracy (iwv) or by DEV's risk, with no target labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hftransfer.config import parse_config
from hftransfer.errors import ConfigError
from hftransfer.toy import make_classification_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

from tests.test_strategy_recipes import _argv  # noqa: E402


def _target(tmp_path: Path) -> Path:
    # Film texts only: they overlap the training data, so the validation weights are not all at a clip bound.
    texts = [row["text"] for row in make_classification_examples(40, seed=9) if "film" in row["text"]]
    path = tmp_path / "target.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("method", "metric"), [("iwv", "iw_accuracy"), ("dev", "dev_risk")])
def test_selection_weights_validation_towards_the_target(
    tiny_model_dir, classification_files, tmp_path, method, metric
):
    run_dir = tmp_path / method
    metrics = finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "task=sequence-classification",
            "train.max_steps=6",
            "train.eval_every_steps=2",
            "train.lr=5e-3",
            f"sources=[{{name: target, data: {_target(tmp_path)}}}]",  # read by the selection alone
            f"selection.method={method}",
            "selection.folds=3",
        )
    )
    assert metrics["selection"]["method"] == method and metrics["selection"]["metric"] == metric
    assert metrics["selection"]["validation_examples"] == 24
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scores = [r[metric] for r in records if r["split"] == "validation"]
    assert len(scores) >= 3 and all(
        {"iw_accuracy", "iw_loss", "iw_ess"} <= set(r) for r in records if r["split"] == "validation"
    )
    best = max(scores) if method == "iwv" else min(scores)  # dev_risk: lower is better
    assert metrics[f"best_validation_{metric}"] == pytest.approx(best)


def test_selection_needs_a_listed_source_and_a_sequence_task(tmp_path):
    with pytest.raises(ConfigError, match="selection.method=iwv weighs validation examples against"):
        parse_config(["task=sequence-classification", "data.dataset=rotten_tomatoes", "selection.method=iwv"])
    with pytest.raises(ConfigError, match="selection.method=dev is for sequence classification"):
        parse_config(["selection.method=dev", "sources=[{name: target, data: x.txt}]"])


def test_weights_and_selection_encode_the_target_once(
    tiny_model_dir, classification_files, tmp_path, monkeypatch
):
    from hftransfer.adaptation import encode as encode_module

    encoded = []
    original = encode_module.pooled_example_features

    def counting(model, tokenizer, features, **options):
        encoded.append(features._fingerprint)
        return original(model, tokenizer, features, **options)

    monkeypatch.setattr(encode_module, "pooled_example_features", counting)
    finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            tmp_path / "run",
            "task=sequence-classification",
            "train.max_steps=1",
            f"sources=[{{name: target, data: {_target(tmp_path)}}}]",
            "objectives=[{name: importance_weighted_task, source: target, folds: 3}]",
            "selection.method=iwv",
            "selection.folds=3",
        )
    )
    assert len(encoded) == len(set(encoded)) == 3  # validation, target, training: each once

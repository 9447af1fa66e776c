"""Report sets (``report: [...]``): labelled sets scored only in the final report. Their labels cannot reach
training or model selection: two runs whose report set (also their unlabelled source) differs only in its labels
train, select and export identically, and only their report scores differ."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from hftransfer.errors import DataError
from hftransfer.toy import make_classification_examples, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

from tests.test_named_sources import DOMAIN_PLUGIN  # noqa: E402
from tests.test_strategy_recipes import _argv  # noqa: E402


def _target(path: Path, flip: bool) -> Path:
    rows = [
        {"text": row["text"].replace("was very", "seemed"), "label": row["label"]}
        for row in make_classification_examples(30, seed=11)
    ]
    if flip:
        swap = {"positive": "negative", "negative": "positive"}
        rows = [{**row, "label": swap[row["label"]]} for row in rows]
    return write_jsonl(path, rows)


def test_report_set_labels_reach_nothing_but_the_report(tiny_model_dir, classification_files, tmp_path):
    plugin = tmp_path / "domain_plugin.py"
    plugin.write_text(DOMAIN_PLUGIN, encoding="utf-8")
    runs = {}
    for flip in (False, True):
        target = _target(tmp_path / f"target-{flip}.jsonl", flip)
        run_dir = tmp_path / f"run-{flip}"
        metrics = finetune_classifier.main(
            _argv(
                tiny_model_dir,
                classification_files,
                run_dir,
                "task=sequence-classification",
                "train.max_steps=6",
                "train.eval_every_steps=2",
                "train.lr=5e-3",
                f"plugins=[{plugin}]",
                "objectives+=[{name: domain_confusion, weight: 0.5}]",
                f"sources=[{{name: target, data: {target}}}]",  # the same texts, unlabelled
                f"report=[{{name: target, file: {target}}}]",
            )
        )
        runs[flip] = (metrics, run_dir)
    (plain, plain_dir), (flipped, flipped_dir) = runs[False], runs[True]
    assert plain["best_step"] == flipped["best_step"]
    for split in ("validation", "test"):
        timings = ("seconds",)
        assert {k: v for k, v in plain[split].items() if k not in timings} == {
            k: v for k, v in flipped[split].items() if k not in timings
        }
    weights = load_file(str(plain_dir / "model" / "model.safetensors"))
    other = load_file(str(flipped_dir / "model" / "model.safetensors"))
    assert all((weights[k] == other[k]).all() for k in weights)
    report, flipped_report = plain["report"]["target"], flipped["report"]["target"]
    assert report["num_examples"] == 30
    assert report["accuracy"] == pytest.approx(
        1 - flipped_report["accuracy"]
    )  # same predictions, flipped truth
    records = [json.loads(line) for line in (plain_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in records][-1] == "report/target"  # logged last, after test


def test_a_report_set_with_labels_the_model_lacks_fails_naming_it(
    tiny_model_dir, classification_files, tmp_path
):
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": "fine", "label": "neutral"}] * 3)
    with pytest.raises(
        DataError, match=r"report drugs: labels \['neutral'\] are not labels of the trained model"
    ):
        finetune_classifier.main(
            _argv(
                tiny_model_dir,
                classification_files,
                tmp_path / "run",
                "task=sequence-classification",
                "train.max_steps=1",
                f"report=[{{name: drugs, file: {other}}}]",
            )
        )


def test_a_report_set_is_scored_by_a_head_trained_on_cached_features(
    tiny_model_dir, classification_files, tmp_path
):
    # The frozen strategy's trained model reads cached features, not token ids: the report set must go through the
    # encoder + head. Scored on the test file itself, the report must agree with the test split's scores.
    metrics = finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            tmp_path / "run",
            "task=sequence-classification",
            "strategy.name=frozen",
            "strategy.head=mlp",
            f"strategy.cache_dir={tmp_path / 'cache'}",
            "train.max_steps=8",
            "train.lr=5e-2",
            f"report=[{{name: again, file: {classification_files['test']}}}]",
        )
    )
    report, test = metrics["report"]["again"], metrics["test"]
    assert report["num_examples"] == test["num_examples"] == 24
    assert report["accuracy"] == pytest.approx(test["accuracy"])
    assert report["loss"] == pytest.approx(test["loss"], rel=1e-4)

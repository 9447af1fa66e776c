"""hftransfer's metrics as ``evaluate`` modules: they load offline by path, give fixed values on hand-made inputs
(strict IOB2 where lenient seqeval differs), combine, run under ``evaluate.evaluator`` on an exported toy run, and
equal the library's own evaluation of the same model."""

from __future__ import annotations

import json
import math
import socket
import sys
from pathlib import Path

import datasets
import evaluate
import pytest
from seqeval.metrics import f1_score as lenient_f1

from hftransfer.evaluation import METRICS, load_metric, metric_path
from hftransfer.evaluation.metrics import sequence_classification_metrics, token_classification_metrics
from tests.conftest import make_classification_examples, make_ner_examples, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

# evaluate.evaluator adds its timings to the scores.
TIMINGS = {"total_time_in_seconds", "samples_per_second", "latency_in_seconds"}


@pytest.fixture()
def no_network(monkeypatch):
    """Record (and refuse) every attempt to open a connection."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.mark.parametrize("name", METRICS)
def test_each_module_loads_by_path_offline_like_the_library_loader(name, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = evaluate.load(metric_path(name))
    ours = load_metric(name)
    assert loaded.name == ours.name == name
    # The library imports the script from the package (no copy in HF_MODULES_CACHE, works read-only).
    assert type(ours).__module__ == f"hftransfer.evaluation.modules.{name}.{name}"
    inputs = {
        "seqeval_strict": ([["B-per", "O"], ["I-loc"]], [["B-per", "O"], ["B-loc"]]),
        "accuracy_f1": ([0, 1, 1], [0, 1, 0]),
        "multilabel_f1": ([[1, 0], [1, 1]], [[1, 0], [0, 1]]),
        "regression": ([0.5, 2.0, 1.0], [1.0, 2.0, 0.0]),
    }[name]
    predictions, references = inputs
    assert loaded.compute(predictions=predictions, references=references) == ours.compute(
        predictions=predictions, references=references
    )
    assert no_network == []


def test_the_library_loader_needs_no_writable_cache(tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", blocked / "metrics")  # cannot be made
    scores = load_metric("seqeval_strict").compute(predictions=[["B-per"]], references=[["B-per"]])
    assert scores["f1"] == 1.0


def test_unknown_metric_names_the_packaged_ones():
    with pytest.raises(ValueError, match="seqeval_strict"):
        metric_path("seqeval")


def test_strict_iob2_reference_values_where_lenient_seqeval_differs():
    gold = [["B-per", "I-per", "O", "B-loc"]]
    pred = [["I-per", "I-per", "O", "B-loc"]]  # the person starts with I-: no entity under strict IOB2
    assert lenient_f1(gold, pred) == 1.0  # the Hub's seqeval default (conlleval) counts it
    scores = evaluate.load(metric_path("seqeval_strict")).compute(predictions=pred, references=gold)
    assert scores == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "accuracy": 0.75,
        "num_entities": 2,
        "per_type/loc/precision": 1.0,
        "per_type/loc/recall": 1.0,
        "per_type/loc/f1": 1.0,
        "per_type/loc/support": 1,
        "per_type/per/precision": 0.0,
        "per_type/per/recall": 0.0,
        "per_type/per/f1": 0.0,
        "per_type/per/support": 1,
    }
    assert token_classification_metrics(gold, pred) == scores  # the library's function is the module


def test_classification_reference_values_and_label_names():
    metric = evaluate.load(metric_path("accuracy_f1"), label_names=["neg", "pos", "neutral"])
    scores = metric.compute(predictions=[0, 1, 1, 1], references=[0, 0, 1, 1])
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)  # the absent class counts, as 0
    assert scores["per_class/neutral/support"] == 0
    assert scores == sequence_classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["neg", "pos", "neutral"])
    # Names given to compute win; without any, classes are 0 .. the largest id.
    assert "per_class/a/f1" in metric.compute(predictions=[0], references=[1], label_names=["a", "b"])
    unnamed = evaluate.load(metric_path("accuracy_f1")).compute(predictions=[0, 2], references=[0, 1])
    assert {key.split("/")[1] for key in unnamed if key.startswith("per_class/")} == {"0", "1", "2"}


def test_multilabel_and_regression_reference_values():
    multilabel = evaluate.load(metric_path("multilabel_f1"), label_names=["sport", "money"])
    scores = multilabel.compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]])
    assert scores["micro_precision"] == pytest.approx(2 / 3) and scores["micro_recall"] == 1.0
    assert scores["micro_f1"] == pytest.approx(0.8)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert scores["per_class/money/f1"] == 1.0 and scores["per_class/sport/support"] == 1

    regression = evaluate.load(metric_path("regression"))
    scores = regression.compute(predictions=[1.0, 2.0, 4.0], references=[1.0, 2.0, 3.0])
    assert scores["mse"] == pytest.approx(1 / 3)
    assert scores["pearson"] == pytest.approx(9 / math.sqrt(84))
    assert scores["spearman"] == pytest.approx(1.0)
    constant = regression.compute(predictions=[2.0, 2.0, 2.0], references=[1.0, 2.0, 3.0])
    assert constant["mse"] == pytest.approx(2 / 3) and math.isnan(constant["pearson"])


def test_two_modules_combine_on_ordinal_ratings():
    stars = [str(star) for star in range(1, 6)]
    predictions, references = [0, 1, 4, 3, 2], [0, 2, 4, 4, 2]  # star ratings as class ids
    combined = evaluate.combine(
        [
            evaluate.load(metric_path("accuracy_f1"), label_names=stars),
            evaluate.load(metric_path("regression")),
        ]
    )
    scores = combined.compute(predictions=predictions, references=references)
    assert scores == {
        **load_metric("accuracy_f1", label_names=stars).compute(
            predictions=predictions, references=references
        ),
        **load_metric("regression").compute(predictions=predictions, references=references),
    }
    assert scores["accuracy"] == 0.6 and scores["mse"] == pytest.approx(0.4)


def _common(model_dir: Path, run_dir: Path, files: dict[str, Path]) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={run_dir}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['validation']}",
        f"data.test_file={files['test']}",
        "train.lr=3e-3",
        "train.batch_size=8",
        "train.trackers=[]",
        "train.warmup_ratio=0.0",
    ]


def _same_scores(evaluator_scores: dict, library_scores: dict) -> None:
    scores = {key: value for key, value in evaluator_scores.items() if key not in TIMINGS}
    assert scores == {key: library_scores[key] for key in scores}


def test_text_classification_evaluator_on_an_exported_run_equals_the_run(tiny_model_dir, tmp_path):
    rows = {"train": (96, 1), "validation": (24, 2), "test": (24, 3)}
    examples = {split: make_classification_examples(n, seed=seed) for split, (n, seed) in rows.items()}
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", data) for split, data in examples.items()}
    run_dir = tmp_path / "run"
    finetune_classifier.main(_common(tiny_model_dir, run_dir, files) + ["train.epochs=4"])
    label_names = json.loads((run_dir / "metrics.json").read_text())["label_names"]
    label2id = {name: index for index, name in enumerate(label_names)}
    data = datasets.Dataset.from_dict(
        {
            "text": [row["text"] for row in examples["test"]],
            "label": [label2id[row["label"]] for row in examples["test"]],
        }
    )
    scores = evaluate.evaluator("text-classification").compute(
        model_or_pipeline=str(run_dir / "model"),
        data=data,
        metric=evaluate.load(metric_path("accuracy_f1"), label_names=label_names),
        label_mapping=label2id,
    )
    assert "per_class/positive/f1" in scores
    _same_scores(scores, json.loads((run_dir / "metrics.json").read_text())["test"])


def test_token_classification_evaluator_on_an_exported_run_equals_the_run(
    tiny_model_dir, ner_files, tmp_path
):
    run_dir = tmp_path / "run"
    finetune_ner.main(_common(tiny_model_dir, run_dir, ner_files) + ["train.epochs=4"])
    saved = json.loads((run_dir / "metrics.json").read_text())
    tags = saved["label_names"]
    test = make_ner_examples(16, seed=3)  # the ner_files fixture's test split
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=tags)),
        }
    )
    data = datasets.Dataset.from_dict(
        {
            "tokens": [row["tokens"] for row in test],
            "ner_tags": [[tags.index(tag) for tag in row["tags"]] for row in test],
        },
        features=features,
    )
    scores = evaluate.evaluator("token-classification").compute(
        model_or_pipeline=str(run_dir / "model"), data=data, metric=load_metric("seqeval_strict")
    )
    assert scores["num_entities"] == saved["test"]["num_entities"] > 0
    _same_scores(scores, saved["test"])

"""Long sequence-classification texts (``data.long_texts``): windows from the tokenizer's overflow machinery that
cover every token, window logits combined per text (mean / max) so that metrics and predictions count texts, the
truncation warning with its share, and real runs with full, frozen and LoRA training.

Texts are the toy ones of ``conftest.py`` made long by repeating neutral words; the tiny BERT reads them with
``data.max_length=12``.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import AutoTokenizer

from hftransfer.cli import main
from hftransfer.config import DataConfig
from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.data.sequence_features import tokenize_sequence_task
from hftransfer.errors import ConfigError, DataError
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import run_inference
from hftransfer.evaluation.windows import aggregate_windows
from hftransfer.export.long_texts import LONG_TEXTS_KEY
from hftransfer.predict import Predictor
from tests.conftest import NEGATIVE, POSITIVE, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

LABEL2ID = {"negative": 0, "positive": 1}


def long_rows(n: int, seed: int) -> list[dict]:
    """``this film was very ... good`` texts of 3-20 words whose label is set by their last word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["negative", "positive"])
        filler = [
            rng.choice(["this", "film", "was", "very", "really", "a"]) for _ in range(rng.randint(2, 19))
        ]
        rows.append(
            {
                "text": " ".join(filler + [rng.choice(POSITIVE if label == "positive" else NEGATIVE)]),
                "label": label,
            }
        )
    return rows


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_windows_cover_every_token_with_the_overlap(tokenizer):
    texts = [" ".join(["this", "film", "was", "very"] * 6 + ["good"]), "a film"]
    dataset = Dataset.from_dict({"text": texts, "label": ["positive", "negative"]})
    features, counts = tokenize_sequence_task(
        dataset, tokenizer, LABEL2ID, max_length=10, long_texts="window", window_context=3
    )
    ids = features["example_id"]
    assert ids[-1] == 1 and ids.count(0) == len(ids) - 1 > 1
    assert counts == {"windows": len(ids), "split_texts": 1}
    assert features["labels"] == [1] * (len(ids) - 1) + [0]
    # Drop [CLS]/[SEP], then the 3 tokens each window repeats from the one before: the text comes back whole.
    contents = [row[1:-1] for row, example in zip(features["input_ids"], ids) if example == 0]
    assert all(len(row) <= 10 for row in features["input_ids"])
    rebuilt = contents[0] + [token for content in contents[1:] for token in content[3:]]
    assert rebuilt == tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert all(a[-3:] == b[:3] for a, b in zip(contents, contents[1:]))


def test_pairs_window_the_first_text_and_repeat_the_second(tokenizer):
    dataset = Dataset.from_dict({"text": ["this film was very " * 5 + "good"], "text_pair": ["really good"]})
    features, _ = tokenize_sequence_task(dataset, tokenizer, None, max_length=12, long_texts="window")
    second = tokenizer("really good", add_special_tokens=False)["input_ids"]
    assert len(features) > 1 and "labels" not in features.column_names
    assert all(row[-len(second) - 1 : -1] == second for row in features["input_ids"])
    crowded = Dataset.from_dict({"text": ["good"], "text_pair": ["this film was very good today"]})
    with pytest.raises(DataError, match=r"example 0: its second text .* raise data.max_length"):
        tokenize_sequence_task(crowded, tokenizer, None, max_length=10, long_texts="window", window_context=4)


def test_truncation_warns_with_the_share(tokenizer, caplog):
    dataset = Dataset.from_dict(
        {"text": ["a film"] + ["this film was very good " * 3] * 3, "label": ["positive"] * 4}
    )
    with caplog.at_level(logging.WARNING):
        features, counts = tokenize_sequence_task(
            dataset, tokenizer, LABEL2ID, max_length=8, split="training"
        )
    assert counts == {"truncated": 3} and len(features) == 4
    assert "75% of 4 training texts (3) were longer than data.max_length=8 tokens and were truncated; set " \
        "data.long_texts=window" in caplog.text  # fmt: skip


def test_aggregation_mean_and_max_by_hand():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.5, 0.5], [-1.0, 4.0]], dtype=np.float32)
    ids = np.array([7, 2, 7, 7])
    texts, mean, first = aggregate_windows(logits, ids, "mean")
    assert texts.tolist() == [2, 7] and first.tolist() == [1, 0]
    np.testing.assert_allclose(mean, [[3.0, -2.0], [0.5 / 3 * 1.0 + 0.0, 4.5 / 3]], rtol=1e-6)
    _, high, _ = aggregate_windows(logits, ids, "max")
    np.testing.assert_allclose(high, [[3.0, -2.0], [1.0, 4.0]])
    with pytest.raises(ValueError, match="median"):
        aggregate_windows(logits, ids, "median")


class WindowLogits(torch.nn.Module):
    """Logits that depend on the window: [number of tokens, first token id], so texts' windows differ."""

    def forward(self, input_ids, attention_mask, **_):
        length = attention_mask.sum(dim=1).float()
        return type("Out", (), {"logits": torch.stack([length, input_ids[:, 1].float() / 4], dim=1)})()


@pytest.mark.parametrize("how", ["mean", "max"])
def test_evaluation_counts_texts_and_combines_window_logits(tokenizer, how):
    rows = long_rows(10, seed=4)
    dataset = Dataset.from_dict({key: [row[key] for row in rows] for key in ("text", "label")})
    features, counts = tokenize_sequence_task(dataset, tokenizer, LABEL2ID, max_length=8, long_texts="window")
    assert counts["windows"] > len(rows)
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(build_eval_dataloader(features, FeatureCollator(tokenizer), batch_size=3))
    output = run_inference(
        WindowLogits(), loader, accelerator, "sequence-classification", window_aggregation=how
    )
    metrics = compute_metrics(output, dataset, "sequence-classification", ["negative", "positive"])
    assert metrics["num_examples"] == 10 and metrics["num_features"] == len(features)
    losses = []
    for example in range(10):  # by hand: this text's windows, combined, then softmax
        windows = [i for i, e in enumerate(features["example_id"]) if e == example]
        logits = np.array(
            [[sum(features[i]["attention_mask"]), features[i]["input_ids"][1] / 4] for i in windows]
        )
        combined = logits.mean(axis=0) if how == "mean" else logits.max(axis=0)
        probs = np.exp(combined - combined.max()) / np.exp(combined - combined.max()).sum()
        assert output.example_predictions[example][0] == int(probs.argmax())
        assert output.example_predictions[example][1] == pytest.approx(probs.max(), rel=1e-5)
        losses.append(-np.log(probs[LABEL2ID[rows[example]["label"]]]))
    assert metrics["loss"] == pytest.approx(np.mean(losses), rel=1e-5)


def test_regression_refuses_max_and_config_names_values():
    with pytest.raises(ConfigError, match="data.window_aggregation=max with data.problem_type=regression"):
        DataConfig(train_file="x", problem_type="regression", long_texts="window", window_aggregation="max")
    with pytest.raises(ConfigError, match="data.long_texts must be one of truncate, window"):
        DataConfig(train_file="x", long_texts="slide")


def files(tmp_path: Path) -> dict[str, Path]:
    return {
        split: write_jsonl(tmp_path / f"{split}.jsonl", long_rows(n, seed))
        for split, n, seed in (("train", 48, 1), ("dev", 16, 2), ("test", 16, 3))
    }


@pytest.mark.parametrize("strategy", ["full", "frozen", "lora"])
def test_runs_train_evaluate_and_predict_one_row_per_text(tiny_model_dir, tmp_path, strategy):
    data, run_dir = files(tmp_path), tmp_path / "run"
    metrics = finetune_classifier.main([
        f"model.name_or_path={tiny_model_dir}", f"output_dir={run_dir}", f"data.train_file={data['train']}",
        f"data.validation_file={data['dev']}", f"data.test_file={data['test']}", "data.max_length=10",
        "data.long_texts=window", "data.window_context=2", "data.window_aggregation=max", f"strategy.name={strategy}",
        "train.max_steps=3", "train.batch_size=8", "train.trackers=[]", "train.lr=1e-3",
    ])  # fmt: skip
    features = metrics["features"]
    assert features["train"]["features"] == features["train"]["windows"] > features["train"]["examples"] == 48
    assert features["train"]["split_texts"] > 0
    for split in ("validation", "test"):
        assert metrics[split]["num_examples"] == 16 < metrics[split]["num_features"]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test"]["num_examples"] == 16
    export = run_dir / "model"
    # The run's window settings travel in the exported config: no argument needed to predict as it scored.
    saved_config = json.loads((export / "config.json").read_text())
    assert saved_config[LONG_TEXTS_KEY] == {
        "long_texts": "window", "max_length": 10, "window_context": 2, "window_aggregation": "max",
    }  # fmt: skip
    predictor = Predictor(str(export), cpu=True)
    assert (predictor.long_texts, predictor.max_length, predictor.window_aggregation) == ("window", 10, "max")
    test_rows = long_rows(16, 3)
    predictions = predictor.predict(
        Dataset.from_dict({k: [r[k] for r in test_rows] for k in ("text", "label")})
    )
    assert [row["text"] for row in predictions.rows] == [row["text"] for row in test_rows]
    assert predictions.metrics["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    # An explicit choice wins over the saved one.
    assert Predictor(str(export), cpu=True, long_texts="truncate").long_texts == "truncate"


def test_predict_command_uses_the_saved_windows_unless_told_otherwise(tiny_model_dir, tmp_path):
    data, run_dir = files(tmp_path), tmp_path / "run"
    finetune_classifier.main([
        f"model.name_or_path={tiny_model_dir}", f"output_dir={run_dir}", f"data.train_file={data['train']}",
        f"data.validation_file={data['dev']}", f"data.test_file={data['test']}", "data.max_length=10",
        "data.long_texts=window", "data.window_context=2", "train.max_steps=2", "train.trackers=[]",
    ])  # fmt: skip
    texts = tmp_path / "texts.jsonl"
    write_jsonl(texts, [{"text": row["text"]} for row in long_rows(16, 3)])
    windowed = Predictor(str(run_dir / "model"), cpu=True).predict(
        Dataset.from_dict({"text": read_texts(texts)})
    )
    truncated = Predictor(str(run_dir / "model"), cpu=True, long_texts="truncate", max_length=10).predict(
        Dataset.from_dict({"text": read_texts(texts)})
    )
    assert [r["score"] for r in windowed.rows] != [r["score"] for r in truncated.rows]
    for overrides, expected in (([], windowed), (["data.long_texts=truncate"], truncated)):
        out = tmp_path / f"out{len(overrides)}.jsonl"
        args = ["predict", str(run_dir), str(texts), str(out), "--cpu", "--max-length", "10", *overrides]
        assert main(args) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in expected.rows])


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]

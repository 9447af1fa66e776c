"""The console: one line instead of transformers' load report, log lines that leave the progress bar whole, and
``train.log_every_steps`` (0: the training loss only where the model is evaluated)."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest
from tqdm.auto import tqdm
from transformers import AutoModelForTokenClassification

from hftransfer.config import ModelConfig, TrainConfig
from hftransfer.console import TqdmLoggingHandler, setup_logging
from hftransfer.errors import ConfigError
from hftransfer.modeling.build import build_model, without_load_report
from tests.conftest import make_classification_examples, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

import finetune_classifier  # noqa: E402

LABELS = ["O", "B-loc", "I-loc", "B-per", "I-per"]


@pytest.fixture()
def transformers_records():
    """What transformers logs (it has its own stderr handler and does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    yield records
    logging.getLogger("transformers").removeHandler(handler)


def test_one_line_names_the_new_weights_instead_of_the_load_report(
    tiny_model_dir, transformers_records, caplog
):
    AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=len(LABELS))
    assert any("LOAD REPORT" in r.getMessage() for r in transformers_records)  # what transformers does alone
    transformers_records.clear()
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        build_model(ModelConfig(name_or_path=str(tiny_model_dir)), "token-classification", LABELS)
    assert not any("LOAD REPORT" in r.getMessage() for r in transformers_records)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "hftransfer.modeling.build"]
    assert "new weights, randomly initialised: classifier.bias, classifier.weight" in line
    assert "2 checkpoint weight(s) unused (pooler.dense.bias, pooler.dense.weight)" in line


def test_the_held_report_is_logged_when_the_load_fails(transformers_records):
    loader = logging.getLogger("transformers.modeling_utils")
    with pytest.raises(RuntimeError), without_load_report():
        loader.warning("BertModel LOAD REPORT from: somewhere\nKey | Status")
        loader.warning("another warning of the loader")
        raise RuntimeError("conversion failed: see the report above")
    assert [r.getMessage().split("\n")[0] for r in transformers_records] == [
        "another warning of the loader",  # never held
        "BertModel LOAD REPORT from: somewhere",  # held, then logged: it says why the load failed
    ]


def test_log_lines_go_through_tqdm_write_and_leave_the_bar_whole(monkeypatch):
    stream = io.StringIO()
    written = []
    write = tqdm.write
    monkeypatch.setattr(tqdm, "write", lambda s, **kw: written.append(s) or write(s, **kw))
    logger = logging.getLogger("hftransfer.tests.console")
    handler = TqdmLoggingHandler(stream)
    logger.addHandler(handler)
    try:
        bar = tqdm(total=10, desc="Training", file=stream, mininterval=0, ascii=True)
        bar.update(3)
        logger.warning("[train] step 3  loss=0.5")
        bar.update(1)
        bar.close()
    finally:
        logger.removeHandler(handler)
    assert written == ["[train] step 3  loss=0.5"]
    before, after = stream.getvalue().split("[train] step 3  loss=0.5\n")
    assert before.endswith("\r")  # the bar's line was cleared first: the record starts a line of its own
    assert "Training:  30%" in after  # and the bar is drawn again below it


def test_setup_logging_installs_the_handler_unless_logging_is_configured(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    setup_logging(is_main_process=True)
    assert [type(h) for h in root.handlers] == [TqdmLoggingHandler]
    theirs = [logging.StreamHandler(io.StringIO())]
    monkeypatch.setattr(root, "handlers", theirs)
    setup_logging(is_main_process=True)
    assert root.handlers == theirs


def test_log_every_steps_zero_logs_training_only_with_evaluations(tiny_model_dir, tmp_path):
    files = {
        split: write_jsonl(tmp_path / f"{split}.jsonl", make_classification_examples(n, seed=seed))
        for split, n, seed in (("train", 32, 1), ("validation", 8, 2))
    }
    run_dir = tmp_path / "run"
    finetune_classifier.main(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={run_dir}",
            f"data.train_file={files['train']}",
            f"data.validation_file={files['validation']}",
            "train.batch_size=8",
            "train.epochs=2",
            "train.eval_every_steps=3",
            "train.log_every_steps=0",
            "train.trackers=[]",
        ]
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = {split: [r["step"] for r in records if r["split"] == split] for split in ("train", "validation")}
    # 4 steps an epoch: evaluations at steps 3 and 6 (eval_every_steps) and at the ends of the epochs (4, 8); the
    # best model's evaluation at the end adds a validation record but trains nothing.
    assert steps["train"] == [3, 4, 6, 8]
    assert steps["validation"][:4] == [3, 4, 6, 8]


def test_log_every_steps_must_not_be_negative():
    assert TrainConfig(log_every_steps=0).log_every_steps == 0
    with pytest.raises(ConfigError, match="train.log_every_steps must be >= 0"):
        TrainConfig(log_every_steps=-1)

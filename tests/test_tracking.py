"""metrics.jsonl on resume: records after the checkpoint's step are dropped, and a damaged line (an append cut short
by a full disk or a kill) is dropped and reported instead of blocking the resume."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from hftransfer.training.tracking import MetricsLog


def test_a_cut_last_line_is_dropped_and_reported(tmp_path, caplog):
    log = MetricsLog(SimpleNamespace(is_main_process=True), tmp_path)
    records = [{"split": "train", "step": step, "loss": 1.0 / step} for step in (10, 20, 30)]
    text = "".join(json.dumps(record) + "\n" for record in records)
    log.path.write_text(text + '{"split": "train", "step": 40, "lo', encoding="utf-8")  # cut mid-record
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        log.truncate_after(20)
    kept = [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in kept] == [10, 20]
    assert "dropped 1 damaged line(s) (line 4)" in caplog.text


def test_records_logged_at_the_checkpoint_step_after_it_are_dropped(tmp_path):
    log = MetricsLog(SimpleNamespace(is_main_process=True, log=lambda scalars, step: None), tmp_path)
    log.log("train", {"loss": 0.5}, step=10, epoch=1.0)
    log.log("validation", {"f1": 0.5}, step=10, epoch=1.0)
    saved_with_checkpoint = log.records()  # the checkpoint at step 10 is saved here
    log.log("validation", {"f1": 0.5}, step=10, epoch=1.0)  # the final evaluation, then a kill
    log.log("test", {"f1": 0.4}, step=10, epoch=1.0)
    assert (saved_with_checkpoint, log.records()) == (2, 4)
    log.truncate_after(10, saved_with_checkpoint)
    assert [json.loads(line)["split"] for line in log.path.read_text().splitlines()] == [
        "train",
        "validation",
    ]
    log.truncate_after(10)  # without a count (an earlier release's checkpoint): by step alone
    assert log.records() == 2


def test_timing_keys_are_the_wall_clock_ones():
    from hftransfer.training.tracking import is_timing_key

    timing = ["samples_per_second", "train_seconds", "seconds", "tokens_per_second"]
    assert [key for key in [*timing, "loss", "lr", "f1", "epoch", "step"] if is_timing_key(key)] == timing


def test_incomplete_checkpoints_are_ignored_with_a_warning(tmp_path, caplog):
    import pytest

    from hftransfer.errors import ConfigError
    from hftransfer.training.checkpoint import list_checkpoints, resolve_resume

    root = tmp_path / "checkpoints"
    for step, weights in (
        (10, True),
        (20, True),
        (30, False),
    ):  # step 30: a pruning cut short left no weights
        path = root / f"step-{step:08d}"
        path.mkdir(parents=True)
        (path / "trainer_state.json").write_text("{}", encoding="utf-8")
        if weights:
            (path / "model.safetensors").write_bytes(b"x")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000010", "step-00000020"]
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        assert resolve_resume("latest", tmp_path).name == "step-00000020"
    assert "incomplete checkpoints ignored: step-00000030" in caplog.text
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        resolve_resume(str(root / "step-00000030"), tmp_path)


def test_training_records_show_every_term_on_the_console(tmp_path, caplog):
    accelerator = SimpleNamespace(is_main_process=True, log=lambda scalars, step: None)
    log = MetricsLog(accelerator, tmp_path)
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        log.log("train", {"loss": 0.5, "domain": 0.07, "domain_accuracy": 0.6}, step=3, epoch=0.5)
        log.log("validation", {"accuracy": 0.8, "per_class_support": 4}, step=3, epoch=0.5)
    assert "loss=0.5  domain=0.07  domain_accuracy=0.6" in caplog.text
    assert "per_class_support" not in caplog.text

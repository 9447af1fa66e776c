"""Atomic writes, checkpoint discovery, and one-line errors from the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hftransfer.errors import ConfigError
from hftransfer.training.checkpoint import STATE_FILE, list_checkpoints, resolve_resume
from hftransfer.utils import (
    atomic_directory,
    atomic_write,
    atomic_write_text,
    recover_directory,
    replace_directory,
)

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_write_keeps_old_content_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_atomic_write_with_a_file_writer_keeps_old_file_when_the_writer_fails(tmp_path):
    """Writers that take a file name (safetensors' save_file) write a temporary sibling, renamed only on success."""
    target = tmp_path / "cache" / "features.safetensors"
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"v1"))
    assert target.read_bytes() == b"v1"

    def half_written(tmp: str) -> None:
        Path(tmp).write_bytes(b"v2 partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_written)
    assert target.read_bytes() == b"v1"
    assert [p.name for p in target.parent.iterdir()] == ["features.safetensors"]


def test_atomic_directory_replaces_only_on_success(tmp_path):
    model_dir = tmp_path / "model"
    with atomic_directory(model_dir) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_directory(model_dir) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed while saving")
    assert (model_dir / "weights").read_text() == "v1"
    with atomic_directory(model_dir) as tmp:
        (tmp / "weights").write_text("v2")
    assert (model_dir / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_recover_directory_after_a_crash_between_renames(tmp_path):
    model_dir = tmp_path / "model"
    old = tmp_path / ".model.old"
    old.mkdir()
    (old / "weights").write_text("v1")  # state after the first rename of replace_directory, before the second
    recover_directory(model_dir)
    assert (model_dir / "weights").read_text() == "v1"
    new = tmp_path / "new"
    new.mkdir()
    replace_directory(new, model_dir)
    assert not new.exists() and not old.exists()


def test_latest_ignores_partial_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete in (("step-00000005", True), ("step-00000010", True), ("step-00000015", False)):
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / STATE_FILE).write_text("{}")
            (root / name / "model.safetensors").write_bytes(b"x")
    (root / ".step-00000020.tmp").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000005", "step-00000010"]
    assert resolve_resume("latest", tmp_path).name == "step-00000010"
    assert resolve_resume("latest", tmp_path / "fresh") is None
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        resolve_resume(str(root / "step-00000015"), tmp_path)


def test_command_line_errors_are_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "finetune_classifier.py"),
            "data.train_file=missing.jsonl",
            "train.lr=-1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: train.lr must be > 0, got -1.0"
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "finetune_classifier.py"), "data.train_file=missing.jsonl"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "missing.jsonl: file not found" in result.stderr

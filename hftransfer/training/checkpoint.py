"""Resumable checkpoints: ``accelerator.save_state`` plus the loop's own state, written atomically.

A checkpoint is complete once it is renamed from ``.step-N.tmp`` to ``step-N`` (the rename happens after every
process has written its part and after ``trainer_state.json``), so a run killed mid-save leaves only the older
checkpoints, which ``latest`` then finds.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from hftransfer.errors import ConfigError
from hftransfer.utils import atomic_write_json, remove_stale_temporaries

STATE_FILE = "trainer_state.json"
logger = logging.getLogger("hftransfer")


def checkpoints_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def is_complete(path: Path) -> bool:
    """A checkpoint directory holding its loop state and the model's weights (a deletion cut short by a kill,
    before pruning renamed directories aside, could leave one without them)."""
    weights = any(path.glob("model*.safetensors")) or any(path.glob("pytorch_model*"))
    return (path / STATE_FILE).is_file() and weights


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = [path for path in root.glob("step-*") if is_complete(path)]
    return sorted(found, key=lambda path: int(path.name.split("-")[1]))


def resolve_resume(spec: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: None (fresh run), ``latest`` (None when the run has none yet) or a path.

    Raises:
        ConfigError: the given path is not a complete checkpoint (loop state and model weights).
    """
    if spec is None:
        return None
    if spec == "latest":
        checkpoints = list_checkpoints(run_dir)
        root = checkpoints_root(run_dir)
        incomplete = sorted(p.name for p in root.glob("step-*") if p.is_dir() and not is_complete(p))
        if incomplete:
            logger.warning("%s: incomplete checkpoints ignored: %s", root, ", ".join(incomplete))
        return checkpoints[-1] if checkpoints else None
    path = Path(spec)
    if not is_complete(path):
        raise ConfigError(
            f"train.resume_from_checkpoint={spec!r} is not a complete checkpoint directory (no {STATE_FILE}); "
            f"complete ones under {checkpoints_root(run_dir)}: {[p.name for p in list_checkpoints(run_dir)]}"
        )
    return path


def save_checkpoint(
    accelerator: Accelerator, run_dir: Path, step: int, state: dict[str, Any], keep: int
) -> Path:
    """Save model, optimizer, scheduler and RNG states (every process) and ``state`` (main process).

    Must be called by every process. Only the ``keep`` newest checkpoints are kept.
    """
    root = checkpoints_root(run_dir)
    final = root / f"step-{step:08d}"
    partial = root / f".step-{step:08d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(partial / STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        for old in list_checkpoints(run_dir)[:-keep]:
            # Renamed aside first (atomic), then deleted: a kill mid-deletion leaves a hidden temporary that the
            # next save removes, never a step-N directory missing half its files.
            doomed = old.with_name(f".{old.name}.pruned.tmp")
            old.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        remove_stale_temporaries(root)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` saved; returns the loop state."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))

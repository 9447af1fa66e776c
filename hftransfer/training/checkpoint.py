"""Resumable checkpoints: ``accelerator.save_state`` plus the loop's own state, written atomically.

A checkpoint is complete once it is renamed from ``.step-N.tmp`` to ``step-N`` (the rename happens after every
process has written its part and after ``trainer_state.json``), so a run killed mid-save leaves only the older
checkpoints, which ``latest`` then finds. A full disk does the same, and ends the run with one
:class:`~hftransfer.errors.DiskFullError` naming the checkpoint (see :mod:`hftransfer.training.disk`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from hftransfer.errors import ConfigError, DiskFullError
from hftransfer.training.disk import agree_on_failure, attempt
from hftransfer.utils import atomic_write_json, remove_stale_temporaries

STATE_FILE = "trainer_state.json"
# The LR schedule's state as releases before the JSON one saved it (accelerate's register_for_checkpointing).
LEGACY_SCHEDULER_FILE = "custom_checkpoint_0.pkl"
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
    """Save model, optimizer and RNG states (every process) and ``state`` (main process: ``trainer_state.json``,
    the loop state with the LR schedule's state, the log's sums and record count, all JSON).

    Must be called by every process. Only the ``keep`` newest checkpoints are kept.

    Raises:
        DiskFullError: on every process, when the disk filled up on any; the partial checkpoint is removed and the
            earlier ones are left intact, so the run can resume from the latest of them once space is freed.
    """
    root = checkpoints_root(run_dir)
    final = root / f"step-{step:08d}"
    partial = root / f".step-{step:08d}.tmp"
    what = f"checkpoint {final.name}"
    failed = None
    if accelerator.is_main_process:
        failed = attempt(what, final, lambda: _clear(root, partial))
    _agree(accelerator, failed, partial)
    failed = attempt(what, final, lambda: accelerator.save_state(str(partial)))
    # Every process's part must be on disk before the main process completes the checkpoint.
    _agree(accelerator, failed, partial)
    if accelerator.is_main_process:
        failed = attempt(what, final, lambda: atomic_write_json(partial / STATE_FILE, state))
        if failed is None:
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
            for old in list_checkpoints(run_dir)[:-keep]:
                # Renamed aside first (atomic), then deleted: a kill mid-deletion leaves a hidden temporary that
                # the next save removes, never a step-N directory missing half its files.
                doomed = old.with_name(f".{old.name}.pruned.tmp")
                old.rename(doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            remove_stale_temporaries(root)
    _agree(accelerator, failed, partial)
    return final


def _clear(root: Path, partial: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(partial, ignore_errors=True)


def _agree(accelerator: Accelerator, failed: DiskFullError | None, partial: Path) -> None:
    """A barrier that raises on every process when the save failed on any, the partial checkpoint removed."""
    try:
        agree_on_failure(accelerator, failed)
    except DiskFullError:
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` saved into the prepared objects; returns the loop state
    (``trainer_state.json``: the loop's counters, the LR schedule's ``state_dict`` and the log's sums).

    Nothing is unpickled in full: accelerate loads the model (safetensors), the optimizer and the RNG states with
    torch's weights-only unpickler, and the schedule's state is JSON. A checkpoint of an earlier release holds the
    schedule in ``custom_checkpoint_0.pkl``, which ``accelerator.load_state`` would unpickle with
    ``weights_only=False`` (code in the file would run): it is read here with the weights-only unpickler instead and
    hidden from accelerate. Still, a checkpoint is trusted input (see docs/running.md).
    """
    path = Path(path)
    saved = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    legacy = sorted(path.glob("custom_checkpoint_*.pkl"))
    if not legacy:
        _load_state(accelerator, path, path)
        return saved
    if "scheduler" not in saved:
        saved["scheduler"] = torch.load(path / LEGACY_SCHEDULER_FILE, map_location="cpu", weights_only=True)
    with tempfile.TemporaryDirectory(prefix="hftransfer-checkpoint-") as view:
        # The checkpoint without its custom_checkpoint files (accelerate loads every one it finds or fails).
        for entry in path.iterdir():
            if entry not in legacy:
                os.symlink(entry.resolve(), Path(view) / entry.name)
        _load_state(accelerator, Path(view), path)
    return saved


def _load_state(accelerator: Accelerator, directory: Path, checkpoint: Path) -> None:
    before = torch.get_rng_state()
    accelerator.load_state(str(directory))
    # accelerate only logs (at info level) when it cannot read the RNG states; the resume is then not exact.
    rng_file = f"random_states_{accelerator.process_index}.pkl"
    if (checkpoint / rng_file).exists() and torch.equal(before, torch.get_rng_state()):
        logger.warning(
            "%s: the random states in %s were not restored: training goes on, but not exactly as it would have",
            checkpoint,
            rng_file,
        )

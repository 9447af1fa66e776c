"""Trackers of a resumed run: the same tracker runs as before the stop, without a second copy of what is logged again.

A run stopped after a checkpoint logs the steps between that checkpoint and the stop again when it resumes
(``metrics.jsonl`` is cut back to the checkpoint, see ``TrainingLoop.resume``). Started as a new run, every tracker
would show a resumed run as two runs, the second one's first steps overlapping the first one's last. Instead:

- TensorBoard: ``purge_step`` = the checkpoint's step + 1. The writer marks what the stopped run wrote at later
  steps as orphaned, and TensorBoard hides it. A record at the checkpoint's own step written after the checkpoint
  was saved (the final evaluation) can appear twice, with the same value.
- MLflow: the stopped run's MLflow run is continued (its id is kept in ``<run_dir>/trackers.json``). MLflow cannot
  delete metric points, so the steps logged again show twice, with the values of the uninterrupted run.
- Weights & Biases: the same run (``id``, ``resume="allow"``); wandb drops points at steps it already has.

Resuming needs the tracker ids of a run that started with this version: an older run directory has no
``trackers.json``, and its resume starts new MLflow / wandb runs as before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from hftransfer.utils import atomic_write_json

logger = logging.getLogger("hftransfer")

TRACKER_IDS_FILE = "trackers.json"

# Trackers whose run can be continued by id, and where the id is on Accelerate's tracker object.
_RUN_IDS = {
    "mlflow": lambda run: run.info.run_id,
    "wandb": lambda run: run.id,
}


def _uses(names: list[str], tracker: str) -> bool:
    return tracker in names or "all" in names


def saved_tracker_ids(run_dir: Path) -> dict[str, str]:
    """The tracker run ids recorded when the run in ``run_dir`` started (empty when it recorded none)."""
    path = Path(run_dir) / TRACKER_IDS_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("%s is unreadable: the resumed run starts new tracker runs", path)
        return {}
    return {name: str(run_id) for name, run_id in saved.items() if name in _RUN_IDS and run_id}


def tracker_init_kwargs(
    names: list[str], run_dir: Path, resumed_step: int | None
) -> dict[str, dict[str, Any]]:
    """``init_kwargs`` for ``Accelerator.init_trackers``: nothing for a new run; for a run resumed at checkpoint step
    ``resumed_step``, the settings that continue its tracker runs (see the module docstring)."""
    if resumed_step is None:
        return {}
    kwargs: dict[str, dict[str, Any]] = {}
    if _uses(names, "tensorboard"):
        kwargs["tensorboard"] = {"purge_step": resumed_step + 1}
    saved = saved_tracker_ids(run_dir)
    if _uses(names, "mlflow") and "mlflow" in saved:
        kwargs["mlflow"] = {"run_id": saved["mlflow"]}
    if _uses(names, "wandb") and "wandb" in saved:
        kwargs["wandb"] = {"id": saved["wandb"], "resume": "allow"}
    return kwargs


def record_tracker_ids(accelerator: Accelerator, run_dir: Path) -> None:
    """Keep the ids of the tracker runs just started in ``<run_dir>/trackers.json`` (main process), for a resume."""
    if not accelerator.is_main_process:
        return
    ids = {}
    for name, run_id_of in _RUN_IDS.items():
        try:
            run = accelerator.get_tracker(name, unwrap=True)
            ids[name] = run_id_of(run)
        except (AttributeError, ValueError):
            continue  # not among this run's trackers (get_tracker returns a stand-in without the run)
    if ids:
        atomic_write_json(Path(run_dir) / TRACKER_IDS_FILE, ids)


def start_trackers(
    accelerator: Accelerator,
    names: list[str],
    run_dir: Path,
    config: dict[str, Any],
    resumed_step: int | None,
) -> None:
    """``init_trackers`` for the run in ``run_dir`` (new, or resumed at ``resumed_step``), then record their ids."""
    init_kwargs = tracker_init_kwargs(names, run_dir, resumed_step)
    if init_kwargs:
        logger.info("Resuming the tracker runs: %s", ", ".join(sorted(init_kwargs)))
    accelerator.init_trackers(run_dir.name, config=config, init_kwargs=init_kwargs)
    record_tracker_ids(accelerator, run_dir)

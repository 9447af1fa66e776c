"""Where metrics go: the console, ``metrics.jsonl`` in the run directory, and Accelerate's trackers.

Trackers are named in ``train.trackers``; :func:`check_trackers` fails before any work when one is unknown or not
installed (Accelerate itself would drop it with a debug message and train without it), and :func:`prepare_trackers`
gives MLflow a store inside the run directory, so ``train.trackers=[mlflow]`` needs no server.

A resumed run's ``metrics.jsonl`` equals the uninterrupted run's record for record, except for the timing keys
(:func:`is_timing_key`): wall-clock durations and rates, which no two runs share.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from hftransfer.errors import ConfigError
from hftransfer.training.disk import writing
from hftransfer.utils import atomic_write_text

logger = logging.getLogger("hftransfer")

# Printed on the console; the per-type/per-class details go to the files and trackers only.
HEADLINE = (
    "loss",
    "lr",
    "f1",
    "precision",
    "recall",
    "accuracy",
    "micro_f1",
    "macro_f1",
    "threshold",
    "mse",
    "pearson",
    "spearman",
    "grad_norm",
    "samples_per_second",
)


# Record keys measured with the wall clock: ``samples_per_second`` (train), ``train_seconds`` (validation),
# ``seconds`` (the final evaluation of each split). Every other key of a record is a function of the data, the
# seed and the step, and a resumed run logs it exactly as the uninterrupted run does.
TIMING_SUFFIXES = ("seconds", "per_second")


def is_timing_key(key: str) -> bool:
    """Whether a ``metrics.jsonl`` key is a wall-clock measurement (it differs between a run and its resume)."""
    return key.endswith(TIMING_SUFFIXES)


# What to install for a tracker that is missing: ours come with the ``tracking`` extra, the others by their own name.
TRACKER_PACKAGES = {
    "tensorboard": "'hftransfer[tracking]'",
    "mlflow": "'hftransfer[tracking]'",
    "comet_ml": "comet-ml",
}

# Characters every tracker takes in a metric name. MLflow refuses others, so a class named "n't" or "B&B" would stop
# the run at its first evaluation; the trackers' copy of the name has "_" for them (metrics.jsonl keeps the name).
_TRACKER_UNSAFE = re.compile(r"[^/\w.\- :]")

# The value prepare_trackers gave MLFLOW_TRACKING_URI: one it finds there again is a previous run's, not the user's.
_our_mlflow_uri: str | None = None


def check_trackers(names: list[str]) -> None:
    """Fail now, naming what to install, when a tracker of ``names`` is unknown to Accelerate or not installed.

    Raises:
        ConfigError: naming the tracker and the ``pip install`` that provides it.
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(tracker) for tracker in get_available_trackers()}
    for name in names:
        if name == "all":
            continue
        if name not in LOGGER_TYPE_TO_CLASS:
            choices = ", ".join(sorted(LOGGER_TYPE_TO_CLASS))
            raise ConfigError(f"train.trackers: {name!r} is not an Accelerate tracker; choose from {choices}")
        if name not in available:
            package = TRACKER_PACKAGES.get(name, name)
            raise ConfigError(
                f"train.trackers: {name} is not installed; pip install {package} (or remove it)"
            )


def prepare_trackers(names: list[str], run_dir: Path) -> None:
    """Point MLflow at a local store in ``<run_dir>/mlruns`` unless the user chose one (``MLFLOW_TRACKING_URI``).

    MLflow's default store (``sqlite:///mlflow.db`` in the working directory, MLflow 3) needs SQLAlchemy, which
    ``mlflow-skinny`` lacks, and mixes every run's records in one file away from the run. Its file store needs no
    database; MLflow 3 refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is set, which this sets (if unset) with it.
    Accelerate's tracker uses MLflow's module-level API, so the choice is made in the environment.
    """
    global _our_mlflow_uri
    if "mlflow" not in names and "all" not in names:
        return
    current = os.environ.get("MLFLOW_TRACKING_URI")
    if current and current != _our_mlflow_uri:
        return  # the user's store
    if current and "mlflow" in sys.modules:
        import mlflow

        if mlflow.active_run() is not None:
            # An earlier run of this process (a notebook) stopped before closing its MLflow run; starting the next
            # one would fail with "Run ... is already active".
            mlflow.end_run(status="FAILED")
    _our_mlflow_uri = (Path(run_dir).resolve() / "mlruns").as_uri()
    os.environ["MLFLOW_TRACKING_URI"] = _our_mlflow_uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if not math.isnan(value) else "nan"
    return str(value)


class MetricsLog:
    """Append-only JSON-lines log (main process only) that mirrors each record to the console and the trackers."""

    def __init__(self, accelerator: Accelerator, run_dir: Path) -> None:
        self.accelerator = accelerator
        self.path = Path(run_dir) / "metrics.jsonl"

    def records(self) -> int:
        """How many lines ``metrics.jsonl`` holds (main process; 0 on the others): a checkpoint stores it, and a
        resume from that checkpoint keeps exactly those lines."""
        if not self.accelerator.is_main_process or not self.path.exists():
            return 0
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())

    def truncate_after(self, step: int, records: int | None = None) -> None:
        """Drop the records a resumed run logs again: those after ``step`` and, when ``records`` (the count
        :meth:`records` returned when the checkpoint was saved) is given, every line past the first ``records``.

        The count is what tells records logged at the checkpoint's step *after* it was saved (an evaluation that
        follows the checkpoint, the final evaluation of the best model) from those logged before: the step alone
        cannot. Damaged lines (an append cut short by a full disk or a kill) are dropped and reported: they must
        never block a resume."""
        if not self.accelerator.is_main_process or not self.path.exists():
            return
        kept, damaged = [], []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
        for number, line in lines[:records]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                damaged.append(number)
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        if damaged:
            logger.warning(
                "%s: dropped %d damaged line(s) (line %s): a write was cut short, e.g. by a full disk",
                self.path,
                len(damaged),
                ", ".join(map(str, damaged[:5])),
            )
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, split: str, metrics: dict[str, Any], *, step: int, epoch: float) -> None:
        """Record ``metrics`` of ``split`` (``train``, ``validation``, ``test``) at ``step``."""
        if not self.accelerator.is_main_process:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"split": split, "step": step, "epoch": round(epoch, 4), **metrics}
        with writing("metrics.jsonl", self.path), self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        keys = [key for key in HEADLINE if key in metrics]
        # Training records are short: every objective's term and logged value (domain, domain_accuracy, mlm, ...)
        # goes on the console too; evaluation records keep to the headline (their per-type scores are many).
        extra = (
            (k for k in metrics if isinstance(metrics[k], (int, float)) and not isinstance(metrics[k], bool))
            if split == "train"
            else (k for k in metrics if k.startswith(("penalty_", "loss_")))
        )
        keys += sorted(k for k in extra if k not in keys)
        headline = "  ".join(f"{key}={_format(metrics[key])}" for key in keys)
        logger.info("[%s] step %d epoch %.2f  %s", split, step, epoch, headline)
        scalars = {
            _TRACKER_UNSAFE.sub("_", f"{split}/{k}"): v
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.accelerator.log(scalars, step=step)

"""What a study says about its trials: one row per trial, as ``trials.csv`` and as the table the command prints."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hftransfer.utils import atomic_write_text

COLUMNS = ("trial", "state", "value", "seconds", "pruned_at_epoch")


def trial_rows(study: Any, keys: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per trial, in trial order: :data:`COLUMNS`, then each searched key, then ``run_dir``
    (relative to the study directory)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = {
            "trial": trial.number,
            "state": trial.state.name.lower(),
            # a pruned trial's value is its last report: the best score it had when it stopped
            "value": trial.value if trial.value is not None else _last_report(trial),
            "seconds": trial.user_attrs.get("seconds"),
            "pruned_at_epoch": trial.user_attrs.get("pruned_at_epoch"),
        }
        row.update({key: trial.params.get(key) for key in keys})
        row["run_dir"] = f"trials/{trial.number}"  # under the study directory, which may move
        rows.append(row)
    return rows


def write_trials_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def table_lines(rows: list[dict[str, Any]], metric: str, best: int | None) -> list[str]:
    """A plain-text table (trial, state, value, seconds, parameters), the best trial marked with ``*``."""
    if not rows:
        return ["no trials"]
    keys = [key for key in rows[0] if key not in (*COLUMNS, "run_dir")]
    header = ["trial", "state", f"validation {metric}", "seconds", *keys]
    cells = [
        [
            f"{row['trial']}{'*' if row['trial'] == best else ''}",
            row["state"] + (f" @{row['pruned_at_epoch']:g}" if row["pruned_at_epoch"] is not None else ""),
            _format(row["value"]),
            _format(row["seconds"]),
            *(_format(row[key]) for key in keys),
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in [header, *cells]
    ]


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            f"{value:.4g}"
            if abs(value) < 1e-3 or abs(value) >= 1e4
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    return str(value)


def _last_report(trial: Any) -> float | None:
    values = trial.intermediate_values
    return values[max(values)] if values else None

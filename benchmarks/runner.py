"""What every benchmark script shares: where results go, and running one process at a time with its output logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run_logged(command: list[str], log: Path, capture_stdout: bool = False) -> tuple[str | None, float]:
    """Run ``command`` from the repository root, offline, with its output in ``log`` (stderr only when
    ``capture_stdout``: stdout is then returned). Returns ``(stdout or None, wall seconds from launch to exit)``.

    Raises:
        RuntimeError: the command failed; the message names the log.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    with log.open("w") as handle:
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE if capture_stdout else handle,
            stderr=handle if capture_stdout else subprocess.STDOUT,
            text=True,
        )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}); see {log}")
    return result.stdout, wall


def run_recipe(recipe: str, argv: list[str], run_dir: Path, log: Path | None = None) -> tuple[dict, float]:
    """Run ``recipes/<recipe>`` into ``run_dir`` (its own process, so peak memory is its own); output goes to
    ``log`` (default ``<run_dir>.log``). Returns ``(metrics.json, wall seconds from launch to exit)``."""
    command = [
        sys.executable,
        str(ROOT / "recipes" / recipe),
        f"output_dir={run_dir}",
        "overwrite_output_dir=true",
        *argv,
        "train.trackers=[]",
    ]
    _, wall = run_logged(command, log or run_dir.parent / f"{run_dir.name}.log")
    return json.loads((run_dir / "metrics.json").read_text()), wall


def run_or_resume(recipe: str, argv: list[str], run_dir: Path, resume: bool) -> dict:
    """``metrics.json`` of ``run_dir`` when ``resume`` and the run finished, else :func:`run_recipe` into it; the
    wall time is kept in the file as ``benchmark_wall_s`` (written atomically), so a resumed run reports it too."""
    path = run_dir / "metrics.json"
    if resume and path.is_file():
        return json.loads(path.read_text())
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    metrics, wall = run_recipe(recipe, argv, run_dir)
    metrics["benchmark_wall_s"] = round(wall, 1)
    from hftransfer.utils import atomic_write_text

    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
    return metrics


def pyplot() -> Any | None:
    """matplotlib's pyplot on the file-only backend, or None without matplotlib (the plots are optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt

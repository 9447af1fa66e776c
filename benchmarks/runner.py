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


# The launch lines a user types (README): plain python, `accelerate launch` (one process: it sets OMP_NUM_THREADS=1
# unless told otherwise), and the README's two-process CPU line. Each maps to (command prefix, extra environment).
LAUNCHERS = {
    "python": ([], {}),
    "accelerate": (["launch"], {}),
    "accelerate-2": (
        ["launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
        + ["--dynamo_backend", "no"],
        {"ACCELERATE_USE_CPU": "1"},
    ),
}
LAUNCH_LINES = {
    "python": "python <script>",
    "accelerate": "accelerate launch <script>",
    "accelerate-2": "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 <script>",
}


def launch_command(launcher: str, script: Path | str) -> tuple[list[str], dict[str, str]]:
    """``(command, extra environment)`` that runs ``script`` the way ``launcher`` names (see ``LAUNCHERS``):
    ``accelerate`` is the console script installed next to this Python, as a user's shell finds it."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    arguments, env = LAUNCHERS[launcher]
    if launcher == "python":
        return [sys.executable, str(script)], env
    console = Path(sys.executable).parent / "accelerate"
    prefix = (
        [str(console)] if console.exists() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
    )
    return [*prefix, *arguments, str(script)], env


def run_logged(
    command: list[str], log: Path, capture_stdout: bool = False, env: dict[str, str] | None = None
) -> tuple[str | None, float]:
    """Run ``command`` from the repository root, offline, with its output in ``log`` (stderr only when
    ``capture_stdout``: stdout is then returned); ``env`` adds to the environment. Returns ``(stdout or None, wall
    seconds from launch to exit)``.

    Raises:
        RuntimeError: the command failed; the message names the log.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
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


def run_recipe(
    recipe: str, argv: list[str], run_dir: Path, log: Path | None = None, launcher: str = "python"
) -> tuple[dict, float]:
    """Run ``recipes/<recipe>`` into ``run_dir`` (its own process, so peak memory is its own) on the launch line
    ``launcher`` names; output goes to ``log`` (default ``<run_dir>.log``). Returns ``(metrics.json, wall seconds
    from launch to exit)``."""
    launch, env = launch_command(launcher, ROOT / "recipes" / recipe)
    command = [
        *launch,
        f"output_dir={run_dir}",
        "overwrite_output_dir=true",
        *argv,
        "train.trackers=[]",
    ]
    _, wall = run_logged(command, log or run_dir.parent / f"{run_dir.name}.log", env=env)
    return json.loads((run_dir / "metrics.json").read_text()), wall


def run_or_resume(recipe: str, argv: list[str], run_dir: Path, resume: bool) -> dict:
    """``metrics.json`` of ``run_dir`` when ``resume`` and the run finished, else :func:`run_recipe` into it; the
    wall time is kept in the file as ``benchmark_wall_s`` (written atomically), so a resumed run reports it too."""
    path = run_dir / "metrics.json"
    if resume and path.is_file():
        metrics = json.loads(path.read_text())
        # Without the wall time the benchmark was stopped between the run's end and its bookkeeping: run it again.
        if "benchmark_wall_s" in metrics:
            return metrics
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

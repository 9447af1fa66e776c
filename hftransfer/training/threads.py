"""How many CPU threads each process computes with: all of the machine's cores, shared by the local processes,
unless the user chose a number.

Why this exists: ``accelerate launch`` on a CPU-only machine without ``--cpu`` or ``--num_cpu_threads_per_process``
exports ``OMP_NUM_THREADS=1`` to the script (accelerate 1.15, ``commands/launch.py`` defaults
``num_cpu_threads_per_process`` to 1 and ``utils/launch.py`` writes it to ``OMP_NUM_THREADS``), so torch trains
on one core where ``python recipes/X.py`` uses them all. ``torchrun`` does the same for several processes.

The rule, applied once per process by :func:`configure_cpu_threads` right after the Accelerator exists:

1. ``train.cpu_threads`` in the config: that many threads, on any device ("config").
2. Not on CPU (a GPU run): torch's count is left alone ("not cpu").
3. ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) set in the environment:

   - set by the launcher as its default: replaced by cores / local processes ("launcher default replaced");
   - exported by the user, or given as ``accelerate launch --num_cpu_threads_per_process N``: kept
     ("environment" / "launcher option"). Torch read it at start-up, so nothing needs changing.

4. Nothing set: with one local process torch's own default is already every usable core and is left alone
   (so a program that called ``torch.set_num_threads`` before the run keeps its count: "program"); with N local
   processes each gets cores / N ("all cores").

Cores: the physical cores (psutil, when installed) that this process may run on (``os.sched_getaffinity``),
at least 1; cores / N is rounded down and never below 1.

Telling the launcher's default from a user's choice: the launcher leaves no trace of its own in the script's
environment (no ``ACCELERATE_*`` variable says who chose the thread count; ``OMP_NUM_THREADS=1`` reads the same
either way). Accelerate keeps an ``OMP_NUM_THREADS`` the user exported (it becomes
``num_cpu_threads_per_process``) and writes ``--num_cpu_threads_per_process`` into it. So the evidence is the
launcher process itself, the parent of every process it starts (the single process, or each torchrun worker):
its command line and the environment it was started with (``/proc/<ppid>/cmdline`` and ``environ``, via psutil
when installed). ``OMP_NUM_THREADS`` is the launcher's default when the parent is ``accelerate launch`` (or
``torchrun``), was started without ``OMP_NUM_THREADS`` and was given no ``--num_cpu_threads_per_process``.
Anything else, including a parent that cannot be read, counts as the user's choice: hftransfer then behaves as
before rather than override a number someone may have chosen.

The inter-op pool is never resized: ``torch.set_num_interop_threads`` raises once any inter-op work has started,
hftransfer starts none (it is for ``torch.jit.fork``-style tasks), and ``OMP_NUM_THREADS`` does not shrink it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hftransfer.errors import ConfigError

logger = logging.getLogger("hftransfer")

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # the order torch reads them in
# accelerate's option; argparse also accepts any unambiguous prefix of it ("--num_cpu" ...)
_THREAD_OPTION = "--num_cpu_threads_per_process"
_THREAD_OPTION_SHORTEST = "--num_c"  # shorter prefixes are ambiguous with --num_processes / --num_machines

_last_report: dict[str, Any] | None = None


@dataclass(frozen=True)
class Launcher:
    """The process that started this one, as far as the thread count is concerned."""

    name: str  # "accelerate" or "torchrun"
    thread_option: bool  # --num_cpu_threads_per_process was given
    exported: bool  # the launcher was itself started with OMP_NUM_THREADS set (the user exported it)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # threads per process to set; None: leave torch's count as it is
    source: str
    reason: str


def usable_cores() -> int:
    """Physical cores this process may run on (at least 1)."""
    try:
        allowed = len(os.sched_getaffinity(0))  # taskset, cgroup cpusets
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    physical = None
    try:
        import psutil  # a dependency of accelerate, but not of hftransfer itself

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    # Hyper-threads share a core's arithmetic units: one compute thread per physical core is what torch picks too.
    return max(1, min(allowed, physical or allowed))


def local_process_count(num_processes: int, env: Mapping[str, str] | None = None) -> int:
    """Processes of this run on this machine: ``LOCAL_WORLD_SIZE`` (torchrun, accelerate's multi-CPU setup),
    else all of them (one machine)."""
    env = os.environ if env is None else env
    value = env.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else max(1, num_processes)


def _launcher_options(argv: list[str]) -> tuple[str, list[str]] | None:
    """("accelerate" | "torchrun", the arguments after the launcher's name) when ``argv`` is a launcher."""
    # argv[0] is the interpreter or the console script; "python -m X" puts X third.
    for index, arg in enumerate(argv[:3]):
        name = Path(arg).name
        if name == "accelerate-launch" or arg == "accelerate.commands.launch":
            return "accelerate", argv[index + 1 :]
        if name == "accelerate" and argv[index + 1 : index + 2] == ["launch"]:
            return "accelerate", argv[index + 2 :]
        if name == "torchrun" or arg in ("torch.distributed.run", "torch.distributed.launch"):
            return "torchrun", argv[index + 1 :]
    return None


def parse_launcher(argv: list[str], environ: Mapping[str, str]) -> Launcher | None:
    """The :class:`Launcher` of a parent process with command line ``argv`` and start-up ``environ``."""
    found = _launcher_options(argv)
    if found is None:
        return None
    name, options = found
    thread_option = False
    for arg in options if name == "accelerate" else []:
        if arg.endswith(".py"):  # the training script: what follows are its own arguments
            break
        flag = arg.split("=", 1)[0]
        if len(flag) >= len(_THREAD_OPTION_SHORTEST) and _THREAD_OPTION.startswith(flag):
            thread_option = True
    return Launcher(name, thread_option, exported="OMP_NUM_THREADS" in environ)


def parent_launcher() -> Launcher | None:
    """The launcher that started this process (its command line and start-up environment), or None when the
    parent is not a launcher or cannot be read."""
    pid = os.getppid()
    try:
        import psutil

        parent = psutil.Process(pid)
        argv, environ = parent.cmdline(), parent.environ()
    except ImportError:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
            environ = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        except OSError:
            return None
    except Exception:  # psutil.Error (gone, not permitted) and platforms without environ()
        return None
    return parse_launcher(argv, environ)


def choose_cpu_threads(
    requested: int | None,
    *,
    num_local_processes: int,
    device_type: str,
    env: Mapping[str, str] | None = None,
    launcher: Launcher | None = None,
    cores: int | None = None,
    current: int | None = None,
) -> ThreadChoice:
    """The decision of the module docstring, with its inputs explicit (``env``, the ``launcher`` that started
    this process, the usable ``cores``, torch's ``current`` count) so it can be tested without a launch."""
    env = os.environ if env is None else env
    processes = max(1, num_local_processes)
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ConfigError(f"train.cpu_threads={requested!r}: a positive number of threads, or null")
        return ThreadChoice(requested, "config", f"train.cpu_threads={requested}")
    if device_type != "cpu":
        return ThreadChoice(None, "not cpu", f"on {device_type}: torch's CPU thread count left alone")
    cores = usable_cores() if cores is None else cores
    share = max(1, cores // processes)
    variable = next((name for name in THREAD_VARIABLES if env.get(name)), None)
    if variable is not None:
        value = env[variable]
        if variable == "OMP_NUM_THREADS" and launcher is not None:
            if launcher.thread_option:
                return ThreadChoice(None, "launcher option", f"--num_cpu_threads_per_process {value}")
            if not launcher.exported:
                return ThreadChoice(
                    share,
                    "launcher default replaced",
                    f"{launcher.name} set OMP_NUM_THREADS={value} by default; {cores} cores / {processes} "
                    "process(es)",
                )
        return ThreadChoice(None, "environment", f"{variable}={value} set by the user")
    if processes > 1:
        return ThreadChoice(share, "all cores", f"{cores} cores / {processes} processes")
    current = torch.get_num_threads() if current is None else current
    if current != cores:
        return ThreadChoice(None, "program", f"torch.set_num_threads({current}) before the run is kept")
    return ThreadChoice(None, "all cores", f"torch's default: all {cores} cores")


def configure_cpu_threads(
    requested: int | None, *, num_local_processes: int, device_type: str
) -> dict[str, Any]:
    """Apply :func:`choose_cpu_threads` to this process (``torch.set_num_threads``), log it, and return the
    report that goes to ``metrics.json`` (``threads``); :func:`thread_report` returns it later."""
    global _last_report
    env = os.environ
    # Reading the parent is only needed to judge an OMP_NUM_THREADS on CPU.
    launcher = parent_launcher() if env.get("OMP_NUM_THREADS") and device_type == "cpu" else None
    cores = usable_cores()
    choice = choose_cpu_threads(
        requested,
        num_local_processes=num_local_processes,
        device_type=device_type,
        env=env,
        launcher=launcher,
        cores=cores,
    )
    if choice.threads is not None and choice.threads != torch.get_num_threads():
        torch.set_num_threads(choice.threads)
    report = {
        "threads_per_process": torch.get_num_threads(),
        "processes": max(1, num_local_processes),
        "cores": cores,
        "source": choice.source,
        "reason": choice.reason,
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"),
        "launcher": launcher.name if launcher is not None else None,
    }
    logger.info(
        "CPU threads: %d per process (%s: %s)", report["threads_per_process"], choice.source, choice.reason
    )
    _last_report = report
    return dict(report)


def thread_report() -> dict[str, Any] | None:
    """The report of this process's last :func:`configure_cpu_threads` (the thread count is process-wide)."""
    return None if _last_report is None else dict(_last_report)

"""Starting a run: the accelerator, the run directory that all processes agree on (and that the run holds the lock
of, :mod:`hftransfer.training.run_lock`), logging, trackers, the recorded command; and what every flow does at the
end (peak memory, the optional Hub push, releasing the run directory).

Shared by the fine-tuning (:mod:`hftransfer.finetune`), multitask and distillation flows.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    broadcast_object_list,
    parse_flag_from_env,
    set_seed,
)

from hftransfer import console
from hftransfer.config import RunConfig
from hftransfer.errors import ConfigError, DiskFullError, RunDirInUseError
from hftransfer.training import run_lock
from hftransfer.training.checkpoint import list_checkpoints, resolve_resume
from hftransfer.training.distributed_checks import check_processes_joined
from hftransfer.training.host_memory import reuse_freed_host_memory
from hftransfer.training.threads import configure_cpu_threads, local_process_count
from hftransfer.training.tracking import check_trackers, prepare_trackers
from hftransfer.utils import atomic_write_json, flatten_dict

logger = logging.getLogger("hftransfer")


def setup_logging(accelerator: Accelerator) -> None:
    """INFO on the main process, warnings elsewhere, printed without breaking progress bars (console.py)."""
    console.setup_logging(accelerator.is_main_process)


def resolve_mixed_precision(choice: str) -> str | None:
    """``auto``: defer to ``accelerate launch --mixed_precision`` if given, else bf16/fp16 on GPU, fp32 on CPU."""
    if choice != "auto":
        if choice == "fp16" and not torch.cuda.is_available():
            raise ConfigError(
                "train.mixed_precision=fp16 needs a GPU; on CPU use 'no' (or 'bf16', which is slow)"
            )
        return choice
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _choose_run_dir(config: RunConfig, recipe: str) -> Path:
    if config.output_dir:
        return Path(config.output_dir)
    if config.train.resume_from_checkpoint == "latest":
        raise ConfigError(
            "train.resume_from_checkpoint=latest needs output_dir=<the run directory to continue>"
        )
    # Every process must agree on the timestamp, so the main process picks it.
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S")]
    broadcast_object_list(stamp)
    return Path("runs") / f"{recipe}-{stamp[0]}"


def _check_run_dir(run_dir: Path, config: RunConfig, accelerator: Accelerator) -> None:
    holds_run = (run_dir / "config.yaml").exists() or bool(list_checkpoints(run_dir))
    if not holds_run or config.train.resume_from_checkpoint:
        return
    if not config.overwrite_output_dir:
        raise ConfigError(
            f"output_dir={str(run_dir)!r} already holds a run; continue it with train.resume_from_checkpoint=latest, "
            "start over with overwrite_output_dir=true, or choose another output_dir"
        )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # By name, never the whole directory: its lock file (run_lock.LOCK_FILE) is held by this run.
        for name in ("checkpoints", "model", "adapter", "metrics.jsonl", "metrics.json"):
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()


# What the main process can fail with when it takes the lock, rebuilt on the others from its name and message.
_SHARED_ERRORS = {cls.__name__: cls for cls in (RunDirInUseError, DiskFullError)}


def _lock_run_dir(run_dir: Path, state: PartialState) -> None:
    """The main process takes the run directory's lock; every process raises the same error when it cannot."""
    outcome: list[tuple[str, str] | None] = [None]
    failure: Exception | None = None
    if state.is_main_process:
        try:
            run_lock.require(run_dir)
        except Exception as err:  # told to the other processes first: they would wait for this one forever
            failure, outcome[0] = err, (type(err).__name__, str(err))
    if state.num_processes > 1:
        broadcast_object_list(outcome)
    if failure is not None:
        raise failure
    if outcome[0] is not None:
        name, message = outcome[0]
        raise _SHARED_ERRORS.get(name, RuntimeError)(message)


def end_run(run_dir: Path) -> None:
    """Release the run directory for the next run (call last, on every process; a no-op where not held).

    A run that raises keeps it until its process exits or starts another run (see
    :mod:`hftransfer.training.run_lock`)."""
    run_lock.release(run_dir)


def _trackers(config: RunConfig) -> list[str]:
    if config.train.trackers is not None:
        check_trackers(list(config.train.trackers))  # before any work: a missing one fails here, named
        return list(config.train.trackers)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return []
    return ["tensorboard"]


def start_run(
    config: Any, recipe: str, *, find_unused_parameters: bool = False
) -> tuple[Accelerator, Path, list[str], Path | None]:
    """The accelerator, the run directory (agreed by all processes, locked, checked), the trackers and the
    checkpoint to resume from; the global seed is set. ``config`` needs ``train``, ``output_dir`` and
    ``overwrite_output_dir``. The run holds the run directory until :func:`end_run` or its process exits.

    Raises:
        RunDirInUseError: another live run holds the run directory (on every process).
    """
    trackers = _trackers(config)
    # The run directory must be known before the Accelerator exists (trackers log into it), and choosing it needs
    # the processes to agree: PartialState sets up the process group that the Accelerator then reuses.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as AcceleratorState would read it
    run_dir = _choose_run_dir(config, recipe)
    # Before anything is written or deleted in it: a second run must not touch a live run's files.
    _lock_run_dir(run_dir, state)
    try:
        return _start(config, recipe, run_dir, trackers, find_unused_parameters)
    except BaseException:
        end_run(run_dir)  # a run that could not start does not hold the directory
        raise


def _start(
    config: Any, recipe: str, run_dir: Path, trackers: list[str], find_unused_parameters: bool
) -> tuple[Accelerator, Path, list[str], Path | None]:
    prepare_trackers(trackers, run_dir)  # MLflow's store in the run directory, unless the user chose one
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(config.train.mixed_precision),
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )
    setup_logging(accelerator)
    # Processes a launcher started that did not join one run each run alone: the first to lock the directory
    # stops here with why, the others at the lock.
    check_processes_joined(accelerator)
    # All cores under every launch line (accelerate launch defaults to 1 thread); metrics.json records it.
    configure_cpu_threads(
        getattr(config.train, "cpu_threads", None),
        num_local_processes=local_process_count(accelerator.num_processes),
        device_type=accelerator.device.type,
    )
    if config.train.reuse_host_memory and accelerator.device.type == "cpu":
        reuse_freed_host_memory()
    _check_run_dir(run_dir, config, accelerator)
    resume_from = resolve_resume(config.train.resume_from_checkpoint, run_dir)
    set_seed(config.train.seed)
    if accelerator.is_main_process:
        _record_command(run_dir, recipe, accelerator.num_processes)

    return accelerator, run_dir, trackers, resume_from


def _record_command(run_dir: Path, recipe: str, num_processes: int) -> None:
    """``command.json``: the recipe and arguments of this run, for model cards and reproduction."""
    import shlex
    import sys

    from hftransfer import __version__

    run_dir.mkdir(parents=True, exist_ok=True)
    launch = "accelerate launch" + (f" --num_processes {num_processes}" if num_processes > 1 else "")
    # The command line as typed, when this process is the recipe script (not a notebook or a test calling main()).
    typed = Path(sys.argv[0]).stem == recipe
    atomic_write_json(
        run_dir / "command.json",
        {
            "recipe": recipe,
            "command": f"{launch} recipes/{recipe}.py {shlex.join(sys.argv[1:])}".strip() if typed else None,
            # config.yaml is the whole resolved config: this reproduces the run from the run directory alone.
            "reproduce": f"{launch} recipes/{recipe}.py --config config.yaml",
            "num_processes": num_processes,
            "hftransfer_version": __version__,
        },
    )


_NOT_TRACKED = {"train.resume_from_checkpoint"}


def tracker_config(config: RunConfig) -> dict[str, Any]:
    """Flat scalars only: tensorboard's hparams reject None and lists. The resume setting is left out: it is not a
    hyper-parameter, and a resumed run continues its MLflow run, where a parameter's value cannot change."""
    flat = flatten_dict(config.to_dict())
    return {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in flat.items()
        if key not in _NOT_TRACKED
    }


def publish_if_asked(
    config: Any, run_dir: Path, accelerator: Accelerator, final_metrics: dict[str, Any]
) -> None:
    """``push_to_hub=true``: publish from the main process; the outcome (never the token) goes to metrics.json."""
    if not config.push_to_hub or not accelerator.is_main_process:
        return
    from hftransfer.hub.publish import push_after_run

    final_metrics["hub"] = push_after_run(run_dir, config)
    atomic_write_json(run_dir / "metrics.json", final_metrics)


def current_rss_mb() -> float | None:
    """Resident memory of this process now, in MiB (Linux ``/proc/self/statm``; None where it is not available).

    Cheap enough to read every step (one small file read, no device synchronisation).
    """
    try:
        with open("/proc/self/statm", "rb") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (and peak GPU memory when on CUDA), in MiB."""
    import resource

    peak = {"rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # Linux: KiB
    if torch.cuda.is_available():
        peak["gpu"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak

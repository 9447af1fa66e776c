"""Run a recipe with a SIGKILL (or SIGSTOP) injected at a write boundary: the wrapper the fault suite launches.

    HFTRANSFER_FAULT_AT=prune:2 python benchmarks/fault_shim.py recipes/finetune_classifier.py KEY=VALUE ...
    python benchmarks/fault_shim.py --serve      # a fork server (see below): the fast tests' launcher

Nothing in ``hftransfer`` knows about faults: this shim patches what the library calls (file writers, the loop's
step, ``MetricsLog.log``) and then runs the recipe as ``python recipes/<recipe>.py`` would. A boundary is found
by what is written where, not by which library function writes it, so the hooks survive refactoring of the
library; a boundary the shim cannot see any more shows up as "never reached" in the suite's reference trace.

Boundaries (``<name>:<n>``: the n-th such event of this process):

- ``step``: before the n-th optimizer step (nothing is being written).
- ``checkpoint``: the n-th checkpoint's model weights (a ``model*.safetensors`` under ``checkpoints/``), half
  written.
- ``checkpoint_state``: the n-th ``trainer_state.json``, its temporary half written, before the rename.
- ``prune``: the n-th deletion of a checkpoint directory (``shutil.rmtree`` of one holding a
  ``trainer_state.json``): its weights deleted, the rest not.
- ``best_model``: the n-th weights file written during training outside ``checkpoints/`` (a best-model export),
  half written.
- ``log``: the n-th ``metrics.jsonl`` append, half of the line written (what a full disk, or a kill between the
  pages of a long record, leaves).
- ``final_log``: before the n-th ``metrics.jsonl`` append after training (the final validation and test).
- ``export``: the n-th weights file written after training (e.g. a merged LoRA model), half written.
- ``metrics_json``: the n-th ``metrics.json``, its temporary half written, before the rename.

Environment:

- ``HFTRANSFER_FAULT_AT=<boundary>:<n>``: where to fault (unset: none; the run is only traced).
- ``HFTRANSFER_FAULT_ACTION=kill|stop``: SIGKILL (default), or SIGSTOP before the write (the write then proceeds
  once the process is continued: the lock test holds a live run still with it).
- ``HFTRANSFER_FAULT_RANK=<r>``: fault only the process whose ``RANK`` is ``r`` (a distributed launch).
- ``HFTRANSFER_FAULT_MARK=<path>``: JSON written just before the signal (boundary, n, what, time, pid, rank).
- ``HFTRANSFER_FAULT_TRACE=<path>``: every boundary event appended as a line (the suite counts a reference run's).
- ``HFTRANSFER_FAULT_READY=<path>``: written when the recipe starts, after the imports (random kills time from it).

The fork server (``--serve``) imports the library once, then forks a child per request, each running one recipe
exactly as above: a run then starts in a fraction of a second instead of the ~8 s of imports, which is what lets
a dozen kill-and-resume trials fit in the default test suite. Requests are JSON lines on stdin
(``{"id", "script", "args", "env", "log"}``); replies are JSON lines on stdout (``{"id", "event": "started",
"pid"}`` then ``{"id", "event": "exited", "returncode"}``, negative for a signal as in ``subprocess``).
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the library of this checkout, installed or not

BOUNDARIES = (
    "step",
    "checkpoint",
    "checkpoint_state",
    "prune",
    "best_model",
    "log",
    "final_log",
    "export",
    "metrics_json",
)
ENV_PREFIX = "HFTRANSFER_FAULT_"

# Per-process fault state, read from the environment by configure() (again in each forked child).
_target: tuple[str, int] | None = None
_action = "kill"
_rank_filter: int | None = None
_mark: str | None = None
_trace: str | None = None
_counts: dict[str, int] = {}
_phase: str | None = None  # None before training, "train" inside TrainingLoop.fit, "final" after it returns


def configure() -> None:
    """(Re)read the ``HFTRANSFER_FAULT_*`` variables and reset the event counts."""
    global _target, _action, _rank_filter, _mark, _trace, _phase
    spec = os.environ.get(f"{ENV_PREFIX}AT")
    _target = None
    if spec:
        name, _, n = spec.partition(":")
        if name not in BOUNDARIES:
            raise SystemExit(f"fault_shim: unknown boundary {name!r}; one of {', '.join(BOUNDARIES)}")
        _target = (name, int(n or 1))
    _action = os.environ.get(f"{ENV_PREFIX}ACTION", "kill")
    rank = os.environ.get(f"{ENV_PREFIX}RANK")
    _rank_filter = int(rank) if rank else None
    _mark = os.environ.get(f"{ENV_PREFIX}MARK")
    _trace = os.environ.get(f"{ENV_PREFIX}TRACE")
    _counts.clear()
    _phase = None


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _append(path: str, text: str) -> None:
    # os-level writes: nothing here goes through the patched writers, and nothing is buffered when the signal comes
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _hit(boundary: str, what: str) -> bool:
    """Count one event of ``boundary``; True when it is the one to fault."""
    count = _counts[boundary] = _counts.get(boundary, 0) + 1
    if _trace:
        _append(_trace, json.dumps({"boundary": boundary, "n": count, "what": what, "rank": _rank()}) + "\n")
    if _rank_filter is not None and _rank() != _rank_filter:
        return False
    return _target == (boundary, count)


def _signal(boundary: str, what: str) -> None:
    """Write the mark, then SIGKILL (or SIGSTOP) this process."""
    if _mark:
        record = {
            "boundary": boundary,
            "n": _counts[boundary],
            "what": what,
            "time": time.time(),
            "pid": os.getpid(),
            "rank": _rank(),
            "action": _action,
        }
        _append(_mark, json.dumps(record) + "\n")
    os.kill(os.getpid(), signal.SIGSTOP if _action == "stop" else signal.SIGKILL)


def _cut_in_half(path: str | os.PathLike) -> None:
    """Truncate a file to half its size: what a writer killed mid-write leaves."""
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
        handle.flush()
        os.fsync(handle.fileno())


# ------------------------------------------------------------------------------------------------ the hooks
def _weights_boundary(filename: str | os.PathLike) -> str | None:
    path = Path(filename)
    if "checkpoints" in path.parts:
        return "checkpoint" if path.name.startswith("model") else None
    return {"train": "best_model", "final": "export"}.get(_phase or "")


def _wrap_save_file(real: Any) -> Any:
    def save_file(tensors: Any, filename: Any, metadata: Any = None) -> Any:
        boundary = _weights_boundary(filename)
        if boundary is not None and _hit(boundary, str(filename)):
            if _action == "stop":
                _signal(boundary, str(filename))
            else:
                real(tensors, filename, metadata=metadata)
                _cut_in_half(filename)
                _signal(boundary, str(filename))
        return real(tensors, filename, metadata=metadata)

    save_file.__wrapped__ = real  # type: ignore[attr-defined]
    return save_file


def _wrap_replace(real: Any) -> Any:
    # Every atomic write of the library ends in os.replace(temporary, final): cutting the temporary in half and
    # dying before the rename is a kill in the middle of the write.
    names = {"trainer_state.json": "checkpoint_state", "metrics.json": "metrics_json"}

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        boundary = names.get(Path(os.fsdecode(dst)).name)
        if boundary is not None and _hit(boundary, os.fsdecode(dst)):
            if _action != "stop" and os.path.isfile(src):
                _cut_in_half(src)
            _signal(boundary, os.fsdecode(dst))
        return real(src, dst, *args, **kwargs)

    return replace


def _wrap_rmtree(real: Any) -> Any:
    def rmtree(path: Any, *args: Any, **kwargs: Any) -> Any:
        target = Path(os.fsdecode(path))
        checkpoint = target.parent.name == "checkpoints" and (target / "trainer_state.json").is_file()
        if checkpoint and _hit("prune", str(target)):
            if _action != "stop":
                # A deletion cut short: the weights gone, the loop state still there.
                weights = sorted(target.glob("model*.safetensors"))
                (weights[0] if weights else target / "trainer_state.json").unlink()
            _signal("prune", str(target))
        return real(path, *args, **kwargs)

    rmtree.avoids_symlink_attacks = getattr(real, "avoids_symlink_attacks", False)  # type: ignore[attr-defined]
    return rmtree


def install() -> None:
    """Import the library and patch the places where the boundaries happen (once per process)."""
    import accelerate.utils.other
    import safetensors.torch
    import transformers.modeling_utils

    import hftransfer.finetune  # noqa: F401 - the modules a recipe imports, so their bindings can be patched
    import hftransfer.flow  # noqa: F401
    from hftransfer.training.loop import TrainingLoop
    from hftransfer.training.tracking import MetricsLog

    with contextlib.suppress(ImportError):  # runs without peft have no adapter writes to patch
        import peft.peft_model  # noqa: F401

    # Weight files: safetensors' save_file under every name a writer imported it as (accelerate's checkpoint,
    # transformers' and peft's save_pretrained, the library's own caches and heads).
    real_save_file = safetensors.torch.save_file
    wrapped = _wrap_save_file(real_save_file)
    for module in list(sys.modules.values()):
        for name in ("save_file", "safe_save_file"):
            if getattr(module, name, None) is real_save_file:
                setattr(module, name, wrapped)
    assert accelerate.utils.other.safe_save_file is wrapped
    assert transformers.modeling_utils.safe_save_file is wrapped

    os.replace = _wrap_replace(os.replace)
    shutil.rmtree = _wrap_rmtree(shutil.rmtree)

    real_step = TrainingLoop._optimizer_step

    def optimizer_step(self: Any, window: Any) -> Any:
        if _hit("step", str(self.state.step + 1)):
            _signal("step", f"before step {self.state.step + 1}")
        return real_step(self, window)

    real_fit = TrainingLoop.fit

    def fit(self: Any) -> Any:
        global _phase
        _phase = "train"
        result = real_fit(self)
        _phase = "final"
        return result

    real_log = MetricsLog.log

    def log(self: Any, split: str, metrics: dict[str, Any], *, step: int, epoch: float) -> Any:
        if self.accelerator.is_main_process:
            what = f"{split}@{step}"
            if _hit("log", what):
                if _action != "stop":
                    line = json.dumps({"split": split, "step": step, "epoch": round(epoch, 4), **metrics})
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    _append(str(self.path), line[: len(line) // 2])
                _signal("log", what)
            if _phase == "final" and _hit("final_log", what):
                _signal("final_log", what)
        return real_log(self, split, metrics, step=step, epoch=epoch)

    TrainingLoop._optimizer_step = optimizer_step
    TrainingLoop.fit = fit
    MetricsLog.log = log


def run_recipe(script: str, args: list[str]) -> int:
    """Run ``script`` as ``python script args`` would, faults configured from the environment; the exit code."""
    configure()
    ready = os.environ.get(f"{ENV_PREFIX}READY")
    if ready:
        _append(ready, f"{time.time()}\n")
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        sys.stderr.write(f"{code}\n")
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


# ------------------------------------------------------------------------------------------------ fork server
def _reply(record: dict[str, Any]) -> None:
    os.write(1, (json.dumps(record) + "\n").encode())  # unbuffered: no lock a forked child could inherit held


def _child(request: dict[str, Any]) -> None:
    """In the forked child: the request's environment and log, then the recipe; never returns."""
    code = 1
    try:
        os.setsid()  # its own session: a signal meant for the server's group does not reach it
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # Fresh objects for the redirected descriptors, open for the child's life: no buffer of the server's.
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        for key in [key for key in os.environ if key.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(request.get("env", {}))
        code = run_recipe(request["script"], list(request.get("args", [])))
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """Fork one child per request line on stdin; report each child's pid and exit status on stdout."""
    ids: dict[int, str] = {}
    lock = threading.Lock()

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.02)
                continue
            with lock:
                request_id = ids.pop(pid, None)
            if request_id is not None:
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                _reply({"id": request_id, "event": "exited", "returncode": code})

    threading.Thread(target=reap, daemon=True).start()
    _reply({"event": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        with lock:  # registered before the reaper can see the child exit
            pid = os.fork()
            if pid == 0:
                _child(request)
            ids[pid] = request["id"]
        _reply({"id": request["id"], "event": "started", "pid": pid})


def main() -> None:
    install()
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    if len(sys.argv) < 2:
        raise SystemExit("usage: fault_shim.py recipes/<recipe>.py [KEY=VALUE ...] | --serve")
    code = run_recipe(sys.argv[1], sys.argv[2:])
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)


if __name__ == "__main__":
    main()

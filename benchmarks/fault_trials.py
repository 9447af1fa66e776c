"""One trial of the fault suite (used by ``fault_suite.py`` and ``tests/test_fault_suite.py``).

A trial starts a small toy run through ``fault_shim.py``, has it killed (at a write boundary, by the shim, or at
a random moment, by a timer here), checks what the kill left in the run directory, resumes the run with
``train.resume_from_checkpoint=latest`` to the end and compares it with an uninterrupted reference run (the checks:
``fault_checks.py``). Two more trials: a second run started on the directory of a live one
(:func:`concurrent_run_trial`), and one rank of a 2-process run killed (:func:`two_process_trial`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fault_checks import check_run_dir, compare_runs, leftovers

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "benchmarks" / "fault_shim.py"

# Long enough for every boundary to happen several times, short enough for a trial in seconds: 18 steps of 8
# (2.25 epochs of the 64 toy texts); a checkpoint every 3 steps with 2 kept (pruning from the third on), the
# validation loss (which falls at every evaluation, so each one exports a new best model) every 4, a training
# record every 5 (not a multiple of 3: a resumed run must reproduce averages over steps before its checkpoint);
# 18 is a multiple of 3, so the last checkpoint is the end of training and a kill after it resumes into the final
# evaluation alone.
TRAIN_ARGS = [
    "train.trackers=[]",
    "train.batch_size=8",
    "train.max_steps=18",
    "train.save_every_steps=3",
    "train.keep_checkpoints=2",
    "train.eval_every_steps=4",
    "train.eval_every_epoch=false",
    "train.log_every_steps=5",
    "train.warmup_ratio=0.0",
    "train.metric_for_best=loss",
    "train.seed=42",
]


@dataclass(frozen=True)
class Kind:
    """A toy run the suite kills: its recipe, data, extra overrides and the auto class that loads ``model/``."""

    recipe: str
    data: str  # "sentiment" or "ner" (hftransfer.toy's files)
    auto_class: str
    extra: tuple[str, ...] = ()


KINDS = {
    "toy": Kind(
        "finetune_classifier.py", "sentiment", "AutoModelForSequenceClassification", ("train.lr=1e-3",)
    ),
    "lora": Kind(
        "finetune_classifier.py",
        "sentiment",
        "AutoModelForSequenceClassification",
        ("strategy.name=lora", "strategy.r=2", "train.lr=1e-2"),
    ),
    "ner": Kind("finetune_ner.py", "ner", "AutoModelForTokenClassification", ("train.lr=3e-3",)),
}


def kind_args(kind: Kind, toy_dir: Path, run_dir: Path) -> list[str]:
    """The recipe's arguments for ``kind`` on the toy assets under ``toy_dir`` (see ``hftransfer.toy``)."""
    suffix = "conll" if kind.data == "ner" else "jsonl"
    files = [
        f"data.{split}_file={toy_dir / kind.data / f'{split}.{suffix}'}"
        for split in ("train", "validation", "test")
    ]
    return [
        f"model.name_or_path={toy_dir / 'model'}",
        "data.dataset=null",
        *files,
        f"output_dir={run_dir}",
        *TRAIN_ARGS,
        *kind.extra,
    ]


def base_env() -> dict[str, str]:
    """Offline, one thread (deterministic and fair on a shared machine), this checkout's library first."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HFTRANSFER_FAULT_")}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    return env


# ------------------------------------------------------------------------------------------------ launchers
class Handle:
    """A started run: its pid, and its exit status once it ends (negative: killed by that signal)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._done = threading.Event()

    def _exited(self, returncode: int) -> None:
        self.returncode = returncode
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.pid} still going after {timeout} s")
        assert self.returncode is not None
        return self.returncode


class ExecLauncher:
    """``python benchmarks/fault_shim.py recipes/<recipe>.py ...``: a fresh interpreter per run, as a user runs it."""

    name = "exec"

    def start(self, recipe: str, args: list[str], env: dict[str, str], log: Path) -> Handle:
        with log.open("w") as handle:
            process = subprocess.Popen(
                [sys.executable, str(SHIM), str(ROOT / "recipes" / recipe), *args],
                cwd=ROOT,
                env={**base_env(), **env},
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        run = Handle(process.pid)
        threading.Thread(target=lambda: run._exited(process.wait()), daemon=True).start()
        return run

    def close(self) -> None:
        pass


class ForkLauncher:
    """A fork server (``fault_shim.py --serve``) that imported the library once: each run is a forked child that
    runs the recipe's script as ``__main__``, like the exec launcher but without ~8 s of imports per run."""

    name = "fork"

    def __init__(self, log: Path) -> None:
        self._log = log.open("w")
        self._server = subprocess.Popen(
            [sys.executable, str(SHIM), "--serve"],
            cwd=ROOT,
            env=base_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._runs: dict[str, Handle] = {}
        self._started: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._next = 0
        ready = self._server.stdout.readline()  # type: ignore[union-attr]
        if json.loads(ready or "{}").get("event") != "ready":
            raise RuntimeError(f"the fork server did not start; see {log}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._server.stdout:  # type: ignore[union-attr]
            reply = json.loads(line)
            with self._lock:
                if reply["event"] == "started":
                    self._runs[reply["id"]] = Handle(reply["pid"])
                    self._started[reply["id"]].set()
                elif reply["event"] == "exited":
                    self._runs.pop(reply["id"])._exited(reply["returncode"])

    def start(self, recipe: str, args: list[str], env: dict[str, str], log: Path) -> Handle:
        with self._lock:
            self._next += 1
            run_id = str(self._next)
            self._started[run_id] = started = threading.Event()
        request = {
            "id": run_id,
            "script": str(ROOT / "recipes" / recipe),
            "args": args,
            "env": env,
            "log": str(log),
        }
        self._server.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self._server.stdin.flush()  # type: ignore[union-attr]
        if not started.wait(60):
            raise RuntimeError("the fork server did not start the run")
        with self._lock:
            return self._runs[run_id]

    def close(self) -> None:
        self._server.stdin.close()  # type: ignore[union-attr]
        self._server.kill()
        self._server.wait()
        self._log.close()


def make_launcher(name: str, work_dir: Path) -> ExecLauncher | ForkLauncher:
    return ForkLauncher(work_dir / "fork_server.log") if name == "fork" else ExecLauncher()


# ------------------------------------------------------------------------------------------------ trials
@dataclass
class Reference:
    """An uninterrupted run of a kind: the directory trials are compared with, how often each boundary happened
    in it, and how long it ran from the recipe's start (after the imports) to its exit."""

    kind: str
    run_dir: Path
    counts: dict[str, int]
    seconds: float
    checkpoint_files: set[str]


@dataclass
class Trial:
    """What one trial did and found."""

    kind: str
    fault: str  # "<boundary>:<n>", "random:<seconds>" or "none"
    outcome: str = ""  # killed | completed (the fault never came) | failed (the killed run crashed by itself)
    fired: dict[str, Any] | None = None
    violations: list[str] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)
    resume_returncode: int | None = None
    differences: list[str] = field(default_factory=list)
    weights_max_diff: float | None = None
    leftovers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log_tail: str = ""

    @property
    def boundary(self) -> str:
        return self.fault.split(":")[0]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "boundary": self.boundary}


def _wait_for(path: Path, run: Handle, timeout: float) -> float | None:
    """The timestamp written to ``path`` once it appears (None if the run ended first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return float(path.read_text().split()[0])
        if run.poll() is not None:
            return None
        time.sleep(0.005)
    raise TimeoutError(f"{path} did not appear within {timeout} s")


def run_to_end(
    launcher: Any, kind: Kind, args: list[str], env: dict[str, str], log: Path, timeout: float
) -> tuple[int, float]:
    """Start a run and wait for it; returns (exit status, seconds from the recipe's start to the exit)."""
    ready = log.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    run = launcher.start(kind.recipe, args, {**env, "HFTRANSFER_FAULT_READY": str(ready)}, log)
    code = run.wait(timeout)
    started = float(ready.read_text().split()[0]) if ready.exists() else time.time()
    return code, time.time() - started


def make_reference(
    launcher: Any, name: str, toy_dir: Path, work_dir: Path, timeout: float = 600
) -> Reference:
    """Run ``name`` uninterrupted with the shim tracing every boundary event."""
    kind = KINDS[name]
    run_dir = work_dir / f"reference-{name}"
    trace = work_dir / f"reference-{name}.trace"
    trace.unlink(missing_ok=True)
    log = work_dir / f"reference-{name}.log"
    args = [*kind_args(kind, toy_dir, run_dir), "overwrite_output_dir=true"]
    code, seconds = run_to_end(launcher, kind, args, {"HFTRANSFER_FAULT_TRACE": str(trace)}, log, timeout)
    if code != 0:
        raise RuntimeError(f"the reference run of {name} failed ({code}): {_tail(log)}")
    counts: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        event = json.loads(line)
        counts[event["boundary"]] = max(counts.get(event["boundary"], 0), event["n"])
    last = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    return Reference(name, run_dir, counts, seconds, {entry.name for entry in last.iterdir()})


def _tail(log: Path, lines: int = 25) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(line for line in text.splitlines()[-lines:] if "Extension modules" not in line)


def run_trial(
    launcher: Any, reference: Reference, fault: str, toy_dir: Path, trial_dir: Path, timeout: float = 600
) -> Trial:
    """Kill a run of ``reference.kind`` at ``fault``, check the directory, resume to the end and compare."""
    kind = KINDS[reference.kind]
    trial = Trial(reference.kind, fault)
    started = time.monotonic()
    trial_dir.mkdir(parents=True, exist_ok=True)
    run_dir = trial_dir / "run"
    mark, ready, log = trial_dir / "fault.json", trial_dir / "ready", trial_dir / "killed.log"
    for path in (mark, ready):
        path.unlink(missing_ok=True)
    args = kind_args(kind, toy_dir, run_dir)
    env = {"HFTRANSFER_FAULT_MARK": str(mark), "HFTRANSFER_FAULT_READY": str(ready)}
    boundary, _, value = fault.partition(":")
    if boundary not in ("random", "none"):
        env["HFTRANSFER_FAULT_AT"] = fault
    run = launcher.start(kind.recipe, [*args, "overwrite_output_dir=true"], env, log)
    # A random moment is timed from the recipe's start (after the interpreter's imports), as the reference was.
    recipe_start = _wait_for(ready, run, timeout) if boundary == "random" else None
    if recipe_start is not None:
        time.sleep(max(0.0, float(value) - (time.time() - recipe_start)))
        with contextlib.suppress(ProcessLookupError):  # it ended first
            os.kill(run.pid, signal.SIGKILL)
    code = run.wait(timeout)
    if mark.exists():
        trial.fired = json.loads(mark.read_text().splitlines()[0])
    if code == -signal.SIGKILL:
        trial.outcome = "killed"
    elif code == 0:
        trial.outcome = "completed"
    else:
        trial.outcome = "failed"
        trial.log_tail = _tail(log)
    trial.violations, trial.tolerated = check_run_dir(
        run_dir, kind.auto_class, reference.checkpoint_files, torn_log_injected=boundary == "log"
    )
    if trial.outcome == "killed":
        resume_log = trial_dir / "resumed.log"
        trial.resume_returncode, _ = run_to_end(
            launcher, kind, [*args, "train.resume_from_checkpoint=latest"], {}, resume_log, timeout
        )
        if trial.resume_returncode != 0:
            trial.log_tail = _tail(resume_log)
    if trial.outcome == "completed" or trial.resume_returncode == 0:
        trial.differences, trial.weights_max_diff = compare_runs(run_dir, reference.run_dir)
        trial.leftovers = leftovers(run_dir)
    trial.seconds = round(time.monotonic() - started, 2)
    return trial


def plan_faults(references: dict[str, Reference], trials: int, rng: random.Random) -> list[tuple[str, str]]:
    """``trials`` (kind, fault) pairs, in rounds: each round visits every boundary each reference reached, and
    random moments (a random time within the reference's run), in a shuffled order. The first round faults each
    boundary at its last occurrence (the last checkpoint, pruning and best model: no later write tidies up after
    a kill there), later rounds at a random one."""
    slots: list[tuple[str, str]] = []
    for name, reference in references.items():
        slots += [(name, boundary) for boundary in reference.counts if reference.counts[boundary]]
        slots += [
            (name, "random"),
            (name, "random"),
        ]  # the moments no boundary list foresees: twice the weight
    planned: list[tuple[str, str]] = []
    while len(planned) < trials:
        first_round = not planned
        for name, boundary in rng.sample(slots, len(slots)):
            reference = references[name]
            if boundary == "random":
                planned.append((name, f"random:{rng.uniform(0.0, reference.seconds):.3f}"))
            else:
                count = reference.counts[boundary]
                planned.append((name, f"{boundary}:{count if first_round else rng.randint(1, count)}"))
    return planned[:trials]


def concurrent_run_trial(
    launcher: Any, reference: Reference, toy_dir: Path, trial_dir: Path, timeout: float = 600
) -> dict[str, Any]:
    """A second run started on the directory of a live one (held still with SIGSTOP before its 5th step) must be
    refused, and the first, continued, must end as the reference did."""
    kind = KINDS[reference.kind]
    trial_dir.mkdir(parents=True, exist_ok=True)
    run_dir, mark = trial_dir / "run", trial_dir / "fault.json"
    mark.unlink(missing_ok=True)
    args = kind_args(kind, toy_dir, run_dir)
    env = {
        "HFTRANSFER_FAULT_AT": "step:5",
        "HFTRANSFER_FAULT_ACTION": "stop",
        "HFTRANSFER_FAULT_MARK": str(mark),
    }
    first = launcher.start(kind.recipe, [*args, "overwrite_output_dir=true"], env, trial_dir / "first.log")
    deadline = time.monotonic() + timeout
    while not mark.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    result: dict[str, Any] = {"first_stopped": mark.exists()}
    try:
        # What a user retrying by mistake would type: the most destructive variant (it deletes the run's files).
        code, seconds = run_to_end(
            launcher, kind, [*args, "overwrite_output_dir=true"], {}, trial_dir / "second.log", timeout
        )
        result.update(
            second_returncode=code,
            second_seconds=round(seconds, 2),
            second_said=_tail(trial_dir / "second.log", 3),
        )
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
    result["first_returncode"] = first.wait(timeout)
    result["first_differences"], _ = compare_runs(run_dir, reference.run_dir)
    return result


def _alive(process: Any) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_rank(process: Any) -> bool:
    """A worker of the launch: the shim's command line, started by the launcher's agent (not the launcher, whose
    command line names the shim too, nor a process a worker forked, which shares the worker's)."""
    import psutil

    def runs_shim(command: list[str]) -> bool:
        return str(SHIM) in command and "accelerate.commands.launch" not in command

    try:
        return runs_shim(process.cmdline()) and not runs_shim(psutil.Process(process.ppid()).cmdline())
    except psutil.Error:
        return False


def hermetic_env(trial_dir: Path) -> dict[str, str]:
    """A 2-process CPU launch that ignores a shared machine's accelerate config and a parent job's rank variables
    (as tests/test_distributed.py launches)."""
    inherited = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {
        k: v
        for k, v in base_env().items()
        if k not in inherited and not k.startswith(("ACCELERATE_", "TORCHELASTIC_"))
    }
    env.update(ACCELERATE_USE_CPU="1", HF_HOME=str(trial_dir / "hf_home"))
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def two_process_trial(
    reference: Reference, toy_dir: Path, trial_dir: Path, rank: int, step: int = 5, timeout: float = 300
) -> dict[str, Any]:
    """SIGKILL one rank of a 2-process CPU run before its ``step``-th optimizer step; how long the other rank and
    the launcher take to exit after it, and what the directory holds then."""
    import psutil

    kind = KINDS[reference.kind]
    trial_dir.mkdir(parents=True, exist_ok=True)
    run_dir, mark, log = trial_dir / "run", trial_dir / "fault.json", trial_dir / "launch.log"
    mark.unlink(missing_ok=True)
    env = {
        **hermetic_env(trial_dir),
        "HFTRANSFER_FAULT_AT": f"step:{step}",
        "HFTRANSFER_FAULT_RANK": str(rank),
        "HFTRANSFER_FAULT_MARK": str(mark),
    }
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(SHIM), str(ROOT / "recipes" / kind.recipe), *kind_args(kind, toy_dir, run_dir), "overwrite_output_dir=true",
    ]  # fmt: skip
    with log.open("w") as handle:
        launcher = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    workers: dict[int, Any] = {}
    commands: dict[int, str] = {}
    gone: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while launcher.poll() is None and time.monotonic() < deadline:
        try:
            for child in psutil.Process(launcher.pid).children(recursive=True):
                if child.pid not in workers and _is_rank(child):
                    workers[child.pid] = child
                    commands[child.pid] = f"{child.pid}: {' '.join(child.cmdline())[:100]}"
        except psutil.Error:
            pass
        now = time.time()
        gone.update({pid: now for pid, worker in workers.items() if pid not in gone and not _alive(worker)})
        time.sleep(0.01)
    launcher_exit = time.time()
    timed_out = launcher.poll() is None
    if timed_out:
        for child in [*psutil.Process(launcher.pid).children(recursive=True), psutil.Process(launcher.pid)]:
            child.kill()
        launcher.wait()
    for pid in workers:
        gone.setdefault(pid, launcher_exit)
    fired = json.loads(mark.read_text().splitlines()[0]) if mark.exists() else None
    result: dict[str, Any] = {
        "killed_rank": rank,
        "step": step,
        "fired": fired is not None,
        "workers": len(workers),
        "worker_commands": sorted(commands.values()),
        "timed_out": timed_out,
        "launcher_returncode": launcher.returncode,
    }
    if fired is not None:
        survivors = [pid for pid in workers if pid != fired["pid"]]
        result["survivor_exit_seconds"] = (
            round(max(gone[pid] - fired["time"] for pid in survivors), 3) if survivors else None
        )
        result["launcher_exit_seconds"] = round(launcher_exit - fired["time"], 3)
    # Each process saves its own RNG states: random_states_1.pkl beside random_states_0.pkl.
    expected = reference.checkpoint_files | {
        name.replace("_0.", "_1.") for name in reference.checkpoint_files if name.startswith("random_states_")
    }
    result["violations"], _ = check_run_dir(run_dir, kind.auto_class, expected)
    result["log_tail"] = _tail(log, 8)
    return result

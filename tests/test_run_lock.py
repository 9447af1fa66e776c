"""One run per run directory: a second run (fresh, resumed or overwriting) refuses while another process's run holds
the directory's lock; a lock left by a killed process blocks nothing; the lock is released when a run ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hftransfer.errors import ConfigError, RunDirInUseError
from hftransfer.training import run_lock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

HOLD = textwrap.dedent(
    """
    import sys
    from hftransfer.training import run_lock
    run_lock.require(sys.argv[1])
    print("held", flush=True)
    sys.stdin.read()  # hold until the test closes stdin (or kills this process)
    """
)


class Holder:
    """Another process holding ``run_dir``'s lock."""

    def __init__(self, run_dir: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(run_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout.readline().strip() == "held"
        self.pid = self.process.pid

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture()
def holder(tmp_path):
    held = Holder(tmp_path / "run")
    yield held
    if held.process.poll() is None:
        held.kill()


@pytest.fixture(autouse=True)
def _no_lock_left_held():
    yield
    run_lock.release_all()  # a test that fails mid-run must not leave this process holding a directory


def _argv(model_dir: Path, files: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={run_dir}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['validation']}",
        "train.max_steps=2",
        "train.batch_size=8",
        "train.save_every_steps=2",
        "train.trackers=[]",
        *extra,
    ]


TRY = textwrap.dedent(
    """
    import sys
    from hftransfer.training import run_lock
    print(run_lock.acquire(sys.argv[1]) or "taken")  # released as this process exits
    """
)


def _can_take(run_dir: Path) -> bool:
    """Whether another process could lock ``run_dir`` now."""
    result = subprocess.run(
        [sys.executable, "-c", TRY, str(run_dir)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "taken"


@pytest.mark.parametrize(
    "extra",
    [[], ["train.resume_from_checkpoint=latest"], ["overwrite_output_dir=true"]],
    ids=["fresh", "resume", "overwrite"],
)
def test_a_second_run_refuses_while_another_holds_the_directory(
    extra, holder, tiny_model_dir, classification_files, tmp_path
):
    run_dir = tmp_path / "run"
    # What the live run has written so far: a second run (overwrite_output_dir=true above all) must not touch it.
    (run_dir / "config.yaml").write_text("task: sequence-classification\n")
    (run_dir / "metrics.jsonl").write_text('{"split": "train", "step": 1}\n')
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(RunDirInUseError) as raised:
        finetune_classifier.main(_argv(tiny_model_dir, classification_files, run_dir, *extra))
    message = str(raised.value)
    assert message.startswith(
        f"{run_dir} is in use by another run (pid {holder.pid} on host {socket.gethostname()}"
    )
    assert (
        "wait for it to finish or stop it (see docs/reliability.md), or choose another output_dir" in message
    )
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert json.loads((run_dir / run_lock.LOCK_FILE).read_text())["pid"] == holder.pid
    holder.stop()
    assert not (run_dir / run_lock.LOCK_FILE).exists()  # the holder's exit removed it


@pytest.mark.parametrize("mechanism", ["flock", "exclusive-file"])
def test_a_lock_left_by_a_killed_process_does_not_block(mechanism, holder, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    if mechanism == "exclusive-file":
        monkeypatch.setattr(run_lock, "fcntl", None)  # the platforms without flock: the pid must be checked
    assert run_lock.acquire(run_dir) == run_lock.in_use_message(run_dir, _record(run_dir))  # alive: refused
    holder.kill()  # SIGKILL: no atexit, the lock file stays behind
    assert _record(run_dir)["pid"] == holder.pid
    run_lock.require(run_dir)
    assert run_lock.holds(run_dir) and _record(run_dir)["pid"] != holder.pid
    run_lock.release(run_dir)
    assert not (run_dir / run_lock.LOCK_FILE).exists() and not run_lock.holds(run_dir)


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / run_lock.LOCK_FILE).read_text())


def test_a_lock_of_another_host_is_not_taken_over_without_flock(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"pid": 1, "host": "elsewhere", "started": "2026-01-01T00:00:00+00:00"}
    (run_dir / run_lock.LOCK_FILE).write_text(json.dumps(record))
    monkeypatch.setattr(run_lock, "fcntl", None)
    with pytest.raises(RunDirInUseError, match=r"pid 1 on host elsewhere since 2026-01-01T00:00:00"):
        run_lock.require(run_dir)


def test_the_lock_is_held_during_a_run_and_released_after_it(
    tiny_model_dir, classification_files, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    seen = []
    real_train = finetune_classifier.train

    def train(run):
        seen.append((run_lock.holds(run_dir), _can_take(run_dir)))
        return real_train(run)

    monkeypatch.setattr(finetune_classifier, "train", train)
    finetune_classifier.main(_argv(tiny_model_dir, classification_files, run_dir))
    assert seen == [(True, False)]  # held while training: no other process could start here
    assert not run_lock.holds(run_dir) and not (run_dir / run_lock.LOCK_FILE).exists()
    assert _can_take(run_dir)


def test_a_run_that_raised_does_not_block_the_next_one(
    tiny_model_dir, classification_files, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    argv = _argv(tiny_model_dir, classification_files, run_dir)
    # Refused at start (the directory holds a run): released at once.
    finetune_classifier.main(argv)
    with pytest.raises(ConfigError, match="already holds a run"):
        finetune_classifier.main(argv)
    assert not run_lock.holds(run_dir) and _can_take(run_dir)
    # Raised mid-run: the next run of this process (a notebook, a test) takes over its hold ...
    with monkeypatch.context() as patched:
        patched.setattr(finetune_classifier, "evaluate_best", _fail)
        with pytest.raises(RuntimeError, match="evaluation failed"):
            finetune_classifier.main(argv + ["overwrite_output_dir=true"])
    finetune_classifier.main(argv + ["train.resume_from_checkpoint=latest"])
    assert not run_lock.holds(run_dir)
    # ... and a process that raised released it when it exited.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            HOLD.replace('print("held", flush=True)', "raise RuntimeError('boom')"),
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1 and "boom" in result.stderr
    assert not (run_dir / run_lock.LOCK_FILE).exists() and _can_take(run_dir)


def _fail(run):
    raise RuntimeError("evaluation failed")


class _Stop(Exception):
    pass


def test_overwrite_keeps_the_lock_file_of_the_run_that_overwrites(
    tiny_model_dir, classification_files, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    argv = _argv(tiny_model_dir, classification_files, run_dir)
    finetune_classifier.main(argv)
    seen = []

    def train(run):
        seen.append((run_dir / run_lock.LOCK_FILE).is_file() and not _can_take(run_dir))
        raise _Stop

    monkeypatch.setattr(finetune_classifier, "train", train)
    with pytest.raises(_Stop):
        finetune_classifier.main(argv + ["overwrite_output_dir=true"])
    assert seen == [True]


@pytest.mark.slow
def test_every_process_of_a_launch_refuses_a_directory_in_use(
    holder, tiny_model_dir, classification_files, tmp_path
):
    from tests.test_distributed import excerpt, hermetic_env, run_launch

    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "finetune_classifier.py"),
        *_argv(tiny_model_dir, classification_files, run_dir),
    ]  # fmt: skip
    returncode, output = run_launch(command, hermetic_env(tmp_path), tmp_path / "launch.log", timeout=240)
    assert returncode not in (0, -1), excerpt(output)  # -1: it hung
    refusals = [line for line in output.splitlines() if line.startswith("error:") and "is in use by" in line]
    assert len(refusals) == 2 and f"pid {holder.pid}" in refusals[0], excerpt(output)
    assert sorted(p.name for p in run_dir.iterdir()) == [run_lock.LOCK_FILE]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_its_parents_lock_alone(tmp_path):
    run_dir = tmp_path / "run"
    run_lock.require(run_dir)
    child = os.fork()
    if child == 0:  # a DataLoader worker, a fork server's run: it holds nothing and removes nothing
        code = 0 if not run_lock.holds(run_dir) else 1
        run_lock.release_all()
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (run_dir / run_lock.LOCK_FILE).is_file() and not _can_take(run_dir)
    run_lock.release(run_dir)
    assert _can_take(run_dir)

"""A full disk ends a run with one DiskFullError naming what could not be written; what was written before stays
intact and loadable, no temporary is left behind, and the run resumes once space is freed.

The full disk is faked at each write boundary (torch.save, safetensors, the atomic writers' file writes) in a toy run
of the classifier recipe; on Linux, where an unprivileged user namespace can mount a small tmpfs, a real one too.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from transformers import AutoModelForSequenceClassification

from hftransfer.errors import DiskFullError
from hftransfer.training.checkpoint import list_checkpoints
from hftransfer.training.disk import is_out_of_space, writing
from hftransfer.utils import atomic_directory, atomic_write, atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- recognising a full disk --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        _enospc(),
        OSError(getattr(errno, "EDQUOT", errno.ENOSPC), "Disk quota exceeded"),
        RuntimeError(TORCH_FULL),
        RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file"),
        SafetensorError(SAFETENSORS_FULL),
    ],
    ids=["enospc", "edquot", "torch-pos", "torch-write", "safetensors"],
)
def test_each_writers_way_of_saying_disk_full_is_recognised(error, tmp_path):
    assert is_out_of_space(error)
    with (
        pytest.raises(
            DiskFullError, match=r"cannot write checkpoint step-00000030 to .*: the disk"
        ) as raised,
        writing("checkpoint step-00000030", tmp_path / "step-00000030"),
    ):
        raise error
    assert raised.value.__cause__ is error
    assert "free on that filesystem" in str(raised.value) and "train.resume_from_checkpoint=latest" in str(
        raised.value
    )


def test_other_errors_pass_through_unchanged(tmp_path):
    for error in (
        OSError(errno.EACCES, "Permission denied"),
        RuntimeError("CUDA out of memory"),
        SafetensorError("Error while serializing: tensor invalid"),
        ValueError("no space left, but not an I/O error"),
    ):
        with pytest.raises(type(error)) as raised, writing("metrics.json", tmp_path):
            raise error
        assert raised.value is error


def test_a_cause_further_down_the_chain_is_recognised_and_the_outer_boundary_names_it(tmp_path):
    with (
        pytest.raises(DiskFullError, match="cannot write the exported model") as raised,
        writing("the exported model", tmp_path / "model"),
        writing("config.json", tmp_path / "x"),
    ):
        try:
            raise _enospc()
        except OSError as err:
            raise RuntimeError("saving failed") from err
    assert "config.json" not in str(raised.value) and isinstance(raised.value.__cause__, RuntimeError)


def test_atomic_writers_keep_the_old_version_and_leave_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": 1})

    def fill_the_disk(tmp: str) -> None:
        Path(tmp).write_text('{"new": ', encoding="utf-8")
        raise _enospc()

    with pytest.raises(
        DiskFullError, match=r"cannot write metrics\.json to .*metrics\.json: the disk is full"
    ):
        atomic_write(target, fill_the_disk)
    with (
        pytest.raises(DiskFullError, match="cannot write the adapter"),
        atomic_directory(tmp_path / "adapter", what="the adapter") as tmp,
    ):
        (tmp / "adapter_model.safetensors").write_bytes(b"half")
        raise SafetensorError(SAFETENSORS_FULL)
    assert target.read_text(encoding="utf-8") == '{\n  "old": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# --- a toy run filling the disk at each write boundary ------------------------------------------------------------


def _argv(model_dir: Path, files: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={run_dir}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['validation']}",
        "train.max_steps=4",
        "train.batch_size=8",
        "train.save_every_steps=2",
        "train.eval_every_steps=2",
        "train.keep_checkpoints=5",
        "train.log_every_steps=1",
        "train.trackers=[]",
        "train.warmup_ratio=0.0",
        "train.lr=3e-3",
        "train.metric_for_best=loss",
        *extra,
    ]


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


class _FailingFile:
    """A text file whose first write puts half the text on disk, then reports a full disk."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, text: str) -> int:
        self._handle.write(text[: len(text) // 2])
        self._handle.flush()
        raise _enospc()

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


class FullDisk:
    """Fakes a full disk at one write boundary once ``armed`` says so; records what existed when it struck."""

    def __init__(self, monkeypatch, run_dir: Path):
        self.monkeypatch, self.run_dir = monkeypatch, run_dir
        self.before: dict[str, dict[str, str]] | None = None
        self.calls = 0

    def armed(self, predicate, path) -> bool:
        self.calls += 1
        return predicate(str(path), self.calls)

    def strike(self) -> None:
        self.before = {
            name: _digest(self.run_dir / name) for name in ("model",) if (self.run_dir / name).is_dir()
        }
        self.before["checkpoints"] = {p.name: _digest(p) for p in list_checkpoints(self.run_dir)}

    def torch_save(self, armed) -> None:
        real = torch.save

        def save(obj, f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)) and self.armed(armed, f):
                self.strike()
                Path(f).write_bytes(b"PK\x03\x04 half a zip")
                raise RuntimeError(TORCH_FULL)
            return real(obj, f, *args, **kwargs)

        self.monkeypatch.setattr(torch, "save", save)

    def safetensors(self, armed) -> None:
        import transformers.modeling_utils

        real = transformers.modeling_utils.safe_save_file

        def save_file(tensors, filename, *args, **kwargs):
            if self.armed(armed, filename):
                self.strike()
                Path(filename).write_bytes(b"half")
                raise SafetensorError(SAFETENSORS_FULL)
            return real(tensors, filename, *args, **kwargs)

        self.monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)

    def text_files(self, armed) -> None:
        import hftransfer.utils

        def fake_open(file, mode="r", *args, **kwargs):
            handle = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
            if "w" in mode and self.armed(armed, file):
                self.strike()
                return _FailingFile(handle)
            return handle

        # The atomic writers' module global shadows the builtin: only their writes fail.
        self.monkeypatch.setattr(hftransfer.utils, "open", fake_open, raising=False)


BOUNDARIES = {
    # name: (how the disk fills, which write fails: armed(path, nth call of that writer), what the error names)
    "checkpoint": ("torch_save", lambda path, nth: "step-00000004" in path, "checkpoint step-00000004"),
    "checkpoint-state": (
        "text_files",
        lambda path, nth: ".trainer_state.json." in path and "step-00000004" in path,
        "checkpoint step-00000004",
    ),
    # The second export (validation loss improves at step 4): model/ holds the first one.
    "export": ("safetensors", lambda path, nth: nth == 2, "the exported model"),
    "metrics.json": (
        "text_files",
        lambda path, nth: Path(path).name.startswith(".metrics.json."),
        "metrics.json",
    ),
}


@pytest.mark.parametrize("boundary", sorted(BOUNDARIES))
def test_a_full_disk_ends_the_run_with_one_error_and_the_run_resumes(
    boundary, tiny_model_dir, classification_files, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    how, armed, named = BOUNDARIES[boundary]
    disk = FullDisk(monkeypatch, run_dir)
    with monkeypatch.context() as patched:
        disk.monkeypatch = patched
        getattr(disk, how)(armed)
        with pytest.raises(DiskFullError) as raised:
            finetune_classifier.main(_argv(tiny_model_dir, classification_files, run_dir))
    message = str(raised.value)
    assert f"cannot write {named} to {run_dir}" in message and "the disk is full" in message, message
    assert "train.resume_from_checkpoint=latest" in message
    assert disk.before is not None, "the fake full disk never struck"

    # What was there when the disk filled is there still, byte for byte, and loads.
    assert {p.name: _digest(p) for p in list_checkpoints(run_dir)} == disk.before["checkpoints"]
    if "model" in disk.before:
        assert _digest(run_dir / "model") == disk.before["model"]
        AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    leftovers = [p for p in run_dir.rglob(".*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert leftovers == []

    # Space freed (the patch gone): the run resumes from its latest checkpoint and completes.
    finetune_classifier.main(
        _argv(tiny_model_dir, classification_files, run_dir, "train.resume_from_checkpoint=latest")
    )
    assert (run_dir / "metrics.json").is_file()
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-00000002", "step-00000004"]
    AutoModelForSequenceClassification.from_pretrained(run_dir / "model")


# --- the command line ---------------------------------------------------------------------------------------------

# Runs the recipe as its script does (run_main), with torch.save failing at the first checkpoint.
FAKE_FULL_DISK = textwrap.dedent(
    """
    import runpy, sys, torch
    real = torch.save
    def save(obj, f, *args, **kwargs):
        if "step-" in str(f):
            raise RuntimeError({message!r})
        return real(obj, f, *args, **kwargs)
    torch.save = save
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
).format(message=TORCH_FULL)


def test_a_recipe_on_a_full_disk_prints_one_error_line_and_no_traceback(
    tiny_model_dir, classification_files, tmp_path
):
    run_dir = tmp_path / "run"
    argv = _argv(tiny_model_dir, classification_files, run_dir, "train.max_steps=2")
    result = subprocess.run(
        [sys.executable, "-c", FAKE_FULL_DISK, str(ROOT / "recipes" / "finetune_classifier.py"), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "cannot write checkpoint step-00000002" in errors[0] and "the disk is full" in errors[0]
    assert "Traceback" not in result.stderr and "enforce fail" not in result.stderr
    assert not (run_dir / "checkpoints" / ".step-00000002.tmp").exists()


# --- a real full filesystem ---------------------------------------------------------------------------------------


def _can_mount_tmpfs() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || exit 1"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(
    not _can_mount_tmpfs(), reason="needs Linux and an unprivileged user namespace to mount a tmpfs"
)
def test_a_real_full_filesystem_ends_in_one_error_line_and_resumes_after_it_grows(
    tiny_model_dir, classification_files, tmp_path
):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    run_dir = mount / "run"
    recipe = ROOT / "recipes" / "finetune_classifier.py"
    # A toy checkpoint is ~0.3 MiB: 1 MiB holds two and the model; the run wants eight.
    argv = _argv(
        tiny_model_dir, classification_files, run_dir, "train.max_steps=16", "train.keep_checkpoints=10"
    )
    quoted = " ".join(f"'{arg}'" for arg in argv)
    script = textwrap.dedent(
        f"""
        mount -t tmpfs -o size=1m tmpfs '{mount}' || exit 90
        '{sys.executable}' '{recipe}' {quoted} 2> '{tmp_path}/full.err'
        echo "first=$?"
        mount -o remount,size=64m '{mount}' || exit 91
        '{sys.executable}' '{recipe}' {quoted} train.resume_from_checkpoint=latest 2> '{tmp_path}/resumed.err'
        echo "resumed=$?"
        ls '{run_dir}/checkpoints'
        test -f '{run_dir}/metrics.json' && echo metrics
        """
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    full = (tmp_path / "full.err").read_text()
    assert "first=2" in result.stdout, result.stdout + full[-3000:]
    errors = [line for line in full.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in full, full[-3000:]
    assert "the disk is full" in errors[0] and str(run_dir) in errors[0]
    resumed = (tmp_path / "resumed.err").read_text()
    assert "resumed=0" in result.stdout, resumed[-3000:]
    assert "step-00000016" in result.stdout and "metrics" in result.stdout


# Under a 2-process launch the main process alone fails (it writes the optimizer state): the other, whose part of
# the checkpoint succeeded, must not wait for it at the next barrier.
FAKE_FULL_DISK_ON_RANK_0 = textwrap.dedent(
    """
    import os, runpy, sys, torch
    real = torch.save
    def save(obj, f, *args, **kwargs):
        if os.environ.get("RANK") == "0" and "step-00000002" in str(f) and "optimizer" in str(f):
            raise RuntimeError({message!r})
        return real(obj, f, *args, **kwargs)
    torch.save = save
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
).format(message=TORCH_FULL)


@pytest.mark.slow
def test_every_process_of_a_launch_stops_when_the_main_one_finds_the_disk_full(
    tiny_model_dir, classification_files, tmp_path
):
    from tests.test_distributed import excerpt, hermetic_env, run_launch

    run_dir = tmp_path / "run"
    wrapper = tmp_path / "full_disk_on_rank_0.py"
    wrapper.write_text(FAKE_FULL_DISK_ON_RANK_0)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(wrapper), str(ROOT / "recipes" / "finetune_classifier.py"),
        *_argv(tiny_model_dir, classification_files, run_dir, "train.max_steps=2"),
    ]  # fmt: skip
    returncode, output = run_launch(command, hermetic_env(tmp_path), tmp_path / "launch.log", timeout=240)
    assert returncode not in (0, -1), excerpt(output)  # -1: it hung
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, excerpt(output)  # one per process, the same line
    assert all("cannot write checkpoint step-00000002" in line for line in errors), excerpt(output)
    assert list((run_dir / "checkpoints").iterdir()) == []

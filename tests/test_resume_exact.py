"""Exact resume: a run resumed from any of its checkpoints ends with the uninterrupted run's weights *and* its
``metrics.jsonl`` (every key but the timing ones, record for record); nothing of the loop's own state is pickled;
with ``save_every_steps`` a checkpoint is also written at the end of every epoch."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import load

from hftransfer.training import loop as loop_module
from hftransfer.training.callbacks import Callback
from hftransfer.training.checkpoint import STATE_FILE, list_checkpoints, load_checkpoint
from hftransfer.training.tracking import is_timing_key
from tests.test_loop import _setup, _weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import finetune_ner  # noqa: E402

# 24 examples in batches of 4: 6 steps an epoch, 12 in all. Checkpoints every 5 steps and at each epoch's end
# (5, 6, 10, 12); training records every 3 steps, so the checkpoints at 5 and 10 fall inside a log interval;
# validation every 5 steps and, the last step having none, once more after the step-12 checkpoint.
RUN = dict(
    train_examples=24,
    dropout=0.1,
    batch_size=4,
    epochs=2,
    log_every_steps=3,
    save_every_steps=5,
    eval_every_steps=5,
    eval_every_epoch=False,
    keep_checkpoints=10,
)
CHECKPOINTS = [5, 6, 10, 12]


class Killed(Exception):
    """Stands in for a SIGKILL: the run stops here, with what it wrote so far on disk."""


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _untimed(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if not is_timing_key(key)} for record in records]


def _checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """The uninterrupted run: its directory (records, checkpoints), final weights and the steps it saved at."""
    run_dir = tmp_path_factory.mktemp("reference")
    loop, _ = _setup(tiny_model_dir, run_dir, **RUN)
    saved_at = []
    save = loop_module.save_checkpoint

    def counting(accelerator, root, step, state, keep):
        saved_at.append(step)
        return save(accelerator, root, step, state, keep)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop_module, "save_checkpoint", counting)
        loop.fit()
    return run_dir, _weights(loop), saved_at


def _resume(tiny_model_dir, run_dir: Path, checkpoint: Path):
    loop, _ = _setup(tiny_model_dir, run_dir, **RUN)
    loop.resume(checkpoint)
    loop.fit()
    return loop


def _assert_same_run(run_dir: Path, loop, reference) -> None:
    reference_dir, reference_weights, _ = reference
    expected, actual = _records(reference_dir), _records(run_dir)
    assert len(actual) == len(expected)
    assert _untimed(actual) == _untimed(expected)
    for name, value in reference_weights.items():
        assert torch.equal(_weights(loop)[name], value), name


def test_save_every_steps_also_checkpoints_each_epoch_end_once(reference):
    run_dir, _, saved_at = reference
    assert saved_at == CHECKPOINTS  # 5 and 10 (every 5 steps), 6 and 12 (the epochs' ends)
    assert [p.name for p in list_checkpoints(run_dir)] == [_checkpoint(run_dir, s).name for s in CHECKPOINTS]
    # the epoch-end checkpoint is taken after the epoch: a resume from it starts the next one
    state = json.loads((_checkpoint(run_dir, 6) / STATE_FILE).read_text())
    assert (state["step"], state["epoch"], state["batches_in_epoch"]) == (6, 1, 0)


def test_a_save_step_that_ends_the_epoch_is_saved_once(tiny_model_dir, tmp_path, monkeypatch):
    saved_at = []
    save = loop_module.save_checkpoint
    monkeypatch.setattr(loop_module, "save_checkpoint", lambda *args: saved_at.append(args[2]) or save(*args))
    loop, _ = _setup(tiny_model_dir, tmp_path, **{**RUN, "save_every_steps": 3, "eval_every_steps": None})
    loop.total_steps = 9
    loop.fit()
    assert saved_at == [3, 6, 9]  # 6 ends the first epoch: one checkpoint, after the epoch


@pytest.mark.parametrize("step", CHECKPOINTS)
def test_resuming_a_finished_run_from_any_checkpoint_repeats_its_log(
    tiny_model_dir, tmp_path, reference, step
):
    # The finished run's directory holds every later record, the final validation at step 12 logged after the
    # step-12 checkpoint included: a kill at any moment after the checkpoint leaves a prefix of this.
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    loop = _resume(tiny_model_dir, run_dir, _checkpoint(run_dir, step))
    _assert_same_run(run_dir, loop, reference)


def test_a_run_killed_inside_a_log_interval_resumes_with_the_same_records(
    tiny_model_dir, tmp_path, reference
):
    class KillAt(Callback):
        def on_step_start(self, state):
            if state.step == 11:  # after the step-10 checkpoint, before the step-12 record
                raise Killed

    run_dir = tmp_path / "run"
    loop, _ = _setup(tiny_model_dir, run_dir, **RUN)
    loop.callbacks.append(KillAt())
    with pytest.raises(Killed):
        loop.fit()
    assert [r["step"] for r in _records(run_dir)][-1] == 10
    loop = _resume(tiny_model_dir, run_dir, list_checkpoints(run_dir)[-1])
    _assert_same_run(run_dir, loop, reference)
    first_after = [r for r in _records(run_dir) if r["split"] == "train"][-1]
    assert first_after["step"] == 12  # averages steps 10-12: the sums of step 10 came from the checkpoint


def test_a_kill_right_after_an_evaluation_at_the_checkpoint_step(tiny_model_dir, tmp_path, reference):
    # Killed after the final validation record, which has the step of the last checkpoint: kept by the step
    # rule alone, it would appear twice after the resume.
    run_dir = tmp_path / "run"
    loop, _ = _setup(tiny_model_dir, run_dir, **RUN)
    log = loop.log.log

    def log_then_kill(split, metrics, *, step, epoch):
        log(split, metrics, step=step, epoch=epoch)
        if split == "validation" and step == 12:
            raise Killed

    loop.log.log = log_then_kill  # the selection's log is the same object
    with pytest.raises(Killed):
        loop.fit()
    assert len(_records(run_dir)) == len(_records(reference[0]))
    loop = _resume(tiny_model_dir, run_dir, list_checkpoints(run_dir)[-1])
    _assert_same_run(run_dir, loop, reference)


def test_a_checkpoint_without_any_pickle_resumes_exactly(tiny_model_dir, tmp_path, reference):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    checkpoint = _checkpoint(run_dir, 5)
    pickles = sorted(p.name for p in checkpoint.glob("*.pkl"))
    assert pickles == ["random_states_0.pkl"]  # the schedule is no custom_checkpoint_0.pkl any more
    # The RNG states are the one thing the pickle carries: set them by hand, then remove every pickle.
    rng = load(checkpoint / "random_states_0.pkl")  # accelerate's own weights-only loader
    for path in checkpoint.glob("*.pkl"):
        path.unlink()
    loop, _ = _setup(tiny_model_dir, run_dir, **RUN)
    random.setstate(rng["random_state"])
    np.random.set_state(rng["numpy_random_seed"])
    torch.set_rng_state(rng["torch_manual_seed"])
    loop.resume(checkpoint)
    loop.fit()
    _assert_same_run(run_dir, loop, reference)


def _make_legacy(checkpoint: Path, scheduler_pickle: bytes | None = None) -> None:
    """Turn a checkpoint into one of the earlier release: the schedule in custom_checkpoint_0.pkl (as accelerate's
    register_for_checkpointing saved it), no meter sums or record count in trainer_state.json."""
    state = json.loads((checkpoint / STATE_FILE).read_text())
    scheduler = state.pop("scheduler")
    for key in ("train_meter", "metrics_log_records", "last_eval_step"):
        state.pop(key)
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    if scheduler_pickle is None:
        torch.save(scheduler, checkpoint / "custom_checkpoint_0.pkl")
    else:
        (checkpoint / "custom_checkpoint_0.pkl").write_bytes(scheduler_pickle)


def test_a_checkpoint_of_the_earlier_release_still_resumes(tiny_model_dir, tmp_path, reference):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    _make_legacy(_checkpoint(run_dir, 5))
    loop = _resume(tiny_model_dir, run_dir, _checkpoint(run_dir, 5))
    for name, value in reference[1].items():
        assert torch.equal(_weights(loop)[name], value), name
    # the schedule came back exactly (the first record's loss cannot: that release kept no sums)
    lrs = [(r["step"], r["lr"]) for r in _records(run_dir) if r["split"] == "train"]
    assert lrs == [(r["step"], r["lr"]) for r in _records(reference[0]) if r["split"] == "train"]


class _RunsCode:
    """A pickle that runs code when unpickled in full (here: creates a directory)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_planted_scheduler_pickle_is_not_executed(tmp_path, reference):
    checkpoint = tmp_path / "step-00000005"
    shutil.copytree(_checkpoint(reference[0], 5), checkpoint)
    marker = tmp_path / "code-ran"
    _make_legacy(checkpoint, pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(Accelerator(cpu=True), checkpoint)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # the test's own check: unpickled in full, it does run code
    assert marker.is_dir()


@pytest.fixture
def recipe(tiny_model_dir, ner_files):
    def run(run_dir: Path, *extra: str):
        return finetune_ner.main(
            [
                f"model.name_or_path={tiny_model_dir}",
                f"output_dir={run_dir}",
                f"data.train_file={ner_files['train']}",
                f"data.validation_file={ner_files['validation']}",
                f"data.test_file={ner_files['test']}",
                "train.batch_size=8",
                "train.epochs=1",  # 48 examples: 6 steps, the last one checkpointed at the epoch's end
                "train.save_every_steps=4",
                "train.log_every_steps=3",
                "train.lr=3e-3",
                "train.warmup_ratio=0",
                "train.trackers=[]",
                *extra,
            ]
        )

    return run


def test_a_run_killed_in_its_final_phase_resumes_to_the_same_files(recipe, tmp_path, monkeypatch):
    from hftransfer.flow import core

    run_dir = tmp_path / "run"
    write_json = core.atomic_write_json

    def killed(path, data, **kwargs):  # metrics.json comes last: after the final records and the export
        raise Killed

    monkeypatch.setattr(core, "atomic_write_json", killed)
    with pytest.raises(Killed):
        recipe(run_dir)
    monkeypatch.setattr(core, "atomic_write_json", write_json)
    # Up to the kill the run is the uninterrupted one: every record is written, the final ones included.
    expected = _records(run_dir)
    assert [r["split"] for r in expected[-2:]] == ["validation", "test"]
    model = (run_dir / "model" / "model.safetensors").read_bytes()
    # what a SIGKILL inside the export leaves behind (atomic_directory removes it on an exception)
    stale = run_dir / ".model.k1ll3d.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")

    recipe(run_dir, "train.resume_from_checkpoint=latest")
    assert not list(run_dir.glob(".*.tmp"))
    actual = _records(run_dir)
    assert [r["split"] for r in actual] == [r["split"] for r in expected]
    assert _untimed(actual) == _untimed(expected)
    assert (run_dir / "model" / "model.safetensors").read_bytes() == model
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["f1"] == expected[-1]["f1"]


def test_random_states_that_cannot_be_read_are_reported(tmp_path, reference, caplog):
    checkpoint = tmp_path / "step-00000005"
    shutil.copytree(_checkpoint(reference[0], 5), checkpoint)
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        load_checkpoint(Accelerator(cpu=True), checkpoint)  # no prepared objects: only the RNG states load
    assert "not restored" not in caplog.text
    (checkpoint / "random_states_0.pkl").write_bytes(b"damaged")  # accelerate would only log this at info
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        load_checkpoint(Accelerator(cpu=True), checkpoint)
    assert "random_states_0.pkl were not restored" in caplog.text

"""Trackers from config: ``train.trackers=[tensorboard, mlflow]`` logs to both with no server (MLflow's file store
in the run directory), a user's ``MLFLOW_TRACKING_URI`` wins, and a tracker that is missing fails before training
with the ``pip install`` that provides it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hftransfer.errors import ConfigError
from hftransfer.training import tracking
from tests.conftest import make_classification_examples, write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

import finetune_classifier  # noqa: E402


@pytest.fixture()
def mlflow_env(monkeypatch):
    """No tracking URI of the user's, no telemetry; whatever a run sets is undone after the test."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(name, "")  # recorded, so the teardown removes what the run sets
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setattr(tracking, "_our_mlflow_uri", None)


def _argv(model_dir: Path, tmp_path: Path, trackers: str) -> list[str]:
    files = {
        split: write_jsonl(tmp_path / f"{split}.jsonl", make_classification_examples(n, seed=seed))
        for split, n, seed in (("train", 32, 1), ("validation", 8, 2))
    }
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={tmp_path / 'run'}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['validation']}",
        "train.batch_size=8",
        "train.epochs=2",
        "train.log_every_steps=2",
        f"train.trackers={trackers}",
    ]


def test_tensorboard_and_mlflow_from_config_with_a_local_store(tiny_model_dir, tmp_path, mlflow_env):
    from mlflow.tracking import MlflowClient

    finetune_classifier.main(_argv(tiny_model_dir, tmp_path, "[tensorboard, mlflow]"))
    run_dir = tmp_path / "run"
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "tensorboard wrote nothing"
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(run_dir.name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.batch_size"] == "8"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for split, key in (("train", "loss"), ("validation", "accuracy")):
        logged = [(r["step"], r[key]) for r in records if r["split"] == split]
        history = client.get_metric_history(run.info.run_id, f"{split}/{key}")
        assert logged and [(m.step, m.value) for m in history] == pytest.approx(logged)


def test_a_tracking_uri_the_user_set_is_kept(tmp_path, monkeypatch, mlflow_env):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    tracking.prepare_trackers(["mlflow"], tmp_path)
    assert tracking.os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracking.prepare_trackers(["tensorboard"], tmp_path)  # no MLflow: nothing set
    assert "MLFLOW_TRACKING_URI" not in tracking.os.environ
    # The store an earlier run in this process chose is not mistaken for the user's.
    tracking.prepare_trackers(["mlflow"], tmp_path / "first")
    tracking.prepare_trackers(["mlflow"], tmp_path / "second")
    assert tracking.os.environ["MLFLOW_TRACKING_URI"] == (tmp_path / "second" / "mlruns").resolve().as_uri()


def test_a_tracker_that_is_not_installed_fails_before_training(tiny_model_dir, tmp_path, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match=r"mlflow is not installed; pip install 'hftransfer\[tracking\]'"):
        finetune_classifier.main(_argv(tiny_model_dir, tmp_path, "[mlflow]"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    with pytest.raises(ConfigError, match="'mlflw' is not an Accelerate tracker; choose from .*mlflow"):
        finetune_classifier.main(_argv(tiny_model_dir, tmp_path, "[mlflw]"))


def test_tracker_metric_names_keep_to_what_mlflow_accepts(tmp_path):
    from types import SimpleNamespace

    logged = {}
    accelerator = SimpleNamespace(is_main_process=True, log=lambda scalars, step: logged.update(scalars))
    tracking.MetricsLog(accelerator, tmp_path).log(
        "validation", {"per_class/n't (sure)/f1": 0.5, "accuracy": 0.75}, step=3, epoch=1.0
    )
    assert logged == {"validation/per_class/n_t _sure_/f1": 0.5, "validation/accuracy": 0.75}
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert "per_class/n't (sure)/f1" in record  # the record keeps the class's name


def test_an_mlflow_run_left_open_by_a_failed_run_is_closed_by_the_next(tmp_path, mlflow_env):
    import mlflow
    from mlflow.tracking import MlflowClient

    tracking.prepare_trackers(["mlflow"], tmp_path / "first")
    left_open = mlflow.start_run(experiment_id=mlflow.create_experiment("first"))  # then the run raised
    tracking.prepare_trackers(["mlflow"], tmp_path / "second")
    assert mlflow.active_run() is None
    first_store = MlflowClient(tracking_uri=(tmp_path / "first" / "mlruns").resolve().as_uri())
    assert first_store.get_run(left_open.info.run_id).info.status == "FAILED"


class _Killed(Exception):
    """Stands in for a kill: the run stops with what it wrote so far."""


def test_a_resumed_run_continues_its_tracker_runs_without_the_steps_it_logs_again(
    tiny_model_dir, tmp_path, mlflow_env, monkeypatch
):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hftransfer.training.loop import TrainingLoop

    # 4 steps an epoch, 8 in all; checkpoints at 2, 4, 6, 8; the kill comes after step 5 was logged, so the
    # resume (from step 4) logs step 5 again.
    argv = [*_argv(tiny_model_dir, tmp_path, "[tensorboard, mlflow]"), "train.log_every_steps=1"]
    argv += ["train.save_every_steps=2"]
    step = TrainingLoop._optimizer_step

    def killed_after_step_5(loop, window):
        if loop.state.step == 5:
            raise _Killed
        return step(loop, window)

    with monkeypatch.context() as patch:
        patch.setattr(TrainingLoop, "_optimizer_step", killed_after_step_5)
        with pytest.raises(_Killed):
            finetune_classifier.main(argv)
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "trackers.json").read_text()).keys() == {"mlflow"}
    finetune_classifier.main([*argv, "train.resume_from_checkpoint=latest"])

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
    assert [s for s, _ in logged] == list(range(1, 9))
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (run,) = client.search_runs(
        [client.get_experiment_by_name(run_dir.name).experiment_id]
    )  # one run, not two
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    # step 5 twice (MLflow keeps every point), with the uninterrupted run's value both times
    assert sorted((m.step, m.value) for m in history) == sorted([*logged, logged[4]])
    events = EventAccumulator(str(run_dir / "logs" / run_dir.name))  # both runs' event files, in order
    events.Reload()
    shown = events.Scalars("train/loss")
    assert [event.step for event in shown] == list(range(1, 9))  # the stopped run's step 5 purged
    assert [event.value for event in shown] == pytest.approx([loss for _, loss in logged], rel=1e-6)


def test_tracker_resume_settings(tmp_path):
    from hftransfer.training.tracker_resume import tracker_init_kwargs

    assert tracker_init_kwargs(["tensorboard", "mlflow"], tmp_path, None) == {}
    (tmp_path / "trackers.json").write_text(json.dumps({"mlflow": "abc", "wandb": "w1", "other": "x"}))
    assert tracker_init_kwargs(["all"], tmp_path, 10) == {
        "tensorboard": {"purge_step": 11},
        "mlflow": {"run_id": "abc"},
        "wandb": {"id": "w1", "resume": "allow"},
    }
    assert tracker_init_kwargs(["tensorboard"], tmp_path, 10) == {"tensorboard": {"purge_step": 11}}
    (tmp_path / "trackers.json").write_text("{not json")
    assert tracker_init_kwargs(["mlflow"], tmp_path, 10) == {}  # starts a new run, with a warning

"""Label smoothing of the task's loss (``objectives.task.label_smoothing``): the term against a hand-computed value,
the config's checks, and a run that trains with it."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from hftransfer.config import parse_config
from hftransfer.errors import ConfigError
from hftransfer.hub.card import describe_objectives
from hftransfer.objectives.base import ObjectiveContext
from hftransfer.objectives.task import TaskConfig, TaskLoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import finetune_ner  # noqa: E402


def _loss(epsilon: float, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    model = SimpleNamespace(config=SimpleNamespace(id2label={0: "O", 1: "B-x", 2: "I-x"}))
    run = SimpleNamespace(model=SimpleNamespace(head="linear"), data=SimpleNamespace(problem_type=None))
    run.data.problem_type = "single_label_classification"
    objective = TaskLoss(ObjectiveContext(model, run, TaskConfig(label_smoothing=epsilon)))
    return objective.terms(None, {"labels": labels}, SimpleNamespace(logits=logits), None)["loss"]


def test_the_smoothed_loss_is_the_cross_entropy_against_the_mixed_target_summed_over_labelled_items():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3)
    labels = torch.tensor([[0, 2, -100, 1], [1, -100, -100, 0]])
    epsilon, k = 0.2, 3
    expected = 0.0
    for row, tags in zip(logits, labels):
        for position, tag in enumerate(tags.tolist()):
            if tag == -100:
                continue
            log_p = torch.log_softmax(row[position], dim=-1)
            target = torch.full((k,), epsilon / k)
            target[tag] += 1 - epsilon
            expected += float(-(target * log_p).sum())
    assert float(_loss(epsilon, logits, labels)) == pytest.approx(expected, rel=1e-6)
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), reduction="sum")
    assert float(_loss(0.0, logits, labels)) == pytest.approx(float(plain), rel=1e-6)
    assert float(_loss(epsilon, logits, labels)) != pytest.approx(float(plain), rel=1e-3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objectives.task.label_smoothing=1.0"], r"task.label_smoothing must be in \[0, 1\)"),
        (["objectives.task.label_smoothing=-0.1"], r"task.label_smoothing must be in \[0, 1\)"),
    ],
)
def test_out_of_range_values_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(["data.dataset=wnut16", *overrides])


def test_a_run_trains_with_it_and_a_crf_head_refuses_it(tiny_model_dir, ner_files, tmp_path):
    config = parse_config(["data.dataset=wnut16", "objectives.task.label_smoothing=0.1"])
    assert config.objectives[0].label_smoothing == 0.1
    argv = [
        f"model.name_or_path={tiny_model_dir}", f"data.train_file={ner_files['train']}",
        f"data.validation_file={ner_files['validation']}", f"data.test_file={ner_files['test']}", "train.max_steps=2",
        "train.trackers=[]", "objectives.task.label_smoothing=0.1",
    ]  # fmt: skip
    metrics = finetune_ner.main([*argv, f"output_dir={tmp_path / 'run'}"])
    assert metrics["train"]["steps"] == 2
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["objectives"]
    assert describe_objectives(saved) == ["cross-entropy on the labels (label smoothing 0.1)"]
    assert describe_objectives([{"name": "task", "weight": 1.0}]) == []  # an older run's default loss
    with pytest.raises(
        ConfigError, match="task.label_smoothing smooths a softmax over class labels; model.head=crf"
    ):
        finetune_ner.main([*argv, "model.head=crf", f"output_dir={tmp_path / 'crf'}"])

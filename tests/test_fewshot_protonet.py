"""Prototypical networks: episodes, the prototypical losses, the objective and the protonet strategy."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hftransfer.errors import ConfigError
from hftransfer.fewshot.episodes import episode_support, sample_episodes
from hftransfer.fewshot.losses import episode_loss, leave_one_out_loss
from hftransfer.predict import predict_file
from hftransfer.zeroshot import ZeroShotClassifier
from tests.conftest import recipe_argv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402


def test_episodes_draw_n_classes_k_support_then_queries():
    labels = [0] * 10 + [1] * 10 + [2] * 10 + [3] * 3  # class 3 is too small for 4 + 2
    episodes = sample_episodes(labels, n_way=2, k_shot=4, queries=2, episodes=20, seed=5)
    assert len(episodes) == 20
    for episode in episodes:
        assert len(episode) == 2 * (4 + 2) and len(set(episode)) == len(episode)
        support, query = episode[: episode_support(2, 4)], episode[episode_support(2, 4) :]
        support_counts, query_counts = Counter(labels[i] for i in support), Counter(labels[i] for i in query)
        assert set(support_counts) == set(query_counts) and 3 not in support_counts
        assert set(support_counts.values()) == {4} and set(query_counts.values()) == {2}
    assert len({tuple(sorted(Counter(labels[i] for i in e))) for e in episodes}) > 1  # the classes vary
    assert sample_episodes(labels, n_way=2, k_shot=4, queries=2, episodes=20, seed=5) == episodes
    with pytest.raises(ConfigError, match="needs 4 classes of at least 6"):
        sample_episodes(labels, n_way=4, k_shot=4, queries=2, episodes=1, seed=0)


def test_episode_loss_by_hand():
    # support: class 0 at (1, 0) and (0, 1) -> prototype direction (1, 1)/sqrt2; class 1 at (-1, 0)
    support = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    query = torch.tensor([[1.0, 1.0]])
    embeddings, labels = torch.cat([support, query]), torch.tensor([0, 0, 1, 0])
    # query cos with (1,1)/sqrt2 = 1, with (-1, 0) = -1/sqrt2
    logits = torch.tensor([[2.0 * 1.0, 2.0 * -1 / math.sqrt(2)]])
    expected = F.cross_entropy(logits, torch.tensor([0]))
    assert episode_loss(embeddings, labels, support=3, scale=2.0).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="needs support"):
        episode_loss(embeddings, torch.tensor([0, 0, 0, 1]), support=3, scale=2.0)


def test_leave_one_out_loss_by_hand():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has one row: not scored, but a prototype for the others
    loss = leave_one_out_loss(e, labels, scale=1.0)
    unit = F.normalize(e, dim=-1)
    rows = []
    for i in range(4):
        prototypes = []
        for c in range(3):
            members = [j for j in range(5) if labels[j] == c and j != i]
            prototypes.append(F.normalize(unit[members].sum(0), dim=0))
        rows.append(F.cross_entropy((unit[i] @ torch.stack(prototypes).T).unsqueeze(0), labels[i : i + 1]))
    assert loss.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-5)
    assert leave_one_out_loss(e[:2], torch.tensor([0, 0]), scale=1.0).item() == 0.0


def _protonet_argv(model, files, run_dir, tmp_path, *extra):
    return recipe_argv(
        model,
        files,
        run_dir,
        "strategy.name=protonet",
        f"strategy.cache_dir={tmp_path / 'cache'}",
        "strategy.body_epochs=3",
        "strategy.body_lr=1e-3",
        "strategy.head_lr=5e-2",
        "train.epochs=10",
        *extra,
    )


def test_protonet_meta_trains_the_encoder_and_its_export_serves_new_classes(
    tiny_model_dir, classification_files, tmp_path
):
    run_dir = tmp_path / "run"
    metrics = finetune_classifier.main(
        _protonet_argv(tiny_model_dir, classification_files, run_dir, tmp_path)
    )
    stage = metrics["strategy"]["episodic_stage"]
    assert metrics["strategy"]["name"] == "protonet"
    assert stage["episodes_per_epoch"] == 64 // 16 and stage["steps"] == 3 * 4
    assert stage["loss_last_epoch"] < stage["loss_first_epoch"]
    predicted = predict_file(
        str(run_dir / "model"), str(classification_files["test"]), str(tmp_path / "pred.jsonl"), cpu=True
    )
    assert predicted.metrics["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    # The exported encoder classifies by prototypes of examples, for any label set.
    rows = [json.loads(line) for line in classification_files["train"].read_text().splitlines()]
    examples = {
        label: [r["text"] for r in rows if r["label"] == label][:4] for label in {r["label"] for r in rows}
    }
    predictions = ZeroShotClassifier(str(run_dir / "model"), cpu=True).predict(["x"], examples)
    assert set(predictions[0]["scores"]) == set(examples)


def test_protonet_refuses_episodes_the_data_cannot_fill(tiny_model_dir, classification_files, tmp_path):
    with pytest.raises(ConfigError, match="n_way=3"):
        finetune_classifier.main(
            _protonet_argv(tiny_model_dir, classification_files, tmp_path / "r", tmp_path, "strategy.n_way=3")
        )
    with pytest.raises(ConfigError, match="instead of auto"):
        finetune_classifier.main(
            _protonet_argv(
                tiny_model_dir, classification_files, tmp_path / "a", tmp_path, "strategy.feature_layer=auto"
            )
        )


def test_prototypical_objective_trains_with_the_task(tiny_model_dir, classification_files, tmp_path):
    run_dir = tmp_path / "joint"
    finetune_classifier.main(
        recipe_argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "objectives=[{name: task}, {name: prototypical, weight: 0.5}]",
            "train.epochs=2",
            "train.log_every_steps=2",
        )
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r["prototypical"] for r in records if r["split"] == "train"]
    assert logged and all(value > 0 for value in logged)


@pytest.mark.parametrize("name", ["contrastive", "prototypical"])
def test_label_grouping_objectives_refuse_runs_they_cannot_act_on(name):
    from types import SimpleNamespace

    from hftransfer.objectives.representation import check_single_label_sequences
    from hftransfer.registry import get_objective, get_strategy

    entry = get_objective(name)
    assert "encoder never changes" in entry.requires(get_strategy("frozen"))
    assert entry.requires(get_strategy("full")) is None
    token = SimpleNamespace(
        task="token-classification", data=SimpleNamespace(problem_type="single_label_classification")
    )
    multi = SimpleNamespace(
        task="sequence-classification", data=SimpleNamespace(problem_type="multi_label_classification")
    )
    for config in (token, multi):
        with pytest.raises(
            ConfigError, match=f"objectives: {name} .* needs a single-label sequence-classification"
        ):
            check_single_label_sequences(config, name, "groups")
    check_single_label_sequences(
        SimpleNamespace(task="sequence-classification", data=SimpleNamespace()), name, "x"
    )

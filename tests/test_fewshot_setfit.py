"""SetFit-style few-shot training: pair blocks, the cosine pair loss, the contrastive objective and the strategy."""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from hftransfer.errors import ConfigError
from hftransfer.fewshot.losses import cosine_pair_loss
from hftransfer.fewshot.pairs import class_balanced_blocks, epoch_pair_counts, pair_masks
from hftransfer.predict import predict_file
from tests.conftest import recipe_argv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402


def test_blocks_hold_every_example_once_balanced_and_seeded():
    labels = [0] * 12 + [1] * 12 + [2] * 8
    blocks = class_balanced_blocks(labels, 8, seed=3)
    flat = [i for block in blocks for i in block]
    assert sorted(flat) == list(range(len(labels)))  # every example exactly once: no pair repeats in an epoch
    assert [len(b) for b in blocks] == [8, 8, 8, 8]
    for block in blocks[:2]:  # while every class still has examples, a block holds each class 2-3 times
        counts = Counter(labels[i] for i in block)
        assert set(counts) == {0, 1, 2} and max(counts.values()) - min(counts.values()) <= 1
    assert class_balanced_blocks(labels, 8, seed=3) == blocks
    assert class_balanced_blocks(labels, 8, seed=4) != blocks
    pairs = {frozenset(p) for block in blocks for p in itertools.combinations(block, 2)}
    assert len(pairs) == sum(len(b) * (len(b) - 1) // 2 for b in blocks)  # no duplicate pair


def test_blocks_fold_a_lone_last_example_into_the_block_before():
    blocks = class_balanced_blocks([0, 1] * 4 + [0], 4, seed=0)
    assert [len(b) for b in blocks] == [4, 5]
    with pytest.raises(ValueError, match="at least two"):
        class_balanced_blocks([0, 1], 1, seed=0)


def test_pair_masks_and_counts():
    positive, negative = pair_masks(torch.tensor([0, 0, 1]))
    assert positive.nonzero().tolist() == [[0, 1]]
    assert negative.nonzero().tolist() == [[0, 2], [1, 2]]
    assert epoch_pair_counts([[0, 1, 2], [3, 4]], [0, 0, 1, 1, 0]) == (1, 3)


def test_cosine_pair_loss_by_hand():
    # unit vectors at 0, 90 and 45 degrees; labels a, a, b
    e = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    # positive (0,1): cos 0 -> (0 - 1)^2 = 1. Negatives (0,2), (1,2): cos 1/sqrt2 -> 0.5 each, mean 0.5.
    assert cosine_pair_loss(e, torch.tensor([0, 0, 1])).item() == pytest.approx((1.0 + 0.5) / 2)
    # one kind only: negatives (0,1) cos 0 -> 0, (0,2) 0.5, (1,2) 0.5 -> mean 1/3
    assert cosine_pair_loss(e, torch.tensor([0, 1, 2])).item() == pytest.approx(1 / 3)
    single = torch.ones(1, 2, requires_grad=True)
    loss = cosine_pair_loss(single, torch.tensor([0]))
    loss.backward()
    assert loss.item() == 0.0 and single.grad is not None


def _setfit_argv(model, files, run_dir, tmp_path, *extra):
    return recipe_argv(
        model,
        files,
        run_dir,
        "strategy.name=setfit",
        f"strategy.cache_dir={tmp_path / 'cache'}",
        "strategy.body_epochs=3",
        "strategy.body_lr=1e-3",
        "strategy.head_lr=5e-2",
        "train.epochs=10",
        *extra,
    )


def test_setfit_tunes_the_encoder_then_exports_encoder_and_head(
    tiny_model_dir, classification_files, tmp_path
):
    run_dir = tmp_path / "run"
    metrics = finetune_classifier.main(_setfit_argv(tiny_model_dir, classification_files, run_dir, tmp_path))
    stage = metrics["strategy"]["contrastive_stage"]
    assert metrics["strategy"]["name"] == "setfit"
    assert stage["steps"] == 3 * 4  # 64 toy texts in blocks of 16, three epochs
    assert stage["loss_last_epoch"] < stage["loss_first_epoch"]
    assert stage["pairs"]["positive"] > 0 and stage["pairs"]["negative"] > 0
    assert metrics["export"]["kind"] == "encoder+head"
    # The export holds the tuned encoder: it predicts the test file exactly as the run scored it.
    predicted = predict_file(
        str(run_dir / "model"), str(classification_files["test"]), str(tmp_path / "pred.jsonl"), cpu=True
    )
    assert predicted.metrics["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    frozen = finetune_classifier.main(
        recipe_argv(
            tiny_model_dir,
            classification_files,
            tmp_path / "frozen",
            "strategy.name=frozen",
            f"strategy.cache_dir={tmp_path / 'cache'}",
            "strategy.head_lr=5e-2",
            "train.epochs=10",
        )
    )
    # the tuned encoder's features are other features: the cache keys differ from the pretrained encoder's
    keys = {split["key"] for split in metrics["strategy"]["feature_cache"].values()}
    assert keys.isdisjoint(split["key"] for split in frozen["strategy"]["feature_cache"].values())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["objectives=[{name: task}, {name: drift}]"], "no forward pass"),
        (["strategy.pooling=cls"], "pools by the mean"),
        (["strategy.block_size=1"], "block_size must be >= 2"),
    ],
)
def test_setfit_refuses_what_it_cannot_do(tiny_model_dir, classification_files, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        finetune_classifier.main(
            _setfit_argv(tiny_model_dir, classification_files, tmp_path / "r", tmp_path, *extra)
        )


def test_contrastive_objective_trains_with_the_task(tiny_model_dir, classification_files, tmp_path):
    run_dir = tmp_path / "joint"
    finetune_classifier.main(
        recipe_argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "objectives=[{name: task}, {name: contrastive, weight: 0.5}]",
            "train.epochs=2",
            "train.log_every_steps=2",
        )
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r["contrastive"] for r in records if r["split"] == "train"]  # its own per-step term
    assert logged and all(0 < value <= 0.5 for value in logged)  # weight 0.5 times a loss of at most 1
    with pytest.raises(ConfigError, match="only regularise"):
        finetune_classifier.main(
            recipe_argv(
                tiny_model_dir, classification_files, tmp_path / "alone", "objectives=[{name: contrastive}]"
            )
        )

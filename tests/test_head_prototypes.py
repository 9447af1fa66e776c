"""strategy.head_init=prototypes: a linear head set to the nearest-prototype classifier (weight imprinting)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hftransfer.errors import ConfigError
from hftransfer.strategies.frozen import FeatureHead, imprint_prototypes
from hftransfer.strategies.frozen_plan import FrozenConfig
from tests.conftest import recipe_argv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_ner  # noqa: E402


def test_imprinted_head_classifies_by_the_nearest_prototype():
    torch.manual_seed(0)
    vectors = torch.randn(60, 8)
    labels = torch.randint(0, 3, (60,))
    labels[:5] = -100  # unlabelled positions take no part
    head = FeatureHead(8, 4, dropout=0.0).eval()
    report = imprint_prototypes(head, vectors, labels)
    assert report["vectors_per_class"][3] == 0 and sum(report["vectors_per_class"].values()) == 55
    prototypes = torch.stack([vectors[labels == c].mean(0) for c in range(3)])
    queries = torch.randn(200, 8)
    nearest = torch.cdist(queries, prototypes).argmin(dim=1)
    logits = head(queries).logits[:, :3]  # class 3 (no vectors) keeps its small random weights
    assert torch.equal(logits.argmax(dim=1), nearest)


def test_head_init_options_are_checked():
    with pytest.raises(ConfigError, match="use strategy.head=linear"):
        FrozenConfig(head="mlp", head_init="prototypes")
    with pytest.raises(ConfigError, match="random, prototypes or descriptions"):
        FrozenConfig(head_init="zeros")
    with pytest.raises(ConfigError, match="use strategy.head=linear"):
        FrozenConfig(head="mlp", head_init="descriptions")


def test_ner_head_starts_from_token_prototypes(tiny_model_dir, ner_files, tmp_path):
    metrics = finetune_ner.main(
        recipe_argv(
            tiny_model_dir,
            ner_files,
            tmp_path / "run",
            "strategy.name=frozen",
            "strategy.head_init=prototypes",
            f"strategy.cache_dir={tmp_path / 'cache'}",
            "train.epochs=1",
            "train.lr=1e-9",  # the head barely moves: its scores are the prototypes'
        )
    )
    counts = metrics["strategy"]["head_init"]["vectors_per_class"]
    assert len(counts) == len(metrics["label_names"]) and all(count > 0 for count in counts.values())
    assert metrics["export"]["kind"] == "native"  # a linear token head on the last layer: a plain HF model
    assert (
        metrics["test"]["f1"] > 0.3
    )  # the toy entities' words are distinct: their prototypes tell them apart

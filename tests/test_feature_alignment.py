"""Feature-alignment objectives for domain adaptation: CORAL and multi-kernel MMD against straightforward numpy
versions and closed forms on tiny tensors, their gradients, their config checks, and runs through the recipes
with a named source of target text (the term is logged every step and finite)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hftransfer.config import parse_config
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import ObjectiveContext
from hftransfer.objectives.coral import Coral, CoralConfig, coral_loss
from hftransfer.objectives.mmd import (
    Mmd,
    MmdConfig,
    median_bandwidth,
    mmd_loss,
    squared_distances,
    strided_rows,
)
from hftransfer.registry import get_objective, get_strategy
from hftransfer.toy import make_classification_examples, make_ner_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

from tests.test_strategy_recipes import _argv  # noqa: E402


def _rows(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64) * scale + shift


# --- independent numpy versions, written out pair by pair -------------------------------------------------------


def numpy_coral(s: np.ndarray, t: np.ndarray) -> float:
    d = s.shape[1]
    return float(((np.cov(s, rowvar=False) - np.cov(t, rowvar=False)) ** 2).sum() / (4 * d * d))


def numpy_mmd(
    s: np.ndarray, t: np.ndarray, kernels=5, multiplier=2.0, bandwidth=None, unbiased=False
) -> float:
    rows = np.concatenate([s, t])
    n = len(rows)
    dist = np.array([[((rows[i] - rows[j]) ** 2).sum() for j in range(n)] for i in range(n)])
    if bandwidth is None:
        bandwidth = np.median([dist[i, j] for i in range(n) for j in range(i + 1, n)])
    powers = range(-(kernels // 2), kernels - kernels // 2)
    k = sum(np.exp(-dist / (bandwidth * multiplier**p)) for p in powers)
    m = len(s)

    def within(block: np.ndarray) -> float:
        size = len(block)
        if not unbiased:
            return block.mean()
        return sum(block[i, j] for i in range(size) for j in range(size) if i != j) / (size * (size - 1))

    return float(within(k[:m, :m]) + within(k[m:, m:]) - 2 * k[:m, m:].mean())


# --- CORAL ---------------------------------------------------------------------------------------------------------


def test_coral_matches_a_hand_value_and_numpy():
    # one feature: variances 2 and 8, so (2 - 8)^2 / (4 * 1^2) = 9
    source, target = torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    assert coral_loss(source, target).item() == pytest.approx(9.0)
    s, t = _rows(7, 4, seed=1), _rows(5, 4, seed=2, scale=2.0)
    value = coral_loss(s, t)
    assert value.dtype == torch.float32  # computed in float32 whatever comes in
    assert value.item() == pytest.approx(numpy_coral(s.numpy(), t.numpy()), rel=1e-5)


def test_coral_sees_covariance_not_the_mean_and_short_batches_add_nothing():
    s = _rows(64, 3, seed=1).float()
    assert coral_loss(s, s).item() == pytest.approx(0.0, abs=1e-7)
    assert coral_loss(s, s + 5.0).item() == pytest.approx(0.0, abs=1e-5)  # a shift alone leaves covariances
    near, far = (
        coral_loss(s, 1.5 * _rows(64, 3, seed=2).float()),
        coral_loss(s, 4 * _rows(64, 3, seed=2).float()),
    )
    assert 0 < near < far
    for short in (s[:1], s[:0]):
        assert coral_loss(short, s).item() == 0.0 and coral_loss(s, short).item() == 0.0  # no NaN


# --- MMD -----------------------------------------------------------------------------------------------------------


def test_mmd_matches_numpy_biased_and_unbiased():
    s, t = _rows(6, 3, seed=3), _rows(5, 3, seed=4, shift=0.7)
    for unbiased in (False, True):
        estimator = "unbiased" if unbiased else "biased"
        expected = numpy_mmd(s.numpy(), t.numpy(), unbiased=unbiased)
        assert mmd_loss(s, t, estimator=estimator).item() == pytest.approx(expected, rel=1e-5), estimator
        expected = numpy_mmd(
            s.numpy(), t.numpy(), kernels=4, multiplier=3.0, bandwidth=2.5, unbiased=unbiased
        )
        got = mmd_loss(s, t, kernels=4, multiplier=3.0, bandwidth=2.5, estimator=estimator)
        assert got.item() == pytest.approx(expected, rel=1e-5), estimator


def test_a_single_kernel_has_its_closed_form():
    b = 2.0
    # two copies of 0 against two copies of a: K_ss = K_tt = 1 everywhere, K_st = exp(-a^2 / b)
    for a in (0.5, 1.0, 3.0):
        source, target = torch.zeros(2, 1), torch.full((2, 1), a)
        for estimator in ("biased", "unbiased"):
            value = mmd_loss(source, target, kernels=1, bandwidth=b, estimator=estimator)
            assert value.item() == pytest.approx(2 - 2 * math.exp(-(a**2) / b), rel=1e-6)
    # the same two points {0, 1} on both sides: the V-statistic is 0, the U-statistic exp(-1/b) - 1 < 0
    points = torch.tensor([[0.0], [1.0]])
    assert mmd_loss(points, points, kernels=1, bandwidth=b).item() == pytest.approx(0.0, abs=1e-7)
    unbiased = mmd_loss(points, points, kernels=1, bandwidth=b, estimator="unbiased")
    assert unbiased.item() == pytest.approx(math.exp(-1 / b) - 1, rel=1e-6)


def test_the_median_heuristic_and_its_degenerate_cases():
    def median(values):
        rows = torch.tensor(values, dtype=torch.float32).unsqueeze(1)
        return median_bandwidth(squared_distances(rows, rows)).item()

    assert median([0, 1, 3]) == pytest.approx(4.0)  # pairs 1, 9, 4
    assert median([0, 1, 3, 7]) == pytest.approx(12.5)  # pairs 1, 4, 9, 16, 36, 49: the two middles averaged
    assert median([0, 0, 0, 2]) == pytest.approx(2.0)  # half the pairs coincide: the mean of 0, 0, 0, 4, 4, 4
    assert median([5, 5, 5]) == 1.0
    same = torch.ones(3, 2)
    assert mmd_loss(same, same).item() == 0.0  # every row alike: finite, and nothing to align


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    s = _rows(64, 4, seed=5).float()
    assert mmd_loss(s, s).item() == pytest.approx(0.0, abs=1e-6)
    values = [mmd_loss(s, _rows(64, 4, seed=6, shift=shift).float()).item() for shift in (0.0, 1.0, 2.0)]
    assert values[0] < 0.2 and 5 * values[0] < values[1] < values[2]  # the V-statistic's bias is O(1/n)
    assert abs(mmd_loss(s, _rows(64, 4, seed=6).float(), estimator="unbiased").item()) < 0.05
    assert mmd_loss(s[:1], s).item() == 0.0 and mmd_loss(s, s[:1], estimator="unbiased").item() == 0.0


def test_gradients_reach_both_sides_and_the_bandwidth_is_not_trained():
    for loss in (
        coral_loss,
        mmd_loss,
        lambda s, t: mmd_loss(s, t, estimator="unbiased"),
    ):
        s = _rows(6, 3, seed=7).float().requires_grad_()
        t = _rows(5, 3, seed=8, shift=1.0, scale=2.0).float().requires_grad_()
        loss(s, t).backward()
        for grad in (s.grad, t.grad):
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the median heuristic is detached: the gradient is that of the same bandwidth given as a constant
    s0, t0 = _rows(6, 3, seed=7).float(), _rows(5, 3, seed=8, shift=1.0).float()
    base = median_bandwidth(squared_distances(torch.cat([s0, t0]), torch.cat([s0, t0]))).item()
    grads = []
    for bandwidth in (None, base):
        s = s0.clone().requires_grad_()
        mmd_loss(s, t0, bandwidth=bandwidth).backward()
        grads.append(s.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_alignment_is_float32_under_autocast():
    s, t = _rows(8, 4, seed=9).float(), _rows(8, 4, seed=10, shift=0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = coral_loss(s, t), mmd_loss(s, t)
    assert all(value.dtype == torch.float32 for value in values)
    assert values[0].item() == pytest.approx(coral_loss(s, t).item(), rel=1e-6)
    assert values[1].item() == pytest.approx(mmd_loss(s, t).item(), rel=1e-6)


def test_rows_are_capped_by_a_fixed_stride():
    rows = torch.arange(10.0).unsqueeze(1)
    assert strided_rows(rows, 4).squeeze(1).tolist() == [0.0, 2.0, 5.0, 7.0]
    assert strided_rows(rows, 10) is rows


# --- the objectives, their configs and their registrations --------------------------------------------------------


def _outputs(hidden: torch.Tensor, target: torch.Tensor) -> dict:
    # [batch, seq, width] hidden states of the labelled batch and of the source's (embeddings, one layer)
    return {
        "hidden_states": (hidden, hidden),
        "sources": {"target": SimpleNamespace(hidden_states=(target, target))},
    }


def test_the_objectives_compare_pooled_or_token_rows_of_the_source_batch():
    hidden, target = _rows(4, 3, seed=11).float().view(2, 2, 3), _rows(6, 3, seed=12).float().view(3, 2, 3)
    mask = torch.tensor([[1, 1], [1, 0]])
    batch = {
        "input_ids": torch.zeros(2, 2, dtype=torch.long),
        "attention_mask": mask,
        "sources": {"target": {"attention_mask": torch.ones(3, 2, dtype=torch.long)}},
    }
    outputs = _Outputs(_outputs(hidden, target))
    coral = Coral("token-classification", weight=0.5)
    expected = 0.5 * coral_loss(hidden[mask.bool()], target.reshape(6, 3))  # 3 real tokens against 6
    torch.testing.assert_close(coral.terms(None, batch, outputs, None)["coral"], expected)
    mmd = Mmd("sequence-classification", MmdConfig(weight=2.0, pooling="cls"))
    expected = 2.0 * mmd_loss(hidden[:, 0], target[:, 0])
    torch.testing.assert_close(mmd.terms(None, batch, outputs, None)["mmd"], expected)
    without = {key: value for key, value in batch.items() if key != "sources"}
    assert mmd.terms(None, without, _Outputs({"hidden_states": (hidden,)}), None)["mmd"].item() == 0.0


class _Outputs(dict):
    """A model output: keys, and the same values as attributes."""

    __getattr__ = dict.__getitem__


@pytest.mark.parametrize(
    ("cls", "fields", "message"),
    [
        (CoralConfig, {"weight": 0}, "coral.weight must be > 0"),
        (CoralConfig, {"source": "not a name"}, "objectives.coral.source"),
        (CoralConfig, {"pooling": "max"}, "objectives.coral.pooling"),
        (CoralConfig, {"layer": 1.5}, "objectives.coral.layer"),
        (MmdConfig, {"kernels": 0}, "objectives.mmd.kernels"),
        (MmdConfig, {"multiplier": 1.0}, "objectives.mmd.multiplier"),
        (MmdConfig, {"bandwidth": -1.0}, "objectives.mmd.bandwidth"),
        (MmdConfig, {"estimator": "jackknife"}, "objectives.mmd.estimator"),
        (MmdConfig, {"max_rows": 1}, "objectives.mmd.max_rows"),
        (MmdConfig, {"pooling": "max"}, "objectives.mmd.pooling"),
    ],
)
def test_config_fields_are_checked_naming_the_field(cls, fields, message):
    with pytest.raises(ConfigError, match=message):
        cls(**fields)


def test_a_layer_the_model_lacks_a_run_of_several_tasks_and_a_fixed_encoder_are_refused():
    model = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=2))
    run = SimpleNamespace(task="sequence-classification")
    assert Coral.from_context(ObjectiveContext(model, run, CoralConfig(layer=-3))).layer == -3
    with pytest.raises(ConfigError, match=r"objectives.mmd.layer=3 is not a hidden state"):
        Mmd.from_context(ObjectiveContext(model, run, MmdConfig(layer=3)))
    with pytest.raises(ConfigError, match="only one-task runs have"):
        Coral.from_context(ObjectiveContext(model, SimpleNamespace(), CoralConfig()))
    for name in ("coral", "mmd"):
        entry = get_objective(name)
        assert entry.regulariser
        assert entry.requires(get_strategy("full")) is None and entry.requires(get_strategy("lora")) is None
        assert "encoder never changes" in entry.requires(get_strategy("frozen"))
    with pytest.raises(ConfigError, match="coral with strategy.name=frozen: the encoder never changes"):
        parse_config(["strategy.name=frozen", "objectives+=[{name: coral}]"])


def test_model_cards_describe_them():
    from hftransfer.hub.card import describe_objectives

    lines = describe_objectives(
        [{"name": "task", "weight": 1.0}, {"name": "coral", "weight": 0.5, "source": "target"}]
        + [{"name": "mmd", "weight": 1.0, "source": "web", "kernels": 5, "estimator": "biased"}]
    )
    assert lines == [
        "CORAL feature alignment to source target (weight 0.5)",
        "multi-kernel MMD alignment to source web (5 kernels, biased, weight 1.0)",
    ]


# --- through the recipes -------------------------------------------------------------------------------------------


def _train_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if record["split"] == "train"]


def test_a_classifier_trains_with_coral_on_a_target_source(tiny_model_dir, classification_files, tmp_path):
    target = tmp_path / "target.txt"
    texts = [e["text"].replace("this film", "the novel") for e in make_classification_examples(24, seed=7)]
    target.write_text("\n".join(texts) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    metrics = finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "task=sequence-classification",
            "objectives+=[{name: coral, weight: 1.0}]",
            f"sources=[{{name: target, data: {target}, batch_size: 4}}]",
            "train.max_steps=3",
            "train.log_every_steps=1",
        )
    )
    assert metrics["sources"]["target"]["examples"] > 0
    coral = [record["coral"] for record in _train_records(run_dir)]
    assert len(coral) == 3 and all(math.isfinite(value) and value >= 0 for value in coral) and max(coral) > 0


def test_ner_trains_with_token_level_mmd_on_a_target_source(tiny_model_dir, ner_files, tmp_path):
    target = tmp_path / "target.txt"
    sentences = [" ".join(example["tokens"]) for example in make_ner_examples(16, seed=9)]
    target.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    finetune_ner.main(
        _argv(
            tiny_model_dir,
            ner_files,
            run_dir,
            "objectives+=[{name: mmd, weight: 1.0, max_rows: 16, estimator: unbiased}]",
            f"sources=[{{name: target, data: {target}}}]",
            "train.max_steps=3",
            "train.log_every_steps=1",
        )
    )
    mmd = [record["mmd"] for record in _train_records(run_dir)]
    assert len(mmd) == 3 and all(math.isfinite(value) for value in mmd) and any(mmd)  # unbiased: either sign

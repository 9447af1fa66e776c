"""benchmarks/domain_adaptation.py's summary: means, spreads and the difference to source-only with its standard
error, from per-seed records."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from domain_adaptation import (  # noqa: E402
    ALL_METHODS,
    CONFIGS,
    METHODS,
    PAIRS,
    PRETRAIN_EPOCHS,
    TWO_STAGE,
    method_argv,
    summarise,
)

from hftransfer.config import parse_config  # noqa: E402


def _record(method: str, seed: int, accuracy: float, pair: str = "movies_to_drugs") -> dict:
    return {
        "pair": pair,
        "method": method,
        "seed": seed,
        "selection": "source",
        "target_accuracy": accuracy,
        "target_macro_f1": accuracy - 0.1,
        "source_validation_accuracy": 0.8,
        "wall_seconds": 10.0 * seed,
    }


def test_summary_compares_each_method_with_source_only():
    base, dann = [0.70, 0.72, 0.74], [0.76, 0.80, 0.78]
    records = [_record("source_only", s, a) for s, a in enumerate(base, 1)]
    records += [_record("dann", s, a) for s, a in enumerate(dann, 1)]
    rows = {row["method"]: row for row in summarise(records)}
    assert rows["dann"]["accuracy_mean"] == pytest.approx(0.78)
    assert rows["dann"]["accuracy_std"] == pytest.approx(statistics.stdev(dann))
    assert rows["dann"]["delta_vs_source_only"] == pytest.approx(0.06)
    stderr = (statistics.variance(dann) / 3 + statistics.variance(base) / 3) ** 0.5
    assert rows["dann"]["delta_stderr"] == pytest.approx(stderr)
    assert "delta_vs_source_only" not in rows["source_only"]
    assert rows["source_only"]["wall_seconds_mean"] == pytest.approx(20.0)


def test_summary_keeps_pairs_apart_and_compares_macro_f1_too():
    records = [_record("source_only", s, a) for s, a in enumerate([0.70, 0.72], 1)]
    records += [_record("dann", s, a) for s, a in enumerate([0.80, 0.82], 1)]
    # The other pair's source-only is far worse: it must not be the first pair's baseline.
    records += [_record("source_only", s, a, pair="drugs_to_movies") for s, a in enumerate([0.50, 0.52], 1)]
    rows = {(row["pair"], row["method"]): row for row in summarise(records)}
    dann = rows[("movies_to_drugs", "dann")]
    assert dann["delta_vs_source_only"] == pytest.approx(0.10)
    assert dann["delta_macro_f1_vs_source_only"] == pytest.approx(0.10)  # macro-F1 is accuracy - 0.1 here
    assert dann["macro_f1_mean"] == pytest.approx(0.71)
    assert rows[("drugs_to_movies", "source_only")]["accuracy_mean"] == pytest.approx(0.51)


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_run_of_the_benchmark_is_a_valid_config(pair, method):
    # The overrides are strings put together by hand: a typo would surface only hours into a benchmark.
    preset = {**METHODS, **TWO_STAGE}.get(method, ("domain_adapt_source_only.yaml", []))[0]
    config = parse_config(["--config", str(CONFIGS / preset), *method_argv(pair, method)])
    target = PAIRS[pair]["target"]["dataset"]
    assert config.report[0].data.dataset == target
    if preset == "domain_adapt_source_only.yaml":
        assert config.sources == []
    else:
        assert [source.data for source in config.sources] == [target]
    trained_on = config.data.dataset
    assert (trained_on == target) == (method == "oracle")


@pytest.mark.parametrize("pair", list(PAIRS))
def test_the_pretraining_stage_reads_the_targets_training_texts_only(pair):
    from hftransfer.pretrain.config import PretrainConfig

    config = parse_config(
        [*PAIRS[pair]["pretrain"], f"train.epochs={PRETRAIN_EPOCHS}"],
        default_config=CONFIGS / "pretrain_mlm.yaml",
        schema=PretrainConfig,
    )
    assert config.data.dataset == PAIRS[pair]["target"]["dataset"]
    assert config.train.epochs == PRETRAIN_EPOCHS

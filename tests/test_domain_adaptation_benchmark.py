"""benchmarks/domain_adaptation.py's summary: means, spreads and the difference to source-only with its standard
error, from per-seed records."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from domain_adaptation import summarise  # noqa: E402


def _record(method: str, seed: int, accuracy: float) -> dict:
    return {
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

"""Refactors keep behaviour: every recipe x strategy, multitask and distillation on toy data with fixed seeds gives
the losses, metrics, best step and exported weights recorded in ``tests/regression_runs.json`` (recorded before the
composable-core refactor, at the commits it names). Re-record only after explaining the difference; see
``tests/regression_runs.py``.

In a recorded environment (CPU model and kernels, torch build, transformers/peft/accelerate releases: see
``environment()``) the comparison is exact: metrics within 1e-6 and
bit-identical weights. Elsewhere the same code differs in the last bits (AVX2 against AVX-512 recordings: metrics
by up to 7e-6, weight sums by 9e-5 relative, sums of squares by 1e-7 relative), so the comparison allows a margin
above that and still catches a changed update rule (a missing weight decay moves the sum of squares by ~5e-4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.regression_runs import CASES, environment, run_case

RECORDINGS = json.loads((Path(__file__).parent / "regression_runs.json").read_text(encoding="utf-8"))[
    "recordings"
]
SAME = [r for r in RECORDINGS if r["environment"] == environment()]
RECORDING = (SAME or RECORDINGS)[0]
EXACT = bool(SAME)


def _close(actual: dict, expected: dict, where: str) -> list[str]:
    problems = (
        [f"{where}: keys differ {sorted(set(actual) ^ set(expected))}"]
        if set(actual) != set(expected)
        else []
    )
    for key in sorted(set(actual) & set(expected)):
        margin = 1e-6 if EXACT else 2e-5 + 2e-4 * abs(expected[key])
        if abs(actual[key] - expected[key]) > margin:
            problems.append(f"{where}.{key}: {actual[key]!r} != recorded {expected[key]!r}")
    return problems


def _weights_match(now: dict, then: dict) -> bool:
    if EXACT:
        return now["sha256"] == then["sha256"]
    return (
        abs(now["sum"] - then["sum"]) <= 5e-4 * max(abs(then["sum"]), 1.0)
        and abs(now["sum_sq"] - then["sum_sq"]) <= 1e-5 * then["sum_sq"]
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_matches_the_recorded_fingerprint(name, tmp_path):
    expected = RECORDING["cases"][name]
    actual = run_case(name, tmp_path)
    problems = []
    for part in ("train", "validation", "test"):
        problems += _close(actual[part], expected[part], part)
    if actual["best_step"] != expected["best_step"]:
        problems.append(f"best_step {actual['best_step']} != recorded {expected['best_step']}")
    if set(actual["weights"]) != set(expected["weights"]):
        problems.append(f"weight files {sorted(actual['weights'])} != recorded {sorted(expected['weights'])}")
    for file in sorted(set(actual["weights"]) & set(expected["weights"])):
        now, then = actual["weights"][file], expected["weights"][file]
        if not _weights_match(now, then):
            problems.append(
                f"{file}: weights differ (sum {now['sum'] - then['sum']:+.3g}, "
                f"sum_sq {now['sum_sq'] - then['sum_sq']:+.3g} from the recording)"
            )
    where = "" if EXACT else f" (compared with the {RECORDING['environment']} recording, with margins)"
    assert not problems, where + "\n".join(problems)

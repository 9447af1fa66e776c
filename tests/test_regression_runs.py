"""Refactors keep behaviour: every recipe x strategy, multitask and distillation on toy data with fixed seeds gives
the losses, metrics, best step and exported weights recorded in ``tests/regression_runs.json`` (recorded at the
commit it names, before the composable-core refactor). Re-record only after explaining the difference; see
``tests/regression_runs.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.regression_runs import CASES, run_case

RECORDED = json.loads((Path(__file__).parent / "regression_runs.json").read_text(encoding="utf-8"))["cases"]


def _close(actual: dict, expected: dict, where: str) -> list[str]:
    problems = (
        [f"{where}: keys differ {sorted(set(actual) ^ set(expected))}"]
        if set(actual) != set(expected)
        else []
    )
    for key in sorted(set(actual) & set(expected)):
        if abs(actual[key] - expected[key]) > 1e-6:
            problems.append(f"{where}.{key}: {actual[key]!r} != recorded {expected[key]!r}")
    return problems


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_matches_the_recorded_fingerprint(name, tmp_path):
    expected = RECORDED[name]
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
        if now["sha256"] != then["sha256"]:
            problems.append(
                f"{file}: weights differ (sum {now['sum'] - then['sum']:+.3g}, "
                f"sum_sq {now['sum_sq'] - then['sum_sq']:+.3g} from the recording)"
            )
    assert not problems, "\n".join(problems)

"""The benchmark harness: FLOP counting, the report's statistics, and the whole suite in ``--quick`` mode (tiny
model, toy data: it checks that every section runs and reports, not the numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from flops import sequence_flops, training_flops  # noqa: E402 - benchmarks/ is not a package
from suite_report import first_reaching, group, mean_std  # noqa: E402


def forward_matmul_flops(hidden: int, intermediate: int, layers: int, labels: int, length: int) -> int:
    """Matmul FLOPs of a BERT token classifier's forward pass over one sequence, counted by hand."""
    per_layer = 2 * length * (4 * hidden * hidden + 2 * hidden * intermediate)  # Q, K, V, O and the FFN
    per_layer += 2 * 2 * length * length * hidden  # attention scores and the weighted sum of values
    return layers * per_layer + 2 * length * hidden * labels


def test_training_flops_are_three_forward_passes_of_matrix_products(tiny_model_dir):
    # Backward computes the gradient of each product's input and of its weight: twice the forward FLOPs.
    config = json.loads((tiny_model_dir / "config.json").read_text())
    for length in (5, 12):
        forward = forward_matmul_flops(
            config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], 2, length
        )
        assert sequence_flops(str(tiny_model_dir), "token-classification", length) == 3 * forward


def test_run_flops_follow_the_mean_padded_length(tiny_model_dir):
    # 10 sequences padded to 12 tokens: exactly 10 sequences of length 12.
    expected = 10 * sequence_flops(str(tiny_model_dir), "token-classification", 12)
    assert training_flops(str(tiny_model_dir), "token-classification", 10, 120) == pytest.approx(expected)


def test_mean_std_and_time_to_target():
    assert mean_std([1.0, 3.0, None]) == (2.0, pytest.approx(2**0.5), 2)
    assert mean_std([0.5]) == (0.5, 0.0, 1)
    history = [{"train_seconds": 10, "score": 0.2}, {"train_seconds": 20, "score": 0.6}]
    assert first_reaching(history, 0.5) == 20
    assert first_reaching(history, 0.7) is None


def test_records_group_by_model_task_and_name_across_seeds():
    records = {
        "m/ner/full/1": {"score": 0.5},
        "m/ner/full/2": {"score": 0.7},
        "m/ner/frozen_linear/1/encode": {"score": 0.1},
        "m/multitask/proportional/1": {"score": {"ner": 0.5}},
    }
    groups = group(records)
    assert [r["score"] for r in groups[("m", "ner", "full")]] == [0.5, 0.7]
    assert ("m", "ner", "frozen_linear/encode") in groups
    assert ("m", "multitask", "proportional") in groups


def test_quick_suite_runs_every_section_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick"]
        + [f"--output-dir={out}", f"--work-dir={tmp_path / 'work'}"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads((out / "results" / "suite.json").read_text())
    assert saved["quick"] is True and saved["machine"]["matmul_peak_flops"] > 0
    runs = saved["runs"]
    model = next(iter(runs)).split("/")[0]
    for key in (
        f"{model}/ner/full/1",
        f"{model}/ner/trainer/1",
        f"{model}/sentiment/trainer/1",
        f"{model}/ner/frozen_linear/1",
        f"{model}/ner/lora/1",
        f"{model}/multitask/proportional/1",
        f"{model}/ner/student_distilled/1",
    ):
        assert key in runs, sorted(runs)
    full = runs[f"{model}/ner/full/1"]
    assert full["training_flops"] > 0 and full["tokens"] <= full["padded_tokens"]
    assert full["history"] and full["step_seconds"] <= full["train_seconds"]
    assert full["train_rss_growth_mb"] is not None
    # every timed run carries the matmul peak measured just before it
    assert full["matmul_peak_flops"] > 0 and runs[f"{model}/ner/trainer/1"]["matmul_peak_flops"] > 0
    multitask_run = runs[f"{model}/multitask/proportional/1"]
    assert sum(multitask_run["steps_per_task"].values()) == multitask_run["steps"]
    report = (out / "RESULTS.md").read_text()
    for heading in ("## Targets", "Trainer", "## Transfer strategies", "## Multitask", "## Distillation"):
        assert heading in report
    assert (out / "results" / "strategies.png").stat().st_size > 0
    assert (out / "results" / "time_to_score.png").stat().st_size > 0

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

from flops import flops_coefficients, sequence_flops, training_flops  # noqa: E402 - benchmarks/ is not a package
from suite_report import (  # noqa: E402
    baseline_section,
    first_reaching,
    group,
    mean_std,
    paired_differences,
    step_flops_section,
)

from hftransfer.toy import make_toy_assets  # noqa: E402


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


def test_a_sequences_flops_are_exactly_quadratic_in_its_length(tiny_model_dir):
    # Fitted on lengths 16, 32 and 64; exact at any other length (step_flops.py counts every batch this way).
    c0, c1, c2 = flops_coefficients(str(tiny_model_dir), "token-classification")
    for length in (7, 45, 128):
        exact = sequence_flops(str(tiny_model_dir), "token-classification", length)
        assert c0 + c1 * length + c2 * length**2 == pytest.approx(exact, rel=1e-9)


def test_step_flops_divides_each_block_by_the_peaks_around_it(tmp_path):
    toy = make_toy_assets(tmp_path / "toy", ner_sizes=(64, 16, 16), sentiment_sizes=(8, 8, 8))
    out = tmp_path / "step_flops.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "step_flops.py"), "--blocks=3", "--block-steps=3"]
    command += ["--peak-size=64", "--peak-seconds=0.01", f"--output={out}"]
    command += [f"model.name_or_path={toy.model_dir}", "data.dataset=null", "train.batch_size=8"]
    command += [f"data.{split}_file={path}" for split, path in toy.ner_files.items()]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert len(saved["blocks"]) == 3 and saved["batch_size"] == 8
    for block in saved["blocks"]:
        assert block["seconds"] > 0 and block["gflops"] > 0
        assert block["fraction"] == pytest.approx(
            block["gflops"] / (sum(block["peaks_gflops"]) / 2), rel=0.02
        )
    steady = [block["fraction"] for block in saved["blocks"][1:]]  # the first block is warm-up
    assert saved["fraction_mean"] == pytest.approx(sum(steady) / 2, abs=1e-4)
    assert "training matmul FLOP/s / peak" in result.stdout


def test_step_flops_verdict_uses_every_steady_block():
    def verdict(fractions: list[float]) -> str:
        blocks = [
            {"gflops": 1.0, "peaks_gflops": [2.0, 2.0], "fraction": f, "seconds": 1.0} for f in fractions
        ]
        steady = fractions[1:]
        result = {
            "model": "m", "batch_size": 16, "block_steps": 10, "blocks": blocks, "overrides": [],
            "fraction_mean": sum(steady) / len(steady), "fraction_std": 0.0, "fraction_min": min(steady),
            "fraction_max": max(steady), "measured": "now", "threads": 2, "torch": "2",
        }  # fmt: skip
        targets: list[str] = []
        step_flops_section(result, targets)
        return targets[0].rsplit("|", 2)[1].strip()

    assert verdict([0.1, 0.61, 0.65]) == "met"  # the warm-up block does not count
    assert verdict([0.9, 0.55, 0.58]) == "missed"
    assert verdict([0.5, 0.58, 0.66]) == "met on average, not in every block"
    assert verdict([0.5, 0.52, 0.61]) == "missed on average, met in some blocks"


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


def _baseline_record(score: float, wall: float) -> dict:
    return {
        "score": score,
        "wall_seconds": wall,
        "history": [{"train_seconds": wall / 2, "score": score}],
        "samples": 100,
        "tokens": 3000,
        "train_seconds": wall / 2,
        "step_seconds": wall / 3,
        "training_flops": 1e12,
        "peak_rss_mb": 1000,
        "matmul_peaks": [1e11, 1e11],
    }


@pytest.mark.parametrize(
    ("ours", "trainer", "verdict"),
    [
        ([0.50, 0.52, 0.48], [0.51, 0.53, 0.49], "| met |"),  # 1 point below, within the seeds' spread
        ([0.40, 0.41, 0.39], [0.51, 0.53, 0.49], "| missed |"),
        (
            [0.50],
            [0.51],
            "| met on wall time; score not judged (1 seed) |",
        ),  # one seed: no spread to judge by
    ],
)
def test_baseline_target_judges_the_score_only_with_a_spread(ours, trainer, verdict):
    groups = {
        ("m", "ner", "full"): [_baseline_record(score, 60) for score in ours],
        ("m", "ner", "trainer"): [_baseline_record(score, 100) for score in trainer],
    }
    targets: list[str] = []
    lines = baseline_section(groups, {"matmul_peak_flops": 1e11}, targets)
    assert any(line.startswith("| m | ner | `python <script>` | hftransfer |") for line in lines)
    assert targets[0].endswith(verdict) and "wall ratio 0.60" in targets[0]


def test_baseline_pairs_each_launch_line_with_the_trainer_on_the_same_line():
    records = {
        "m/ner/full/1": _baseline_record(0.5, 60),
        "m/ner/trainer/1": _baseline_record(0.5, 100),
        "m/ner/full@accelerate/1": _baseline_record(0.5, 90),
        "m/ner/trainer@accelerate/1": _baseline_record(0.5, 100),
        "m/ner/full@accelerate-2/1": _baseline_record(0.5, 50),  # no Trainer run on that line: no row
    }
    targets: list[str] = []
    lines = baseline_section(group(records), {"matmul_peak_flops": 1e11}, targets)
    rows = [line for line in lines if line.startswith("| m | ner |")]
    assert [row.split(" | ")[2] for row in rows] == ["`python <script>`"] * 2 + [
        "`accelerate launch <script>`"
    ] * 2
    wall_targets = [t for t in targets if "wall time" in t]
    assert "(`python <script>`)" in wall_targets[0] and "wall ratio 0.60" in wall_targets[0]
    assert "(`accelerate launch <script>`)" in wall_targets[1] and "wall ratio 0.90" in wall_targets[1]


def test_launch_lines_are_the_commands_users_type():
    from runner import launch_command

    assert launch_command("python", "r.py") == ([sys.executable, "r.py"], {})
    command, env = launch_command("accelerate", "r.py")
    assert command[-2:] == ["launch", "r.py"] and env == {}
    command, env = launch_command("accelerate-2", "r.py")
    assert command[command.index("--num_processes") + 1] == "2" and env == {"ACCELERATE_USE_CPU": "1"}
    with pytest.raises(ValueError, match="launcher 'torchrun'"):
        launch_command("torchrun", "r.py")


def test_paired_differences_match_each_multitask_run_with_its_own_seeds_singles():
    def run(score, wall: float, finished: str | None = "2026-11-26 10:00") -> dict:
        return {"score": score, "wall_seconds": wall, "finished": finished}

    records = {
        "m/ner/full/4": run(0.50, 300),
        "m/sentiment/full/4": run(0.80, 200),
        "m/multitask/proportional/4": run({"ner": 0.52, "sentiment": 0.79}, 450, "2026-11-26 11:30"),
        "m/ner/full/5": run(0.40, 310),
        "m/sentiment/full/5": run(0.90, 210),
        # made a day after its single-task runs: its scores pair, its wall time does not
        "m/multitask/proportional/5": run({"ner": 0.41, "sentiment": 0.87}, 900, "2026-11-27 10:00"),
        "m/multitask/proportional/6": run({"ner": 0.1, "sentiment": 0.1}, 1),  # no singles
        "m/multitask/temperature/5": run({"ner": 0.30, "sentiment": 0.90}, 500),
        "m/multitask/uniform/4": run({"ner": 0.50, "sentiment": 0.80}, 400, None),  # when: unknown
    }
    pairs = paired_differences(records)
    assert pairs.seeds == {"proportional": [4, 5], "temperature": [5], "uniform": [4]}
    assert pairs.scores["proportional"]["ner"] == pytest.approx([2.0, 1.0])
    assert pairs.scores["proportional"]["sentiment"] == pytest.approx([-1.0, -3.0])
    assert pairs.scores["temperature"]["ner"] == pytest.approx([-10.0])  # against seed 5's runs, not the mean
    assert pairs.walls == {"proportional": [(450, 500)], "temperature": [(500, 520)]}  # not uniform's


# ~3 minutes of recipe subprocesses: the whole benchmark suite end to end. Slow: the default suite keeps the
# benchmarks' own arithmetic (the tests above) and the library behaviour each section runs is tested on its own.
@pytest.mark.slow
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
        # the baseline on each launch line users type
        f"{model}/ner/full@accelerate/1",
        f"{model}/ner/trainer@accelerate/1",
        f"{model}/ner/full@accelerate-2/1",
        f"{model}/ner/trainer@accelerate-2/1",
    ):
        assert key in runs, sorted(runs)
    assert runs[f"{model}/ner/full@accelerate-2/1"]["processes"] == 2
    assert runs[f"{model}/ner/trainer@accelerate-2/1"]["processes"] == 2
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

    # One section again, without --resume: its runs are made afresh, every other record stays.
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--sections=baseline"]
        + ["--tasks=sentiment", f"--output-dir={out}", f"--work-dir={tmp_path / 'work2'}"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    rerun = json.loads((out / "results" / "suite.json").read_text())["runs"]
    assert set(rerun) == set(runs)
    assert rerun[f"{model}/ner/lora/1"] == runs[f"{model}/ner/lora/1"]
    for key in (f"{model}/sentiment/full/1", f"{model}/sentiment/trainer/1"):
        assert rerun[key]["matmul_peaks"] != runs[key]["matmul_peaks"], key  # measured again
        assert "work2" in rerun[key].get("run_dir", str(tmp_path / "work2")), key

    # Real results never land in a file of smoke-run ones (nor the other way round).
    mixed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--sections=baseline", f"--output-dir={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert mixed.returncode != 0 and "--output-dir" in mixed.stderr
    assert json.loads((out / "results" / "suite.json").read_text())["runs"] == rerun


def test_ner_defaults_pairs_each_variant_with_the_preset_run_of_its_seed(tmp_path):
    from ner_defaults import summarise, write

    def record(variant, seed, validation, test):
        return {
            "variant": variant,
            "seed": seed,
            "validation_f1": validation,
            "test_f1": test,
            "wall_s": 100.0,
        }

    records = [
        record("preset", 1, 0.60, 0.50), record("preset", 2, 0.64, 0.56),
        record("crf", 1, 0.63, 0.52), record("crf", 2, 0.65, 0.55), record("crf", 3, 0.90, 0.90),  # no preset 3
    ]  # fmt: skip
    rows = {row["variant"]: row for row in summarise(records)}
    crf = rows["crf"]
    assert crf["seeds"] == [1, 2, 3] and crf["validation_f1"] == pytest.approx((0.63 + 0.65 + 0.90) / 3)
    assert crf["delta_validation_f1"] == pytest.approx(0.02)  # (0.03 + 0.01) / 2: seed 3 has no pair
    assert crf["delta_validation_f1_se"] == pytest.approx(0.01414214 / 2**0.5, rel=1e-5)
    assert crf["delta_test_f1"] == pytest.approx(0.005)
    assert rows["preset"]["delta_validation_f1"] == 0.0
    report = write(records, tmp_path / "ner_defaults")
    assert "| crf | model.head=crf | 3 |" in report and "+2.00 ± 1.00" in report
    assert json.loads((tmp_path / "ner_defaults.json").read_text())["records"] == records


def test_chains_pair_each_method_with_the_independent_run_of_its_chain_and_seed():
    from sequential_chains import summarise

    def record(chain, method, seed, target):
        return {
            "chain": chain,
            "method": method,
            "seed": seed,
            "target": target,
            "source_after": 0.5,
            "forgetting": 0.0,
            "wall_s": 1.0,
            "trainable": 1,
            "parameters": 2,
        }

    records = [
        record("ner-rt", "independent", 1, 0.70),
        record("ner-rt", "independent", 2, 0.80),
        record("ner-rt", "progressive", 1, 0.72),
        record("ner-rt", "progressive", 2, 0.81),
        record("ner-rt", "progressive", 3, 0.99),  # no independent run of seed 3: not paired
        record("rt-drugs", "independent", 1, 0.10),
        record("rt-drugs", "sequential", 1, 0.15),
    ]
    rows = {(r["chain"], r["method"]): r for r in summarise(records)}
    progressive = rows["ner-rt", "progressive"]
    assert progressive["paired_seeds"] == 2
    assert progressive["vs_independent"] == pytest.approx(0.015)
    assert progressive["vs_independent_se"] == pytest.approx(0.005)  # stdev(0.02, 0.01) / sqrt(2)
    assert rows["rt-drugs", "sequential"]["vs_independent"] == pytest.approx(0.05)
    assert rows["rt-drugs", "sequential"]["vs_independent_se"] is None  # one seed: no spread
    assert rows["ner-rt", "independent"]["vs_independent"] is None


def test_chains_read_the_first_tasks_scores_from_the_runs_report(tmp_path):
    from sequential_chains import first_task_scores, summarise

    first = tmp_path / "ner"
    first.mkdir()
    (first / "metrics.json").write_text(json.dumps({"test": {"f1": 0.4}}))
    assert first_task_scores(tmp_path, first, None, "f1") == (0.4, 0.4)  # a method that never touches it
    report = {"earlier": [{"before": {"f1": 0.4}, "after": {"f1": 0.3}}]}
    assert first_task_scores(tmp_path, first, report, "f1") == (0.4, 0.3)
    records = [
        {
            "chain": "ner-rt-drugs",
            "method": "sequential",
            "seed": seed,
            "target": 0.7,
            "source_after": 0.7,
            "forgetting": 0.0,
            "wall_s": 1.0,
            "trainable": 1,
            "parameters": 2,
            "first_after": after,
            "first_forgetting": 0.4 - after,
        }
        for seed, after in ((1, 0.3), (2, 0.2))
    ]
    (row,) = summarise(records)
    assert row["first_forgetting"] == pytest.approx(0.15)

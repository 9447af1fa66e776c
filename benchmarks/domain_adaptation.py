"""Domain adaptation on the real offline assets: Rotten Tomatoes movie reviews (labelled source) -> Drugs.com patient
reviews (unlabelled target text; its labelled test file is read only by the final report).

    python benchmarks/domain_adaptation.py                                  # every method, 3 seeds
    python benchmarks/domain_adaptation.py --methods source_only dann --seeds 1
    python benchmarks/domain_adaptation.py --source-samples 2000 --epochs 2 # a smaller, faster source
    python benchmarks/domain_adaptation.py --set data.max_eval_samples=400 train.batch_size=16

Each method is one preset of ``recipes/domain_adapt.py`` (``recipes/configs/minilm/domain_adapt_*.yaml``) run as the
real recipe in a fresh process, one after another. Besides the methods: ``oracle`` (fine-tuned on the labelled
target training reviews: the upper bound no adaptation method can use) and the target's majority class. Every run
selects its model by ``selection`` (the label-free criterion each row names); target labels reach the report only.
Results: ``benchmarks/results/domain_adaptation.{json,md}``, saved after every run (``--resume`` keeps finished runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from runner import RESULTS, ROOT, run_recipe

from hftransfer.utils import atomic_write_text

CONFIGS = ROOT / "recipes" / "configs" / "minilm"
# Method -> (preset, extra overrides). Each preset is the source-only one plus one method.
METHODS = {
    "source_only": ("domain_adapt_source_only.yaml", []),
    "dann": ("domain_adapt_dann.yaml", []),
    "coral": ("domain_adapt_coral.yaml", []),
    "mmd": ("domain_adapt_mmd.yaml", []),
    "importance_weighting": ("domain_adapt_iw.yaml", []),
    "udalm": ("domain_adapt_udalm.yaml", []),
    "dann_iwv": ("domain_adapt_dann.yaml", ["selection.method=iwv"]),
}
TARGET = {"dataset": "drug_reviews", "drop_labels": ["neutral"]}


def oracle_argv() -> list[str]:
    """Fine-tuning on the labelled target training reviews (pos/neg), scored on the same report set."""
    return [
        "sources=[]",
        "objectives=[{name: task}]",
        "data.dataset=drug_reviews",
        "data.drop_labels=[neutral]",
        "data.max_length=256",
        "data.test_size=0",
    ]


def majority_class_accuracy() -> float:
    """Accuracy of always answering the report set's most frequent label."""
    from collections import Counter

    from hftransfer.config import DataConfig
    from hftransfer.data.sources import load_task_data

    test = load_task_data(DataConfig(**TARGET), "sequence-classification").splits["test"]
    return max(Counter(test["label"]).values()) / len(test)


def summarise(records: list[dict]) -> list[dict]:
    """Mean ± std of target accuracy / macro-F1 per method, and the difference to source-only with its standard
    error (unpaired: seeds differ in initialisation and data order alike)."""
    by_method: dict[str, list[dict]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    baseline = [r["target_accuracy"] for r in by_method.get("source_only", [])]
    rows = []
    for method, runs in by_method.items():
        accuracy = [r["target_accuracy"] for r in runs]
        f1 = [r["target_macro_f1"] for r in runs]
        row = {
            "method": method,
            "selection": runs[0]["selection"],
            "seeds": len(runs),
            "accuracy_mean": statistics.fmean(accuracy),
            "accuracy_std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
            "macro_f1_mean": statistics.fmean(f1),
            "wall_seconds_mean": statistics.fmean(r["wall_seconds"] for r in runs),
        }
        if baseline and method != "source_only" and len(accuracy) > 1 and len(baseline) > 1:
            difference = row["accuracy_mean"] - statistics.fmean(baseline)
            stderr = (
                statistics.variance(accuracy) / len(accuracy) + statistics.variance(baseline) / len(baseline)
            ) ** 0.5
            row.update(delta_vs_source_only=difference, delta_stderr=stderr)
        rows.append(row)
    return rows


def write(records: list[dict], majority: float | None, settings: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = summarise(records)
    payload = {"settings": settings, "majority_class_accuracy": majority, "runs": records, "summary": rows}
    atomic_write_text(RESULTS / "domain_adaptation.json", json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Domain adaptation: Rotten Tomatoes -> Drugs.com reviews (MiniLM-L6)",
        "",
        f"Settings: {json.dumps(settings)}. Target: the Drugs.com test reviews, positive/negative (neutral left out),",
        "read only by the final report. Selection: the label-free criterion that chose each run's model.",
        f"Majority class accuracy on the target: {majority:.4f}" if majority is not None else "",
        "",
        "| method | selection | seeds | target accuracy | target macro-F1 | vs source-only (± 1 s.e.) | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        delta = (
            f"{row['delta_vs_source_only']:+.4f} ± {row['delta_stderr']:.4f}"
            if "delta_vs_source_only" in row
            else ""
        )
        lines.append(
            f"| {row['method']} | {row['selection']} | {row['seeds']} | {row['accuracy_mean']:.4f} ± "
            f"{row['accuracy_std']:.4f} | {row['macro_f1_mean']:.4f} | {delta} | {row['wall_seconds_mean']:.0f} |"
        )
    lines += [
        "",
        "Per seed:",
        "",
        "| method | seed | target accuracy | target macro-F1 | source val accuracy |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['target_accuracy']:.4f} | {r['target_macro_f1']:.4f} | "
            f"{r['source_validation_accuracy']:.4f} |"
        )
    atomic_write_text(RESULTS / "domain_adaptation.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "oracle"], choices=[*METHODS, "oracle"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--source-samples", type=int, default=None, help="keep only N source training reviews"
    )
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every run (after the rest)",
    )
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the results file")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="da-bench-"))
    common = []
    if args.source_samples:
        common.append(f"data.max_train_samples={args.source_samples}")
    if args.epochs:
        common.append(f"train.epochs={args.epochs}")
    common += args.set
    settings = {
        "source_samples": args.source_samples,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "set": args.set,
    }
    previous = RESULTS / "domain_adaptation.json"
    records = json.loads(previous.read_text())["runs"] if args.resume and previous.exists() else []
    done = {(r["method"], r["seed"]) for r in records}
    majority = majority_class_accuracy()
    for method in args.methods:
        for seed in args.seeds:
            if (method, seed) in done:
                continue
            preset, extra = METHODS.get(method, ("domain_adapt_source_only.yaml", oracle_argv()))
            argv = ["--config", str(CONFIGS / preset), f"train.seed={seed}", *common, *extra]
            metrics, wall = run_recipe("domain_adapt.py", argv, work / f"{method}-{seed}")
            target = metrics["report"]["target"]
            records.append(
                {
                    "method": method,
                    "seed": seed,
                    "selection": metrics.get("selection", {}).get("method", "source"),
                    "target_accuracy": target["accuracy"],
                    "target_macro_f1": target["macro_f1"],
                    "source_validation_accuracy": metrics["validation"]["accuracy"],
                    "best_step": metrics["best_step"],
                    "wall_seconds": round(wall, 1),
                }
            )
            write(records, majority, settings)
            print(
                f"{method} seed {seed}: target accuracy {target['accuracy']:.4f} ({wall:.0f} s)", flush=True
            )


if __name__ == "__main__":
    main()

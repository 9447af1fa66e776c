"""Which NER preset defaults? One-change variants of ``recipes/configs/minilm/ner_full.yaml`` (MiniLM-L6, WNUT-16),
judged on **validation** F1, paired by seed against the preset; test F1 is reported, never used to choose.

    python benchmarks/ner_defaults.py                                          # every variant, seeds 1 2
    python benchmarks/ner_defaults.py --variants preset crf smoothing --seeds 1 2 3 --resume
    python benchmarks/ner_defaults.py --report-only

WNUT-16's carved validation and test splits hold ~240 sentences each: their F1 moves by 2-3 points between seeds, so
a variant is compared with the preset run of the same seed (same carving, same initialisation of everything the
change does not touch), and the report gives the mean paired difference ± its standard error. A variant worth
making the default should win on validation beyond noise and cost no more wall time; then it gets 3 test seeds.
Every run is the real recipe in its own process (``python recipes/finetune_ner.py``, the launch line of the other
benchmarks; threads as the recipe sets them). Results: ``benchmarks/results/ner_defaults.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from runner import RESULTS, run_or_resume

from hftransfer.utils import atomic_write_text

# One change each against the preset (lr 2e-4, 5 epochs, batch 16, linear head, first-subword labels, zero bias).
VARIANTS: dict[str, list[str]] = {
    "preset": [],
    "crf": ["model.head=crf"],
    "iob2": ["model.decoding=iob2"],
    "smoothing": ["objectives.task.label_smoothing=0.1"],
    "all_subwords": ["data.label_all_subwords=true"],
    "prior_bias": ["model.head_bias_init=prior"],
    "head_lr_2e-3": ["strategy.head_lr=2e-3"],
    "layer_decay_0.8": ["strategy.layer_lr_decay=0.8"],
    "epochs_8": ["train.epochs=8"],
    "lr_1e-4": ["train.lr=1e-4"],
    "batch_32": ["train.batch_size=32"],
    # The embeddings stay pretrained: half of MiniLM-L6's weights are the word-embedding table, whose dense gradient,
    # AdamW update and clipping norm every step pays for (part of issue 20's step-time budget).
    "frozen_embeddings": ["strategy.name=freeze", "strategy.freeze_layers=0"],
}
RECIPE = "finetune_ner.py"


def run_variant(variant: str, seed: int, work: Path, resume: bool) -> dict:
    """One finished run's record: validation / test F1 and wall time."""
    run_dir = work / f"{variant}-seed{seed}"
    metrics = run_or_resume(RECIPE, [*VARIANTS[variant], f"train.seed={seed}"], run_dir, resume)
    return {
        "variant": variant,
        "seed": seed,
        "validation_f1": metrics["validation"]["f1"],
        "test_f1": metrics["test"]["f1"],
        "wall_s": metrics["benchmark_wall_s"],
        "train_s": metrics["train"]["runtime_seconds"],
    }


def summarise(records: list[dict]) -> list[dict]:
    """Per variant: mean ± std of validation and test F1, and the mean ± standard error of the validation and
    test differences to the preset run of the same seed (seeds without a preset run are left out of those)."""
    preset = {r["seed"]: r for r in records if r["variant"] == "preset"}
    rows = []
    for variant in [v for v in VARIANTS if any(r["variant"] == v for r in records)]:
        runs = sorted((r for r in records if r["variant"] == variant), key=lambda r: r["seed"])
        row = {"variant": variant, "seeds": [r["seed"] for r in runs], "overrides": VARIANTS[variant]}
        for key in ("validation_f1", "test_f1", "wall_s"):
            values = [r[key] for r in runs]
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        for key in ("validation_f1", "test_f1"):
            deltas = [r[key] - preset[r["seed"]][key] for r in runs if r["seed"] in preset]
            row[f"delta_{key}"] = statistics.fmean(deltas) if deltas else None
            row[f"delta_{key}_se"] = (
                statistics.stdev(deltas) / len(deltas) ** 0.5 if len(deltas) > 1 else None
            )
        rows.append(row)
    return rows


def _pm(mean: float | None, spread: float | None, scale: float = 100.0) -> str:
    if mean is None:
        return ""
    return f"{mean * scale:+.2f} ± {spread * scale:.2f}" if spread is not None else f"{mean * scale:+.2f}"


def write(records: list[dict], out: Path) -> str:
    rows = summarise(records)
    lines = [
        "# NER preset variants (MiniLM-L6, WNUT-16)",
        "",
        "`python benchmarks/ner_defaults.py`: one change each against `ner_full.yaml`; differences are to the",
        "preset run of the same seed, in F1 points, mean ± standard error. Choose on validation; test is reported.",
        "",
        "| variant | overrides | seeds | validation F1 | test F1 | Δ validation | Δ test | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {' '.join(row['overrides']) or '(preset)'} | {len(row['seeds'])} "
            f"| {row['validation_f1']:.4f} ± {row['validation_f1_std']:.4f} "
            f"| {row['test_f1']:.4f} ± {row['test_f1_std']:.4f} "
            f"| {_pm(row['delta_validation_f1'], row['delta_validation_f1_se'])} "
            f"| {_pm(row['delta_test_f1'], row['delta_test_f1_se'])} | {row['wall_s']:.0f} |"
        )
    report = "\n".join(lines) + "\n"
    atomic_write_text(out.with_suffix(".md"), report)
    atomic_write_text(
        out.with_suffix(".json"), json.dumps({"records": records, "summary": rows}, indent=2) + "\n"
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--work-dir", type=Path, default=Path("runs/ner-defaults"))
    parser.add_argument("--resume", action="store_true", help="keep finished runs")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from finished runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "ner_defaults")
    args = parser.parse_args()
    records = []
    for seed in args.seeds:
        # the preset first: every variant of this seed is compared with it
        for variant in ["preset", *[v for v in args.variants if v != "preset"]]:
            finished = (args.work_dir / f"{variant}-seed{seed}" / "metrics.json").is_file()
            if args.report_only and not finished:
                continue
            records.append(run_variant(variant, seed, args.work_dir, args.resume or args.report_only))
            print(write(records, args.out).splitlines()[-1], flush=True)
    print(write(records, args.out))


if __name__ == "__main__":
    main()

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

Two pairs (``--pair``): ``movies_to_drugs`` (the presets as they are: 6.8k labelled movie snippets -> 490 unlabelled
drug reviews) and ``drugs_to_movies``, the same domains the other way round: 490 labelled drug reviews -> the movie
reviews (train texts unlabelled, the test split of the same carving labelled for the report). The second is the
mission's own setting: little labelled data in one domain and plenty of unlabelled text in the other; and a method
that helps only one way round is a property of the pair, not of the method.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
from pathlib import Path

from runner import RESULTS, ROOT, run_recipe

from hftransfer.utils import atomic_write_text

CONFIGS = ROOT / "recipes" / "configs" / "minilm"
ZERO_SHOT_PRIOR = ["label_shift.method=zeroshot", "label_shift.template=This review is {label}."]
# Method -> (preset, extra overrides). Each preset is the source-only one plus one method.
METHODS = {
    "source_only": ("domain_adapt_source_only.yaml", []),
    "dann": ("domain_adapt_dann.yaml", []),
    "coral": ("domain_adapt_coral.yaml", []),
    "mmd": ("domain_adapt_mmd.yaml", []),
    "importance_weighting": ("domain_adapt_iw.yaml", []),
    "udalm": ("domain_adapt_udalm.yaml", []),
    "dann_iwv": ("domain_adapt_dann.yaml", ["selection.method=iwv"]),
    # After training, the boundary moved to the target's class frequencies estimated from its unlabelled texts.
    "label_shift": ("domain_adapt_label_shift.yaml", ["label_shift.method=em"]),
    "mmd_label_shift": ("domain_adapt_mmd.yaml", ["label_shift.method=em"]),
    # The same shift, the target's class frequencies counted from a zero-shot classifier's answers on its texts.
    "label_shift_zeroshot": ("domain_adapt_label_shift.yaml", ZERO_SHOT_PRIOR),
    "mmd_label_shift_zeroshot": ("domain_adapt_mmd.yaml", ZERO_SHOT_PRIOR),
}
# Two stages: masked-LM continued pre-training on the target's unlabelled training texts (``recipes/pretrain_mlm.py``,
# whole-word masking, a new MLM head tied to the word embeddings), then the source-only preset from its export.
# Gururangan et al. (2020) pre-train small task sets for many epochs (100); 5 keep the stage near the cost of
# one adversarial run here.
# ``dapt_mmd``: the same encoder, then the MMD preset (the combination of the best single methods).
TWO_STAGE = {"dapt": ("domain_adapt_source_only.yaml", []), "dapt_mmd": ("domain_adapt_mmd.yaml", [])}
PRETRAIN_EPOCHS = 5
ALL_METHODS = [*METHODS, *TWO_STAGE, "oracle"]
# Fine-tuning the oracle: its labelled set is small (490 drug reviews) or large (6.8k movie snippets), so it gets
# the epochs its size needs rather than the source presets' two.
DRUGS_ORACLE = ["data.dataset=drug_reviews", "data.drop_labels=[neutral]", "data.max_length=256"]
MOVIES_ORACLE = ["data.dataset=rotten_tomatoes", "data.max_length=128"]
PAIRS = {
    "movies_to_drugs": {
        "target": {"dataset": "drug_reviews", "drop_labels": ["neutral"]},
        # The target's training texts, split as a fine-tuning run on them would split them (its test file is
        # never read); labels are ignored.
        "pretrain": ["data.dataset=drug_reviews", "data.max_length=128"],
        "data": [],
        "report": [],
        "with_source": [],
        "oracle": [
            *DRUGS_ORACLE,
            "data.test_size=0",
            "train.epochs=5",
            "train.batch_size=16",
            "train.lr=5e-5",
            "data.max_length=128",  # as the source runs train (the report reads 256 tokens either way)
        ],
    },
    "drugs_to_movies": {
        # The default carving of rotten_tomatoes (seed 0, 10% validation, 10% test): its train texts are the
        # unlabelled target (the builtin unlabelled set is that split) and its test split the report set.
        "target": {"dataset": "rotten_tomatoes"},
        # 1,000 of its 6.8k training texts: ten epochs of all would cost ten fine-tuning runs.
        "pretrain": ["data.dataset=rotten_tomatoes", "data.max_length=128", "data.max_train_samples=1000"],
        # 490 labelled reviews: at the presets' 2 epochs and lr 1e-4 every seed's model answered one class (the
        # target's majority, 0.578); as the drug-review oracle trains instead.
        "data": [*DRUGS_ORACLE, "data.max_length=128", "train.epochs=5", "train.lr=5e-5"],
        "report": ["report=[{name: target, data: {dataset: rotten_tomatoes, max_length: 128}, split: test}]"],
        "with_source": ["sources=[{name: target, data: rotten_tomatoes}]"],
        "oracle": [*MOVIES_ORACLE],
    },
}


def method_argv(pair: str, method: str) -> list[str]:
    """The preset's overrides that turn it into this pair's run of ``method`` (``oracle``: trained on the labelled
    target training set instead, without sources)."""
    spec = PAIRS[pair]
    if method == "oracle":
        return ["sources=[]", "objectives=[{name: task}]", *spec["report"], *spec["oracle"]]
    preset, extra = {**METHODS, **TWO_STAGE}[method]
    uses_source = preset != "domain_adapt_source_only.yaml"
    return [*spec["data"], *spec["report"], *(spec["with_source"] if uses_source else []), *extra]


def pretrain(pair: str, run_dir: Path) -> tuple[Path, float, float]:
    """Stage one of a two-stage method: MLM on the pair's unlabelled target texts, once per pair (seed 1), as
    Gururangan et al. (2020) pre-train once per domain and vary the fine-tuning seed; a finished stage in
    ``run_dir`` is reused. Returns the exported encoder's directory and the stage's wall and CPU seconds (those of
    the run that made it, also when reused: every seed's cost includes it)."""
    cost = run_dir.parent / f"{run_dir.name}.cost.json"
    if cost.exists() and (run_dir / "model").is_dir():
        seconds = json.loads(cost.read_text())
        return run_dir / "model", seconds["wall"], seconds["cpu"]
    argv = [
        *PAIRS[pair]["pretrain"],
        "train.seed=1",
        f"train.epochs={PRETRAIN_EPOCHS}",
        "train.batch_size=16",
    ]
    cpu_before = _child_cpu_seconds()
    _, wall = run_recipe("pretrain_mlm.py", argv, run_dir)
    cpu = _child_cpu_seconds() - cpu_before
    atomic_write_text(cost, json.dumps({"wall": wall, "cpu": cpu}))
    return run_dir / "model", wall, cpu


def majority_class_accuracy(pair: str) -> float:
    """Accuracy of always answering the report set's most frequent label."""
    from collections import Counter

    from hftransfer.config import DataConfig
    from hftransfer.data.sources import load_task_data

    target = PAIRS[pair]["target"]
    test = load_task_data(DataConfig(**target), "sequence-classification").splits["test"]
    return max(Counter(test["label"]).values()) / len(test)


def _difference(values: list[float], baseline: list[float]) -> tuple[float, float]:
    """Mean difference to the baseline and its standard error (unpaired: seeds differ in initialisation and data
    order alike)."""
    stderr = (
        statistics.variance(values) / len(values) + statistics.variance(baseline) / len(baseline)
    ) ** 0.5
    return statistics.fmean(values) - statistics.fmean(baseline), stderr


def summarise(records: list[dict]) -> list[dict]:
    """Per pair and method: mean ± std of target accuracy and macro-F1, and their differences to the pair's
    source-only runs with standard errors (from 2 seeds on each side)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record.get("pair", "movies_to_drugs"), record["method"]), []).append(record)
    rows = []
    for (pair, method), runs in groups.items():
        baseline = groups.get((pair, "source_only"), [])
        row: dict = {"pair": pair, "method": method, "selection": runs[0]["selection"], "seeds": len(runs)}
        for metric in ("accuracy", "macro_f1"):
            values = [r[f"target_{metric}"] for r in runs]
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            if method != "source_only" and len(values) > 1 and len(baseline) > 1:
                delta, stderr = _difference(values, [r[f"target_{metric}"] for r in baseline])
                suffix = "" if metric == "accuracy" else f"_{metric}"
                row[f"delta{suffix}_vs_source_only"], row[f"delta{suffix}_stderr"] = delta, stderr
        row["wall_seconds_mean"] = statistics.fmean(r["wall_seconds"] for r in runs)
        cpu = [r["cpu_seconds"] for r in runs if "cpu_seconds" in r]
        row["cpu_seconds_mean"] = statistics.fmean(cpu) if cpu else None
        rows.append(row)
    return rows


def _delta(row: dict, key: str) -> str:
    if f"delta{key}_vs_source_only" not in row:
        return ""
    return f"{row[f'delta{key}_vs_source_only']:+.4f} ± {row[f'delta{key}_stderr']:.4f}"


def write(records: list[dict], majority: dict[str, float], settings: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = summarise(records)
    payload = {"settings": settings, "majority_class_accuracy": majority, "runs": records, "summary": rows}
    atomic_write_text(RESULTS / "domain_adaptation.json", json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Domain adaptation with MiniLM-L6: movie reviews <-> Drugs.com reviews",
        "",
        f"Settings: {json.dumps(settings)}. Target labels are read only by the final report (drug reviews:",
        "positive/negative, neutral left out). Selection: the label-free criterion that chose each run's model.",
        "Differences are to the pair's source-only runs, ± one standard error (unpaired). CPU s: user + system",
        "seconds of the run's process (robust to a busy machine; wall s is not).",
    ]
    for pair in PAIRS:
        pair_rows = [row for row in rows if row["pair"] == pair]
        if not pair_rows:
            continue
        lines += [
            "",
            f"## {pair}",
            "",
            f"Majority class accuracy on the target: {majority[pair]:.4f}" if pair in majority else "",
            "",
            "| method | selection | seeds | target accuracy | target macro-F1 | Δ accuracy | Δ macro-F1 | wall s "
            "| CPU s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in pair_rows:
            cpu = f"{row['cpu_seconds_mean']:.0f}" if row["cpu_seconds_mean"] is not None else ""
            lines.append(
                f"| {row['method']} | {row['selection']} | {row['seeds']} | {row['accuracy_mean']:.4f} ± "
                f"{row['accuracy_std']:.4f} | {row['macro_f1_mean']:.4f} ± {row['macro_f1_std']:.4f} | "
                f"{_delta(row, '')} | {_delta(row, '_macro_f1')} | {row['wall_seconds_mean']:.0f} | {cpu} |"
            )
    lines += [
        "",
        "Per seed:",
        "",
        "| pair | method | seed | target accuracy | target macro-F1 | source val accuracy | best step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r.get('pair', 'movies_to_drugs')} | {r['method']} | {r['seed']} | {r['target_accuracy']:.4f} | "
            f"{r['target_macro_f1']:.4f} | {r['source_validation_accuracy']:.4f} | {r.get('best_step')} |"
        )
    atomic_write_text(RESULTS / "domain_adaptation.md", "\n".join(lines) + "\n")


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", nargs="+", default=["movies_to_drugs"], choices=list(PAIRS))
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--source-samples", type=int, default=None, help="keep only N labelled source training examples"
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
    work.mkdir(parents=True, exist_ok=True)  # each run's log is written beside its run directory
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
    done = {(r.get("pair", "movies_to_drugs"), r["method"], r["seed"]) for r in records}
    majority = {pair: majority_class_accuracy(pair) for pair in PAIRS}
    for pair in args.pairs:
        for method in args.methods:
            for seed in args.seeds:
                if (pair, method, seed) in done:
                    continue
                preset = {**METHODS, **TWO_STAGE}.get(method, ("domain_adapt_source_only.yaml", []))[0]
                # The oracle trains on the target's labelled data: the source-size limit is no setting of it.
                shared = [
                    c for c in common if not (method == "oracle" and c.startswith("data.max_train_samples"))
                ]
                argv = [
                    "--config",
                    str(CONFIGS / preset),
                    f"train.seed={seed}",
                    *method_argv(pair, method),
                    *shared,
                ]
                cpu_before = _child_cpu_seconds()
                wall = stage_cpu = 0.0
                if method in TWO_STAGE:
                    encoder, wall, stage_cpu = pretrain(pair, work / f"{pair}-dapt-mlm")  # one stage per pair
                    cpu_before = _child_cpu_seconds()
                    argv.append(f"model.name_or_path={encoder}")
                metrics, fine_tune_wall = run_recipe(
                    "domain_adapt.py", argv, work / f"{pair}-{method}-{seed}"
                )
                wall += fine_tune_wall
                target = metrics["report"]["target"]
                records.append(
                    {
                        "pair": pair,
                        "method": method,
                        "seed": seed,
                        "selection": metrics.get("selection", {}).get("method", "source"),
                        "target_accuracy": target["accuracy"],
                        "target_macro_f1": target["macro_f1"],
                        "source_validation_accuracy": metrics["validation"]["accuracy"],
                        "best_step": metrics["best_step"],
                        "wall_seconds": round(wall, 1),
                        "cpu_seconds": round(stage_cpu + _child_cpu_seconds() - cpu_before, 1),
                    }
                )
                write(records, majority, settings)
                print(
                    f"{pair} {method} seed {seed}: target accuracy {target['accuracy']:.4f} macro-F1 "
                    f"{target['macro_f1']:.4f} ({wall:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()

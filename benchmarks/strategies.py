"""Transfer strategies on the real offline assets: score, trainable fraction, wall time, peak memory.

    python benchmarks/strategies.py                      # WNUT-16 and Rotten Tomatoes, every strategy
    python benchmarks/strategies.py --tasks ner --only full lora_qv

Every strategy runs the real recipe in a fresh process (so peak RSS is its own) with the same seed and the same
data split; frozen-encoder heads run twice, and the second run (features from the cache) is the one reported,
with the first run's encoding time alongside. Results go to ``benchmarks/results/strategies.{json,md}``; rows are
written as they finish, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from runner import RESULTS, run_recipe

# Shared settings per task. Rotten Tomatoes keeps 2,000 training texts (few labels is the point of transfer
# learning, and it keeps 8 full-encoder runs within the hour on 2 cores); validation and test are the full splits.
TASKS = {
    "ner": {"recipe": "finetune_ner.py", "metric": "f1", "common": []},
    "classifier": {
        "recipe": "finetune_classifier.py",
        "metric": "accuracy",
        "common": ["data.max_train_samples=2000", "train.epochs=3"],
    },
}

FROZEN = [
    "strategy.name=frozen",
    "train.epochs=20",
    "train.lr=3e-3",
    "train.batch_size=32",
    "train.warmup_ratio=0",
]

LORA_ALL_LINEAR = ["strategy.name=lora", "strategy.r=8", "strategy.target_modules=[all-linear]"]

STRATEGIES = {
    "full": {"ner": [], "classifier": []},
    "frozen_linear": {
        "ner": FROZEN + ["strategy.head=linear"],
        "classifier": FROZEN + ["strategy.head=linear"],
    },
    "frozen_mlp": {"ner": FROZEN + ["strategy.head=mlp"], "classifier": FROZEN + ["strategy.head=mlp"]},
    "frozen_mlp_cls": {"classifier": FROZEN + ["strategy.head=mlp", "strategy.pooling=cls"]},
    "freeze_bottom_3": {
        "ner": ["strategy.name=freeze", "strategy.freeze_layers=3"],
        "classifier": ["strategy.name=freeze", "strategy.freeze_layers=3"],
    },
    # 8 layer groups (head, 6 layers, embeddings): all unfrozen before half of training.
    "gradual": {
        "ner": ["strategy.name=gradual", "strategy.unfreeze_unit=step", "strategy.unfreeze_every=20"],
        "classifier": ["strategy.name=gradual", "strategy.unfreeze_unit=step", "strategy.unfreeze_every=12"],
    },
    "llrd": {
        "ner": ["train.lr=3e-4", "strategy.layer_lr_decay=0.8", "strategy.head_lr=1e-3"],
        "classifier": ["train.lr=1.5e-4", "strategy.layer_lr_decay=0.8", "strategy.head_lr=1e-3"],
    },
    "lora_qv": {
        "ner": ["strategy.name=lora", "strategy.r=8", "train.lr=1e-3"],
        "classifier": ["strategy.name=lora", "strategy.r=8", "train.lr=1e-3"],
    },
    "lora_all_linear": {
        "ner": [*LORA_ALL_LINEAR, "train.lr=1e-3"],
        "classifier": [*LORA_ALL_LINEAR, "train.lr=1e-3"],
    },
    # LoRA learning-rate tuning (picked by validation score, both reported).
    "lora_all_linear_lr2e-3": {
        "ner": [*LORA_ALL_LINEAR, "train.lr=2e-3"],
        "classifier": [*LORA_ALL_LINEAR, "train.lr=2e-3"],
    },
    "lora_qv_lr3e-3": {"classifier": ["strategy.name=lora", "strategy.r=8", "train.lr=3e-3"]},
    "lora_all_linear_8ep": {"ner": [*LORA_ALL_LINEAR, "train.lr=1e-3", "train.epochs=8"]},
    # The pooler adapted like the other encoder linears instead of trained in full: 1.5% rather than 2.1%.
    "lora_all_linear_pooler_lora": {
        "classifier": [*LORA_ALL_LINEAR, "strategy.lora_pooler=adapt", "train.lr=1e-3"]
    },
    "lora_all_linear_pooler_lora_6ep": {
        "classifier": [*LORA_ALL_LINEAR, "strategy.lora_pooler=adapt", "train.lr=1e-3", "train.epochs=6"]
    },
    # Every encoder linear but the attention keys (the pooler trained in full): under 2% on Rotten Tomatoes.
    "lora_no_key": {
        "classifier": [
            "strategy.name=lora",
            "strategy.r=8",
            "strategy.target_modules=[query,value,dense]",
            "train.lr=1e-3",
        ]
    },
    "l2sp": {
        "ner": ["objectives+=[{name: l2sp, weight: 0.01}]"],
        "classifier": ["objectives+=[{name: l2sp, weight: 0.01}]"],
    },
    # The penalty sums over all 22.7M encoder weights, so useful weights are small.
    "l2sp_1e-4": {
        "ner": ["objectives+=[{name: l2sp, weight: 1.0e-4}]"],
        "classifier": ["objectives+=[{name: l2sp, weight: 1.0e-4}]"],
    },
}


def measure(task: str, name: str, work: Path, cache: Path) -> dict:
    argv = [*TASKS[task]["common"], *STRATEGIES[name][task]]
    recipe = TASKS[task]["recipe"]
    if name.startswith("frozen"):
        argv.append(f"strategy.cache_dir={cache}")
        first, first_wall = run_recipe(recipe, argv, work / f"{task}-{name}-miss")
    metrics, wall = run_recipe(recipe, argv, work / f"{task}-{name}")
    metric = TASKS[task]["metric"]
    row = {
        "task": task,
        "strategy": name,
        "overrides": argv,
        f"test_{metric}": metrics["test"][metric],
        f"validation_{metric}": metrics["validation"][metric],
        "trainable": metrics["parameters"]["trainable"],
        "trainable_fraction": metrics["parameters"]["trainable_fraction"],
        "wall_seconds": round(wall, 1),
        "train_seconds": metrics["train"]["runtime_seconds"],
        "epochs": metrics["train"]["epochs"],
        "seconds_per_epoch": metrics["train"]["seconds_per_epoch"],
        "peak_rss_mb": metrics["peak_memory_mb"]["rss"],
        "export": metrics.get("export"),
    }
    if name.startswith("frozen"):
        row["cache_hit"] = all(split["hit"] for split in metrics["strategy"]["feature_cache"].values())
        row["encode_seconds_on_miss"] = sum(s["seconds"] for s in first["strategy"]["feature_cache"].values())
        row["wall_seconds_on_miss"] = round(first_wall, 1)
    return row


def write_tables(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "strategies.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Transfer strategies on real assets (MiniLM-L6, this machine's CPU)", ""]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        metric = TASKS[task]["metric"]
        full = next((r for r in task_rows if r["strategy"] == "full"), None)
        lines += [
            f"## {'WNUT-16 (entity F1)' if task == 'ner' else 'Rotten Tomatoes (accuracy)'}",
            "",
            f"| strategy | test {metric} | Δ vs full | trainable | wall s | s/epoch | epoch speed-up vs full | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in task_rows:
            score = r[f"test_{metric}"]
            delta = f"{100 * (score - full[f'test_{metric}']):+.1f} pt" if full else "-"
            speedup = f"{full['seconds_per_epoch'] / r['seconds_per_epoch']:.1f}x" if full else "-"
            lines.append(
                f"| {r['strategy']} | {score:.4f} | {delta} | {100 * r['trainable_fraction']:.3g}% "
                f"| {r['wall_seconds']:.0f} | {r['seconds_per_epoch']:.2f} | {speedup} | {r['peak_rss_mb']:.0f} |"
            )
        lines.append("")
    lines.append(
        "Frozen rows: second run, features from the cache; see strategies.json for the encoding run."
    )
    (RESULTS / "strategies.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--only", nargs="+", default=None, choices=list(STRATEGIES))
    parser.add_argument("--work-dir", default=None, help="where run directories go (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hftransfer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    previous = (
        json.loads((RESULTS / "strategies.json").read_text())
        if (RESULTS / "strategies.json").exists()
        else []
    )
    rows = [
        r
        for r in previous
        if not (r["task"] in args.tasks and (args.only is None or r["strategy"] in args.only))
    ]
    for task in args.tasks:
        for name in args.only or list(STRATEGIES):
            if task not in STRATEGIES[name]:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {task} / {name} ...", flush=True)
            row = measure(task, name, work, work / "feature-cache")
            rows.append(row)
            rows.sort(key=lambda r: (list(TASKS).index(r["task"]), list(STRATEGIES).index(r["strategy"])))
            write_tables(rows)
            metric = TASKS[task]["metric"]
            print(
                f"    test {metric}={row[f'test_{metric}']:.4f} trainable={100 * row['trainable_fraction']:.2f}% "
                f"wall={row['wall_seconds']:.0f}s s/epoch={row['seconds_per_epoch']:.2f} "
                f"rss={row['peak_rss_mb']:.0f}MiB",
                flush=True,
            )
    print((RESULTS / "strategies.md").read_text())


if __name__ == "__main__":
    main()

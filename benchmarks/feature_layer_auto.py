"""``strategy.feature_layer=auto`` against the last layer (the default) for a frozen encoder: WNUT-16 NER and Rotten
Tomatoes sentiment, MiniLM-L6, the frozen presets as they are, 3 seeds.

    python benchmarks/feature_layer_auto.py
    python benchmarks/feature_layer_auto.py --tasks ner --seeds 1 --work-dir /tmp/fla --resume

Each run is the real recipe in its own process. Results: ``benchmarks/results/feature_layer_auto.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from runner import RESULTS, ROOT, run_or_resume

from hftransfer.utils import atomic_write_text

CONFIGS = ROOT / "recipes" / "configs" / "minilm"
TASKS = {
    "ner": {"recipe": "finetune_ner.py", "preset": "ner_frozen.yaml", "metric": "f1"},
    "sentiment": {
        "recipe": "finetune_classifier.py",
        "preset": "classifier_frozen.yaml",
        "metric": "accuracy",
    },
}
VARIANTS = {"last": ["strategy.feature_layer=-1"], "auto": ["strategy.feature_layer=auto"]}


def run_one(task: str, variant: str, seed: int, work: Path, resume: bool) -> dict:
    spec = TASKS[task]
    argv = ["--config", str(CONFIGS / spec["preset"]), *VARIANTS[variant], f"train.seed={seed}"]
    metrics = run_or_resume(spec["recipe"], argv, work / task / f"{variant}-seed{seed}", resume)
    strategy = metrics["strategy"]
    return {
        "task": task,
        "variant": variant,
        "seed": seed,
        "layer": f"{strategy['feature_layer']}x{strategy['feature_layers']}",
        "chosen": (strategy.get("feature_layer_auto") or {}).get("chosen", "layer -1"),
        "validation": metrics["validation"][spec["metric"]],
        "test": metrics["test"][spec["metric"]],
        "wall_s": metrics["benchmark_wall_s"],
    }


def write(records: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "feature_layer_auto.json", json.dumps({"records": records}, indent=2) + "\n")
    lines = [
        "# Frozen encoder: feature_layer=auto vs the last layer",
        "",
        "`python benchmarks/feature_layer_auto.py` (MiniLM-L6, the frozen presets; mean ± std over seeds; wall s per "
        "run including the encoding and, for auto, the probe of every layer).",
        "",
        "| task | features | chosen (per seed) | validation | test | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        for variant in VARIANTS:
            found = [r for r in records if r["task"] == task and r["variant"] == variant]
            if not found:
                continue

            def stat(key: str, rows: list[dict] = found) -> str:
                values = [r[key] for r in rows]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{statistics.mean(values):.4f} ± {spread:.4f}"

            chosen = ", ".join(r["chosen"] for r in found)
            wall = statistics.mean(r["wall_s"] for r in found)
            lines.append(
                f"| {task} | {variant} | {chosen} | {stat('validation')} | {stat('test')} | {wall:.0f} ({len(found)}) |"
            )
    atomic_write_text(RESULTS / "feature_layer_auto.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-feature-layer-auto"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    records = []
    for seed in args.seeds:
        for task in args.tasks:
            for variant in VARIANTS:
                records.append(run_one(task, variant, seed, Path(args.work_dir), args.resume))
                print(json.dumps(records[-1]), flush=True)
                write(records)


if __name__ == "__main__":
    main()

"""Multitask (WNUT-16 NER + Rotten Tomatoes sentiment, one shared MiniLM-L6) against two single-task runs with the
same total number of optimizer steps, on the real offline assets.

    python benchmarks/multitask.py                                # singles + proportional and round-robin samplers
    python benchmarks/multitask.py --samplers temperature uniform

Each run is the real recipe in a fresh process, timed from launch to exit (wall) and by its own training clock.
The multitask runs get ``max_steps`` = the steps of both single-task runs together. Results go to
``benchmarks/results/multitask.{json,md}``, written as runs finish; ``--work-dir`` keeps the run directories (the
single-task ones are the teachers of ``benchmarks/distill.py``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from runner import RESULTS, run_recipe

# Both single-task runs use the multitask preset's data (RT: 2,000 training reviews) and batch size 16.
SINGLES = {
    "ner": {
        "recipe": "finetune_ner.py",
        "metric": "f1",
        "argv": [],
    },  # preset: 5 epochs, lr 2e-4 -> 600 steps
    "sentiment": {
        "recipe": "finetune_classifier.py",
        "metric": "accuracy",
        "argv": ["data.max_train_samples=2000", "train.batch_size=16", "train.epochs=3", "train.lr=1e-4"],
    },
}


def write(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "multitask.json").write_text(json.dumps(rows, indent=2) + "\n")
    singles = {r["name"]: r for r in rows if r["kind"] == "single"}
    lines = [
        "# Multitask vs single-task (MiniLM-L6, WNUT-16 + Rotten Tomatoes, this machine's CPU)",
        "",
        "Same budget of optimizer steps: the multitask runs get the steps of both single-task runs together.",
        "",
        "| run | NER steps | NER test F1 | Δ | sentiment steps | sentiment test acc | Δ | train s | wall s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if len(singles) == 2:
        ner, sentiment = singles["ner"], singles["sentiment"]
        lines.append(
            f"| two single-task runs | {ner['steps']} | {ner['score']:.4f} | | {sentiment['steps']} | "
            f"{sentiment['score']:.4f} | | {ner['train_seconds'] + sentiment['train_seconds']:.0f} | "
            f"{ner['wall_seconds'] + sentiment['wall_seconds']:.0f} | "
            f"{max(ner['peak_rss_mb'], sentiment['peak_rss_mb']):.0f} |"
        )
    for row in rows:
        if row["kind"] != "multitask":
            continue
        cells = []
        for task in ("ner", "sentiment"):
            delta = (row["scores"][task] - singles[task]["score"]) * 100 if task in singles else float("nan")
            cells += [str(row["steps_per_task"][task]), f"{row['scores'][task]:.4f}", f"{delta:+.1f} pt"]
        lines.append(
            f"| multitask, {row['name']} sampler | {' | '.join(cells)} | {row['train_seconds']:.0f} | "
            f"{row['wall_seconds']:.0f} | {row['peak_rss_mb']:.0f} |"
        )
    (RESULTS / "multitask.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samplers", nargs="*", default=["proportional", "round_robin"])
    parser.add_argument(
        "--singles",
        nargs="*",
        default=list(SINGLES),
        choices=list(SINGLES),
        help="single-task runs to (re)measure",
    )
    parser.add_argument(
        "--extra", nargs="*", default=[], help="overrides for the multitask runs, e.g. train.lr=1e-4"
    )
    parser.add_argument(
        "--config",
        default=None,
        help="YAML layered on the preset before the overrides (e.g. tasks with loss weights)",
    )
    parser.add_argument("--tag", default="", help="suffix of the multitask rows' names (runs with --extra)")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hftransfer-multitask-"))
    work.mkdir(parents=True, exist_ok=True)
    # Rows not re-measured now are kept (e.g. re-timing one single-task run on a quiet machine).
    previous = (
        json.loads((RESULTS / "multitask.json").read_text()) if (RESULTS / "multitask.json").exists() else []
    )
    rows = [
        r
        for r in previous
        if not (
            (r["kind"] == "single" and r["name"] in args.singles)
            or (r["kind"] == "multitask" and r["name"] in [f"{s}{args.tag}" for s in args.samplers])
        )
    ]
    steps = {r["name"]: r["steps"] for r in rows if r["kind"] == "single"}
    for name in args.singles:
        single = SINGLES[name]
        print(f"[{time.strftime('%H:%M:%S')}] single-task {name} ...", flush=True)
        metrics, wall = run_recipe(single["recipe"], single["argv"], work / f"single-{name}")
        steps[name] = metrics["train"]["steps"]
        rows.append(
            {
                "kind": "single",
                "name": name,
                "argv": single["argv"],
                "steps": steps[name],
                "score": metrics["test"][single["metric"]],
                "validation_score": metrics["validation"][single["metric"]],
                "train_seconds": metrics["train"]["runtime_seconds"],
                "wall_seconds": round(wall, 1),
                "peak_rss_mb": metrics["peak_memory_mb"]["rss"],
            }
        )
        print(
            f"    test {single['metric']}={rows[-1]['score']:.4f} steps={steps[name]} wall={wall:.0f}s",
            flush=True,
        )
        write(rows)
    budget = sum(steps.values())
    for sampler in args.samplers:
        print(f"[{time.strftime('%H:%M:%S')}] multitask, {sampler} sampler, {budget} steps ...", flush=True)
        argv = [f"--config={args.config}"] if args.config else []
        argv += [f"sampler.name={sampler}", f"train.max_steps={budget}", "train.epochs=100", *args.extra]
        label = f"{sampler}{args.tag}"
        metrics, wall = run_recipe("multitask.py", argv, work / f"multitask-{label}")
        tasks = metrics["test"]["tasks"]
        rows.append(
            {
                "kind": "multitask",
                "name": label,
                "argv": argv,
                "steps": metrics["train"]["steps"],
                "steps_per_task": metrics["train"]["steps_per_task"],
                "scores": {task: tasks[task][SINGLES[task]["metric"]] for task in SINGLES},
                "validation_scores": {
                    task: metrics["validation"]["tasks"][task][SINGLES[task]["metric"]] for task in SINGLES
                },
                "train_seconds": metrics["train"]["runtime_seconds"],
                "wall_seconds": round(wall, 1),
                "peak_rss_mb": metrics["peak_memory_mb"]["rss"],
            }
        )
        print(f"    {rows[-1]['scores']} steps={rows[-1]['steps_per_task']} wall={wall:.0f}s", flush=True)
        write(rows)


if __name__ == "__main__":
    main()

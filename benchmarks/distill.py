"""Distillation on the real offline assets: teacher vs a 3-layer student trained on hard labels only, distilled from
logits, from logits + hidden states, and from logits + batch relations (WNUT-16 and Rotten Tomatoes).

    python benchmarks/distill.py --teachers ner=RUN_DIR sentiment=RUN_DIR   # fine-tuned MiniLM-L6 teachers
    python benchmarks/distill.py --tasks ner --only logits

Teachers are run directories of the fine-tuning recipes (``benchmarks/multitask.py --work-dir W`` leaves them in
``W/single-ner`` and ``W/single-sentiment``, trained with the settings used here). Every student run is the real
recipe in a fresh process; its ``distill_report`` holds teacher and student test scores, parameter counts and
inference samples/s measured in that process. Results: ``benchmarks/results/distill.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from runner import RESULTS, ROOT, run_recipe

TASKS = {
    "ner": {"config": "distill_ner.yaml", "metric": "f1", "common": []},
    "sentiment": {
        "config": "distill_classifier.yaml",
        "metric": "accuracy",
        # The teacher's data and schedule (benchmarks/multitask.py): 2,000 training reviews, batch 16, 3 epochs.
        "common": ["data.max_train_samples=2000", "train.batch_size=16", "train.epochs=3", "train.lr=2e-4"],
    },
}
STUDENTS = {
    "hard_labels": ["objectives=[{name: task, weight: 1}]", "distill.transfer_data=null"],
    "logits": [],
    "logits_hidden": ["objectives+=[{name: distill_hidden, weight: 1}]"],
    "logits_relation": ["objectives+=[{name: distill_relation}]"],
}


def write(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distill.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Distillation (MiniLM-L6 teacher -> 3-layer student of its layers 0, 2, 4; this machine's CPU)",
        "",
    ]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        metric = TASKS[task]["metric"]
        teacher = task_rows[0]["teacher"]
        lines += [
            f"## {task} (test {metric})",
            "",
            f"| model | test {metric} | % of teacher | parameters | inference samples/s | speed-up | train s |",
            "|---|---|---|---|---|---|---|",
            f"| teacher | {teacher['score']:.4f} | 100% | {teacher['parameters'] / 1e6:.1f}M | "
            f"{teacher['samples_per_second']:.0f} | 1.0x | {teacher.get('train_seconds') or float('nan'):.0f} |",
        ]
        for row in task_rows:
            lines.append(
                f"| student, {row['student']} | {row['score']:.4f} | {100 * row['score_retained']:.1f}% | "
                f"{row['parameters'] / 1e6:.1f}M | {row['samples_per_second']:.0f} | {row['speedup']:.2f}x | "
                f"{row['train_seconds']:.0f} |"
            )
        lines.append("")
    (RESULTS / "distill.md").write_text("\n".join(lines))


def remeasure(
    rows: list[dict], work: Path, tasks: list[str], rounds: int = 5, min_seconds: float = 1.0
) -> None:
    """Time the teacher and every exported student of each task again, taking turns in this one process, and
    replace the rows' samples/s and speed-ups (the runs' own reports time teacher and student once each)."""
    import torch
    from transformers import AutoTokenizer

    from hftransfer.config import parse_config
    from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
    from hftransfer.data.features import tokenize
    from hftransfer.data.sources import load_task_data
    from hftransfer.distill.config import DistillRunConfig
    from hftransfer.distill.report import inference_throughput
    from hftransfer.distill.teacher import resolve_teacher
    from hftransfer.loading import load_for_prediction

    for task in tasks:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        config = parse_config(
            ["--config", str(work / f"{task}-{task_rows[0]['student']}" / "config.yaml")],
            schema=DistillRunConfig,
        )
        data = load_task_data(config.data, config.task)
        label2id = {label: i for i, label in enumerate(data.label_names)}
        directories = {"teacher": resolve_teacher(task_rows[0]["teacher"]["run_dir"])}
        directories |= {row["student"]: str(work / f"{task}-{row['student']}" / "model") for row in task_rows}
        models = {}
        for name, directory in directories.items():
            model, _ = load_for_prediction(directory)
            tokenizer = AutoTokenizer.from_pretrained(directory)
            features, _ = tokenize(
                data.splits["test"], tokenizer, config.task, label2id, max_length=config.data.max_length
            )
            loader = build_eval_dataloader(
                features, FeatureCollator(tokenizer), batch_size=config.train.eval_batch_size
            )
            models[name] = (model, loader)
        speeds = inference_throughput(models, torch.device("cpu"), rounds=rounds, min_seconds=min_seconds)
        print(f"{task}: " + ", ".join(f"{name} {speed:.0f}/s" for name, speed in speeds.items()), flush=True)
        for row in task_rows:
            row["samples_per_second"] = round(speeds[row["student"]], 2)
            row["teacher"]["samples_per_second"] = round(speeds["teacher"], 2)
            row["speedup"] = round(speeds[row["student"]] / speeds["teacher"], 3)
            row["timing"] = (
                f"remeasured: teacher and students in turns, best of {rounds} rounds of >= {min_seconds} s"
            )
    write(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teachers", nargs="+", default=[], help="task=run_dir pairs")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--only", nargs="+", default=None, choices=list(STUDENTS))
    parser.add_argument("--work-dir", default=None)
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="only re-time inference of the runs in --work-dir (no training)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="--remeasure: rounds of turns")
    parser.add_argument(
        "--min-seconds", type=float, default=1.0, help="--remeasure: minimum length of a timed pass"
    )
    args = parser.parse_args()
    teachers = dict(pair.split("=", 1) for pair in args.teachers)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hftransfer-distill-"))
    work.mkdir(parents=True, exist_ok=True)
    previous = (
        json.loads((RESULTS / "distill.json").read_text()) if (RESULTS / "distill.json").exists() else []
    )
    if args.remeasure:
        remeasure(previous, work, args.tasks, args.rounds, args.min_seconds)
        return
    rows = [
        r
        for r in previous
        if not (r["task"] in args.tasks and (args.only is None or r["student"] in args.only))
    ]
    for task in args.tasks:
        spec = TASKS[task]
        teacher_dir = Path(teachers[task])
        teacher_metrics = json.loads((teacher_dir / "metrics.json").read_text())
        for student in args.only or list(STUDENTS):
            print(f"[{time.strftime('%H:%M:%S')}] {task} / {student} ...", flush=True)
            argv = [
                f"--config={ROOT / 'recipes' / 'configs' / 'minilm' / spec['config']}",
                f"distill.teacher={teacher_dir}",
                *spec["common"],
                *STUDENTS[student],
            ]
            metrics, wall = run_recipe("distill.py", argv, work / f"{task}-{student}")
            report = metrics["distill_report"]
            rows.append(
                {
                    "task": task,
                    "student": student,
                    "overrides": argv[1:],
                    "score": report["student"]["metrics"][spec["metric"]],
                    "validation_score": metrics["validation"][spec["metric"]],
                    "score_retained": report["score_retained"],
                    "parameters": report["student"]["parameters"],
                    "samples_per_second": report["student"]["samples_per_second"],
                    "speedup": report["speedup"],
                    "train_seconds": metrics["train"]["runtime_seconds"],
                    "wall_seconds": round(wall, 1),
                    "peak_rss_mb": metrics["peak_memory_mb"]["rss"],
                    "transfer_examples": metrics["distill"]["transfer_examples"],
                    "teacher": {
                        "run_dir": str(teacher_dir),
                        "score": report["teacher"]["metrics"][spec["metric"]],
                        "parameters": report["teacher"]["parameters"],
                        "samples_per_second": report["teacher"]["samples_per_second"],
                        "train_seconds": teacher_metrics["train"]["runtime_seconds"],
                    },
                }
            )
            print(
                f"    test {spec['metric']}={rows[-1]['score']:.4f} ({100 * report['score_retained']:.1f}% of the "
                f"teacher) speed-up {report['speedup']:.2f}x wall={wall:.0f}s",
                flush=True,
            )
            write(rows)


if __name__ == "__main__":
    main()

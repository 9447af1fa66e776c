"""How many examples does the advisor need? ``rank`` with the label-only estimators (LogME, H-score: they encode
the training split only) on a seeded sample of 250, 500 and 1,000 training examples per task, against the fine-tuned
scores of ``benchmarks/results/advisor_ranking.json``: Kendall's tau and the cost (encoding + scoring) as a share
of fine-tuning every encoder.

    python benchmarks/advisor_sample_size.py                      # 3 tasks x 3 encoders x 3 sample sizes
    python benchmarks/advisor_sample_size.py --tasks drugs --sizes 250

Every ranking encodes afresh (a new feature cache), so the cost is what a first ``hftransfer rank`` pays. Results:
``benchmarks/results/advisor_sample_size.{json,md}`` (saved after every ranking).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from advisor_ranking import AGGREGATES, CONFIGS, ENCODERS, TASKS, kendall
from runner import RESULTS

from hftransfer.utils import atomic_write_text

ESTIMATORS = ["logme", "h_score"]
SIZES = ["250", "500", "1000", "auto"]  # auto: what hftransfer rank encodes by default


def rank_at(task: str, size: str, encoders: list[str]) -> dict:
    from hftransfer.advisor.ranking import rank
    from hftransfer.config import parse_config

    spec = TASKS[task]
    config = parse_config(spec["data"], default_config=CONFIGS / spec["preset"])
    # A fresh feature cache: a cached encoding (the ranking benchmark's, an earlier size's) would hide the cost.
    with tempfile.TemporaryDirectory(prefix="rank-cache-") as cache:
        started = time.perf_counter()
        ranking = rank(
            config,
            encoders,
            estimators=ESTIMATORS,
            max_examples=size if size == "auto" else int(size),
            cache_dir=cache,
        )
        wall = time.perf_counter() - started
    return {
        "wall_s": round(wall, 1),
        "examples": ranking.data.get("train"),
        "timings": ranking.timings,
        "scores": {f"{e}/{a}": ranking.encoder_scores(e, a) for e in ESTIMATORS for a in AGGREGATES},
    }


def write(records: list[dict]) -> None:
    atomic_write_text(RESULTS / "advisor_sample_size.json", json.dumps(records, indent=2) + "\n")
    lines = [
        "# How many examples the advisor needs",
        "",
        "`python benchmarks/advisor_sample_size.py`: LogME and H-score (training split only) on a seeded sample of "
        "the training examples; tau against the fine-tuned scores of `advisor_ranking.json` (one seed); cost = "
        "encoding + scoring every encoder / fine-tuning every encoder. CPU, one thread per process.",
        "",
        "| task | examples | logme/best tau | h_score/best tau | logme/mean tau | cost (s) | cost / fine-tuning |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['task']} | {r['examples']}{' (auto)' if r['size'] == 'auto' else ''} | {r['tau']['logme/best']:+.3f} | {r['tau']['h_score/best']:+.3f} | "
            f"{r['tau']['logme/mean']:+.3f} | {r['wall_s']:.0f} | {r['cost_ratio']:.1%} |"
        )
    by_size: dict[str, list[dict]] = {}
    for r in records:
        by_size.setdefault(r["size"], []).append(r)
    lines += [
        "",
        "Mean over tasks:",
        "",
        "| sample | logme/best tau | h_score/best tau | worst cost ratio |",
        "|---|---|---|---|",
    ]
    for size, rows in by_size.items():
        lines.append(
            f"| {size} | {statistics.mean(r['tau']['logme/best'] for r in rows):+.3f} | "
            f"{statistics.mean(r['tau']['h_score/best'] for r in rows):+.3f} | "
            f"{max(r['cost_ratio'] for r in rows):.1%} ({len(rows)} tasks) |"
        )
    atomic_write_text(RESULTS / "advisor_sample_size.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--sizes", nargs="+", default=SIZES, choices=SIZES)
    args = parser.parse_args()
    finetuned = json.loads((RESULTS / "advisor_ranking.json").read_text())["tasks"]
    path = RESULTS / "advisor_sample_size.json"
    kept = json.loads(path.read_text()) if path.is_file() else []
    # Earlier results of the sizes and tasks not run now are kept, so a size can be added later.
    records = [r for r in kept if not (str(r["size"]) in args.sizes and r["task"] in args.tasks)]
    for r in records:
        r["size"] = str(r["size"])
    for size in args.sizes:
        for task in args.tasks:
            fine = {e: r["score"] for e, r in finetuned[task]["finetuned"].items()}
            finetuning = sum(r["wall_s"] for r in finetuned[task]["finetuned"].values())
            result = rank_at(task, size, ENCODERS)
            result.update(
                task=task,
                size=size,
                tau={key: kendall(scores, fine) for key, scores in result.pop("scores").items()},
                cost_ratio=result["wall_s"] / finetuning,
            )
            records.append(result)
            print(
                json.dumps({k: result[k] for k in ("task", "size", "examples", "wall_s", "cost_ratio")}),
                flush=True,
            )
            write(records)


if __name__ == "__main__":
    main()

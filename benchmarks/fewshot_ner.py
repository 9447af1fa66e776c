"""Few-shot NER on WNUT-16: token-level prototypes against fine-tuning, on the same K sentences per entity type.

    python benchmarks/fewshot_ner.py                       # K = 5, 10, 20; 5 samplings; every method
    python benchmarks/fewshot_ner.py --ks 5 --samplings 1 2 --resume

Protocol: the test split as the NER preset carves it (10%, seed 0), no validation split (a fixed budget, the last
model kept); ``data.train_per_class=K data.sample_seed=s`` keeps sentences until every entity type occurs in K of
them, the same sentences for every method of a (K, s) cell. Methods:
- ``prototypes``: the frozen encoder's token features, a linear head started as the nearest-prototype classifier of
  the K sentences' tokens (``strategy.head_init=prototypes``), then trained like ``frozen``;
- ``frozen``: the same head from a random start;
- ``full``: full fine-tuning (the preset's learning rates) on the same sentences.
Results: ``benchmarks/results/fewshot_ner.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from runner import RESULTS, ROOT, run_or_resume

from hftransfer.utils import atomic_write_text

FROZEN = [
    "strategy.name=frozen",
    "strategy.head=linear",
    "train.lr=3e-3",
    "train.epochs=50",
    "train.warmup_ratio=0.0",
]
METHODS = {
    "prototypes": [*FROZEN, "strategy.head_init=prototypes"],
    "frozen": FROZEN,
    "full": ["strategy.name=full", "train.lr=2e-4", "strategy.head_lr=1e-3"],
}


def run_one(method: str, k: int, sampling: int, work: Path, resume: bool) -> dict:
    argv = [
        "data.dataset=wnut16",
        "data.validation_size=0",
        "data.test_size=0.1",
        "data.split_seed=0",
        f"data.train_per_class={k}",
        f"data.sample_seed={sampling}",
        "train.batch_size=16",
        "train.eval_every_epoch=false",
        *METHODS[method],
    ]
    if method == "full":  # at least 150 optimizer steps whatever K (the all-O plateau needs them)
        argv.append("train.max_steps=150")
    metrics = run_or_resume("finetune_ner.py", argv, work / f"{method}-k{k}-s{sampling}", resume)
    return {
        "test": metrics["test"]["f1"],
        "sentences": metrics["data"]["splits"]["train"]["examples"] if "data" in metrics else None,
        "wall_s": metrics["benchmark_wall_s"],
    }


def write_report(records: list[dict]) -> None:
    rows = []
    for k, method in sorted({(r["k"], r["method"]) for r in records}):
        found = [r for r in records if (r["k"], r["method"]) == (k, method)]
        tests = [r["test"] for r in found]
        rows.append(
            {
                "k": k,
                "method": method,
                "samplings": len(found),
                "test_mean": statistics.mean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "wall_mean": statistics.mean(r["wall_s"] for r in found),
            }
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        RESULTS / "fewshot_ner.json", json.dumps({"records": records, "rows": rows}, indent=1) + "\n"
    )
    lines = [
        "# Few-shot NER (WNUT-16, MiniLM-L6)",
        "",
        "`python benchmarks/fewshot_ner.py`: K sentences per entity type, test entity F1 mean ± std over samplings "
        "(one thread per process).",
        "",
        "| K | method | samplings | test F1 | wall s |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['k']} | {row['method']} | {row['samplings']} | {row['test_mean']:.4f} ± {row['test_std']:.4f} | "
            f"{row['wall_mean']:.1f} |"
        )
    atomic_write_text(RESULTS / "fewshot_ner.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ks", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--samplings", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-fewshot-ner"))
    parser.add_argument("--resume", action="store_true", help="keep runs that finished")
    args = parser.parse_args()
    work = Path(args.work_dir)
    records = []
    for k in args.ks:
        for sampling in args.samplings:
            for method in args.methods:
                record = {"k": k, "sampling": sampling, "method": method}
                record.update(run_one(method, k, sampling, work, args.resume))
                records.append(record)
                print(json.dumps(record), flush=True)
                write_report(records)


if __name__ == "__main__":
    main()

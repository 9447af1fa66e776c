"""Argmax vs IOB2-constrained vs CRF decoding of NER models: strict entity F1 of every finished run found, on its
own validation and test splits (carved as the run carved them), decoded every way its model allows by
``Predictor``: argmax and iob2 for every model, and crf too for a run trained with ``model.head=crf`` (its argmax
and iob2 then read the emissions alone).

    python benchmarks/decoding.py runs/bench-data-size/ner            # every run directory below it
    python benchmarks/decoding.py runs/ner-a runs/ner-b --out /tmp/decoding

The CRF comparison trains the NER preset with and without the CRF head on the same seeds, then scores both:

    for s in 1 2 3; do
      python recipes/finetune_ner.py train.seed=$s output_dir=runs/bench-crf/linear-seed$s
      python recipes/finetune_ner.py model.head=crf train.seed=$s output_dir=runs/bench-crf/crf-seed$s
    done
    python benchmarks/decoding.py runs/bench-crf

No training: the models are the runs' exports (full fine-tuning, freeze-N, LoRA merged, frozen heads). Results:
``benchmarks/results/decoding.{json,md}``: per run, and per group of runs (same strategy and training size,
differing in seed) as mean ± std of the paired difference.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from runner import RESULTS

from hftransfer.utils import atomic_write_text

DECODINGS = ("argmax", "iob2", "crf")


def score_run(run_dir: Path) -> dict | None:
    """F1 of ``run_dir``'s exported model on its validation and test splits, per decoding (None: not a NER run)."""
    from hftransfer.config.parse import load_config_file
    from hftransfer.data.sources import load_task_data
    from hftransfer.predict import Predictor

    config = load_config_file(run_dir / "config.yaml")
    if config.task != "token-classification":
        return None
    splits = load_task_data(config.data, config.task).splits
    result: dict = {"run": str(run_dir)}
    trained_crf = getattr(config.model, "head", "linear") == "crf"
    for decoding in DECODINGS if trained_crf else DECODINGS[:2]:
        predictor = Predictor(str(run_dir), decoding=decoding)
        for split in ("validation", "test"):
            if split in splits:
                result[f"{split}/{decoding}"] = predictor.predict(splits[split]).metrics["f1"]
    return result


def group_of(run: str) -> str:
    """The run's name without its seed (``full-n50-seed2`` -> ``full-n50``)."""
    return re.sub(r"-seed\d+$", "", Path(run).name)


def write(records: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "decoding.json", json.dumps(records, indent=2) + "\n")
    lines = [
        "# Argmax vs IOB2-constrained vs CRF decoding (same models)",
        "",
        "`python benchmarks/decoding.py <run dirs>`: strict entity F1 of each run's exported model on its own splits; "
        "difference = iob2 - argmax, mean ± std over the group's seeds; crf: runs trained with `model.head=crf`, "
        "decoded with their learned transitions (their argmax and iob2 columns read the emissions alone).",
        "",
        "| runs | seeds | test argmax | test iob2 | test crf | test difference | validation difference |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(group_of(record["run"]), []).append(record)
    everything = {"test": [], "validation": []}
    for name, found in sorted(groups.items()):
        cells = []
        for split in ("test", "validation"):
            differences = [r[f"{split}/iob2"] - r[f"{split}/argmax"] for r in found if f"{split}/iob2" in r]
            everything[split] += differences
            spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
            cells.append(f"{statistics.mean(differences):+.4f} ± {spread:.4f}" if differences else "")
        argmax = statistics.mean(r["test/argmax"] for r in found)
        iob2 = statistics.mean(r["test/iob2"] for r in found)
        crf = [r["test/crf"] for r in found if "test/crf" in r]
        crf_cell = f"{statistics.mean(crf):.4f}" if crf else ""
        lines.append(
            f"| {name} | {len(found)} | {argmax:.4f} | {iob2:.4f} | {crf_cell} | {cells[0]} | {cells[1]} |"
        )
    for split, differences in everything.items():
        if differences:
            better = sum(d > 0 for d in differences)
            lines.append(
                f"\nAll {len(differences)} runs, {split}: iob2 - argmax = {statistics.mean(differences):+.4f} mean, "
                f"better in {better}, worse in {sum(d < 0 for d in differences)}."
            )
    atomic_write_text(out / "decoding.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories, or directories holding them")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    runs = []
    for path in map(Path, args.paths):
        found = (
            [path]
            if (path / "metrics.json").is_file()
            else sorted(p.parent for p in path.glob("*/metrics.json"))
        )
        runs += [run for run in found if (run / "model").is_dir() and (run / "config.yaml").is_file()]
    records = []
    for run in runs:
        record = score_run(run)
        if record is not None:
            records.append(record)
            print(json.dumps(record), flush=True)
            write(records, Path(args.out))


if __name__ == "__main__":
    main()

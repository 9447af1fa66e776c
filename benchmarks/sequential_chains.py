"""Sequential transfer without forgetting: chains of tasks on the packaged data, and for each method the target
score against what the source task lost (MiniLM-L6).

    python benchmarks/sequential_chains.py                                       # every chain and method, 3 seeds
    python benchmarks/sequential_chains.py --chains ner-rt --methods sequential progressive --seeds 1 --resume
    python benchmarks/sequential_chains.py --set data.max_train_samples=1000 train.epochs=3 --work-dir runs/chains-1k

Chains: WNUT-16 NER -> Rotten Tomatoes (``ner-rt``), Rotten Tomatoes -> drug reviews (``rt-drugs``), and
NER -> Rotten Tomatoes -> drug reviews (``ner-rt-drugs``: its last step starts from the ``ner-rt`` step's run of
the same method; the report scores the task just before it, and NER too: ``transfer.earlier_runs``). Rotten Tomatoes trains on its first 2,000 carved
training snippets, as in the advisor's ranking benchmark, to keep the chains affordable on CPU.

Methods, each at its task's MiniLM preset:
- ``independent``: the target fine-tuned from the pretrained encoder (no transfer; the source model is untouched);
- ``sequential``: the target fine-tuned from the source run's model (new head);
- ``l2sp`` / ``drift``: sequential with L2-SP towards the source weights / output drift from the source encoder;
- ``adapters``: one LoRA adapter per task on the shared pretrained base (the source is a LoRA run too);
- ``progressive``: a new column reading the frozen source column(s);
- ``progressive_warm``: the same, the new column initialised from the source task's column (not the pretrained
  encoder).
Every transfer run reports the source task before and after (``transfer.source_eval``). Results:
``benchmarks/results/sequential_chains.{json,md,png}`` (saved after every run; ``--resume`` keeps finished runs,
``--report-only`` rebuilds them from finished runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from advisor_ranking import CONFIGS
from advisor_ranking import TASKS as RANKING_TASKS
from runner import RESULTS, ROOT, pyplot, run_or_resume

from hftransfer.flow.forgetting import run_model_dir
from hftransfer.utils import atomic_write_text

# The tasks as the advisor's ranking benchmark fine-tunes them (Rotten Tomatoes: its first 2,000 snippets).
TASKS = {"ner": RANKING_TASKS["ner"], "rt": RANKING_TASKS["sentiment"], "drugs": RANKING_TASKS["drugs"]}
CHAINS = {"ner-rt": ["ner", "rt"], "rt-drugs": ["rt", "drugs"], "ner-rt-drugs": ["ner", "rt", "drugs"]}
LORA = [
    "strategy.name=lora",
    "strategy.r=8",
    "strategy.alpha=16",
    "strategy.lora_export=both",
    "train.lr=1e-3",
]
METHODS = {
    "independent": [],
    "sequential": [],
    "l2sp": ["objectives+=[{name: l2sp, weight: 0.01}]"],
    "drift": ["objectives+=[{name: drift, weight: 1.0}]"],
    "adapters": LORA,
    "progressive": ["strategy.name=progressive", "strategy.rank=16"],
    # The new column starts from the previous task's column instead of the pretrained encoder
    # (model.name_or_path): sequential fine-tuning's start, with the earlier columns kept frozen.
    "progressive_warm": ["strategy.name=progressive", "strategy.rank=16"],
}


# Overrides for every run (``--set``: a cheaper protocol, e.g. ``data.max_train_samples=1000 train.epochs=3``);
# a work dir holds the runs of one setting.
COMMON: list[str] = []


def task_argv(task: str, seed: int, *extra: str) -> list[str]:
    spec = TASKS[task]
    return [
        "--config",
        str(CONFIGS / spec["preset"]),
        *spec["data"],
        *spec.get("train", []),
        f"train.seed={seed}",
        *extra,
        *COMMON,
    ]


def source_run(task: str, method: str, seed: int, work: Path, resume: bool) -> Path:
    """The first task's own run: full fine-tuning, or a LoRA adapter for the per-task-adapter method."""
    kind = "lora" if method == "adapters" else "full"
    run_dir = work / "sources" / f"{task}-{kind}-seed{seed}"
    run_or_resume(
        TASKS[task]["recipe"], task_argv(task, seed, *(LORA if kind == "lora" else [])), run_dir, resume
    )
    return run_dir


def step_run(chain: str, method: str, seed: int, work: Path, resume: bool | None) -> dict | None:
    """Train the chain's last task by ``method``; its record (None under ``--report-only`` if not finished)."""
    tasks = CHAINS[chain]
    target, source_task = tasks[-1], tasks[-2]
    run_dir = work / chain / f"{method}-seed{seed}"
    if resume is None:
        if not (run_dir / "metrics.json").is_file():
            return None
        resume = True
    if len(tasks) == 3:  # the step before is the two-task chain's run of the same method
        start = work / "-".join(tasks[:2]) / f"{method}-seed{seed}"
        step_run("-".join(tasks[:2]), method, seed, work, resume)
    else:
        start = source_run(source_task, method, seed, work, resume)
    first = source_run(tasks[0], method, seed, work, resume) if len(tasks) == 3 else None
    extra = list(METHODS[method])
    if method in ("sequential", "l2sp", "drift"):
        extra.append(f"model.name_or_path={start}")
    if method.startswith("progressive"):
        extra.append(f"strategy.columns={start}")
    if method == "progressive_warm":
        extra.append(f"model.name_or_path={run_model_dir(start)}")
    if method in ("independent", "adapters"):
        # Another model (or adapter) for the target: the source's own model is untouched by construction.
        source_metrics = json.loads((start / "metrics.json").read_text())
        source_score = source_metrics["test"][TASKS[source_task]["metric"]]
    else:
        extra.append(f"transfer.source_eval={start}")
        if first is not None:
            extra.append(f"transfer.earlier_runs=[{first}]")
    metrics = run_or_resume(TASKS[target]["recipe"], task_argv(target, seed, *extra), run_dir, resume)
    record = {
        "chain": chain,
        "method": method,
        "seed": seed,
        "target": metrics["test"][TASKS[target]["metric"]],
        "wall_s": metrics.get("benchmark_wall_s"),
        "trainable": metrics["strategy"]["parameters"]["trainable"],
        "parameters": metrics["strategy"]["parameters"]["total"],
    }
    transfer = metrics.get("transfer")
    if transfer:
        record.update(
            source_before=transfer["before"][transfer["metric"]],
            source_after=transfer["after"][transfer["metric"]],
        )
    else:
        record.update(source_before=source_score, source_after=source_score)
    record["forgetting"] = record["source_before"] - record["source_after"]
    if first is not None:
        before, after = first_task_scores(run_dir, first, transfer, TASKS[tasks[0]]["metric"])
        record.update(first_before=before, first_after=after, first_forgetting=before - after)
    return record


def first_task_scores(run_dir: Path, first: Path, transfer: dict | None, metric: str) -> tuple[float, float]:
    """The chain's first task before and after its last step: the run's own report (``transfer.earlier``), the
    first run's score for a method that never touches its model, or, for a run made before hftransfer reported
    earlier tasks, the same rescoring done here once (kept in the run directory)."""
    if transfer is None:  # independent / adapters: the first task's model (or adapter) is untouched
        score = json.loads((first / "metrics.json").read_text())["test"][metric]
        return score, score
    if transfer.get("earlier"):
        (entry,) = transfer["earlier"]
        return entry["before"][metric], entry["after"][metric]
    cache = run_dir / "bench_first_task.json"
    if not cache.is_file():
        atomic_write_text(cache, json.dumps(rescore_first_task(run_dir, first, metric)) + "\n")
    scores = json.loads(cache.read_text())
    return scores["before"], scores["after"]


def rescore_first_task(run_dir: Path, first: Path, metric: str) -> dict:
    """What ``transfer.earlier_runs=[first]`` reports, for a finished run: the library's own rescoring steps."""
    import tempfile

    from hftransfer.flow.forgetting import assemble_source_model, prepare_earlier_run, score
    from hftransfer.progressive.export import column_directory, network_directory

    task = prepare_earlier_run(str(first), "test")
    network = network_directory(run_dir / "model")
    if network is not None:
        return {
            "before": task.before[metric],
            "after": score(column_directory(network, 2), task.examples)[metric],
        }
    with tempfile.TemporaryDirectory() as scratch:
        assemble_source_model(run_dir / "model", task, Path(scratch) / "model")
        return {"before": task.before[metric], "after": score(Path(scratch) / "model", task.examples)[metric]}


def summarise(records: list[dict]) -> list[dict]:
    rows = []
    for chain in CHAINS:
        for method in METHODS:
            found = [r for r in records if (r["chain"], r["method"]) == (chain, method)]
            if not found:
                continue
            row = {"chain": chain, "method": method, "seeds": len(found)}
            keys = ["target", "source_after", "forgetting", "wall_s", "trainable", "parameters"]
            if all("first_forgetting" in r for r in found):
                keys += ["first_after", "first_forgetting"]
            for key in keys:
                values = [r[key] or 0.0 for r in found]
                row[key] = statistics.mean(values)
                row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row.update(versus_independent(records, found))
            rows.append(row)
    return rows


def versus_independent(records: list[dict], found: list[dict]) -> dict:
    """Target score minus the independent run's of the same chain and seed (paired: a seed's split, data order and
    head initialisation are shared, so the seed-to-seed spread cancels), as mean ± standard error."""
    independent = {(r["chain"], r["seed"]): r["target"] for r in records if r["method"] == "independent"}
    differences = [
        r["target"] - independent[r["chain"], r["seed"]]
        for r in found
        if r["method"] != "independent" and (r["chain"], r["seed"]) in independent
    ]
    if not differences:
        return {"vs_independent": None, "vs_independent_se": None, "paired_seeds": 0}
    se = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else None
    return {
        "vs_independent": statistics.mean(differences),
        "vs_independent_se": se,
        "paired_seeds": len(differences),
    }


def paired_cell(row: dict) -> str:
    if row["vs_independent"] is None:
        return ""
    se = "" if row["vs_independent_se"] is None else f" ± {row['vs_independent_se']:.4f}"
    return f"{row['vs_independent']:+.4f}{se} ({row['paired_seeds']})"


def write(records: list[dict], seeds: int) -> None:
    rows = summarise(records)
    atomic_write_text(
        RESULTS / "sequential_chains.json", json.dumps({"records": records, "summary": rows}, indent=2) + "\n"
    )
    lines = [
        "# Sequential transfer: target score and source forgetting per method",
        "",
        f"`python benchmarks/sequential_chains.py{(' --set ' + ' '.join(COMMON)) if COMMON else ''}` "
        f"(MiniLM-L6; up to {seeds} seeds, mean ± std; forgetting = source "
        "score before - after, in the source task's metric; CPU).",
        "",
        "Δ vs independent: target minus the independent run's of the same chain and seed, mean ± standard error "
        "(seeds paired).",
        "",
        "| chain | method | target test | Δ vs independent | source after | forgetting | trainable / total params "
        "| wall s | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['chain']} | {r['method']} | {r['target']:.4f} ± {r['target_std']:.4f} | {paired_cell(r)} | "
            f"{r['source_after']:.4f} | {r['forgetting']:+.4f} ± {r['forgetting_std']:.4f} | "
            f"{r['trainable'] / 1e6:.1f}M / {r['parameters'] / 1e6:.1f}M | {r['wall_s']:.0f} | {r['seeds']} |"
        )
    first = [r for r in rows if "first_forgetting" in r]
    if first:
        lines += [
            "",
            "The chain's first task (NER, entity F1) after the last step of a three-task chain (the table above "
            "scores the task just before it):",
            "",
            "| chain | method | first task after | first task forgetting | seeds |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['chain']} | {r['method']} | {r['first_after']:.4f} | {r['first_forgetting']:+.4f} ± "
            f"{r['first_forgetting_std']:.4f} | {r['seeds']} |"
            for r in first
        ]
    header = (
        "| chain | method | seed | target test | source before | source after | first before | first after |"
    )
    lines += ["", "Per seed (first: the three-task chain's first task):", "", header]
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in sorted(
        records, key=lambda r: (list(CHAINS).index(r["chain"]), list(METHODS).index(r["method"]))
    ):
        firsts = [f"{r[key]:.4f}" if key in r else "" for key in ("first_before", "first_after")]
        lines.append(
            f"| {r['chain']} | {r['method']} | {r['seed']} | {r['target']:.4f} | "
            f"{r['source_before'] or 0.0:.4f} | {r['source_after'] or 0.0:.4f} | {' | '.join(firsts)} |"
        )
    atomic_write_text(RESULTS / "sequential_chains.md", "\n".join(lines) + "\n")
    plot(rows)


def plot(rows: list[dict]) -> None:
    plt = pyplot()
    if plt is None:
        return
    chains = [c for c in CHAINS if any(r["chain"] == c for r in rows)]
    fig, axes = plt.subplots(1, len(chains), figsize=(5 * len(chains), 4), squeeze=False)
    for ax, chain in zip(axes[0], chains):
        for r in (r for r in rows if r["chain"] == chain):
            ax.errorbar(
                r["forgetting"],
                r["target"],
                xerr=r["forgetting_std"],
                yerr=r["target_std"],
                marker="o",
                capsize=3,
            )
            ax.annotate(
                r["method"],
                (r["forgetting"], r["target"]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.set(
            xlabel="source forgetting (score before - after, lower is better)",
            ylabel="target test score",
            title=chain,
        )
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "sequential_chains.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", nargs="+", default=list(CHAINS), choices=list(CHAINS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-sequential"))
    parser.add_argument("--resume", action="store_true", help="keep runs that finished (their metrics.json)")
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing: rebuild results from finished runs"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides for every run, e.g. a cheaper protocol: data.max_train_samples=1000 train.epochs=3 "
        "(use a work dir of its own)",
    )
    args = parser.parse_args()
    COMMON[:] = args.set
    work = Path(args.work_dir)
    records = []
    for seed in args.seeds:
        for chain in args.chains:
            for method in args.methods:
                record = step_run(chain, method, seed, work, None if args.report_only else args.resume)
                if record is None:
                    continue
                records.append(record)
                print(json.dumps(record), flush=True)
                write(records, len(args.seeds))


if __name__ == "__main__":
    main()

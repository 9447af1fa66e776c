"""How much to train for how much labelled data: learning curves of frozen / freeze-bottom-N / LoRA / full fine-tuning
(and ``strategy.name=auto``) at several training-set sizes, on WNUT-16 NER and Rotten Tomatoes sentiment.

    python benchmarks/data_size_policy.py                                   # every size, strategy, task; 3 seeds
    python benchmarks/data_size_policy.py --tasks ner --sizes 50 100 --seeds 1 --work-dir /tmp/policy --resume

Protocol (the same for every strategy, so only what trains differs):
- the first N examples of the preset's carved training split (seed-0 carving: the N are the same for every seed and
  strategy, so strategies are compared on identical examples); validation and test as the preset carves them;
- the task's step budget: the full fine-tuning preset's epochs, but at least ``MIN_STEPS`` optimizer steps (50
  examples are 4 batches: 5 epochs of them would be 20 steps; with a floor of 150, full fine-tuning on 500 WNUT
  sentences scored below 200 of them and LoRA never left the all-``O`` plateau); validation 5 times per run, the
  best kept;
- each strategy at its own preset's learning rate (``recipes/configs/minilm/*``); freeze-bottom-N keeps the
  embeddings and the bottom 4 of 6 layers fixed (the seeds' "freeze most layers").
- ``auto`` runs the real ``strategy.name=auto``, except where its choice trains exactly as a strategy's own row
  (full, freeze: same options, the preset's learning rate, the same seed): there its record is that row's, marked
  ``derived_from``. A real auto run in the work dir always takes precedence; ``--no-derive`` runs them all (to
  check, for a cell or two, that the two agree).
Each run is the real recipe in its own process. Results: ``benchmarks/results/data_size_policy.{json,md}`` (saved
after every run; ``--resume`` keeps finished runs) and ``data_size_policy.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from runner import RESULTS, ROOT, pyplot, run_or_resume

from hftransfer.utils import atomic_write_text

CONFIGS = ROOT / "recipes" / "configs" / "minilm"
MIN_STEPS = 300
EVALUATIONS = 5
TASKS = {
    "ner": {
        "recipe": "finetune_ner.py",
        "preset": "ner_full.yaml",
        "epochs": 5,
        "batch_size": 16,
        "metric": "f1",
        "extra": [],
        "strategies": {
            "frozen": [
                "strategy.name=frozen",
                "strategy.head=linear",
                "train.lr=3e-3",
                "train.warmup_ratio=0.0",
            ],
            "freeze": ["strategy.name=freeze", "strategy.freeze_layers=4", "train.lr=2e-4"],
            "lora": [
                "strategy.name=lora",
                "strategy.r=8",
                "strategy.alpha=16",
                "strategy.target_modules=[all-linear]",
                "strategy.lora_dropout=0.0",
                "train.lr=1e-3",
            ],
            "full": ["train.lr=2e-4"],
            "auto": ["strategy.name=auto"],
        },
    },
    "sentiment": {
        "recipe": "finetune_classifier.py",
        "preset": "classifier_full.yaml",
        "epochs": 2,
        "batch_size": 32,
        "metric": "accuracy",
        # 800 of the 1,280 validation and test snippets: five validations per run are most of a small run's cost.
        "extra": ["data.max_eval_samples=800"],
        "strategies": {
            "frozen": [
                "strategy.name=frozen",
                "strategy.head=mlp",
                "strategy.pooling=mean",
                "train.lr=3e-3",
                "train.warmup_ratio=0.0",
            ],
            "freeze": ["strategy.name=freeze", "strategy.freeze_layers=4", "train.lr=1e-4"],
            "lora": [
                "strategy.name=lora",
                "strategy.r=8",
                "strategy.alpha=16",
                "strategy.target_modules=[query,value,dense]",
                "strategy.lora_dropout=0.1",
                "train.lr=1e-3",
            ],
            "full": ["train.lr=1e-4"],
            "auto": ["strategy.name=auto"],
        },
    },
}
STRATEGIES = ["frozen", "freeze", "lora", "full", "auto"]
SIZES = ["50", "100", "200", "500", "1000", "all"]


def schedule(task: dict, examples: int) -> list[str]:
    """The step budget and evaluation cadence of a run on ``examples`` training examples."""
    per_epoch = math.ceil(examples / task["batch_size"])
    steps = max(per_epoch * task["epochs"], MIN_STEPS)
    return [
        f"train.epochs={task['epochs']}",
        f"train.max_steps={steps}",
        f"train.batch_size={task['batch_size']}",
        f"train.eval_every_steps={max(1, steps // EVALUATIONS)}",
        "train.eval_every_epoch=false",
    ]


def train_size(task: dict) -> int:
    """How many examples the preset's carved training split holds (the ``all`` size)."""
    from hftransfer.config import parse_config
    from hftransfer.data.sources import load_task_data

    config = parse_config([], default_config=CONFIGS / task["preset"])
    return len(load_task_data(config.data, config.task).splits["train"])


# When auto chooses one of these, it trains exactly as that strategy's own row does (same options, the same
# learning rate, the same seed): its record is that row's. NER's frozen row uses the last layer where auto's frozen
# choice for tokens probes for one (feature_layer=auto), so those auto runs are run.
SAME_AS_ROW = {"ner": ("full", "freeze", "lora"), "sentiment": ("full", "freeze", "lora", "frozen")}
DERIVE = {"auto": True}  # --no-derive


def auto_choice(task_name: str, size: str, extra: list[str]) -> str | None:
    """The strategy ``auto`` picks at ``size`` under the default rules (None when ``--set`` may change them)."""
    if any(item.startswith("strategy.") for item in extra):
        return None
    from hftransfer.advisor.policy import SEQUENCE_TASK, TOKEN_TASK, decide

    task = TASKS[task_name]
    examples = task["all"] if size == "all" else int(size)
    return decide(TOKEN_TASK if task["recipe"] == "finetune_ner.py" else SEQUENCE_TASK, examples).strategy


PUBLISHED: dict[tuple, dict] = {}  # (task, strategy, size, seed) -> committed record, filled by main()


def published_records(extra: list[str]) -> dict[tuple, dict]:
    """The committed results' own runs (not derived auto cells), when they were measured with the same ``--set``."""
    path = RESULTS / "data_size_policy.json"
    if not path.is_file():
        return {}
    payload = json.loads(path.read_text())
    if payload.get("settings", {}).get("extra", []) != extra:
        return {}
    return {
        (r["task"], r["strategy"], r["size"], r["seed"]): r
        for r in payload["records"]
        if not r.get("derived_from")
    }


def run_one(
    task_name: str, strategy: str, size: str, seed: int, work: Path, resume: bool, extra: list[str]
) -> dict | None:
    """One run's record; None under ``--report-only`` (``resume`` None) when the run has not finished. An ``auto``
    run whose choice trains exactly as a strategy's own row is that row's record (``derived_from``)."""
    task = TASKS[task_name]
    real_auto = (work / task_name / f"auto-n{size}-seed{seed}" / "metrics.json").is_file()
    if strategy == "auto" and DERIVE["auto"] and not real_auto:
        chosen = auto_choice(task_name, size, extra)
        if chosen in SAME_AS_ROW[task_name]:
            record = run_one(task_name, chosen, size, seed, work, resume, extra)
            return record and {**record, "strategy": "auto", "auto_chose": chosen, "derived_from": chosen}
    run_dir = work / task_name / f"{strategy}-n{size}-seed{seed}"
    if resume is not False and not (run_dir / "metrics.json").is_file():
        published = PUBLISHED.get((task_name, strategy, size, seed))
        if published is not None:  # the work dir was lost (a new machine): the committed record stands
            return published
    if resume is None:
        if not (run_dir / "metrics.json").is_file():
            return None
        resume = True
    examples = task["all"] if size == "all" else int(size)
    argv = [
        "--config",
        str(CONFIGS / task["preset"]),
        *([] if size == "all" else [f"data.max_train_samples={size}"]),
        *schedule(task, examples),
        *task["strategies"][strategy],
        *task["extra"],
        f"train.seed={seed}",
        *extra,
    ]
    metrics = run_or_resume(task["recipe"], argv, run_dir, resume)
    wall = metrics.get("benchmark_wall_s")
    chosen = ((metrics.get("strategy") or {}).get("auto") or {}).get("chosen")
    return {
        "task": task_name,
        "strategy": strategy,
        "size": size,
        "seed": seed,
        "test": metrics["test"][task["metric"]],
        "validation": metrics["validation"][task["metric"]],
        "wall_s": wall,
        **({"auto_chose": chosen} if chosen else {}),
    }


def summarise(records: list[dict]) -> list[dict]:
    rows = []
    keys = sorted(
        {(r["task"], r["size"], r["strategy"]) for r in records}, key=lambda k: (k[0], _size_order(k[1]))
    )
    for task, size, strategy in keys:
        found = [r for r in records if (r["task"], r["size"], r["strategy"]) == (task, size, strategy)]
        tests = [r["test"] for r in found]
        rows.append(
            {
                "task": task,
                "size": size,
                "strategy": strategy,
                "seeds": len(found),
                "test_mean": statistics.mean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "validation_mean": statistics.mean(r["validation"] for r in found),
                "wall_mean": statistics.mean(r["wall_s"] or 0 for r in found),
                "auto_chose": sorted({r["auto_chose"] for r in found if "auto_chose" in r}),
                "derived": any("derived_from" in r for r in found),
            }
        )
    return rows


def _size_order(size: str) -> int:
    return 10**9 if size == "all" else int(size)


def write(records: list[dict], settings: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = summarise(records)
    payload = {"settings": settings, "records": records, "summary": rows}
    atomic_write_text(RESULTS / "data_size_policy.json", json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Data-size policy: test score by training-set size and strategy",
        "",
        f"`python benchmarks/data_size_policy.py` ({settings['seeds']} seed(s) per cell where complete; MiniLM-L6; "
        f"at least {MIN_STEPS} optimizer steps; mean ± std over seeds; wall s per run).",
        "",
    ]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in task_rows)]
        lines += [f"## {task} (test {TASKS[task]['metric']})", ""]
        lines.append("| size | " + " | ".join(strategies) + " | best | auto chose | auto − best |")
        lines.append("|---" * (len(strategies) + 4) + "|")
        for size in SIZES:
            cells = {r["strategy"]: r for r in task_rows if r["size"] == size}
            if not cells:
                continue
            fixed = {s: r for s, r in cells.items() if s != "auto"}
            best = max(fixed, key=lambda s: fixed[s]["test_mean"]) if fixed else ""
            auto = cells.get("auto")
            gap = f"{auto['test_mean'] - fixed[best]['test_mean']:+.4f}" if auto and best else ""
            row = [size]
            for strategy in strategies:
                r = cells.get(strategy)
                row.append(
                    f"{r['test_mean']:.4f} ± {r['test_std']:.4f} ({r['wall_mean']:.0f} s, {r['seeds']})"
                    if r
                    else ""
                )
            chose = ", ".join(auto["auto_chose"]) + (" (its row)" if auto["derived"] else "") if auto else ""
            row += [best, chose, gap]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    atomic_write_text(RESULTS / "data_size_policy.md", "\n".join(lines) + "\n")
    plot(rows)


def plot(rows: list[dict]) -> None:
    plt = pyplot()
    if plt is None:
        return
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for strategy in STRATEGIES:
            points = [r for r in rows if r["task"] == task and r["strategy"] == strategy]
            if not points:
                continue
            points.sort(key=lambda r: _size_order(r["size"]))
            x = [TASKS[task]["all"] if r["size"] == "all" else int(r["size"]) for r in points]
            ax.errorbar(
                x,
                [r["test_mean"] for r in points],
                yerr=[r["test_std"] for r in points],
                marker="o",
                capsize=3,
                linestyle="--" if strategy == "auto" else "-",
                label=strategy,
            )
        ax.set(xscale="log", xlabel="training examples", ylabel=f"test {TASKS[task]['metric']}", title=task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "data_size_policy.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--sizes", nargs="+", default=SIZES, choices=SIZES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-data-size"))
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep runs that finished (their metrics.json; where the work dir lost one, the committed record)",
    )
    parser.add_argument(
        "--no-derive",
        action="store_true",
        help="run every auto cell, also where it trains as a strategy's row",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the results from the runs that finished (several benchmark processes can fill "
        "one work dir, e.g. one per task, and this merges them)",
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra overrides for every run"
    )
    args = parser.parse_args()
    work = Path(args.work_dir)
    DERIVE["auto"] = not args.no_derive
    for name in args.tasks:
        TASKS[name]["all"] = train_size(TASKS[name])
    settings = {"seeds": len(args.seeds), "min_steps": MIN_STEPS, "extra": args.set}
    if args.resume or args.report_only:
        PUBLISHED.update(published_records(args.set))
    records = []
    for seed in args.seeds:
        for task in args.tasks:
            for size in args.sizes:
                for strategy in args.strategies:
                    resume = None if args.report_only else args.resume
                    record = run_one(task, strategy, size, seed, work, resume, args.set)
                    if record is None:
                        continue
                    records.append(record)
                    print(json.dumps(record), flush=True)
                    write(records, settings)


if __name__ == "__main__":
    main()

"""The kill/fault suite: SIGKILL toy runs at random moments and at every write boundary, check what each kill
left, resume each run to the end and compare it with an uninterrupted one.

    python benchmarks/fault_suite.py --trials 50 --seed 0 --work-dir /tmp/faults
    python benchmarks/fault_suite.py --trials 10 --kinds toy --launcher fork --work-dir /tmp/faults  # quicker

Per kind (``toy``: full fine-tuning of a classifier; ``lora``: LoRA with a merged export at the end; ``ner``: token
classification), one uninterrupted reference run counts the boundaries it passes (``fault_shim.py`` lists them).
Then each trial kills a run at one of them (a random n-th occurrence) or at a random moment of the reference's
duration, checks the run directory, resumes with ``train.resume_from_checkpoint=latest`` and compares weights,
``metrics.json`` and ``metrics.jsonl`` with the reference (``fault_checks.py`` says what exactly). One control per
kind runs unkilled, to show two uninterrupted runs agree. Then a second run is started on the directory of a live
one (it must be refused), and one rank of a 2-process run is killed (how long the other takes to exit).

Runs go through ``python benchmarks/fault_shim.py recipes/<recipe>.py ...`` (``--launcher exec``, the default: a
fresh interpreter per run, as a user starts one) or a fork server that imported the library once
(``--launcher fork``: the same script in a forked child, ~8 s of imports less per run). Results:
``benchmarks/results/fault_suite.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shlex
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fault_checks import TIMING_KEYS  # noqa: E402 - benchmarks/ is not a package
from fault_trials import (  # noqa: E402
    KINDS,
    TRAIN_ARGS,
    Trial,
    concurrent_run_trial,
    make_launcher,
    make_reference,
    plan_faults,
    run_trial,
    two_process_trial,
)

from hftransfer.toy import make_toy_assets  # noqa: E402
from hftransfer.utils import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (
    "trials",
    "killed",
    "ended before the fault",
    "crashed by itself",
    "corrupted states",
    "tolerated",
    "resume failed",
    "weights differ",
    "metrics.json differs",
    "metrics.jsonl differs",
    "leftovers",
)


def summarise(trials: list[Trial]) -> dict[str, dict[str, int]]:
    """Per ``kind/boundary`` (and ``all``): how many trials did and found what (see :data:`COLUMNS`)."""
    rows: dict[str, Counter] = defaultdict(Counter)
    for trial in trials:
        for key in (f"{trial.kind}/{trial.boundary}", "all"):
            row = rows[key]
            row["trials"] += 1
            row["killed"] += trial.outcome == "killed"
            row["ended before the fault"] += trial.outcome == "completed"
            row["crashed by itself"] += trial.outcome == "failed"
            row["corrupted states"] += bool(trial.violations)
            row["tolerated"] += bool(trial.tolerated)
            row["resume failed"] += trial.resume_returncode not in (None, 0)
            row["weights differ"] += any(d.startswith("weights") for d in trial.differences)
            row["metrics.json differs"] += any(d.startswith("metrics.json:") for d in trial.differences)
            row["metrics.jsonl differs"] += any(d.startswith("metrics.jsonl") for d in trial.differences)
            row["leftovers"] += bool(trial.leftovers)
    order = sorted(key for key in rows if key != "all") + ["all"]
    return {key: {column: rows[key][column] for column in COLUMNS} for key in order}


def finding_key(message: str) -> str:
    """A message with its values and random temporary names taken out, so equal findings group together."""
    message = re.sub(r"(\.[\w-]+)\.[A-Za-z0-9_]{8}\.tmp", r"\1.*.tmp", message)
    message = re.sub(r": [^;:]*? vs [^;]*?(?=;|$)", "", message)
    return re.sub(r"max \|diff\| \S+", "max |diff| >0", message)


def findings(trials: list[Trial]) -> list[dict[str, Any]]:
    """Every distinct violation, difference, leftover and failure, with how many trials showed it."""
    seen: dict[str, dict[str, Any]] = {}
    for index, trial in enumerate(trials):
        messages = [f"corrupted: {v}" for v in trial.violations]
        messages += [f"differs: {d}" for d in trial.differences]
        messages += [f"leftover: {name}" for name in trial.leftovers]
        if trial.outcome == "failed":
            messages.append(f"crashed by itself: {trial.log_tail.splitlines()[-1:] or ['?']}")
        if trial.resume_returncode not in (None, 0):
            messages.append(f"resume failed ({trial.resume_returncode}): {trial.log_tail.splitlines()[-1:]}")
        for message in messages:
            key = finding_key(message)
            entry = seen.setdefault(key, {"finding": key, "trials": 0, "faults": [], "example": message})
            entry["trials"] += 1
            entry["faults"].append(f"{index}:{trial.kind}/{trial.fault}")
    return sorted(seen.values(), key=lambda entry: -entry["trials"])


def markdown(result: dict[str, Any]) -> str:
    settings = result["settings"]
    lines = [
        "# Kill/fault suite",
        "",
        f"`{settings['command']}` on {settings['machine']} ({settings['finished']}, {settings['wall_minutes']} min).",
        "",
        f"Library: {settings['label'] or 'this checkout'}. Runs: {', '.join(settings['kinds'])} "
        f"({settings['train_args']}); launcher `{settings['launcher']}`.",
        "A trial SIGKILLs a run at a write boundary (`fault_shim.py`) or a random moment, checks the directory,",
        "resumes it with `train.resume_from_checkpoint=latest` and compares it with an uninterrupted run;",
        "`benchmarks/fault_checks.py` states the checks. Keys ignored as timings: "
        + ", ".join(f"`{k}`" for k in sorted(TIMING_KEYS))
        + ".",
        "",
        "| kind/boundary | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for key, row in result["summary"].items():
        name = f"**{key}**" if key == "all" else key
        lines.append(f"| {name} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    controls = result["controls"]
    lines += [
        "",
        "*ended before the fault*: a random moment after the run had finished (nothing to check but the run);",
        "*tolerated*: the torn last `metrics.jsonl` line that the shim itself wrote at a `log` fault, which the",
        "resume drops by design (the resumed log is then compared like any other); *leftovers*: `.*.tmp` / `.*.old`",
        "temporaries still in the run directory after the resumed run completed.",
        "",
        "Controls (no kill, compared with the reference): "
        + ", ".join(f"{c['kind']}: {'equal' if not c['differences'] else c['differences']}" for c in controls)
        + ".",
        "",
        "## Findings",
        "",
    ]
    if not result["findings"]:
        lines.append("None: no corrupted state, every resume equal to the uninterrupted run, no leftovers.")
    for entry in result["findings"]:
        faults = ", ".join(entry["faults"][:6]) + (" ..." if len(entry["faults"]) > 6 else "")
        lines.append(
            f"- {entry['trials']} trial(s): {entry['finding']} (e.g. `{entry['example'][:200]}`; {faults})"
        )
    concurrent = result.get("concurrent")
    if concurrent:
        refused = concurrent.get("second_returncode") not in (0, None)
        lines += [
            "",
            "## A second run on a live run's directory",
            "",
            f"{'Refused' if refused else 'NOT refused'} (exit {concurrent.get('second_returncode')} after "
            f"{concurrent.get('second_seconds')} s: `{concurrent.get('second_said', '')[:200]}`); the first run, "
            f"continued, exited {concurrent['first_returncode']} and "
            f"{'equals the reference' if not concurrent['first_differences'] else concurrent['first_differences']}.",
        ]
    if result.get("two_process"):
        lines += [
            "",
            "## One rank of a 2-process run killed",
            "",
            "| killed rank | at step | other rank exits after (s) | launcher exits after (s) | corrupted |",
            "|---|---|---|---|---|",
        ]
        for trial in result["two_process"]:
            lines.append(
                f"| {trial['killed_rank']} | {trial['step']} | {trial.get('survivor_exit_seconds')} | "
                f"{trial.get('launcher_exit_seconds')} | {trial['violations'] or 0} |"
            )
    return "\n".join(lines) + "\n"


def print_table(summary: dict[str, dict[str, int]]) -> None:
    short = [
        "trials",
        "killed",
        "ended",
        "crashed",
        "corrupt",
        "tolerated",
        "resume!",
        "weights",
        "json",
        "jsonl",
        "left",
    ]
    width = max(len(key) for key in summary) + 2
    print("".ljust(width) + " ".join(f"{name:>9}" for name in short))  # noqa: T201 - a CLI's report
    for key, row in summary.items():
        print(key.ljust(width) + " ".join(f"{row[c]:>9}" for c in COLUMNS))  # noqa: T201


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=50, help="killed runs (controls not counted)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the boundaries, occurrences and moments")
    parser.add_argument("--work-dir", type=Path, required=True, help="where the toy assets and runs go")
    parser.add_argument("--kinds", default="toy,lora", help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--launcher", choices=("exec", "fork"), default="exec")
    parser.add_argument(
        "--two-process-ranks", default="1,0", help="ranks to kill in 2-process runs ('' for none)"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where fault_suite.{json,md} go")
    parser.add_argument(
        "--label", default="", help="what library state was tested (e.g. a commit), for the report"
    )
    args = parser.parse_args(argv)
    kinds = [name.strip() for name in args.kinds.split(",") if name.strip()]
    unknown = [name for name in kinds if name not in KINDS]
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; known: {', '.join(KINDS)}")
    started = time.monotonic()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    toy_dir = make_toy_assets(work / "toy").model_dir.parent
    launcher = make_launcher(args.launcher, work)
    try:
        references = {name: make_reference(launcher, name, toy_dir, work) for name in kinds}
        for name, reference in references.items():
            print(f"reference {name}: {reference.seconds:.1f} s, boundaries {reference.counts}", flush=True)  # noqa: T201
        controls = [
            run_trial(launcher, ref, "none", toy_dir, work / f"control-{name}")
            for name, ref in references.items()
        ]
        trials: list[Trial] = []
        for index, (name, fault) in enumerate(plan_faults(references, args.trials, random.Random(args.seed))):
            trial = run_trial(launcher, references[name], fault, toy_dir, work / f"trial-{index:03d}")
            trials.append(trial)
            found = trial.violations + trial.differences + trial.leftovers
            print(  # noqa: T201
                f"[{index + 1}/{args.trials}] {name} {fault}: {trial.outcome}, "
                f"{'ok' if not found else '; '.join(found)[:300]} ({trial.seconds:.1f} s)",
                flush=True,
            )
        first = references[kinds[0]]
        concurrent = concurrent_run_trial(launcher, first, toy_dir, work / "concurrent")
        print(f"second run on a live directory: {concurrent}", flush=True)  # noqa: T201
    finally:
        launcher.close()
    two_process = []
    for rank in [int(r) for r in args.two_process_ranks.split(",") if r.strip()]:
        outcome = two_process_trial(first, toy_dir, work / f"two-process-rank{rank}", rank)
        two_process.append(outcome)
        print(f"2 processes, rank {rank} killed: {outcome}", flush=True)  # noqa: T201
    summary = summarise(trials)
    print_table(summary)
    import torch

    result = {
        "settings": {
            "command": "python benchmarks/fault_suite.py "
            + shlex.join(sys.argv[1:] if argv is None else argv),
            "trials": args.trials,
            "seed": args.seed,
            "kinds": kinds,
            "launcher": args.launcher,
            "label": args.label,
            "train_args": " ".join(TRAIN_ARGS),
            "machine": f"{os.cpu_count()} CPU cores (shared), {platform.machine()}, torch {torch.__version__}",
            "finished": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "wall_minutes": round((time.monotonic() - started) / 60, 1),
        },
        "references": {
            n: {"counts": r.counts, "seconds": round(r.seconds, 2)} for n, r in references.items()
        },
        "summary": summary,
        "findings": findings(trials),
        "controls": [control.to_json() for control in controls],
        "trials": [trial.to_json() for trial in trials],
        "concurrent": concurrent,
        "two_process": two_process,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output_dir / "fault_suite.json", result)
    atomic_write_text(args.output_dir / "fault_suite.md", markdown(result))
    return result


if __name__ == "__main__":
    main()

"""Turn the suite's run records into ``RESULTS.md`` (tables, targets) and PNG plots; nothing here runs a model.

Records are keyed ``model/task/name/seed`` (``model/multitask/sampler/seed`` for multitask runs); every number in
the report is a mean ± sample standard deviation over the seeds that ran, with the number of seeds shown.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from runner import LAUNCH_LINES

from hftransfer.utils import atomic_write_text

STRATEGY_LABELS = {
    "full": "full fine-tuning",
    "frozen_linear": "frozen encoder + linear head (feature cache)",
    "freeze_bottom_3": "freeze bottom 3 layers",
    "llrd": "layer-wise LR decay 0.8",
    "lora": "LoRA r=8, adapter dropout 0.1",
    "lora_dropout0": "LoRA r=8, adapter dropout 0",
    "l2sp": "L2-SP 1e-4",
}
TARGET_FRACTION = 0.95  # time-to-target: 95% of the Trainer baseline's best validation score


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for a single value) and count of the values that are not None."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return float("nan"), float("nan"), 0
    return statistics.fmean(kept), statistics.stdev(kept) if len(kept) > 1 else 0.0, len(kept)


def fmt(values: Iterable[float | None], scale: float = 1.0, digits: int = 4) -> str:
    mean, std, n = mean_std(values)
    if n == 0:
        return "–"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def group(records: dict[str, dict]) -> dict[tuple[str, str, str], list[dict]]:
    """``(model, task, name) -> [record per seed]`` (frozen cache-filling runs are kept apart as ``name/encode``)."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for key, record in records.items():
        model, task, name, *rest = key.split("/")
        groups[(model, task, name + ("/encode" if rest[1:] == ["encode"] else ""))].append(record)
    return groups


def first_reaching(history: list[dict], target: float) -> float | None:
    """Training seconds at the first evaluation whose validation score reaches ``target`` (None: never)."""
    for point in history:
        if point["score"] is not None and point["score"] >= target:
            return point["train_seconds"]
    return None


def flops_per_second(record: dict, seconds_key: str) -> float | None:
    seconds = record.get(seconds_key)
    if not record.get("training_flops") or not seconds:
        return None
    return record["training_flops"] / seconds


def record_peaks(record: dict, machine: dict) -> list[float]:
    """The matmul peaks that bracket a run: its own (before and after it), else the suite's measurements."""
    if record.get("matmul_peaks"):
        return list(record["matmul_peaks"])
    if record.get("matmul_peak_flops"):
        return [record["matmul_peak_flops"]]
    return [machine["matmul_peak_flops"], *machine.get("matmul_peak_rechecks", [])]


def peak_range(records: dict, machine: dict) -> str:
    """The matmul peaks measured around the timed runs (the machine's speed drifts), or the suite's own."""
    own = [p / 1e9 for r in records.values() if r.get("matmul_peaks") for p in r["matmul_peaks"]]
    text = f"{min(own):.1f}–{max(own):.1f} GFLOP/s (measured before and after each timed run)" if own else ""
    if not own or any(not r.get("matmul_peaks") for r in records.values()):
        suite = f"{machine['matmul_peak_flops'] / 1e9:.1f} GFLOP/s" + (
            f" ({machine['matmul_peak_note']})" if machine.get("matmul_peak_note") else ""
        )
        text = f"{text}; runs without their own: {suite}" if text else suite
    return text


def baseline_section(groups: dict, machine: dict, targets: list[str]) -> list[str]:
    lines = [
        "## Full fine-tuning: hftransfer vs a plain `transformers.Trainer` script",
        "",
        "Same model, data split, epochs, batch size, learning rate, warm-up and weight decay; both evaluate on",
        "validation every epoch and keep the best epoch. Wall: process launch to exit. Time to target: training",
        f"seconds until the validation score first reaches {TARGET_FRACTION:.0%} of the Trainer's best (mean over",
        "seeds); evaluations happen once per epoch, so it is a multiple of an epoch's time.",
        "",
        "| model | task | launch line | runner | processes × threads | test score | wall s | wall ratio | train samples/s | tokens/s | "
        "matmul FLOP/s (% of peak) | peak RSS MiB | inference samples/s | time to target s | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def peak(record: dict) -> float:  # the mean of the peaks around the run
        peaks = record_peaks(record, machine)
        return sum(peaks) / len(peaks)

    pairs = [
        (model, task, name.removeprefix("trainer"), trainer)
        for (model, task, name), trainer in groups.items()
        if name.split("@")[0] == "trainer" and (model, task, "full" + name.removeprefix("trainer")) in groups
    ]
    order = {f"@{launcher}": i for i, launcher in enumerate(LAUNCH_LINES)} | {"": 0}
    for model, task, suffix, trainer in sorted(pairs, key=lambda p: (p[0], p[1], order.get(p[2], 99))):
        ours = groups[(model, task, "full" + suffix)]
        line = LAUNCH_LINES.get(suffix.removeprefix("@") or "python", suffix)
        target = TARGET_FRACTION * mean_std(max(h["score"] for h in r["history"]) for r in trainer)[0]
        trainer_wall = mean_std(r["wall_seconds"] for r in trainer)[0]
        for runner, runs in (("hftransfer", ours), ("Trainer", trainer)):
            wall = mean_std(r["wall_seconds"] for r in runs)[0]
            score = fmt(r["score"] for r in runs)
            if runner == "Trainer" and runs[0].get("score_conlleval") is not None:
                score += f" (conlleval {fmt(r['score_conlleval'] for r in runs)})"
            flop_rates = [
                flops_per_second(r, "step_seconds" if runner == "hftransfer" else "train_seconds")
                for r in runs
            ]
            rate = mean_std(flop_rates)[0]
            fraction = mean_std(f / peak(r) for f, r in zip(flop_rates, runs))[0]
            lines.append(
                f"| {model} | {task} | `{line}` | {runner} | {_layout(runs)} | {score} | {fmt((r['wall_seconds'] for r in runs), digits=0)} | "
                f"{wall / trainer_wall:.2f} | {fmt((r['samples'] / r['train_seconds'] for r in runs), digits=1)} | "
                f"{fmt((r['tokens'] / r['train_seconds'] for r in runs), digits=0)} | "
                f"{rate / 1e9:.1f} G ({100 * fraction:.0f}%) | {fmt((r['peak_rss_mb'] for r in runs), digits=0)} | "
                f"{fmt((r.get('inference_samples_per_second') for r in runs), digits=0)} | "
                f"{fmt((first_reaching(r['history'], target) for r in runs), digits=0)} | {len(runs)} |"
            )
        ours_score, ours_std, _ = mean_std(r["score"] for r in ours)
        base_score, base_std, _ = mean_std(r["score"] for r in trainer)
        noise = ((ours_std**2 + base_std**2) / 2) ** 0.5
        ratio = mean_std(r["wall_seconds"] for r in ours)[0] / trainer_wall
        seeds = min(len(ours), len(trainer))
        if seeds < 2:  # one seed has no spread: "within noise" cannot be judged, the wall time can
            verdict = f"{'met' if ratio <= 0.7 else 'missed'} on wall time; score not judged (1 seed)"
            noise_text = "1 seed"
        else:
            met = ours_score >= base_score - noise and ratio <= 0.7
            verdict, noise_text = ("met" if met else "missed"), f"pooled std {noise:.4f}"
        targets.append(
            f"| {model} {task} (`{line}`): full fine-tuning reaches the Trainer's score in ≤ 0.7× its wall time | "
            f"score {ours_score:.4f} vs {base_score:.4f} ({noise_text}), wall ratio {ratio:.2f} | {verdict} |"
        )
        # Against the highest and the lowest peak measured around each run: the verdict only when both agree.
        step_rates = [(flops_per_second(r, "step_seconds"), record_peaks(r, machine)) for r in ours]
        low = mean_std(rate / max(peaks) for rate, peaks in step_rates)[0]
        high = mean_std(rate / min(peaks) for rate, peaks in step_rates)[0]
        rate = mean_std(rate for rate, _ in step_rates)[0]
        share = f"{100 * low:.0f}%" if abs(high - low) < 0.005 else f"{100 * low:.0f}–{100 * high:.0f}%"
        verdict = "met" if low >= 0.6 else "missed" if high < 0.6 else "uncertain (the peak drifted)"
        targets.append(
            f"| {model} {task} (`{line}`): training matmul FLOP/s ≥ 60% of the measured peak | {rate / 1e9:.1f} GFLOP/s = "
            f"{share} of the peaks measured around the runs (optimizer-step time) | {verdict} |"
        )
    lines += [
        "",
        "FLOP/s counts matrix products only (`benchmarks/flops.py`: torch's FlopCounterMode on the model's real",
        "shapes, padded tokens included), as a fraction of the `torch.matmul` peaks measured around each run.",
        "hftransfer's rate is over its optimizer steps (evaluation and saving",
        "excluded); the Trainer reports only its whole `train_runtime`, evaluations included. Inference: the test",
        "split scored by each runner's own evaluation (metrics included).",
        "",
    ]
    return lines


def _layout(runs: list[dict]) -> str:
    """Processes × threads per process of a runner's runs (a dash where older records lack them)."""
    seen = {(r.get("processes") or 1, r.get("threads")) for r in runs}
    return ", ".join(f"{p} × {t}" if t else "–" for p, t in sorted(seen, key=str))


def strategies_section(groups: dict, targets: list[str]) -> list[str]:
    lines = [
        "## Transfer strategies",
        "",
        "Memory: *peak in training* is the process's peak resident memory when training ended (loading, the "
        "steps and the validation passes; not the final export, which for LoRA merges the adapter into a copy of "
        "the model, nor the test pass); *growth in steps* is the most resident memory sampled inside training "
        "steps (after the forward passes, after the update) minus what the process held when training began "
        "(the model, the data): what training itself adds — gradients, optimizer state, activations. The "
        "process peak counts everything up to exit. A dash: a run recorded before that measurement existed.",
        "",
        "| model | task | strategy | test score | trainable | s / epoch | speed-up per epoch vs full "
        "| peak RSS in training MiB | vs full | growth in steps MiB | vs full | process peak RSS MiB | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, task, name), runs in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1])):
        if name not in STRATEGY_LABELS or task == "multitask" or (model, task, "full") not in groups:
            continue
        full = groups[(model, task, "full")]
        full_epoch = mean_std(r["seconds_per_epoch"] for r in full)[0]
        epoch = mean_std(r["seconds_per_epoch"] for r in runs)[0]
        memory = {
            key: (mean_std(r.get(key) for r in runs)[0], mean_std(r.get(key) for r in full)[0])
            for key in ("train_peak_rss_mb", "train_rss_growth_mb", "peak_rss_mb")
        }
        cells = {key: _against_full(*memory[key]) for key in ("train_peak_rss_mb", "train_rss_growth_mb")}
        lines.append(
            f"| {model} | {task} | {STRATEGY_LABELS[name]} | {fmt(r['score'] for r in runs)} | "
            f"{100 * mean_std(r['trainable_fraction'] for r in runs)[0]:.3g}% | {epoch:.2f} | "
            f"{full_epoch / epoch:.1f}× | {cells['train_peak_rss_mb']} | {cells['train_rss_growth_mb']} | "
            f"{memory['peak_rss_mb'][0]:.0f} | {len(runs)} |"
        )
        if name == "frozen_linear":
            targets.append(
                f"| {model} {task}: frozen heads from the cache ≥ 50× faster per epoch than full | "
                f"{full_epoch / epoch:.0f}× | {'met' if full_epoch / epoch >= 50 else 'missed'} |"
            )
        if name.startswith(("frozen", "lora")):
            targets.append(_memory_target(model, task, name, memory))
    return [*lines, ""]


def allocator_paragraph(results: list[dict]) -> list[str]:
    """``benchmarks/training_memory.py``'s measurement: bytes in use by the allocator vs resident memory."""
    by_name = {r["variant"]: r for r in results}
    labels = {"full": "full fine-tuning", "lora0.1": "LoRA, dropout 0.1", "lora0": "LoRA, dropout 0"}
    cells = [
        f"{labels.get(name, name)} +{r['allocated_growth_mb']} MiB in use / +{r['rss_growth_mb']} MiB resident"
        for name, r in by_name.items()
    ]
    return [
        "What the steps add, as glibc's allocator counts bytes in use (`mallinfo2`) and as resident memory, "
        f"in fresh processes over {results[0]['steps']} steps of MiniLM-L6 on 16 sentences of 20-45 tokens "
        f"(`benchmarks/training_memory.py`): {'; '.join(cells)}. Resident memory also holds freed blocks the "
        "allocator keeps for reuse, so it over-states what training needs.",
        "",
    ]


def step_flops_section(result: dict, targets: list[str]) -> list[str]:
    """``benchmarks/step_flops.py``'s measurement: blocks of training steps alternating with matmul peaks."""
    blocks = result["blocks"]
    steady = blocks[1:]
    low, high = result["fraction_min"], result["fraction_max"]
    mean = result["fraction_mean"]
    if low >= 0.6 or high < 0.6:
        verdict = "met" if low >= 0.6 else "missed"
    else:
        verdict = (
            "met on average, not in every block" if mean >= 0.6 else "missed on average, met in some blocks"
        )
    targets.append(
        f"| {result['model']} ner: training matmul FLOP/s ≥ 60% of the peak measured seconds from the steps "
        f"(batch {result['batch_size']}) | {100 * mean:.1f}% ± {100 * result['fraction_std']:.1f}% over "
        f"{len(steady)} blocks of {result['block_steps']} steps ({100 * low:.1f}–{100 * high:.1f}%) | {verdict} |"
    )
    rows = [
        f"| {index} | {b['seconds']:.1f} | {b['gflops']:.1f} | {b['peaks_gflops'][0]:.1f} / "
        f"{b['peaks_gflops'][1]:.1f} | {100 * b['fraction']:.1f}%{' (warm-up, left out)' if index == 0 else ''} |"
        for index, b in enumerate(blocks)
    ]
    overrides = " ".join(result["overrides"]) or "none"
    return [
        "### Training FLOP/s against a peak measured seconds away",
        "",
        "The machine's matmul peak drifts within minutes, so the whole-run fraction above is bracketed by peaks "
        "taken minutes apart. `benchmarks/step_flops.py` alternates, in one process, blocks of the recipe's own "
        "training steps (`finetune_ner.py`'s preset, full fine-tuning) with 1-second peak measurements, and "
        "divides each block's matmul FLOP/s (counted per batch from its shape) by the mean of the peaks just "
        f"before and after it. Measured {result['measured']}, {result['threads']} threads, torch "
        f"{result['torch']}, batch {result['batch_size']}, overrides: {overrides}.",
        "",
        "| block | step seconds | GFLOP/s | peaks before / after | fraction |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def _against_full(value: float, full: float) -> str:
    """Two table cells: a memory figure and its ratio to full fine-tuning's ('–' where either is unknown)."""
    if math.isnan(value):
        return "– | –"
    return f"{value:.0f} | " + ("–" if math.isnan(full) else f"{value / full:.2f}×")


def _memory_target(model: str, task: str, name: str, memory: dict[str, tuple[float, float]]) -> str:
    """The verdict on the peak memory of training (the process peak for runs recorded before it existed), with
    the growth inside the steps alongside."""
    basis = "train_peak_rss_mb" if not any(map(math.isnan, memory["train_peak_rss_mb"])) else "peak_rss_mb"
    value, full = memory[basis]
    measured = f"{'peak in training' if basis == 'train_peak_rss_mb' else 'process peak'} {value:.0f} vs {full:.0f} MiB"
    growth, full_growth = memory["train_rss_growth_mb"]
    if not math.isnan(growth) and not math.isnan(full_growth):
        measured += f"; growth in steps {growth:.0f} vs {full_growth:.0f} MiB"
    return (
        f"| {model} {task}: {STRATEGY_LABELS[name]} peak memory below full fine-tuning | {measured} | "
        f"{'met' if value < full else 'missed'} |"
    )


def steps(values) -> str:
    """Step counts of the seeds: one number when they agree, else their mean."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return str(values[0]) if len(set(values)) == 1 else f"{sum(values) / len(values):.0f}"


MULTITASK_PARTS = {"per_task": "per-task AdamW", "head_lr": "heads at 5x the encoder's learning rate"}


def multitask_label(name: str) -> str:
    """``round_robin+per_task`` -> ``multitask, round_robin sampler, per-task AdamW``."""
    sampler, *parts = name.split("+")
    return ", ".join([f"multitask, {sampler} sampler", *(MULTITASK_PARTS.get(part, part) for part in parts)])


@dataclass
class Pairs:
    """Multitask runs matched with their own seed's two single-task runs (:func:`paired_differences`)."""

    seeds: dict[str, list[int]] = field(default_factory=dict)  # configuration -> seeds with all three runs
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # -> task -> points, per seed
    # configuration -> (multitask wall, the two single-task walls) of the seeds whose three runs shared a sitting
    walls: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


SITTING = timedelta(hours=3)  # runs that finished further apart met different machine speeds


def one_sitting(records: Iterable[dict]) -> bool:
    """Whether the runs finished within one sitting of each other (False when one does not say when)."""
    stamps = [record.get("finished") for record in records]
    if None in stamps:
        return False
    times = [datetime.strptime(stamp, "%Y-%m-%d %H:%M") for stamp in stamps]
    return max(times) - min(times) <= SITTING


def paired_differences(records: dict[str, dict]) -> Pairs:
    """Per multitask configuration, the seeds that have both single-task runs, and for each of them the multitask
    score minus the single-task score (points) and, where all three runs finished in one sitting, the wall times."""
    by_key = {tuple(key.split("/")): record for key, record in records.items()}
    multitask = sorted(
        (key for key in by_key if key[1] == "multitask"), key=lambda key: (key[2], int(key[3]))
    )
    pairs = Pairs()
    for key in multitask:
        model, _, name, seed = key
        record = by_key[key]
        singles = {task: by_key.get((model, task, "full", seed)) for task in ("ner", "sentiment")}
        if not all(singles.values()):
            continue
        pairs.seeds.setdefault(name, []).append(int(seed))
        for task, single in singles.items():
            pairs.scores.setdefault(name, {}).setdefault(task, []).append(
                100 * (record["score"][task] - single["score"])
            )
        if one_sitting([record, *singles.values()]):
            single_wall = sum(single["wall_seconds"] for single in singles.values())
            pairs.walls.setdefault(name, []).append((record["wall_seconds"], single_wall))
    return pairs


def _paired_target(model: str, name: str, pairs: Pairs) -> str:
    """The target row of one configuration from its per-seed differences (each seed against its own runs)."""
    deltas = {task: mean_std(values)[0] for task, values in pairs.scores[name].items()}
    walls = pairs.walls.get(name, [])
    if walls:
        multitask_wall = sum(w for w, _ in walls) / len(walls)
        single_wall = sum(s for _, s in walls) / len(walls)
        timing = f"wall {multitask_wall:.0f} vs {single_wall:.0f} s ({len(walls)} seeds made in one sitting)"
        faster = multitask_wall < single_wall
    else:
        timing, faster = "no wall times made in one sitting", False
    met = min(deltas.values()) >= -1 and faster
    seeds = ", ".join(map(str, pairs.seeds[name]))
    return (
        f"| {model} {multitask_label(name)}, back-to-back pairs (seeds {seeds}): no task > 1 point below "
        "single-task, less total time | "
        + ", ".join(f"{task} {delta:+.1f} pt" for task, delta in deltas.items())
        + f" (mean of per-seed differences); {timing} | {'met' if met else 'missed'} |"
    )


def multitask_section(
    groups: dict, targets: list[str], overhead: dict | None = None, paired: Pairs | None = None
) -> list[str]:
    """The multitask table; ``paired``: the extra runs made back to back (singles, then multitask, per seed)."""
    if paired:
        lines = [
            "### Back-to-back pairs",
            "",
            "The same comparison with each seed's three runs made one right after the other (two single-task runs, "
            "then the multitask run), so that each pair of wall times shares the machine's speed of the moment "
            "(`python benchmarks/suite.py --sections multitask --samplers proportional --seeds 4 5 "
            "--output-dir D`, records in `results/multitask_paired.json`). Later configurations reuse the same "
            "single-task runs (see the notes at the top for when each was made); each multitask run is compared "
            "with its own seed's single-task runs, and wall times only where all three ran in one sitting.",
            "",
        ]
    else:
        lines = [
            "## Multitask (one shared encoder) vs two single-task runs, same optimizer steps",
            "",
            "Each task keeps its single-task learning rate and, through sampling weights, its single-task share of "
            "the steps (proportional: weight = its epochs; round-robin: weight = its steps, exact). The single-task "
            "rows are the baseline section's runs, which may be re-run in a later sitting than the multitask runs: "
            "times in this table are not a comparison (the machine's speed drifts), the back-to-back pairs are.",
            "",
        ]
    if overhead:
        steps_done = sum(overhead["steps"].values())
        lines += [
            "Step cost, measured apart (`benchmarks/multitask_overhead.py`: the same batches in one process, the "
            "multitask model and two single-task models alternating): multitask / single-task time "
            f"{overhead['ratio_mean']:.3f} ± {overhead['ratio_std']:.3f} over {len(overhead['reps'])} repetitions "
            f"of {steps_done} steps. Whole runs made one after another differ by more than that as the machine's "
            "speed drifts.",
            "",
        ]
    lines += [
        "| model | runs | ner test F1 | sentiment test accuracy | steps ner / sentiment | train s (both tasks) "
        "| wall s (both tasks) | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in sorted({m for m, t, _ in groups if t == "multitask"}):
        singles = {t: groups.get((model, t, "full"), []) for t in ("ner", "sentiment")}
        have_singles = all(singles.values())
        if have_singles:
            single_train = [a["train_seconds"] + b["train_seconds"] for a, b in zip(*singles.values())]
            single_wall = [a["wall_seconds"] + b["wall_seconds"] for a, b in zip(*singles.values())]
            lines.append(
                f"| {model} | two single-task runs | {fmt(r['score'] for r in singles['ner'])} | "
                f"{fmt(r['score'] for r in singles['sentiment'])} | "
                f"{steps(r['steps'] for r in singles['ner'])} / {steps(r['steps'] for r in singles['sentiment'])} | "
                f"{fmt(single_train, digits=0)} | "
                f"{fmt(single_wall, digits=0)} | {len(singles['ner'])} |"
            )
        for name in sorted(n for m, t, n in groups if m == model and t == "multitask"):
            runs = groups[(model, "multitask", name)]
            if paired:
                if name in paired.scores:
                    targets.append(_paired_target(model, name, paired))
            elif have_singles:
                deltas = {
                    t: 100
                    * (mean_std(r["score"][t] for r in runs)[0] - mean_std(r["score"] for r in singles[t])[0])
                    for t in singles
                }
                # The shared single-task runs may be re-run in another sitting (a new baseline), and this VM's
                # speed drifts by 10-30% between sittings: only the back-to-back pairs compare wall times.
                targets.append(
                    f"| {model} {multitask_label(name)}: no task > 1 point below single-task | "
                    + ", ".join(f"{t} {d:+.1f} pt" for t, d in deltas.items())
                    + f"; wall times: see the back-to-back pairs | {'met' if min(deltas.values()) >= -1 else 'missed'} |"
                )
            lines.append(
                f"| {model} | {multitask_label(name)} | {fmt(r['score']['ner'] for r in runs)} | "
                f"{fmt(r['score']['sentiment'] for r in runs)} | "
                f"{steps((r.get('steps_per_task') or {}).get('ner') for r in runs)} / "
                f"{steps((r.get('steps_per_task') or {}).get('sentiment') for r in runs)} | "
                f"{fmt((r['train_seconds'] for r in runs), digits=0)} | "
                f"{fmt((r['wall_seconds'] for r in runs), digits=0)} | {len(runs)} |"
            )
    if paired:
        lines += [
            "",
            "Per seed, each multitask configuration minus the same seed's single-task runs, in points:",
            "",
        ]
        for name, tasks in sorted(paired.scores.items()):
            cells = []
            for task, values in tasks.items():
                mean, std, n = mean_std(values)
                error = f" ± {std / n**0.5:.1f} (standard error)" if n > 1 else ""
                cells.append(f"{task} {', '.join(f'{v:+.1f}' for v in values)}: mean {mean:+.1f}{error}")
            seeds = ", ".join(map(str, paired.seeds[name]))
            lines.append(f"- {multitask_label(name)} (seeds {seeds}): " + "; ".join(cells) + ".")
    return [*lines, ""]


def distill_section(groups: dict) -> list[str]:
    lines = [
        "## Distillation: a student of the teacher's layers, with and without the teacher",
        "",
        "| model | task | student | test score | teacher score | inference speed-up | parameters vs teacher | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (model, task, name), runs in sorted(groups.items()):
        if not name.startswith("student_"):
            continue
        lines.append(
            f"| {model} | {task} | {name.removeprefix('student_')} | {fmt(r['score'] for r in runs)} | "
            f"{fmt(r['teacher_score'] for r in runs)} | {fmt((r['speedup'] for r in runs), digits=2)}× | "
            f"{fmt((r['parameter_ratio'] for r in runs), digits=2)} | {len(runs)} |"
        )
    return [*lines, ""]


def plot(groups: dict, out: Path) -> list[str]:
    """Score by strategy (with std error bars) and validation score against training time (hftransfer vs Trainer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tasks = sorted({(m, t) for m, t, n in groups if n in STRATEGY_LABELS and t != "multitask"})
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 3.8), squeeze=False)
        for ax, (model, task) in zip(axes[0], tasks):
            names = [n for n in STRATEGY_LABELS if (model, task, n) in groups]
            stats = [mean_std(r["score"] for r in groups[(model, task, n)]) for n in names]
            ax.barh(names, [s[0] for s in stats], xerr=[s[1] for s in stats], color="tab:blue", alpha=0.8)
            ax.set(xlabel="test score (mean ± std over seeds)", title=f"{model} · {task}")
            ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "strategies.png", dpi=110)
        plt.close(fig)
        written.append("strategies.png")
    pairs = sorted({(m, t) for m, t, n in groups if n == "trainer" and (m, t, "full") in groups})
    if pairs:
        fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 3.8), squeeze=False)
        for ax, (model, task) in zip(axes[0], pairs):
            for name, color, label in (
                ("full", "tab:orange", "hftransfer"),
                ("trainer", "tab:gray", "Trainer"),
            ):
                for index, run in enumerate(groups[(model, task, name)]):
                    points = run["history"]
                    ax.plot(
                        [p["train_seconds"] for p in points],
                        [p["score"] for p in points],
                        marker="o",
                        color=color,
                        alpha=0.8,
                        label=label if index == 0 else None,
                    )
            ax.set(xlabel="training seconds", ylabel="validation score", title=f"{model} · {task}")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / "time_to_score.png", dpi=110)
        plt.close(fig)
        written.append("time_to_score.png")
    return written


def write_report(machine: dict, records: dict[str, dict], out: Path, quick: bool = False) -> Path:
    """Write ``out/RESULTS.md`` and ``out/results/*.png`` from the suite's records; returns the Markdown path."""
    groups = group(records)
    figures = out / "results"
    figures.mkdir(parents=True, exist_ok=True)
    targets: list[str] = []
    body = baseline_section(groups, machine, targets)
    step_flops_file = figures / "step_flops.json"
    if step_flops_file.exists() and not quick:
        body += step_flops_section(json.loads(step_flops_file.read_text()), targets)
    body += strategies_section(groups, targets)
    memory_file = figures / "training_memory.json"
    if memory_file.exists() and not quick:
        body += allocator_paragraph(json.loads(memory_file.read_text()))
    overhead_file = figures / "multitask_overhead.json"
    overhead = json.loads(overhead_file.read_text()) if overhead_file.exists() and not quick else None
    body += multitask_section(groups, targets, overhead)
    paired_file = figures / "multitask_paired.json"
    if paired_file.exists() and not quick:
        paired_records = json.loads(paired_file.read_text())["runs"]
        body += multitask_section(group(paired_records), targets, paired=paired_differences(paired_records))
    body += distill_section(groups)
    pictures = plot(groups, figures)
    header = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/suite.py` (raw records: `results/suite.json`)."
        + (" **Quick mode: a tiny model on toy data; the numbers check the harness only.**" if quick else ""),
        "",
        f"Machine: {machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}; measured dense "
        f"fp32 `torch.matmul` peak {peak_range(records, machine)}"
        + (f"; GPU {machine['gpu']}" if "gpu" in machine else "")
        + f". Started {machine['started']}.",
        "",
        # Observations about how and when the records were made, kept with them in suite.json ("machine": "notes").
        *(f"- {note}" for note in machine.get("notes", [])),
        *([""] if machine.get("notes") else []),
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *targets,
        "",
    ]
    images = [f"![{name}](results/{name})" for name in pictures]
    path = out / "RESULTS.md"
    atomic_write_text(path, "\n".join([*header, *body, *images, ""]))
    return path

"""Training FLOP/s as a fraction of the matmul peak, with the peak measured seconds (not minutes) from the steps.

    python benchmarks/step_flops.py                              # MiniLM-L6 full fine-tuning on WNUT-16
    python benchmarks/step_flops.py --blocks 8 --block-steps 30 train.batch_size=32

A shared VM's speed drifts: 1-second ``torch.matmul`` peaks taken minutes apart on this 2-core machine ranged from
76 to 169 GFLOP/s in one day, so the suite's whole-run figure (a run of several minutes against the peaks taken just
before and after it) can only bracket the fraction. Here one process alternates blocks of training steps with
peak measurements: each block's matmul FLOP/s is divided by the mean of the peaks just before and just after it.

The steps are the recipe's own: ``hftransfer.finetune.setup`` builds the run exactly as ``finetune_ner.py`` does
(model, length-grouped loader, AdamW, schedule, gradient clipping) and the training loop runs it; the peaks are taken
from the loop's step hook, outside the steps' own timer. FLOPs are counted per batch from its exact shape (matrix
products only: ``flops.sequence_flops``). Arguments after the options are recipe overrides. Writes
``benchmarks/results/step_flops.json`` (shown in ``RESULTS.md``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from flops import flops_coefficients, matmul_peak_flops  # noqa: E402

from hftransfer.config import parse_config  # noqa: E402
from hftransfer.finetune import setup  # noqa: E402
from hftransfer.utils import atomic_write_json  # noqa: E402

PRESET = HERE.parent / "recipes" / "configs" / "minilm" / "ner_full.yaml"


def significant(value: float) -> float:
    """Four significant digits: fixed decimals would round a toy model's milliseconds or MFLOP/s to zero."""
    return float(f"{value:.4g}")


def measure(args: argparse.Namespace, overrides: list[str], work: Path) -> dict:
    import torch

    total = args.blocks * args.block_steps
    config = parse_config(
        [
            f"output_dir={work / 'run'}",
            "train.trackers=[]",
            f"train.max_steps={total}",
            "train.eval_every_epoch=false",
            "train.log_every_steps=1000000",
            *overrides,
        ],
        default_config=PRESET,
    )
    run = setup(config, recipe="finetune_ner")
    loop = run.loop
    model_dir = work / "config"
    loop.accelerator.unwrap_model(loop.model).config.save_pretrained(model_dir)

    # Exact per batch: a sequence's matmul FLOPs are quadratic in its (padded) length.
    c0, c1, c2 = flops_coefficients(str(model_dir), config.task)
    flops = [0.0]  # matmul FLOPs of the steps so far
    loss_fn = loop.loss_fn

    def counted_loss(model: torch.nn.Module, batch: dict, state: object = None) -> object:
        rows, length = batch["input_ids"].shape
        flops[0] += rows * (c0 + c1 * length + c2 * length**2)
        return loss_fn(model, batch, state)

    marks: list[dict] = []  # at every block boundary: peak, step seconds and FLOPs so far

    def mark(state: object) -> None:
        marks.append(
            {
                "peak": matmul_peak_flops(size=args.peak_size, min_seconds=args.peak_seconds),
                "step_seconds": state.step_seconds,
                "flops": flops[0],
            }
        )

    # A strategy's own hook (e.g. gradual unfreezing) is kept; like the peaks, it runs outside the step timer.
    strategy_hook = loop.on_step_start

    def on_step_start(state: object) -> None:
        if state.step % args.block_steps == 0:
            mark(state)
        if strategy_hook is not None:
            strategy_hook(state)

    loop.loss_fn = counted_loss
    loop.on_step_start = on_step_start
    fit = run.loop.fit()
    mark(fit.state)  # after the last block (the final evaluation ran outside the step timer)

    blocks = []
    for before, after in zip(marks, marks[1:]):
        seconds = after["step_seconds"] - before["step_seconds"]
        rate = (after["flops"] - before["flops"]) / seconds
        peak = (before["peak"] + after["peak"]) / 2
        blocks.append(
            {
                "gflops": significant(rate / 1e9),
                "peaks_gflops": [significant(before["peak"] / 1e9), significant(after["peak"] / 1e9)],
                "fraction": significant(rate / peak),
                "seconds": significant(seconds),
            }
        )
    fractions = [block["fraction"] for block in blocks]
    steady = fractions[1:] or fractions  # the first block includes the allocator's and thread pool's warm-up
    return {
        "model": config.model.name_or_path,
        "task": config.task,
        "batch_size": config.train.batch_size,
        "overrides": overrides,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "block_steps": args.block_steps,
        "blocks": blocks,
        "fraction_mean": round(statistics.mean(steady), 4),
        "fraction_std": round(statistics.stdev(steady), 4) if len(steady) > 1 else 0.0,
        "fraction_min": min(steady),
        "fraction_max": max(steady),
        "measured": time.strftime("%Y-%m-%d %H:%M"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--block-steps", type=int, default=25)
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--peak-seconds", type=float, default=1.0)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "step_flops.json")
    args, overrides = parser.parse_known_args(argv)
    if args.blocks < 2:
        parser.error("--blocks must be at least 2 (the first block is warm-up)")
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, overrides, Path(tmp))
    for index, block in enumerate(result["blocks"]):
        note = "  (warm-up, left out)" if index == 0 else ""
        print(
            f"block {index}: {block['gflops']:.1f} GFLOP/s over {block['seconds']:.1f} s of steps; "
            f"peaks {block['peaks_gflops'][0]:.1f} / {block['peaks_gflops'][1]:.1f}: {block['fraction']:.1%}{note}"
        )
    print(
        f"training matmul FLOP/s / peak: {result['fraction_mean']:.1%} ± {result['fraction_std']:.1%} "
        f"(blocks 1-{len(result['blocks']) - 1}: {result['fraction_min']:.1%}-{result['fraction_max']:.1%})"
    )
    atomic_write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()

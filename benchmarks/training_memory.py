"""What training steps add to memory, as the allocator sees it and as the OS sees it: full fine-tuning vs LoRA.

    python benchmarks/training_memory.py                 # MiniLM-L6, 25 steps of 16 x 20-45 random tokens
    python benchmarks/training_memory.py --steps 60 --variants full lora0

Resident memory (RSS) over-states what training needs: glibc keeps freed blocks for reuse, so a process's RSS
after many steps reflects its allocation history as much as its live tensors. Each variant runs in a fresh
process and samples, after every forward pass and every update, both the RSS and glibc's count of bytes in use
(``mallinfo2``: ``uordblks + hblkhd``); the growth over what was held before the first step is printed for each and written to
``benchmarks/results/training_memory.json`` (shown in ``RESULTS.md``).
Linux with glibc only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hftransfer.utils import atomic_write_json  # noqa: E402 - light: no torch

VARIANTS = {"full": None, "lora0.1": 0.1, "lora0": 0.0}  # name -> LoRA adapter dropout (None: no LoRA)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def _allocated_mb() -> float:
    """Bytes glibc's malloc has handed out and not had back: in its arenas plus its separately mapped blocks."""
    info = _LIBC.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def measure(variant: str, steps: int) -> dict:
    import torch
    from transformers import AutoModelForTokenClassification

    from hftransfer.assets import resolve_model_name
    from hftransfer.config import TrainConfig
    from hftransfer.runs import current_rss_mb
    from hftransfer.training.optim import adamw, parameter_groups

    torch.manual_seed(0)
    rng = random.Random(0)
    model = AutoModelForTokenClassification.from_pretrained(resolve_model_name("minilm-l6"), num_labels=21)
    if VARIANTS[variant] is not None:
        from hftransfer.strategies.lora import apply_lora

        model = apply_lora(
            model, "token-classification", r=8, alpha=16.0, dropout=VARIANTS[variant],
            target_modules=["all-linear"], train_pooler=False,
        )  # fmt: skip
    model.train()
    optimizer = adamw(parameter_groups(model.named_parameters(), 0.01), TrainConfig())
    batches = []
    for _ in range(steps):  # WNUT-16-like lengths: 16 sentences of 20-45 tokens
        ids = torch.randint(1000, 30000, (16, rng.randint(20, 45)))
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids % 21})
    before = {"rss": current_rss_mb(), "allocated": _allocated_mb()}
    most = {"rss": 0.0, "allocated": 0.0}

    def sample() -> None:
        most["rss"] = max(most["rss"], current_rss_mb())
        most["allocated"] = max(most["allocated"], _allocated_mb())

    for batch in batches:
        loss = model(**batch).loss
        sample()  # activations alive
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        sample()  # gradients and optimizer state
        optimizer.zero_grad(set_to_none=True)
    return {
        "variant": variant,
        "steps": steps,
        "rss_growth_mb": round(most["rss"] - before["rss"]),
        "allocated_growth_mb": round(most["allocated"] - before["allocated"]),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one variant in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.steps)))
        return []
    results = []
    for variant in args.variants:  # a fresh process each: memory history must not carry over
        output = subprocess.run(
            [sys.executable, __file__, "--one", variant, "--steps", str(args.steps)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    out = Path(__file__).resolve().parent / "results" / "training_memory.json"
    atomic_write_json(out, results)
    full = next((r for r in results if r["variant"] == "full"), None)
    if full:
        for r in results:
            print(
                f"{r['variant']:>8}: allocated +{r['allocated_growth_mb']} MiB "
                f"({r['allocated_growth_mb'] / full['allocated_growth_mb']:.2f}x full), RSS +{r['rss_growth_mb']} MiB "
                f"({r['rss_growth_mb'] / full['rss_growth_mb']:.2f}x full)"
            )
    return results


if __name__ == "__main__":
    main()

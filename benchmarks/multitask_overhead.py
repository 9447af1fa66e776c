"""Does a multitask step cost more than a single-task step? An in-process A/B on the real assets.

    python benchmarks/multitask_overhead.py                  # MiniLM-L6, the default multitask preset's data
    python benchmarks/multitask_overhead.py --reps 6 --ner-steps 60 --sentiment-steps 38

Whole recipe runs cannot answer this on a shared CPU: their wall times drift by 10-30% over an hour, more than
any overhead of interest. Here one process trains, on the *same* batches (the first ones of each task's training
loader, as the multitask preset tokenises and batches them):

- ``singles``: a NER token model with its own AdamW over the NER batches, then a sentiment model with its own
  AdamW over the sentiment batches (what two single-task runs do per step);
- ``multitask``: the :class:`~hftransfer.multitask.model.MultitaskModel` of the preset (one shared encoder, both
  heads, one AdamW) over the same batches in a random interleaved order, each step scaled to its task's
  learning rate, as the proportional sampler would draw them.

The two variants alternate (``singles`` first on even repetitions, ``multitask`` first on odd ones) so slow drift
of the machine's speed affects both alike; the report gives each repetition's ratio and their mean. Steps are the
loop's: summed cross-entropy over labelled items, backward, gradient clipping, fused AdamW, ``zero_grad``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hftransfer.data.batching import count_items  # noqa: E402
from hftransfer.evaluation.inference import model_inputs  # noqa: E402
from hftransfer.modeling.build import build_model  # noqa: E402
from hftransfer.multitask.config import parse_multitask_config  # noqa: E402
from hftransfer.multitask.run import setup  # noqa: E402
from hftransfer.objectives.task import summed_cross_entropy  # noqa: E402
from hftransfer.training.optim import adamw, parameter_groups, scaled_learning_rate  # noqa: E402

PRESET = (
    Path(__file__).resolve().parents[1] / "recipes" / "configs" / "minilm" / "multitask_ner_sentiment.yaml"
)


def train_step(model, optimizer, batch, task: str | None = None, lr_factor: float = 1.0) -> None:
    inputs = model_inputs(batch)
    logits = (model(task=task, **inputs) if task else model(**inputs)).logits
    loss = summed_cross_entropy(logits, batch["labels"]) / count_items(batch).clamp(min=1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    with scaled_learning_rate(optimizer, lr_factor):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--ner-steps", type=int, default=60)
    parser.add_argument("--sentiment-steps", type=int, default=38)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "multitask_overhead.json"
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_multitask_config([f"output_dir={tmp}/run", "train.trackers=[]"], PRESET)
        run = setup(config)
        multitask = run.loop.model
        loaders = run.loop.train_loader.loaders
        steps = {"ner": args.ner_steps, "sentiment": args.sentiment_steps}
        batches = {name: list(islice(iter(loaders[name]), steps[name])) for name in steps}
        specs = run.extras["specs"]
        singles = {
            name: build_model(config.model, specs[name].task, run.data[name].label_names) for name in steps
        }
    lr_factor = {name: (specs[name].lr or config.train.lr) / config.train.lr for name in steps}
    single_optimizers = {
        name: adamw(parameter_groups(model.named_parameters(), config.train.weight_decay), config.train)
        for name, model in singles.items()
    }
    for name, optimizer in single_optimizers.items():
        for group in optimizer.param_groups:
            group["lr"] *= lr_factor[name]
    multitask_optimizer = adamw(
        parameter_groups(multitask.named_parameters(), config.train.weight_decay), config.train
    )
    order = [name for name in steps for _ in range(steps[name])]
    random.Random(0).shuffle(order)
    for model in (*singles.values(), multitask):
        model.train()

    def run_singles() -> float:
        started = time.perf_counter()
        for name, model in singles.items():
            for batch in batches[name]:
                train_step(model, single_optimizers[name], batch)
        return time.perf_counter() - started

    def run_multitask() -> float:
        position = dict.fromkeys(steps, 0)
        started = time.perf_counter()
        for name in order:
            batch = batches[name][position[name]]
            position[name] += 1
            train_step(multitask, multitask_optimizer, batch, task=name, lr_factor=lr_factor[name])
        return time.perf_counter() - started

    run_singles(), run_multitask()  # warm-up: allocator, oneDNN primitives, lazy optimizer state
    rows = []
    for rep in range(args.reps):
        variants = [("singles", run_singles), ("multitask", run_multitask)]
        if rep % 2:
            variants.reverse()
        seconds = {name: fn() for name, fn in variants}
        rows.append({**seconds, "ratio": seconds["multitask"] / seconds["singles"]})
        print(
            f"rep {rep}: singles {seconds['singles']:.1f} s, multitask {seconds['multitask']:.1f} s, "
            f"ratio {rows[-1]['ratio']:.3f}",
            flush=True,
        )
    ratios = [row["ratio"] for row in rows]
    summary = {
        "steps": steps,
        "threads": torch.get_num_threads(),
        "reps": rows,
        "ratio_mean": statistics.mean(ratios),
        "ratio_std": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
    }
    print(
        f"multitask / singles step time: {summary['ratio_mean']:.3f} ± {summary['ratio_std']:.3f} "
        f"over {args.reps} alternating repetitions of {sum(steps.values())} steps"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

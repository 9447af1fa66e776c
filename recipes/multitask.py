"""Multitask fine-tuning: one shared encoder, one head per task, single-task batches drawn by a task sampler.

    accelerate launch recipes/multitask.py                    # MiniLM-L6 on WNUT-16 NER + Rotten Tomatoes, offline
    accelerate launch recipes/multitask.py sampler.name=uniform train.epochs=2
    accelerate launch recipes/multitask.py --config my_tasks.yaml

Tasks are declared in YAML (``tasks: [{name, task, data: {...}, loss_weight, metric}, ...]``); every other option is
a ``key=value`` override of ``hftransfer/multitask/config.py``. The run directory receives ``model/<task>/`` for every
task (an ordinary transformers model that ``pipeline`` loads) and ``model/tasks.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hftransfer.flow import evaluate_best, finish, train
from hftransfer.multitask.config import parse_multitask_config
from hftransfer.multitask.run import setup
from hftransfer.utils import run_main

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "minilm" / "multitask_ner_sentiment.yaml"


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_multitask_config(argv, default_config=DEFAULT_CONFIG)
    run = setup(config)
    train(run)
    metrics = evaluate_best(run)
    finish(run)
    return metrics


if __name__ == "__main__":
    run_main(main)

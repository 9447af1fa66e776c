"""Continued pre-training of an encoder with masked language modelling: DAPT on unlabelled domain text, or TAPT on
a task's own training texts (Gururangan et al., 2020), before fine-tuning.

    accelerate launch recipes/pretrain_mlm.py                          # MiniLM-L6 on the Rotten Tomatoes synopses
    accelerate launch recipes/pretrain_mlm.py data.dataset=rotten_tomatoes output_dir=runs/tapt   # TAPT
    python recipes/pretrain_mlm.py data.train_file=domain.txt model.name_or_path=mpnet-base
    accelerate launch recipes/finetune_classifier.py model.name_or_path=runs/tapt/model   # then fine-tune

The run directory receives config.yaml, metrics.jsonl, metrics.json (validation MLM loss and perplexity),
checkpoints/ and model/ (loads with ``AutoModelForMaskedLM``; the best model by validation loss). An encoder saved
without an MLM head (the packaged ones) gets a new one whose decoder is tied to the word embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hftransfer.config import parse_config
from hftransfer.flow import evaluate_best, finish, train
from hftransfer.pretrain.run import PretrainConfig, setup
from hftransfer.utils import run_main

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "minilm" / "pretrain_mlm.yaml"


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(argv, default_config=DEFAULT_CONFIG, schema=PretrainConfig)
    run = setup(config, recipe="pretrain_mlm")
    train(run)
    metrics = evaluate_best(run)
    finish(run)
    return metrics


if __name__ == "__main__":
    run_main(main)

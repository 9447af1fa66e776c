"""Fine-tune a pretrained encoder for text classification, single texts or sentence pairs.

    accelerate launch recipes/finetune_classifier.py                   # MiniLM-L6 on Rotten Tomatoes, offline
    accelerate launch recipes/finetune_classifier.py --config recipes/configs/minilm/pair_classification.yaml \\
        data.train_file=train.jsonl data.validation_file=dev.jsonl
    python recipes/finetune_classifier.py data.dataset=reviews.csv data.text_column=review data.label_column=stars

Sentence pairs: set ``data.text_pair_column`` (e.g. ``hypothesis``). The exported model loads with
``pipeline("text-classification", model=<run>/model)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hftransfer.config import parse_config
from hftransfer.errors import ConfigError
from hftransfer.finetune import setup
from hftransfer.flow import evaluate_best, finish, train
from hftransfer.utils import run_main

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "minilm" / "classifier_full.yaml"


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(argv, default_config=DEFAULT_CONFIG)
    if config.task != "sequence-classification":
        raise ConfigError(
            f"task={config.task!r}: this recipe trains sequence classification; use finetune_ner.py"
        )
    run = setup(config, recipe="finetune_classifier")
    train(run)
    metrics = evaluate_best(run)
    finish(run)
    return metrics


if __name__ == "__main__":
    run_main(main)

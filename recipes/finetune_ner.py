"""Fine-tune a pretrained encoder for named-entity recognition (token classification).

    accelerate launch recipes/finetune_ner.py                          # MiniLM-L6 on WNUT-16, offline
    accelerate launch recipes/finetune_ner.py --config my.yaml train.lr=1e-4
    python recipes/finetune_ner.py data.train_file=train.conll data.validation_file=dev.conll model.name_or_path=bert-base-cased

Options are ``key=value`` overrides of the fields in ``hftransfer/config.py``; ``--help`` lists them all.
The run directory receives config.yaml, metrics.jsonl, metrics.json, checkpoints/ and model/ (loads with
``pipeline("token-classification", model=<run>/model, aggregation_strategy="simple")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hftransfer.config import parse_config
from hftransfer.errors import ConfigError
from hftransfer.finetune import setup
from hftransfer.flow import evaluate_best, finish, train
from hftransfer.utils import run_main

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "minilm" / "ner_full.yaml"


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(argv, default_config=DEFAULT_CONFIG)
    if config.task != "token-classification":
        raise ConfigError(
            f"task={config.task!r}: this recipe trains token classification; use finetune_classifier.py"
        )
    run = setup(config, recipe="finetune_ner")
    train(run)
    metrics = evaluate_best(run)
    finish(run)
    return metrics


if __name__ == "__main__":
    run_main(main)

"""Label a file with an exported model and write the predictions.

    python recipes/predict.py model=runs/finetune_ner-.../model input=tweets.txt output=tweets.preds.jsonl
    python recipes/predict.py model=runs/finetune_ner-.../model input=test.conll output=test.preds.conll
    python recipes/predict.py model=runs/finetune_classifier-.../model input=reviews.csv output=preds.jsonl data.text_column=review

Input: plain text (one sentence/text per line), CoNLL, JSON/JSONL or CSV/TSV (column names as in ``data.*``).
When the input carries gold tags/labels, the predictions are scored and the metrics written next to the output.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from hftransfer.config import DataConfig, normalise_overrides
from hftransfer.errors import ConfigError
from hftransfer.export.long_texts import named_window_options
from hftransfer.predict import predict_file
from hftransfer.utils import run_main


@dataclass
class PredictConfig:
    """What to predict with which model."""

    model: str
    """A model directory (e.g. a run's ``model/``), an offline alias or a Hub id."""
    input: str
    """File to label."""
    output: str
    """Where to write predictions (.jsonl, or .conll for NER)."""
    batch_size: int = 64
    """Examples per forward pass."""
    max_length: int | None = None
    """Tokens per window; default: the training run's for a model trained on windows, else the model's maximum."""
    cpu: bool = False
    """Run on CPU even when a GPU is present."""
    data: DataConfig = field(default_factory=lambda: DataConfig(train_file="-"))
    """Column names and file format of the input (``data.text_column``, ``data.format``, ...)."""


def main(argv: Sequence[str] | None = None) -> dict | None:
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(prog="predict.py", exit_on_error=False)
    parser.add_class_arguments(PredictConfig, nested_key=None, fail_untyped=True)
    argv = normalise_overrides(sys.argv[1:] if argv is None else argv)
    try:
        init = parser.instantiate(parser.parse_args(argv))
    except ArgumentError as err:
        raise ConfigError(f"config: {' '.join(str(err).split())}") from None
    config = PredictConfig(**{k: v for k, v in vars(init).items() if k in PredictConfig.__dataclass_fields__})
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    predictions = predict_file(
        config.model,
        config.input,
        config.output,
        config.data,
        batch_size=config.batch_size,
        max_length=config.max_length,
        cpu=config.cpu,
        **named_window_options(argv, config.data),
    )
    print(f"wrote {len(predictions.rows)} predictions to {config.output}")
    if predictions.metrics is not None:
        headline = {k: v for k, v in predictions.metrics.items() if "/" not in k}
        print(json.dumps(headline, indent=2))
    return predictions.metrics


if __name__ == "__main__":
    run_main(main)

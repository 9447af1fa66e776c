"""``hftransfer predict`` and ``hftransfer evaluate``: label a file with a trained model, and score it.

    hftransfer predict runs/ner/model tweets.txt tweets.preds.jsonl
    hftransfer predict runs/clf/model reviews.csv preds.jsonl data.text_column=review --batch-size 128
    hftransfer evaluate runs/ner/model test.conll --output test.preds.conll | jq .f1
    hftransfer predict runs/ner/onnx tweets.txt tweets.preds.jsonl --backend onnx-int8   # after hftransfer export

Both read every format the recipes read (``data.*`` overrides name the columns) through
:func:`hftransfer.predict.predict_file`, so a run's ``model/``, a peft ``adapter/`` or a frozen encoder + head
export predicts exactly as it did in training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigError, DataError


def say(line: str) -> None:
    # The library has no print() (ruff T20); the command's output goes through here.
    sys.stdout.write(line + "\n")


def data_config(overrides: Sequence[str]) -> Any:
    """A ``DataConfig`` for reading a file to label, from ``data.*`` overrides (parsed like the recipes')."""
    from jsonargparse import ArgumentError, ArgumentParser

    from hftransfer.config import DataConfig, normalise_overrides

    parser = ArgumentParser(prog="hftransfer", exit_on_error=False)
    parser.add_class_arguments(DataConfig, nested_key="data", fail_untyped=True)
    # the file to read is given on the command line; train_file only satisfies DataConfig's "some source" check
    parser.set_defaults({"data.train_file": "-"})
    try:
        init = parser.instantiate(parser.parse_args(normalise_overrides(overrides)))
    except ArgumentError as err:
        raise ConfigError(f"config: {' '.join(str(err).split())}") from None
    return init.data


def predict(args: argparse.Namespace, input_path: str, output_path: str) -> Any:
    """Run :func:`~hftransfer.predict.predict_file` with the command's options; returns its ``Predictions``."""
    import logging

    data = data_config(args.overrides)  # a mistyped override fails before torch and the model load
    from hftransfer.export.long_texts import named_window_options
    from hftransfer.predict import predict_file

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return predict_file(
        args.model,
        input_path,
        output_path,
        data,
        batch_size=args.batch_size,
        max_length=args.max_length,
        cpu=args.cpu,
        backend=args.backend,
        decoding=args.decoding,
        **named_window_options(args.overrides, data),
    )


def run_predict(args: argparse.Namespace) -> int:
    say_written(predict(args, args.input, args.output), args.output)
    return 0


def say_written(predictions: Any, output: str) -> None:
    """Where the predictions went, and their headline metrics when they were scored."""
    say(f"wrote {len(predictions.rows)} predictions to {output}")
    if predictions.metrics is not None:
        headline = {k: v for k, v in predictions.metrics.items() if "/" not in k}  # no per-label entries
        say(json.dumps(headline, indent=2))


def run_evaluate(args: argparse.Namespace) -> int:
    output = args.output
    if output is None:
        handle, output = tempfile.mkstemp(prefix="hftransfer-evaluate-", suffix=".jsonl")
        os.close(handle)
    predictions = predict(args, args.data_file, output)
    if predictions.metrics is None:
        if args.output is None:
            Path(output).unlink(missing_ok=True)
        raise DataError(f"{args.data_file} has no gold labels")
    # stdout is the metrics JSON alone (pipe it to jq); where the predictions went is a side note on stderr
    sys.stderr.write(f"wrote {len(predictions.rows)} predictions to {output}\n")
    say(json.dumps(predictions.metrics, indent=2))
    return 0


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64, help="examples per forward pass (default 64)")
    parser.add_argument(
        "--max-length",
        type=int,
        help="tokens per window (default: the training run's for a model trained on windows, else the model's maximum)",
    )
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx", "onnx-int8"],
        default="auto",
        help="torch, or ONNX Runtime with an `hftransfer export` (onnx: fp32, onnx-int8); auto (default): ONNX "
        "for an export directory, else torch",
    )
    parser.add_argument(
        "--decoding",
        choices=["argmax", "iob2", "crf"],
        help="NER tags: argmax per word, iob2 (the best valid IOB2 sequence), or crf (Viterbi with the model's "
        "crf.safetensors, from a model.head=crf run); default: what the run used (model.decoding / model.head)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="data.KEY=VALUE",
        help="column names and format of the file, e.g. data.text_column=review data.format=csv",
    )


def add_predict(commands: Any) -> None:
    parser = commands.add_parser(
        "predict",
        help="label a file with a trained model",
        description="Label a text/CoNLL/JSON/JSONL/CSV file. When it has gold labels, the predictions are "
        "scored: the headline metrics are printed and all of them written to OUTPUT.metrics.json.",
    )
    parser.add_argument("model", metavar="MODEL", help="a run's model/ or adapter/ directory, or a Hub id")
    parser.add_argument("input", metavar="INPUT", help="file to label")
    parser.add_argument("output", metavar="OUTPUT", help="predictions file (.jsonl, or .conll for NER)")
    add_prediction_options(parser)
    parser.set_defaults(handler=run_predict, parser=parser)


def add_evaluate(commands: Any) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="score a model on a labelled file",
        description="Predict a labelled file and print all metrics as JSON on stdout.",
    )
    parser.add_argument("model", metavar="MODEL", help="a run's model/ or adapter/ directory, or a Hub id")
    parser.add_argument("data_file", metavar="DATA_FILE", help="labelled CoNLL/JSON/JSONL/CSV file")
    parser.add_argument(
        "--output", metavar="FILE", help="where to write the predictions (default: a temp file)"
    )
    add_prediction_options(parser)
    parser.set_defaults(handler=run_evaluate, parser=parser)


def add_parsers(commands: Any) -> None:
    """Register ``predict`` and ``evaluate`` on the top-level subcommands."""
    add_predict(commands)
    add_evaluate(commands)

"""``hftransfer zero-shot``: label a file among labels named on the command line, with no training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hftransfer.cli_predict import say
from hftransfer.errors import ConfigError, DataError


def labels_from(args: argparse.Namespace) -> Any:
    """The labels: ``--labels`` names, or ``--label-file`` (JSON ``{name: description or [descriptions]}``)."""
    if bool(args.labels) == bool(args.label_file):
        raise ConfigError(
            "zero-shot: give the labels either as --labels NAME ... or as --label-file FILE.json"
        )
    if args.labels:
        return args.labels
    path = Path(args.label_file)
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"--label-file {path}: {' '.join(str(err).split())}") from None
    if not isinstance(labels, dict):
        raise DataError(
            f"--label-file {path}: expected a JSON object {{label: description or [descriptions]}}"
        )
    return labels


def run_zero_shot(args: argparse.Namespace) -> int:
    from hftransfer.cli_predict import data_config, say_written
    from hftransfer.data.sources import read_unlabelled
    from hftransfer.predict import Predictions, write_predictions
    from hftransfer.zeroshot import ZeroShotClassifier, describe

    labels = labels_from(args)
    names = list(describe(labels, args.template))  # bad labels or template fail before the model loads
    data = data_config(args.overrides)
    examples = read_unlabelled(args.input, "sequence-classification", data)
    classifier = ZeroShotClassifier(
        args.model, template=args.template, batch_size=args.batch_size, cpu=args.cpu
    )
    rows = classifier.predict(examples["text"], labels, none_below=args.none_below)
    gold = examples["label"] if "label" in examples.column_names else None
    for row, label in zip(rows, gold or []):
        row["gold_label"] = label
    predictions = Predictions(rows, score(rows, gold, names) if gold is not None else None)
    write_predictions(predictions, args.output)
    say_written(predictions, args.output)
    return 0


def score(rows: list[dict], gold: list, names: list[str]) -> dict | None:
    """Accuracy and F1 of the rows against ``gold`` (None, with a note, when a gold label is not among ``names``)."""
    from hftransfer.evaluation.metrics import sequence_classification_metrics

    unknown = sorted(set(map(str, gold)) - set(names))
    if unknown:
        say(f"gold labels {unknown} are not among the labels: predictions not scored")
        return None
    # "none" predictions count as wrong: a class of its own that no gold label has.
    names = names + sorted({row["label"] for row in rows} - set(names))
    index = {name: i for i, name in enumerate(names)}
    return sequence_classification_metrics(
        [index[str(g)] for g in gold], [index[r["label"]] for r in rows], names
    )


def add_parser(commands: Any) -> None:
    from hftransfer.zeroshot import DEFAULT_TEMPLATE

    parser = commands.add_parser(
        "zero-shot",
        help="label texts among labels you name, with no training",
        description="Label a text/JSON/JSONL/CSV file among the given labels by similarity to their descriptions "
        "(a sentence encoder, no training). With gold labels in the file the predictions are scored.",
    )
    parser.add_argument("input", metavar="INPUT", help="file to label")
    parser.add_argument("output", metavar="OUTPUT", help="predictions (.jsonl)")
    parser.add_argument("--labels", nargs="+", metavar="NAME", help="label names, put into --template")
    parser.add_argument(
        "--label-file", metavar="FILE", help='JSON {"label": "description" or [descriptions]}'
    )
    parser.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        help=f"description of a named label (default {DEFAULT_TEMPLATE!r})",
    )
    parser.add_argument(
        "--none-below",
        type=float,
        metavar="SIMILARITY",
        help='label a text "none" when no label is this similar (ZeroShotClassifier.calibrate chooses it)',
    )
    parser.add_argument("--model", default="minilm-l6", help="sentence encoder: alias, directory or Hub id")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    parser.add_argument(
        "overrides", nargs="*", metavar="data.KEY=VALUE", help="column names and format of the file"
    )
    parser.set_defaults(handler=run_zero_shot, parser=parser)

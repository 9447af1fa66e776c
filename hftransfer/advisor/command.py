"""``hftransfer rank``: which encoder and which layer transfer best to a labelled task, before any fine-tuning.

    hftransfer rank ner --encoders minilm-l6 mpnet-base minilm-l3          # WNUT-16, the NER preset's data
    hftransfer rank classifier data.dataset=drug_reviews --out runs/rank-drugs
    hftransfer rank my.yaml --estimators logme linear_probe --sort-by linear_probe

The data is whatever the recipe's config reads (a preset, a YAML config, ``data.*`` overrides). The table goes to
the console; ``ranking.json`` and ``ranking.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigError

PRESETS = {"ner": "ner_full.yaml", "classifier": "classifier_full.yaml"}
ESTIMATOR_NAMES = ("logme", "h_score", "knn", "linear_probe")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def default_encoders() -> list[str]:
    """The packaged encoders that are installed (none is downloaded or unpacked to find out)."""
    from hftransfer.asset_table import ENCODERS
    from hftransfer.assets import is_available

    return [name for name in ENCODERS if is_available(name)]


def preset_path(name: str) -> Path:
    """A recipe name (``ner``, ``classifier``) -> its MiniLM preset; a YAML path -> itself."""
    if name in PRESETS:
        from hftransfer.cli import recipes_dir

        return recipes_dir() / "configs" / "minilm" / PRESETS[name]
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"{name}: neither {' nor '.join(PRESETS)} nor an existing YAML config file")
    return path


def max_examples_value(text: str) -> int | str:
    """``--max-examples``: a number, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def run_rank(args: argparse.Namespace) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("rank runs in one process; start it without accelerate launch")
    unknown = [name for name in args.estimators if name not in ESTIMATOR_NAMES]
    if unknown:
        raise ConfigError(f"--estimators {' '.join(unknown)}: expected some of {', '.join(ESTIMATOR_NAMES)}")
    if args.sort_by is not None and args.sort_by not in args.estimators:
        raise ConfigError(f"--sort-by {args.sort_by}: not among --estimators ({', '.join(args.estimators)})")
    for flag, value in (("--max-examples", args.max_examples), ("--max-items", args.max_items)):
        if isinstance(value, int) and value < 10:
            raise ConfigError(f"{flag} {value}: expected at least 10")
    preset = preset_path(args.config)

    from hftransfer import console
    from hftransfer.advisor.ranking import rank
    from hftransfer.advisor.report import PLOT_HINT, plot_ranking, save_ranking, table_lines
    from hftransfer.config import parse_config

    console.setup_logging(True)
    config = parse_config(list(args.overrides), default_config=preset)
    encoders = args.encoders or default_encoders()
    if not encoders:
        raise ConfigError("no encoder to rank: pass --encoders (aliases, Hub ids or directories)")
    ranking = rank(
        config,
        encoders,
        estimators=args.estimators,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        max_items=args.max_items,
        seed=args.seed,
    )
    out = Path(args.out or Path("runs") / f"rank-{preset.stem}")
    for line in table_lines(ranking, args.sort_by):
        say(line)
    say(f"ranking: {save_ranking(ranking, out)}")
    if not args.no_plot:
        try:
            say(f"plot: {plot_ranking(ranking, out / 'ranking.png')}")
        except ImportError:
            say(f"plot: skipped ({PLOT_HINT})")
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "rank",
        help="rank encoders and layers for a labelled task (LogME, H-score, kNN, linear probe)",
        description="Encode the task's training and validation data once per encoder (every layer, through the "
        "frozen strategy's feature cache) and score each encoder x layer with transferability estimators: no "
        "fine-tuning. key=value options override the config (e.g. data.dataset=drug_reviews).",
    )
    parser.add_argument(
        "config",
        metavar="RECIPE_OR_CONFIG",
        help="ner, classifier, or a YAML config: where the data comes from",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (data.*, task)")
    parser.add_argument(
        "--encoders",
        nargs="+",
        metavar="NAME",
        help="aliases, Hub ids or local directories (default: every packaged encoder installed)",
    )
    parser.add_argument(
        "--estimators",
        nargs="+",
        default=list(ESTIMATOR_NAMES),
        metavar="NAME",
        help=f"any of {', '.join(ESTIMATOR_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--sort-by", metavar="NAME", help="the estimator the table is sorted by (default: the first)"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="where ranking.json and ranking.png go (default runs/rank-<config>)"
    )
    parser.add_argument(
        "--max-examples",
        type=max_examples_value,
        default="auto",
        metavar="N",
        help="examples encoded per split, a seeded sample (default auto: 500, and at most half the training set "
        "unless that is under 250)",
    )
    parser.add_argument(
        "--max-items",
        type=int,
        default=10000,
        metavar="N",
        help="labelled words (NER) or texts scored per split (default 10000)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="encoding batch size (default 64)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and estimators (default 0)")
    parser.add_argument("--no-plot", action="store_true", help="do not write ranking.png")
    parser.set_defaults(handler=run_rank, parser=parser)

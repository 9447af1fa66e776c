"""``hftransfer tune``: search a recipe's hyper-parameters with optuna, one in-process run per trial.

    hftransfer tune recipes/configs/minilm/ner_full.yaml --trials 8          # space: ner_full.tune.yaml next to it
    hftransfer tune my.yaml --trials 20 --space my_space.yaml --study-dir runs/tune-my train.epochs=3
    accelerate launch recipes/finetune_ner.py --config runs/tune-ner_full/best.yaml train.seed=1

Re-running the same command continues the study in ``--study-dir`` until it holds N finished trials.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigError

INSTALL_HINT = 'hyper-parameter search needs optuna: pip install "hftransfer[tune]"'
SPACE_SUFFIXES = (".tune.yaml", ".tune.yml")


def require_optuna() -> None:
    """Raises ConfigError (one line with the install command) when optuna is not installed."""
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError(INSTALL_HINT)


def default_space(config: Path) -> Path:
    """``<preset>.tune.yaml`` (or ``.tune.yml``) next to the preset.

    Raises:
        ConfigError: neither exists.
    """
    stem = config.name.removesuffix(config.suffix)
    for suffix in SPACE_SUFFIXES:
        candidate = config.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{config}: no search space next to it ({stem}{SPACE_SUFFIXES[0]}); write one (docs/tuning.md) or pass "
        "--space FILE"
    )


def run_tune(args: argparse.Namespace) -> int:
    require_optuna()  # before torch loads: one line naming the extra
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "tune runs its trials one after another in one process; start it without accelerate launch"
        )
    if args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: expected at least 1")
    config = Path(args.config)
    if not config.is_file():
        raise ConfigError(f"{config}: config file not found")

    from hftransfer import console
    from hftransfer.tune.flows import recipe_flow
    from hftransfer.tune.report import table_lines
    from hftransfer.tune.space import load_space
    from hftransfer.tune.study import TuneRequest, run_study

    console.setup_logging(True)
    flow = recipe_flow(config, args.recipe)
    request = TuneRequest(
        config=config,
        flow=flow,
        space=load_space(args.space or default_space(config)),
        trials=args.trials,
        study_dir=Path(args.study_dir or Path("runs") / f"tune-{config.stem}"),
        overrides=list(args.overrides),
        keep_models=args.keep_models,
    )
    result = run_study(request)
    lines = [
        *table_lines(result.rows, result.metric, result.best_trial),
        f"trials: {request.study_dir / 'trials.csv'}",
    ]
    if result.best_preset is not None:
        lines.append(
            f"best: {result.best_preset} (accelerate launch recipes/{flow.script.name} --config {result.best_preset})"
        )
    # The library has no print() (ruff T20); the command's output goes to stdout here.
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def add_parser(commands: Any) -> None:
    """Register ``tune`` on the top-level subcommands."""
    from hftransfer.cli import RECIPES

    parser = commands.add_parser(
        "tune",
        help="search hyper-parameters with optuna (pruning, resumable)",
        description="Run N trials of the recipe CONFIG is for, each with values drawn from a search space, in this "
        "process; stop a trial early when its validation score trails the others (pruning). Writes "
        "STUDY_DIR/trials/<n>/ (each trial's run), trials.csv, and best.yaml (CONFIG with the best values, for "
        "the recipe's --config). Running it again continues the study. Needs pip install 'hftransfer[tune]'.",
    )
    parser.add_argument(
        "config", metavar="CONFIG", help="a recipe preset (YAML), e.g. recipes/configs/minilm/ner_full.yaml"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every trial")
    parser.add_argument(
        "--trials", type=int, required=True, metavar="N", help="finished trials the study should hold"
    )
    parser.add_argument(
        "--space",
        metavar="FILE",
        help="search-space YAML (default: CONFIG's name with .tune.yaml, next to it)",
    )
    parser.add_argument(
        "--study-dir",
        metavar="DIR",
        help="where the study and its trials go (default: runs/tune-<CONFIG name>)",
    )
    parser.add_argument(
        "--recipe", choices=list(RECIPES), help="the recipe (default: picked from CONFIG's keys)"
    )
    parser.add_argument(
        "--keep-models", action="store_true", help="keep every trial's model (default: the best trial's only)"
    )
    parser.set_defaults(handler=run_tune, parser=parser)

"""The ``hftransfer`` command: train with a recipe, predict, evaluate, push a run to the Hub, export it to ONNX,
check offline assets.

Examples::

    hftransfer train ner train.lr=1e-4 output_dir=runs/ner       # recipes/finetune_ner.py via accelerate launch
    hftransfer train my_run.yaml --num-processes 2 --dry-run       # recipe picked from the YAML keys
    hftransfer predict runs/ner/model tweets.txt tweets.preds.jsonl
    hftransfer evaluate runs/clf/model test.csv data.text_column=review --output test.preds.jsonl
    hftransfer push runs/ner --repo-id me/minilm-wnut16 --dry-run --out staged/
    hftransfer export runs/ner --format onnx-int8                # runs/ner/onnx/, checked against PyTorch
    hftransfer tune recipes/configs/minilm/ner_full.yaml --trials 8   # optuna; best.yaml for the recipe
    hftransfer rank ner --encoders minilm-l6 mpnet-base             # which encoder and layer, before training
    hftransfer assets list
    hftransfer assets verify minilm-l6

``key=value`` (or ``--key=value``) options are config overrides: the recipe's for ``train``, ``data.*`` for
``predict`` / ``evaluate``. User errors (:class:`~hftransfer.errors.HFTransferError`) print one ``error:`` line and
exit 2, like the recipes. torch and transformers are imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hftransfer
from hftransfer import cli_assets, cli_predict, cli_zeroshot
from hftransfer.advisor import command as rank_command
from hftransfer.errors import ConfigError, HFTransferError
from hftransfer.export import onnx_command
from hftransfer.hub import WHAT
from hftransfer.tune import command as tune_command

RECIPES = {
    "ner": "finetune_ner.py",
    "classifier": "finetune_classifier.py",
    "multitask": "multitask.py",
    "distill": "distill.py",
    "domain_adapt": "domain_adapt.py",
    "pretrain_mlm": "pretrain_mlm.py",
}
TASK_RECIPES = {"token-classification": "ner", "sequence-classification": "classifier"}


def say(line: str) -> None:
    # The library has no print() (ruff T20); the command's output goes through here.
    sys.stdout.write(line + "\n")


# --- train -----------------------------------------------------------------------------------------------------


def recipes_dir() -> Path:
    """``recipes/`` of the source checkout this package runs from.

    Raises:
        ConfigError: the package was installed from a wheel, which does not contain the recipes.
    """
    directory = Path(hftransfer.__file__).resolve().parents[1] / "recipes"
    if not directory.is_dir():
        raise ConfigError(
            f"no recipes next to {Path(hftransfer.__file__).parent}: the recipes ship with the source checkout, "
            "not the wheel; clone the hftransfer repository and run `pip install -e .` in it"
        )
    return directory


def recipe_for_config(path: Path) -> str:
    """The recipe a YAML config is for, from its top-level keys (``tasks``, ``distill``, ``sources``/``report``,
    ``task``)."""
    import yaml

    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the YAML config ({' '.join(str(err).split())})") from None
    keys = content if isinstance(content, dict) else {}
    # distill presets also set `task:`, so the multitask and distill sections are looked for first
    if "tasks" in keys:
        return "multitask"
    if "distill" in keys:
        return "distill"
    if "mlm" in keys:  # masked-LM options: continued pre-training
        return "pretrain_mlm"
    if keys.get("sources") or keys.get("report"):  # unlabelled target text, a target test set
        return "domain_adapt"
    recipe = TASK_RECIPES.get(str(keys.get("task")))
    if recipe is None:
        raise ConfigError(
            f"{path}: cannot tell which recipe it is for: expected a `tasks:` list (multitask), a `distill:` "
            "section, or `task: token-classification` / `task: sequence-classification`"
        )
    return recipe


def resolve_recipe(name: str) -> tuple[Path, list[str]]:
    """A recipe name or YAML config path -> (recipe script, arguments that go before the overrides)."""
    if name in RECIPES:
        return recipes_dir() / RECIPES[name], []
    path = Path(name)
    if path.suffix in {".yaml", ".yml"} or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{name}: config file not found")
        return recipes_dir() / RECIPES[recipe_for_config(path)], ["--config", str(path)]
    raise ConfigError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)} or a path to a YAML config")


def launch_command(args: argparse.Namespace) -> list[str]:
    """``python -m accelerate.commands.launch [options] recipe.py [--config ...] overrides``."""
    recipe, leading = resolve_recipe(args.recipe)
    # The accelerate module, not an `accelerate` executable: it is the one of this interpreter, and the user's
    # `accelerate config` still applies. --quiet: when the recipe fails, its one `error:` line is not followed by
    # accelerate's own traceback (accelerate then exits 1, whatever the recipe's code was).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    if args.cpu:
        command.append("--cpu")
    if args.num_processes is not None:
        command += ["--num_processes", str(args.num_processes)]
    extra_config = ["--config", args.config] if args.config else []
    return [*command, str(recipe), *leading, *extra_config, *args.overrides]


def run_train(args: argparse.Namespace) -> int:
    command = launch_command(args)
    if args.dry_run:
        say(shlex.join(command))
        return 0
    code = subprocess.run(command, check=False).returncode
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


# --- push ------------------------------------------------------------------------------------------------------


def run_push(args: argparse.Namespace) -> int:
    from hftransfer.hub.publish import push_run  # needs huggingface_hub; only this command pays for it

    staged = push_run(
        args.run_dir,
        args.repo_id,
        private=args.private,
        what=args.what,
        dry_run=args.dry_run,
        staging_dir=args.out,
    )
    for repo in staged:
        say(f"staged {repo.folder} -> {repo.repo_id}")
        if repo.url:
            say(f"pushed {repo.url}")
    return 0


# --- parser ----------------------------------------------------------------------------------------------------


def add_train(commands: Any) -> None:
    parser = commands.add_parser(
        "train",
        help="fine-tune with a recipe through accelerate launch",
        description="Run a recipe with `accelerate launch` (your `accelerate config` applies) and return "
        "accelerate's exit code. Overrides are the recipe's key=value options; `hftransfer train ner --help` shows "
        "these options, `python recipes/finetune_ner.py --help` the recipe's.",
    )
    parser.add_argument(
        "recipe",
        metavar="RECIPE_OR_CONFIG",
        help=f"{', '.join(RECIPES)}, or a YAML config whose keys pick the recipe "
        "(tasks: multitask; distill: distill; task: token-/sequence-classification: ner/classifier)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-4"
    )
    parser.add_argument("--config", metavar="FILE", help="a YAML config applied after the recipe's preset")
    parser.add_argument(
        "--num-processes", type=int, metavar="N", help="passed to accelerate as --num_processes N"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="passed to accelerate as --cpu (then one process: see the README)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the launch command instead of running it"
    )
    parser.set_defaults(handler=run_train, parser=parser)


def add_push(commands: Any) -> None:
    parser = commands.add_parser(
        "push",
        help="publish a run's model to the Hugging Face Hub",
        description="Stage a run directory as Hub repositories (model card included) and upload them.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by a recipe")
    parser.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the Hub repository to push to")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--what", choices=WHAT, default="auto", help="which export to push (default: auto)")
    parser.add_argument("--dry-run", action="store_true", help="stage the files but upload nothing")
    parser.add_argument("--out", metavar="DIR", help="staging directory (default: RUN_DIR/hub)")
    parser.set_defaults(handler=run_push, parser=parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hftransfer",
        description="Transfer learning for Hugging Face NLP encoders.",
        epilog="`hftransfer COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {hftransfer.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train(commands)
    cli_predict.add_parsers(commands)
    add_push(commands)
    onnx_command.add_parser(commands)
    tune_command.add_parser(commands)
    rank_command.add_parser(commands)
    cli_assets.add_parser(commands)
    cli_zeroshot.add_parser(commands)
    return parser


def is_override(token: str) -> bool:
    """``key=value`` or ``--key=value`` (not ``-x=...``, a mistyped short option)."""
    return "=" in token and (token.startswith("--") or not token.startswith("-"))


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args, unknown = build_parser().parse_known_args(argv)
    # argparse leaves `--key=value`, and `key=value` after an option, unparsed: they are overrides too
    stray = [token for token in unknown if not (hasattr(args, "overrides") and is_override(token))]
    if stray:
        args.parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if unknown:
        args.overrides = in_argv_order(argv, [*args.overrides, *unknown])
    return args


def in_argv_order(argv: Sequence[str], tokens: list[str]) -> list[str]:
    """``tokens`` in the order they appear in ``argv``: a later override of the same key must win."""
    pending, ordered = list(tokens), []
    for token in argv:
        if token in pending:
            pending.remove(token)
            ordered.append(token)
    return ordered + pending


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hftransfer`` command line; returns the exit code (2: usage or user error, 130: interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    try:
        return args.handler(args)
    except HFTransferError as err:
        sys.stderr.write(f"error: {' '.join(str(err).split())}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def main_entry() -> None:
    """The console script: ``hftransfer`` in ``[project.scripts]``."""
    raise SystemExit(main())


if __name__ == "__main__":
    main_entry()

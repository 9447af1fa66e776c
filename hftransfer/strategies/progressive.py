"""Progressive networks: the new task trains a fresh copy of the pretrained encoder (the run's model) that also
reads the frozen columns of earlier tasks through lateral adapters (:mod:`hftransfer.progressive`).

``strategy.columns`` names the earlier task's run: a plain fine-tuned run becomes column 0, a progressive run
brings all its columns, so a chain of tasks is one run per task, each naming the one before. Earlier columns are
frozen and run in eval mode, so their tasks' predictions do not change at all; the export holds every column
(``hftransfer/progressive/export.py``), and each column's task predicts through ``Predictor`` / ``hftransfer
predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from hftransfer.config import EncoderStrategyConfig
from hftransfer.config.checks import Range, check_value
from hftransfer.errors import ConfigError
from hftransfer.export.save import load_saved_weights
from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan
from hftransfer.strategies.layers import count_parameters
from hftransfer.strategies.transfer import param_groups
from hftransfer.training.disk import write_on_main
from hftransfer.training.optim import no_decay
from hftransfer.utils import recover_directory

if TYPE_CHECKING:
    from hftransfer.progressive.model import ProgressiveModel


@dataclass
class ProgressiveConfig(EncoderStrategyConfig):
    """A new column for this task next to the frozen columns of earlier tasks, joined by lateral adapters."""

    name: str = "progressive"
    columns: str | None = None
    """The earlier task's run directory (or its ``model/``): a fine-tuned task model becomes column 0; a
    progressive run brings all of its columns. Required."""
    rank: int = 16
    """Bottleneck width of each lateral adapter (one per encoder layer and earlier column)."""
    lateral_lr: float | None = 1e-3
    """LR of the new lateral adapters (None: the head's, ``strategy.head_lr`` else ``train.lr``). Their output
    starts at zero, as a LoRA adapter's does, and takes a LoRA-like rate: at a MiniLM encoder's 1e-4 over a short
    run they barely left zero (the first epoch's validation scores equalled the independent run's)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.columns:
            raise ConfigError(
                "strategy.name=progressive needs strategy.columns=<run directory of the earlier task>"
            )
        if self.rank < 1:
            raise ConfigError(f"strategy.rank must be at least 1, got {self.rank}")
        check_value("strategy.lateral_lr", self.lateral_lr, Range(low=0, low_open=True, optional=True))


def build_progressive(context: StrategyContext) -> StrategyPlan:
    # Imported here: hftransfer.progressive reads encoder layouts from this package, which imports this module.
    from hftransfer.progressive.export import load_source_columns, save_progressive

    if context.shared_encoder:
        raise ConfigError(
            "strategy.name=progressive trains one task's column; a multitask run shares one encoder between "
            "tasks (run one progressive run per task instead)"
        )
    strategy = context.strategy
    network = load_source_columns(strategy.columns)
    network.add_column(context.model, rank=strategy.rank)
    model_dir, tokenizer = context.run_dir / "model", context.tokenizer

    def save_best(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        unwrapped = accelerator.unwrap_model(trained)
        write_on_main(
            accelerator,
            "the progressive network",
            model_dir,
            lambda: save_progressive(unwrapped, tokenizer, model_dir),
        )

    def restore_best(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        restore_last_column(accelerator, accelerator.unwrap_model(trained), model_dir)

    def export(accelerator: Accelerator, trained: torch.nn.Module) -> dict[str, Any]:
        return {
            "kind": "progressive",
            "directory": str(model_dir),
            "columns": network.num_columns,
            # Only column 0 reads no lateral: it alone is a plain model for transformers' pipeline.
            "pipeline": False,
        }

    plan = StrategyPlan(network, [], save_best=save_best, restore_best=restore_best, export=export)
    plan.param_groups = progressive_groups(network, context)
    column = network.columns[-1]
    plan.report = {
        "name": strategy.name,
        "columns": network.num_columns,
        "source": str(strategy.columns),
        "parameters": count_parameters(network),
        "column_parameters": count_parameters(column)["total"],
        "lateral_parameters": sum(p.numel() for p in network.laterals[-1].parameters()),
        "lr_groups": {group["name"]: group["lr"] for group in plan.param_groups},
    }
    return plan


def progressive_groups(network: ProgressiveModel, context: StrategyContext) -> list[dict]:
    """The new column's groups as full fine-tuning makes them (head LR, layer-wise decay), and the new laterals at
    ``strategy.lateral_lr`` (None: the head's): like the head they start from nothing (zero output) rather than
    from pretrained weights."""
    train, strategy = context.config.train, context.strategy
    groups = param_groups(
        network.columns[-1], train, strategy, encoder_weight_decay=context.encoder_weight_decay
    )
    lr = strategy.head_lr if strategy.head_lr is not None else train.lr
    lr = strategy.lateral_lr if strategy.lateral_lr is not None else lr
    named = list(network.laterals[-1].named_parameters())
    for decays in (True, False):
        params = [param for name, param in named if no_decay(name, param) != decays]
        if params:
            groups.append(
                {
                    "params": params,
                    "lr": lr,
                    "weight_decay": train.weight_decay if decays else 0.0,
                    "name": f"laterals/{'decay' if decays else 'no_decay'}",
                }
            )
    return groups


def restore_last_column(accelerator: Accelerator, network: ProgressiveModel, directory: Path) -> None:
    """Load the saved last column and its laterals into ``network`` (the earlier columns never changed)."""
    from hftransfer.progressive.export import LATERALS_FILE

    recover_directory(directory)
    last = network.num_columns - 1
    load_saved_weights(accelerator, network.columns[last], directory / f"column_{last}")
    prefix = f"{last}."
    laterals = {
        key[len(prefix) :]: value
        for key, value in load_file(str(directory / LATERALS_FILE)).items()
        if key.startswith(prefix)
    }
    network.laterals[last].load_state_dict(laterals, strict=True)


def describe_progressive(strategy: dict, report: dict) -> str:
    columns = report.get("columns", "?")
    return (
        f"progressive network: column {columns} of {columns}, reading the frozen columns of "
        f"{strategy.get('columns')} through rank-{strategy.get('rank')} lateral adapters"
    )


register_strategy(
    "progressive", config=ProgressiveConfig, build=build_progressive, describe=describe_progressive
)

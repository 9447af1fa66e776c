"""The strategy protocol: what a registered strategy's builder receives and returns.

A builder gets a :class:`StrategyContext` and returns a :class:`StrategyPlan`: the model to train, its optimizer
parameter groups, a hook run before every optimizer step, and how the best model is snapshotted, restored and
exported. A strategy that trains something other than the token model (a head on cached encoder features) also
returns the loaders it trains and evaluates on. What the loss is belongs to the objectives, not to the strategy.

Most strategies only change which encoder weights train; they start from :func:`encoder_plan` (plain saving) and
end with :func:`finish_plan` (LR groups, counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from hftransfer.config import RunConfig, StrategyConfig
from hftransfer.export.save import load_saved_weights, save_model
from hftransfer.strategies.layers import count_parameters
from hftransfer.strategies.transfer import param_groups
from hftransfer.training.state import LoopState


@dataclass
class StrategyContext:
    """What a strategy builder may use: the freshly built (pretrained encoder + new head) model and the run."""

    model: torch.nn.Module
    config: RunConfig
    tokenizer: PreTrainedTokenizerBase | None
    run_dir: Path
    base_model_name_or_path: str
    """What an adapter's ``base_model_name_or_path`` refers to (a local path or a Hub id)."""
    features: dict[str, Dataset] | None = None
    """Tokenised splits, for strategies that precompute something from the data (feature caches)."""
    accelerator: Accelerator | None = None
    encoder_weight_decay: bool = True
    """False when an objective pulls the encoder's weights somewhere itself (L2-SP): its groups get no decay."""
    shared_encoder: bool = False
    """True when several task models share one encoder (a multitask model): adapters go into the shared encoder,
    and nothing is precomputed per task."""
    save_model: Callable[[Accelerator, torch.nn.Module], None] | None = None
    """How the run saves the model it trains (default: a plain HF model in ``run_dir/model``)."""
    restore_model: Callable[[Accelerator, torch.nn.Module], None] | None = None
    """How the run loads what ``save_model`` wrote back into the trained model."""
    encoder_forward: str | None = None
    """Why the encoder must run on every batch, when it must (objectives that need more than a head's outputs on
    cached features, e.g. ``"objectives: distill_soft"``); None when features may be precomputed."""

    @property
    def strategy(self) -> StrategyConfig:
        return self.config.strategy


@dataclass
class StrategyPlan:
    """Everything strategy-specific that the generic fine-tuning flow needs."""

    model: torch.nn.Module
    param_groups: list[dict]
    on_step_start: Callable[[LoopState], None] | None = None
    save_best: Callable[[Accelerator, torch.nn.Module], None] | None = None
    restore_best: Callable[[Accelerator, torch.nn.Module], None] | None = None
    export: Callable[[Accelerator, torch.nn.Module], dict[str, Any]] | None = None
    report: dict[str, Any] = field(default_factory=dict)
    train_loader: DataLoader | None = None
    """Set by strategies that train on something other than the tokenised features (with ``eval_loaders``)."""
    eval_loaders: dict[str, DataLoader] | None = None
    token_model: Callable[[Accelerator, torch.nn.Module], torch.nn.Module] | None = None
    """The trained model as one that reads token ids, for sets tokenised after training (report sets): given by a
    strategy whose trained model reads something else (a head on cached features); None: the model itself."""


def encoder_plan(context: StrategyContext) -> StrategyPlan:
    """The plan of a strategy that trains (some of) the token model: saved and restored as a plain HF model."""
    model_dir = context.run_dir / "model"
    tokenizer = context.tokenizer

    def save_plain(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        save_model(accelerator, trained, tokenizer, model_dir)

    def restore_plain(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        load_saved_weights(accelerator, trained, model_dir)

    return StrategyPlan(
        context.model,
        [],
        save_best=context.save_model or save_plain,
        restore_best=context.restore_model or restore_plain,
        report={"name": context.strategy.name},
    )


def finish_plan(
    plan: StrategyPlan, context: StrategyContext, *, include_frozen: bool = False
) -> StrategyPlan:
    """Give ``plan`` its LR groups (head LR, layer-wise decay) and its parameter counts.

    Args:
        include_frozen: also group parameters that do not train yet (they are unfrozen later in the run).
    """
    plan.param_groups = param_groups(
        plan.model,
        context.config.train,
        context.strategy,
        include_frozen=include_frozen,
        encoder_weight_decay=context.encoder_weight_decay,
    )
    plan.report["parameters"] = count_parameters(plan.model)
    plan.report["lr_groups"] = {group["name"]: group["lr"] for group in plan.param_groups}
    return plan

"""What trains: one :class:`StrategyPlan` per run, built by the strategy registered under ``strategy.name``.

Each strategy is one module that registers its builder (``hftransfer.registry.register_strategy``); importing this
package imports all of its modules, which registers the built-in ones. The plan is the small protocol the loop and the recipes talk to (see
``base.py``): the model to train, its optimizer parameter groups, the objective, a hook run before every optimizer
step, how the best model is snapshotted, restored and exported, and, for strategies that train on precomputed
features, the loaders.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.registry import get_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan

# Every module of this package is imported, so a built-in strategy registers itself by existing: adding one is
# adding its file, with no list to edit here.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "StrategyContext",
    "StrategyPlan",
    "needs_unused_parameter_search",
    "plan_strategy",
]


def needs_unused_parameter_search(config: Any) -> bool:
    """DDP must tolerate parameters that get no gradient when the trainable set changes during training."""
    return get_strategy(config.strategy.name).changes_trainable_set


def plan_strategy(
    model: torch.nn.Module,
    config: Any,
    *,
    tokenizer: PreTrainedTokenizerBase | None,
    run_dir: Path,
    base_model_name_or_path: str,
    features: dict[str, Dataset] | None = None,
    accelerator: Accelerator | None = None,
    encoder_weight_decay: bool = True,
    shared_encoder: bool = False,
    save_model: Callable[[Accelerator, torch.nn.Module], None] | None = None,
    restore_model: Callable[[Accelerator, torch.nn.Module], None] | None = None,
    encoder_forward: str | None = None,
) -> StrategyPlan:
    """Apply ``config.strategy`` to a freshly built (pretrained encoder + new head) model.

    ``encoder_weight_decay=False`` when an objective replaces weight decay on the encoder (the run's
    ``ObjectiveSet.replaces_weight_decay``). A multitask model passes ``shared_encoder=True`` and its own
    ``save_model`` / ``restore_model`` (every task exported on its own); see :class:`StrategyContext`.

    Raises:
        ConfigError: an unknown strategy, or one that does not fit this model (e.g. more frozen layers than it has).
    """
    entry = get_strategy(config.strategy.name)
    context = StrategyContext(
        model,
        config,
        tokenizer,
        Path(run_dir),
        base_model_name_or_path,
        features,
        accelerator,
        encoder_weight_decay=encoder_weight_decay,
        shared_encoder=shared_encoder,
        save_model=save_model,
        restore_model=restore_model,
        encoder_forward=encoder_forward,
    )
    return entry.build(context)

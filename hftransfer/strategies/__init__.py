"""What trains: one :class:`StrategyPlan` per run, built from ``config.strategy``.

A plan is the small protocol the loop and the recipes talk to (see ``DESIGN.md``): the model to train, its
optimizer parameter groups, the objective (task loss + conservative penalties), a hook run before every
optimizer step, and how the best model is snapshotted, restored and exported. The frozen-encoder strategy trains
a head on cached features instead and has its own setup (``hftransfer.probing``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase

from hftransfer.config import RunConfig, StrategyConfig
from hftransfer.export.save import load_saved_weights, save_model, save_pretrained_atomic
from hftransfer.objectives.task import TaskObjective
from hftransfer.strategies.layers import EncoderLayout, count_parameters
from hftransfer.strategies.transfer import (
    GradualUnfreezing,
    freeze_bottom,
    param_groups,
    resolve_freeze_count,
)
from hftransfer.training.loop import LoopState

logger = logging.getLogger("hftransfer")


@dataclass
class StrategyPlan:
    """Everything strategy-specific that the generic fine-tuning flow needs."""

    model: torch.nn.Module
    param_groups: list[dict]
    objective: TaskObjective
    on_step_start: Callable[[LoopState], None] | None = None
    save_best: Callable[[Accelerator, torch.nn.Module], None] | None = None
    restore_best: Callable[[Accelerator, torch.nn.Module], None] | None = None
    export: Callable[[Accelerator, torch.nn.Module], dict[str, Any]] | None = None
    report: dict[str, Any] = field(default_factory=dict)


def conservative_penalties(model: torch.nn.Module, strategy: StrategyConfig) -> list[tuple[Any, float]]:
    """L2-SP / output-drift penalties with their weights; call before the model changes (they snapshot it)."""
    # Imported here: objectives.conservative reads parameter layouts from this package.
    from hftransfer.objectives.conservative import L2SP, OutputDrift

    penalties: list[tuple[Any, float]] = []
    if strategy.l2sp_weight > 0:
        penalties.append((L2SP(model), strategy.l2sp_weight))
    if strategy.drift_weight > 0:
        penalties.append((OutputDrift(model, strategy.drift_distance), strategy.drift_weight))
    return penalties


def freeze_layers(
    model: torch.nn.Module, strategy: StrategyConfig, report: dict[str, Any]
) -> Callable[[LoopState], None] | None:
    """Apply ``freeze`` (fix the bottom layers) or ``gradual`` (start with the head alone); other strategies are
    left alone. Returns gradual unfreezing's per-step hook, if any, and records what it did in ``report``."""
    layout = EncoderLayout.of(model)
    if strategy.name == "freeze":
        count = resolve_freeze_count(strategy.freeze_layers, layout.num_layers)
        freeze_bottom(model, layout, count)
        report["frozen_layers"] = count
    elif strategy.name == "gradual":
        schedule = GradualUnfreezing(model, layout, strategy.unfreeze_every, strategy.unfreeze_unit)
        report["layer_groups"] = schedule.num_groups
        # ``model`` holds the same parameter objects as its DDP wrapper, with the plain names the layout reads.
        return lambda state: schedule.apply(model, step=state.step, epoch=state.epoch)
    return None


def needs_unused_parameter_search(config: RunConfig) -> bool:
    """DDP must tolerate parameters that get no gradient when the trainable set changes during training."""
    return config.strategy.name == "gradual"


def plan_strategy(
    model: torch.nn.Module,
    config: RunConfig,
    *,
    tokenizer: PreTrainedTokenizerBase,
    run_dir: Path,
    base_model_name_or_path: str,
) -> StrategyPlan:
    """Apply ``config.strategy`` to a freshly built (pretrained encoder + new head) model.

    Raises:
        ConfigError: the strategy does not fit this model (e.g. more frozen layers than it has).
    """
    strategy = config.strategy
    # Conservative references are the *pretrained* weights: take them before anything changes the model.
    objective = TaskObjective(conservative_penalties(model, strategy))
    report: dict[str, Any] = {"name": strategy.name}
    model_dir = run_dir / "model"

    def save_plain(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        save_model(accelerator, trained, tokenizer, model_dir)

    def restore_plain(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        load_saved_weights(accelerator, trained, model_dir)

    plan = StrategyPlan(model, [], objective, save_best=save_plain, restore_best=restore_plain, report=report)
    plan.on_step_start = freeze_layers(model, strategy, report)
    if strategy.name == "lora":
        _plan_lora(plan, config, tokenizer, run_dir, base_model_name_or_path)
    plan.param_groups = param_groups(
        plan.model, config.train, strategy, include_frozen=strategy.name == "gradual"
    )
    report["parameters"] = count_parameters(plan.model)
    if strategy.name == "gradual":
        # Training starts with the head alone and ends with every parameter trainable; report both.
        report["parameters_at_start"] = report["parameters"]
        report["parameters"] = {**report["parameters"], "trainable": report["parameters"]["total"]}
        report["parameters"]["trainable_fraction"] = 1.0
    report["lr_groups"] = {group["name"]: group["lr"] for group in plan.param_groups}
    return plan


def _plan_lora(
    plan: StrategyPlan,
    config: RunConfig,
    tokenizer: PreTrainedTokenizerBase,
    run_dir: Path,
    base_model_name_or_path: str,
) -> None:
    from hftransfer.strategies.lora import apply_lora, merge_lora, save_adapter, set_adapter_state

    strategy = config.strategy
    plan.model = apply_lora(
        plan.model,
        config.task,
        r=strategy.r,
        alpha=strategy.alpha,
        dropout=strategy.lora_dropout,
        target_modules=strategy.target_modules,
        train_pooler=strategy.lora_pooler == "train",
    )
    # The best adapter is snapshotted where it is finally exported from; "adapter" export puts it in model/.
    adapter_dir = run_dir / ("model" if strategy.lora_export == "adapter" else "adapter")

    def save_best(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        if accelerator.is_main_process:
            save_adapter(accelerator.unwrap_model(trained), adapter_dir, base_model_name_or_path, tokenizer)
        accelerator.wait_for_everyone()

    def restore_best(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        set_adapter_state(accelerator.unwrap_model(trained), adapter_dir)

    def export(accelerator: Accelerator, trained: torch.nn.Module) -> dict[str, Any]:
        produced = {"adapter": str(adapter_dir)}
        if strategy.lora_export != "adapter":
            if accelerator.is_main_process:
                merged = merge_lora(accelerator.unwrap_model(trained))
                save_pretrained_atomic(merged, tokenizer, run_dir / "model")
            produced["merged"] = str(run_dir / "model")
            if strategy.lora_export == "merged" and accelerator.is_main_process:
                shutil.rmtree(adapter_dir, ignore_errors=True)
                produced.pop("adapter")
            accelerator.wait_for_everyone()
        return produced

    plan.save_best, plan.restore_best, plan.export = save_best, restore_best, export
    from hftransfer.strategies.lora import default_target_modules

    plan.report["lora"] = {
        "r": strategy.r,
        "alpha": strategy.alpha,
        "dropout": strategy.lora_dropout,
        # As configured: peft's own record expands all-linear, including modules it then excludes.
        "target_modules": strategy.target_modules or default_target_modules(plan.model.get_base_model()),
        "export": strategy.lora_export,
    }

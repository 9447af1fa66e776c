"""LoRA as a strategy: adapters (``lora.py``) on the encoder, the head trained in full, and what ``model/`` holds
at the end (``strategy.lora_export``: the adapter, a merged plain model, or both)."""

from __future__ import annotations

import shutil
from typing import Any

import torch
from accelerate import Accelerator

from hftransfer.export.save import save_pretrained_atomic
from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan, encoder_plan, finish_plan
from hftransfer.strategies.lora import (
    apply_lora,
    default_target_modules,
    merge_lora,
    save_adapter,
    set_adapter_state,
)


def build_lora(context: StrategyContext) -> StrategyPlan:
    plan = encoder_plan(context)
    strategy, run_dir, tokenizer = context.strategy, context.run_dir, context.tokenizer
    base_name = context.base_model_name_or_path
    plan.model = apply_lora(
        plan.model,
        context.config.task,
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
            save_adapter(accelerator.unwrap_model(trained), adapter_dir, base_name, tokenizer)
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
    plan.report["lora"] = {
        "r": strategy.r,
        "alpha": strategy.alpha,
        "dropout": strategy.lora_dropout,
        # As configured: peft's own record expands all-linear, including modules it then excludes.
        "target_modules": strategy.target_modules or default_target_modules(plan.model.get_base_model()),
        "export": strategy.lora_export,
    }
    return finish_plan(plan, context)


def describe_lora(strategy: dict, report: dict) -> str:
    # The report resolves the default target modules the config leaves unset.
    targets = report.get("lora", {}).get("target_modules")
    return f"LoRA r={strategy.get('r')}, alpha={strategy.get('alpha')}, targets {targets}"


register_strategy("lora", build=build_lora, describe=describe_lora)

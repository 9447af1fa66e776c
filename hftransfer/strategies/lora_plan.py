"""LoRA as a strategy: adapters (``lora.py``) on the encoder, the head trained in full, and what ``model/`` holds
at the end (``strategy.lora_export``: the adapter, a merged plain model, or both)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any, Literal

import torch
from accelerate import Accelerator

from hftransfer.config import EncoderStrategyConfig
from hftransfer.errors import ConfigError
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


@dataclass
class LoraConfig(EncoderStrategyConfig):
    """LoRA (Hu et al., 2021) via peft: low-rank adapters on the encoder's linear layers, plus the new head."""

    name: str = "lora"
    r: int = 8
    """Adapter rank."""
    alpha: float | None = None
    """Scaling numerator (the update is scaled by alpha / r). Default 2 * r."""
    lora_dropout: float = 0.0
    """Dropout on the adapter input. 0, as in peft: on MiniLM-L6 NER, 0.1 scored the same within noise and cost
    more time per epoch and more memory (measured: docs/results.md)."""
    target_modules: list[str] | None = None
    """Module names to adapt; default per architecture (BERT ``query``/``value``, MPNet ``q``/``v``);
    ``[all-linear]`` adapts every linear layer of the encoder (the head is trained in full, not adapted)."""
    lora_pooler: Literal["train", "adapt"] = "train"
    """Sequence tasks: the encoder's pooler (which feeds BERT's classifier) is trained in full (``train``:
    sentence-transformers checkpoints never trained it for classification) or handled like any encoder linear
    layer (``adapt``: adapted when targeted, e.g. by ``[all-linear]``, else fixed), which keeps the trainable
    fraction near that of token tasks."""
    lora_export: Literal["adapter", "merged", "both"] = "both"
    """What ``model/`` holds: the adapter alone (``adapter``), a plain merged model (``merged``), or the merged
    model in ``model/`` plus the adapter in ``adapter/`` (``both``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise ConfigError(f"strategy.r must be >= 1, got {self.r}")
        self.alpha = 2.0 * self.r if self.alpha is None else float(self.alpha)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"strategy.lora_dropout must be in [0, 1), got {self.lora_dropout}")


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


# LoRA trains adapters beside the pretrained weights, which stay as they are (L2-SP has nothing to hold back).
register_strategy(
    "lora", config=LoraConfig, build=build_lora, updates_pretrained_weights=False, describe=describe_lora
)

"""One LoRA adapter on the shared encoder of a multitask model; every task's head trains in full.

The adapter is injected into the shared encoder module itself (``peft.inject_adapter_in_model``), so all tasks
read the same adapted encoder. Exports merge a copy of the adapter into the encoder weights, so each task is still
saved as an ordinary transformers model; the adapter alone is kept next to them for restoring the best weights.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from torch import nn

from hftransfer.config import StrategyConfig
from hftransfer.errors import ConfigError
from hftransfer.strategies.lora import default_target_modules

ADAPTER_FILE = "shared_lora.safetensors"


def add_shared_lora(model: nn.Module, strategy: StrategyConfig) -> dict:
    """Inject LoRA into ``model.encoder`` (a MultitaskModel's shared encoder); returns what was adapted."""
    encoder = model.encoder
    linear_names = [name for name, module in encoder.named_modules() if isinstance(module, nn.Linear)]
    if strategy.target_modules in (None, []):
        targets = default_target_modules(next(iter(model.task_models.values())))
    elif strategy.target_modules == ["all-linear"]:
        # Every linear layer of the encoder blocks; the pooler feeds sequence heads and is trained in full instead.
        targets = [name for name in linear_names if not name.startswith("pooler")]
    else:
        targets = list(strategy.target_modules)
    matched = [n for n in linear_names if any(n == t or n.endswith("." + t) for t in targets)]
    if not matched:
        raise ConfigError(
            f"strategy.target_modules={targets} match no linear layer of the encoder; e.g. "
            f"{sorted({n.rsplit('.', 1)[-1] for n in linear_names})}"
        )
    config = LoraConfig(
        r=strategy.r, lora_alpha=strategy.alpha, lora_dropout=strategy.lora_dropout, target_modules=targets
    )
    inject_adapter_in_model(config, encoder)
    for name, param in encoder.named_parameters():
        param.requires_grad_("lora_" in name or name.startswith("pooler."))
    return {
        "r": strategy.r,
        "alpha": strategy.alpha,
        "target_modules": targets,
        "adapted_layers": len(matched),
    }


def has_lora(encoder: nn.Module) -> bool:
    return any(isinstance(module, LoraLayer) for module in encoder.modules())


def merged_encoder(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` with every LoRA update merged into its base weights and the LoRA layers removed."""
    merged = copy.deepcopy(encoder)
    for name, module in list(merged.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, attribute = name.rpartition(".")
            setattr(
                merged.get_submodule(parent_name) if parent_name else merged,
                attribute,
                module.get_base_layer(),
            )
    return merged


def lora_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The trained part of the shared encoder: LoRA weights and the pooler."""
    return {
        name: param.detach().contiguous()
        for name, param in encoder.named_parameters()
        if "lora_" in name or name.startswith("pooler.")
    }


def load_lora_state(encoder: nn.Module, directory: Path) -> None:
    missing = set(lora_state(encoder)) - set(state := load_file(str(Path(directory) / ADAPTER_FILE)))
    if missing:
        raise RuntimeError(f"{directory}/{ADAPTER_FILE} lacks {sorted(missing)[:3]}")
    encoder.load_state_dict(state, strict=False)

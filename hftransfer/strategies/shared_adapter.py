"""A peft method on an encoder that several task models share (a multitask model): one adapter, every task's head
trained in full.

The adapter is injected into the shared encoder module itself (``peft.inject_adapter_in_model``), so every task
reads the same adapted encoder, whatever the peft method (LoRA, IA3, ...). Each task is still exported as an
ordinary transformers model: :func:`merged_encoder` folds a copy of the adapter into the encoder weights, and the
adapter alone (:func:`adapter_state`) is kept beside the tasks for restoring the best weights.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel

from hftransfer.errors import ConfigError
from hftransfer.strategies.adapter_targets import ALL_LINEAR, module_regex

if TYPE_CHECKING:
    from peft import PeftConfig

# peft is imported when an adapter is injected, not here: it takes seconds, and a multitask run's export imports
# this module with or without an adapter.

ADAPTER_FILE = "shared_adapter.safetensors"
# Written by releases that knew only LoRA; read when the new name is absent.
_OLD_ADAPTER_FILE = "shared_lora.safetensors"


def inject_shared(
    model: nn.Module,
    make_config: Callable[..., PeftConfig],
    *,
    target_modules: list[str] | None,
    default_targets: Callable[[PreTrainedModel], list[str]] | None,
) -> list[str]:
    """Inject the method into ``model.encoder`` (a MultitaskModel's shared encoder); only the adapter and the
    pooler (which feeds sequence heads) train in the encoder. Returns the target names as configured/defaulted.

    Raises:
        ConfigError: naming ``strategy.target_modules``, when the targets match no linear layer of the encoder.
    """
    encoder = model.encoder
    linear_names = [name for name, module in encoder.named_modules() if isinstance(module, nn.Linear)]
    if target_modules is None:
        if default_targets is None:
            raise ConfigError("strategy.target_modules: this method has no default for it; name the modules")
        targets = list(default_targets(next(iter(model.task_models.values()))))
        matched = [n for n in linear_names if any(n == t or n.endswith("." + t) for t in targets)]
        peft_targets: str | list[str] = targets
    elif target_modules == [ALL_LINEAR]:
        # Every linear layer of the encoder blocks; the pooler feeds sequence heads and is trained in full instead.
        targets = matched = [name for name in linear_names if not name.startswith("pooler")]
        peft_targets = module_regex(
            matched
        )  # exact names: a suffix such as "dense" would also hit the pooler
    else:
        targets = list(target_modules)
        matched = [n for n in linear_names if any(n == t or n.endswith("." + t) for t in targets)]
        peft_targets = targets
    if not matched:
        raise ConfigError(
            f"strategy.target_modules={targets} match no linear layer of the encoder; e.g. "
            f"{sorted({n.rsplit('.', 1)[-1] for n in linear_names})}"
        )
    from peft import inject_adapter_in_model

    inject_adapter_in_model(make_config(target_modules=peft_targets), encoder)
    adapter = set(adapter_state(encoder))
    for name, param in encoder.named_parameters():
        param.requires_grad_(name in adapter)
    return targets if target_modules != [ALL_LINEAR] else [ALL_LINEAR]


def tuner_layers(encoder: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of the encoder's peft layers; none while peft is not imported (nothing can have injected
    one), so a run without an adapter never imports it."""
    if "peft" not in sys.modules:
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in encoder.named_modules():
        if isinstance(module, BaseTunerLayer):
            yield name, module


def has_adapter(encoder: nn.Module) -> bool:
    return any(True for _ in tuner_layers(encoder))


def merged_encoder(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` with the adapter merged into its base weights and the peft layers removed."""
    merged = copy.deepcopy(encoder)
    for name, module in list(tuner_layers(merged)):
        module.merge()
        parent_name, _, attribute = name.rpartition(".")
        setattr(
            merged.get_submodule(parent_name) if parent_name else merged,
            attribute,
            module.get_base_layer(),
        )
    return merged


def adapter_parameter_names(encoder: nn.Module) -> set[str]:
    """Names of the weights the peft layers add (each method names its own: ``lora_A``, ``ia3_l``, ...)."""
    names = set()
    for module_name, module in tuner_layers(encoder):
        for attribute in module.adapter_layer_names:
            for name, _ in getattr(module, attribute).named_parameters():
                names.add(f"{module_name}.{attribute}.{name}")
    return names


def adapter_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The trained part of the shared encoder: the adapter's weights and the pooler."""
    own = adapter_parameter_names(encoder)
    return {
        name: param.detach().contiguous()
        for name, param in encoder.named_parameters()
        if name in own or name.startswith("pooler.")
    }


def load_adapter_state(encoder: nn.Module, directory: Path) -> None:
    path = Path(directory) / ADAPTER_FILE
    if not path.exists() and (Path(directory) / _OLD_ADAPTER_FILE).exists():
        path = Path(directory) / _OLD_ADAPTER_FILE
    state = load_file(str(path))
    missing = set(adapter_state(encoder)) - set(state)
    if missing:
        raise RuntimeError(f"{path} lacks {sorted(missing)[:3]}")
    encoder.load_state_dict(state, strict=False)

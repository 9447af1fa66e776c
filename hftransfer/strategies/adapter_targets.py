"""Which modules a peft method adapts and which train in full: the head (and BERT's pooler) next to the encoder,
and checks that ``strategy.target_modules`` names encoder modules."""

from __future__ import annotations

import re

import torch
from transformers import PreTrainedModel

from hftransfer.errors import ConfigError

ALL_LINEAR = "all-linear"


def head_modules(model: PreTrainedModel, task: str, *, train_pooler: bool = True) -> list[str]:
    """Module names (relative to ``model``) that train in full: the head, plus (unless ``train_pooler`` is false)
    the pooler for sequence tasks."""
    prefix = model.base_model_prefix
    # The head is whatever sits next to the encoder and has weights: "classifier", DistilBERT's "pre_classifier",
    # DeBERTa's "pooler" (ContextPooler), ... Dropout has none.
    names = [
        name
        for name, child in model.named_children()
        if name != prefix and any(True for _ in child.parameters())
    ]
    pooler = getattr(getattr(model, prefix, None), "pooler", None)
    if train_pooler and task == "sequence-classification" and isinstance(pooler, torch.nn.Module):
        # BERT's pooler feeds the classifier; its pretrained weights (never trained for classification in
        # sentence-transformers checkpoints) are part of the head, so train it fully rather than adapt it.
        names.append(f"{prefix}.pooler")
    return names


def module_regex(names: list[str]) -> str:
    """A regex (peft ``fullmatch``es it against module names) for these modules and everything inside them."""
    return "^(" + "|".join(re.escape(name) for name in names) + r")(\..*)?$"


def check_targets(model: PreTrainedModel, targets: list[str], trained_in_full: list[str]) -> None:
    """Every target name must match an encoder module (peft matches a name or a dotted suffix).

    Raises:
        ConfigError: naming ``strategy.target_modules``, for a name that matches nothing or only the head.
    """
    inside_head = re.compile(module_regex(trained_in_full))
    names = [name for name, _ in model.named_modules() if name]
    for target in targets:
        matches = [name for name in names if name == target or name.endswith("." + target)]
        if matches and all(inside_head.fullmatch(name) for name in matches):
            raise ConfigError(
                f"strategy.target_modules: {target!r} is part of the head ({', '.join(trained_in_full)}), which "
                "is trained in full; name encoder modules instead"
            )
        if not matches:
            linear = sorted(
                {
                    name.rsplit(".", 1)[-1]
                    for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear) and not inside_head.fullmatch(name)
                }
            )
            raise ConfigError(
                f"strategy.target_modules: {target!r} matches no module of {type(model).__name__}; its linear "
                f"modules are named {', '.join(linear[:10])} (or use [{ALL_LINEAR}])"
            )

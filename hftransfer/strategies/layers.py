"""Where a parameter sits in an encoder classifier: the new head, the embeddings, or encoder layer ``i``.

Names are read the same way for plain transformers models and for peft-wrapped ones of any method (peft prefixes
``base_model.model.``, moves a wrapped layer's weights to ``<layer>.base_layer.``, and keeps trained copies of saved
modules as ``<module>.modules_to_save.<adapter>.`` beside ``<module>.original_module.``), so layer-wise learning
rates and freezing work under LoRA or any other peft method too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from hftransfer.errors import ConfigError

# ``encoder.layer.3.`` (BERT, RoBERTa, MPNet, ELECTRA), ``transformer.layer.3.`` (DistilBERT), ``layers.3.``
_LAYER = re.compile(r"\.(?:layer|layers)\.(\d+)\.")
_PEFT_PREFIX = "base_model.model."
_MULTITASK_PREFIX = re.compile(r"^task_models\.[^.]+\.")  # MultitaskModel: task_models.<task>.<HF name>
# What peft inserts inside a wrapped module's name: the wrapped layer, a saved module's copy or its original.
_PEFT_WRAPPING = re.compile(r"\.(?:base_layer|original_module|modules_to_save\.[^.]+)(?=\.)")


def plain_name(name: str) -> str:
    """The parameter's name in the unwrapped transformers (task) model; a weight that a peft method adds (such as
    LoRA's ``lora_A``) keeps its own name under the module it belongs to."""
    name = name[len(_PEFT_PREFIX) :] if name.startswith(_PEFT_PREFIX) else name
    return _PEFT_WRAPPING.sub("", _MULTITASK_PREFIX.sub("", name))


@dataclass(frozen=True)
class EncoderLayout:
    """How a model's parameters divide into head, embeddings and ``num_layers`` encoder layers."""

    encoder_prefix: str  # e.g. "bert": parameters under it are pretrained, the rest is the new head
    num_layers: int

    @staticmethod
    def task_model(model: torch.nn.Module) -> torch.nn.Module:
        """The transformers task model that stands for ``model``'s layout and architecture: itself, the model
        under a peft wrapper, or a multitask model's first task (its task models all share one encoder)."""
        base = getattr(model, "get_base_model", lambda: model)()
        if hasattr(base, "task_models"):
            base = next(iter(base.task_models.values()))
        return base

    @classmethod
    def of(cls, model: torch.nn.Module) -> EncoderLayout:
        base = cls.task_model(model)
        prefix = getattr(base, "base_model_prefix", "")
        num_layers = getattr(getattr(base, "config", None), "num_hidden_layers", None)
        if not prefix or not hasattr(base, prefix) or num_layers is None:
            raise ConfigError(
                f"{type(base).__name__} is not a transformers encoder classifier with a base model prefix and "
                "config.num_hidden_layers; layer-wise strategies cannot tell its layers apart"
            )
        return cls(prefix, int(num_layers))

    def is_head(self, name: str) -> bool:
        return not plain_name(name).startswith(self.encoder_prefix + ".")

    def layer_of(self, name: str) -> int | None:
        """Encoder layer index of an encoder parameter; None for embeddings and layer-less encoder parameters."""
        match = _LAYER.search(plain_name(name))
        return int(match.group(1)) if match else None

    def is_embedding(self, name: str) -> bool:
        return not self.is_head(name) and ".embeddings." in plain_name(name)

    def depth(self, name: str) -> int:
        """Layers below the top: head and the top layer 0, layer i ``L-1-i``, embeddings ``L``.

        Encoder parameters outside the layers and embeddings (BERT's pooler, MPNet's shared relative attention
        bias) sit on top of or across all layers, so they count as the top.
        """
        if self.is_head(name):
            return 0
        if self.is_embedding(name):
            return self.num_layers
        layer = self.layer_of(name)
        return 0 if layer is None else self.num_layers - 1 - layer

    def group(self, name: str) -> int:
        """Gradual-unfreezing group: 0 = head, 1 = top layer (+ pooler), ..., L = bottom layer, L+1 = embeddings."""
        return 0 if self.is_head(name) else 1 + self.depth(name)


def count_parameters(model: torch.nn.Module) -> dict[str, float]:
    """Total and trainable parameter counts (each tensor once, even if shared) and the trainable fraction."""
    seen: dict[int, torch.nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return {"total": total, "trainable": trainable, "trainable_fraction": trainable / total if total else 0.0}

"""Students made from the teacher itself: the same architecture with fewer layers, initialised from chosen teacher
layers (DistilBERT took every other layer of BERT-base)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from transformers import PreTrainedModel

from hftransfer.errors import ConfigError
from hftransfer.strategies.layers import EncoderLayout


def every_other_layer(num_layers: int) -> list[int]:
    """Teacher layers 0, 2, 4, ... (0-based)."""
    return list(range(0, num_layers, 2))


def layer_dropped_student(teacher: PreTrainedModel, keep: Sequence[int]) -> PreTrainedModel:
    """A copy of ``teacher`` with only the encoder layers ``keep`` (0-based, in order) and everything else
    (embeddings, pooler, head) copied exactly.

    Raises:
        ConfigError: ``keep`` is empty, out of range, repeated or not increasing.
    """
    layout = EncoderLayout.of(teacher)
    keep = list(keep)
    if not keep or any(not 0 <= i < layout.num_layers for i in keep) or keep != sorted(set(keep)):
        raise ConfigError(
            f"student layers {keep} must be increasing, distinct teacher layers in 0..{layout.num_layers - 1}"
        )
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    student = type(teacher)(config)
    source = teacher.state_dict()
    renamed = {}
    for name, tensor in source.items():
        layer = layout.layer_of(name)
        if layer is None:
            renamed[name] = tensor
        elif layer in keep:
            renamed[name.replace(f".{layer}.", f".{keep.index(layer)}.", 1)] = tensor
    missing, unexpected = student.load_state_dict(renamed, strict=False)
    if unexpected or [m for m in missing if m not in (getattr(student, "_tied_weights_keys", None) or [])]:
        raise RuntimeError(f"student initialisation left {missing[:3]} unset and {unexpected[:3]} unused")
    return student

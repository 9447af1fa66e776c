"""LoRA adapters (via peft) for token and sequence classification encoders.

The encoder's pretrained weights stay fixed; small low-rank matrices are trained next to chosen linear layers,
while the new head is trained in full and saved with the adapter. What is not LoRA-specific (wrapping with the
head trained in full, saving, reloading, merging) is generic over peft methods: ``adapters.py`` and
``hftransfer.export.peft_adapter``, whose functions are importable from here too.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from transformers import PreTrainedModel

from hftransfer.config.checks import POSITIVE, check_value
from hftransfer.errors import ConfigError
from hftransfer.export.peft_adapter import (
    ADAPTER_META,
    base_model_kwargs,
    load_adapter,
    merge_adapter,
    save_adapter,
    set_adapter_state,
)
from hftransfer.strategies.adapters import ALL_LINEAR, apply_peft, per_architecture

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = [
    "ADAPTER_META",
    "ALL_LINEAR",
    "apply_lora",
    "base_model_kwargs",
    "default_target_modules",
    "load_adapter",
    "merge_lora",
    "save_adapter",
    "set_adapter_state",
]

# Attention query/value projections: the choice of the LoRA paper, and peft's own defaults where it has any.
_DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "electra": ["query", "value"],
    "mpnet": ["q", "v"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
}

merge_lora = merge_adapter  # the name this module has always exported


def default_target_modules(model: PreTrainedModel) -> list[str]:
    """The modules LoRA adapts when ``strategy.target_modules`` is not set: the attention query and value.

    Raises:
        ConfigError: the architecture has no default here.
    """
    fix = "set strategy.target_modules, e.g. [all-linear] or the names of its attention projections"
    return list(per_architecture(model, _DEFAULT_TARGETS, "LoRA target modules", fix))


def apply_lora(
    model: PreTrainedModel,
    task: str,
    *,
    r: int,
    alpha: float,
    dropout: float,
    target_modules: list[str] | None,
    train_pooler: bool = True,
) -> PeftModel:
    """Wrap ``model`` (changed in place) with LoRA adapters; the head is trained in full and saved with them.

    Args:
        model: a transformers ``*ForTokenClassification`` / ``*ForSequenceClassification`` model.
        task: ``"token-classification"`` or ``"sequence-classification"``.
        r: adapter rank.
        alpha: scaling numerator (updates are scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names (suffixes, peft style) to adapt; ``["all-linear"]`` adapts every linear
            layer of the encoder; ``None`` uses :func:`default_target_modules`.
        train_pooler: sequence tasks: train the encoder's pooler in full with the head (default); ``False``
            treats it as an encoder layer (adapted if targeted, otherwise fixed).

    Returns:
        The peft model. Only the LoRA A/B matrices and the copies of the head (and, for sequence tasks, of the
        encoder's pooler) require gradients.

    Raises:
        ConfigError: unknown task, bad hyperparameters, or target names that match no encoder module.
    """
    from peft import LoraConfig  # peft costs seconds to import; only LoRA runs need it

    if r < 1:
        raise ConfigError(f"strategy.r must be >= 1, got {r}")
    check_value("strategy.alpha", alpha, POSITIVE)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"strategy.lora_dropout must be in [0, 1), got {dropout}")
    return apply_peft(
        model,
        task,
        functools.partial(LoraConfig, r=r, lora_alpha=alpha, lora_dropout=dropout),
        target_modules=target_modules,
        default_targets=default_target_modules,
        train_pooler=train_pooler,
    )

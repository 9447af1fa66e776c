"""LoRA as a strategy: adapters (``lora.py``) on the encoder, the head trained in full, and what ``model/`` holds
at the end (``strategy.lora_export``: the adapter, a merged plain model, or both; ``adapters.adapter_plan``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from hftransfer.config import EncoderStrategyConfig
from hftransfer.config.checks import COUNT, Range, check_value
from hftransfer.registry import register_strategy
from hftransfer.strategies.adapters import adapt_encoder, adapter_plan
from hftransfer.strategies.base import StrategyContext, StrategyPlan
from hftransfer.strategies.lora import default_target_modules


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
        check_value("strategy.r", self.r, COUNT)
        check_value("strategy.alpha", self.alpha, Range(low=0, low_open=True, optional=True))
        self.alpha = 2.0 * self.r if self.alpha is None else float(self.alpha)
        check_value("strategy.lora_dropout", self.lora_dropout, Range(low=0, high=1, high_open=True))


def build_lora(context: StrategyContext) -> StrategyPlan:
    # Imported here: the registry imports this module in every run, and peft takes seconds to import.
    from peft import LoraConfig as PeftLoraConfig

    strategy = context.strategy
    model, targets = adapt_encoder(
        context,
        functools.partial(
            PeftLoraConfig, r=strategy.r, lora_alpha=strategy.alpha, lora_dropout=strategy.lora_dropout
        ),
        target_modules=strategy.target_modules,
        default_targets=default_target_modules,
        train_pooler=strategy.lora_pooler == "train",
    )
    report = {
        "r": strategy.r,
        "alpha": strategy.alpha,
        "dropout": strategy.lora_dropout,
        "target_modules": targets,
        "export": strategy.lora_export,
    }
    return adapter_plan(context, model, strategy.lora_export, {"lora": report})


def describe_lora(strategy: dict, report: dict) -> str:
    # The report resolves the default target modules the config leaves unset.
    targets = report.get("lora", {}).get("target_modules")
    return f"LoRA r={strategy.get('r')}, alpha={strategy.get('alpha')}, targets {targets}"


# LoRA trains adapters beside the pretrained weights, which stay as they are (L2-SP has nothing to hold back).
register_strategy(
    "lora", config=LoraConfig, build=build_lora, updates_pretrained_weights=False, describe=describe_lora
)

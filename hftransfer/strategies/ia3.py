"""(IA)³ (Liu et al., 2022) via peft: learned vectors rescale the attention keys and values and the feed-forward
activations; the pretrained weights stay fixed and the new head trains in full. Exported like LoRA (adapter,
merged plain model, or both), through the generic peft parts (``adapters.py``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from hftransfer.config import EncoderStrategyConfig
from hftransfer.errors import ConfigError
from hftransfer.registry import register_strategy
from hftransfer.strategies.adapters import ALL_LINEAR, adapt_encoder, adapter_plan, per_architecture
from hftransfer.strategies.base import StrategyContext, StrategyPlan
from hftransfer.strategies.layers import EncoderLayout

# (targets, feed-forward targets): peft's defaults (BERT, RoBERTa, DeBERTa-v2) and the same layers elsewhere. Names
# match as dotted suffixes, so BERT's "output.dense" also rescales the attention output projection's input, as in peft.
_BERT = (["key", "value", "output.dense"], ["output.dense"])
_DEFAULTS = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra"), _BERT),
    "deberta-v2": (["key_proj", "value_proj", "output.dense"], ["output.dense"]),
    "mpnet": (["k", "v", "output.dense"], ["output.dense"]),
    "distilbert": (["k_lin", "v_lin", "lin2"], ["lin2"]),
}


@dataclass
class IA3Config(EncoderStrategyConfig):
    """(IA)³ via peft: learned vectors rescaling the encoder's keys, values and feed-forward activations, plus the
    new head. Needs a high learning rate (the paper: 3e-3)."""

    name: str = "ia3"
    target_modules: list[str] | None = None
    """Linear modules whose output (or, for feed-forward ones, input) is rescaled; default per architecture (BERT
    ``key``/``value``/``output.dense``, MPNet ``k``/``v``/``output.dense``); ``[all-linear]``: every linear layer
    of the encoder."""
    feedforward_modules: list[str] | None = None
    """The target modules whose input (the feed-forward activation) is rescaled rather than their output; default:
    the architecture's feed-forward output projection (BERT ``output.dense``) if targeted; ``[]``: none."""
    ia3_export: Literal["adapter", "merged", "both"] = "both"
    """What ``model/`` holds: the adapter alone (``adapter``), a plain merged model (``merged``), or the merged
    model in ``model/`` plus the adapter in ``adapter/`` (``both``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_modules == []:
            raise ConfigError("strategy.target_modules: empty; leave it unset for the architecture's default")
        if self.target_modules and self.feedforward_modules is not None:
            _check_feedforward(self.feedforward_modules, self.target_modules)


def _check_feedforward(feedforward: list[str], targets: list[str]) -> None:
    if ALL_LINEAR not in targets and not set(feedforward) <= set(targets):
        raise ConfigError(
            f"strategy.feedforward_modules: {sorted(set(feedforward) - set(targets))} not in the target modules "
            f"{targets} (strategy.target_modules)"
        )


def build_ia3(context: StrategyContext) -> StrategyPlan:
    # Imported here: the registry imports this module in every run, and peft takes seconds to import.
    from peft import IA3Config as PeftIA3Config

    strategy = context.strategy
    targets, feedforward = strategy.target_modules, strategy.feedforward_modules
    if targets is None or feedforward is None:
        fix = "set strategy.target_modules and strategy.feedforward_modules ([] for none)"
        default_targets, default_feedforward = per_architecture(
            EncoderLayout.task_model(context.model), _DEFAULTS, "IA3 modules", fix
        )
        targets = targets or list(default_targets)
        if feedforward is None:  # the architecture's feed-forward projections among the targets
            feedforward = [name for name in default_feedforward if ALL_LINEAR in targets or name in targets]
    _check_feedforward(feedforward, targets)
    model, _ = adapt_encoder(
        context,
        functools.partial(PeftIA3Config, feedforward_modules=list(feedforward)),
        target_modules=targets,
    )
    report = {"target_modules": targets, "feedforward_modules": feedforward, "export": strategy.ia3_export}
    # The vectors start at 1: weight decay would pull them towards 0, shrinking the activations they scale.
    return adapter_plan(context, model, strategy.ia3_export, {"ia3": report}, decay_adapters=False)


def describe_ia3(strategy: dict, report: dict) -> str:
    ia3 = report.get("ia3", {})  # the report resolves the defaults the config leaves unset
    return f"(IA)³ rescaling vectors on {ia3.get('target_modules')} (feed-forward {ia3.get('feedforward_modules')})"


# The pretrained weights stay as they are and vectors beside them train (L2-SP has nothing to hold back).
register_strategy(
    "ia3", config=IA3Config, build=build_ia3, updates_pretrained_weights=False, describe=describe_ia3
)

"""``strategy.name=auto``: frozen, freeze-most, LoRA or full fine-tuning, chosen from the training-set size.

The choice follows :mod:`hftransfer.advisor.policy` (measured learning curves); for a token task a frozen encoder's
layer is then chosen by a validation probe (``feature_layer=auto``). The chosen strategy runs exactly as if it had been named,
with the learning rate it was measured with; ``metrics.json`` -> ``strategy.auto`` records the decision and the
reason, and the run directory's ``config.yaml`` holds the concrete strategy, so the run can be repeated without
``auto``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from hftransfer.advisor.policy import CHOICES, decide
from hftransfer.config import EncoderStrategyConfig
from hftransfer.config.checks import Range, check_value
from hftransfer.errors import ConfigError
from hftransfer.registry import get_objective, get_strategy, register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan

logger = logging.getLogger("hftransfer")


@dataclass
class AutoConfig(EncoderStrategyConfig):
    """Pick the strategy from the number of labelled training examples (``docs/advisor.md``)."""

    name: str = "auto"
    rules: dict[str, int] | None = None
    """``{strategy: N}``: below N training examples use that strategy (smallest N first; above all, ``full``).
    Default: the table measured for the task type (``hftransfer.advisor.policy.DEFAULT_RULES``)."""
    frozen_lr: float = 3e-3
    """Learning rate of the head when ``frozen`` is chosen (a head alone wants a much higher one)."""
    lora_lr: float = 1e-3
    """Learning rate when ``lora`` is chosen; ``freeze`` and ``full`` use ``train.lr``."""
    cache_dir: str | None = None
    """Where a chosen ``frozen`` strategy caches encoder features (its ``cache_dir``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("frozen_lr", "lora_lr"):
            check_value(f"strategy.{name}", getattr(self, name), Range(low=0, low_open=True))
        for name, below in (self.rules or {}).items():
            if name not in CHOICES:
                raise ConfigError(f"strategy.rules: {name!r} is not one of {', '.join(CHOICES)}")
            if not isinstance(below, int) or below < 1:
                raise ConfigError(
                    f"strategy.rules.{name} must be a positive number of examples, got {below!r}"
                )


def training_examples(context: StrategyContext) -> int:
    """Labelled training examples (not windows: a long text split in several is one example)."""
    train = (context.features or {}).get("train")
    if train is None:
        raise ConfigError("strategy.name=auto needs the run's training data to choose")
    return len(set(train["example_id"])) if "example_id" in train.column_names else len(train)


def build_auto(context: StrategyContext) -> StrategyPlan:
    """Decide, then build the chosen strategy's plan with its own config in place of ``auto``'s."""
    if context.shared_encoder:
        raise ConfigError(
            "strategy.name=auto chooses for one task's data; a multitask run names its strategy"
        )
    config, auto = context.config, context.strategy
    examples = training_examples(context)
    decision = decide(config.task, examples, rules=auto.rules, frozen_lr=auto.frozen_lr, lora_lr=auto.lora_lr)
    options = dict(decision.options)
    if decision.strategy == "frozen" and config.task != "sequence-classification":
        options.pop("pooling", None)
    entry = get_strategy(decision.strategy)
    blocked = [
        (o.name, reason)
        for o in config.objectives
        if (requires := get_objective(o.name).requires) is not None and (reason := requires(entry))
    ]
    if blocked:
        raise ConfigError(
            f"strategy.name=auto chose {decision.strategy} for {examples} examples, but objective "
            f"{blocked[0][0]} does not work with it ({blocked[0][1]}); name the strategy, or set strategy.rules"
        )
    inherited = {"head_lr": auto.head_lr, "layer_lr_decay": auto.layer_lr_decay, "cache_dir": auto.cache_dir}
    fields = {f.name for f in dataclasses.fields(entry.config)}
    options.update({key: value for key, value in inherited.items() if key in fields})
    config.strategy = entry.config(name=decision.strategy, **options)
    for key, value in decision.train.items():
        setattr(config.train, key, value)
    logger.info("strategy=auto: %s", decision.reason)
    plan = entry.build(context)
    plan.report = {**plan.report, "auto": {**decision.to_dict(), "examples": examples}}
    return plan


def describe_auto(strategy: dict, report: dict) -> str:
    return f"strategy chosen by auto: {report.get('auto', {}).get('chosen', '?')}"


register_strategy("auto", config=AutoConfig, build=build_auto, describe=describe_auto)

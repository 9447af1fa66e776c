"""The data-size policy behind ``strategy.name=auto``: how much of the encoder to train for how much labelled data.

The classic advice is "little data: freeze everything and train a head; more: freeze most layers; a lot: train
everything". The table below is that advice as measured on this library's own learning curves
(``benchmarks/data_size_policy.py``, ``docs/advisor.md``): for each task type, the strategy that scored best at each
training-set size. A rule is "below N training examples, use S"; the first rule that matches wins, and above every
rule the whole model trains. Users can replace the rules (``strategy.rules``) without touching the settings each
strategy runs with, which are the ones the learning curves measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TOKEN_TASK, SEQUENCE_TASK = "token-classification", "sequence-classification"
CHOICES = ("frozen", "freeze", "lora", "full")
# Below this many training examples -> strategy, from the learning curves (benchmarks/data_size_policy.py, 3 seeds,
# docs/advisor.md). NER: LoRA led at 50 sentences, full fine-tuning at every size from 100 up. Sentence
# classification: a frozen MLP head led at 50-100 snippets at a fraction of the cost; full fine-tuning was best or
# within a point of the best from 200 up.
DEFAULT_RULES: dict[str, dict[str, int]] = {
    TOKEN_TASK: {"lora": 100},
    SEQUENCE_TASK: {"frozen": 200},
}


@dataclass(frozen=True)
class Decision:
    """What ``auto`` trains, with which strategy options and learning rate, and why."""

    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # train.* values the choice runs with (lr, warmup)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.strategy, "options": self.options, "train": self.train, "reason": self.reason}


def strategy_settings(name: str, task: str, *, frozen_lr: float, lora_lr: float) -> Decision:
    """The options and learning rate that ``name`` was measured with for ``task``."""
    if name == "frozen":
        train = {"lr": frozen_lr, "warmup_ratio": 0.0}
        if task == TOKEN_TASK:
            # A sentence encoder's top layer has averaged token information away: the layer is chosen by a probe
            # on validation (11.6 points of NER F1 over the last layer on the full training set).
            return Decision(name, {"head": "linear", "feature_layer": "auto"}, train)
        # Sentences keep the last layer: where auto picks frozen (50-100 examples) a probe that chooses the layer
        # from so few examples scored below the last layer on every seed measured.
        return Decision(name, {"head": "mlp", "pooling": "mean"}, train)
    if name == "freeze":
        return Decision(name, {"freeze_layers": -2})  # all but the top two layers fixed: "freeze most"
    if name == "lora":
        # The learning curves' LoRA settings per task type: every linear layer without dropout on NER; the
        # attention and feed-forward projections with dropout on sentence classification.
        if task == TOKEN_TASK:
            options = {"r": 8, "alpha": 16, "target_modules": ["all-linear"], "lora_dropout": 0.0}
        else:
            options = {
                "r": 8,
                "alpha": 16,
                "target_modules": ["query", "value", "dense"],
                "lora_dropout": 0.1,
            }
        return Decision(name, options, {"lr": lora_lr})
    if name == "full":
        return Decision(name)
    raise ValueError(f"unknown strategy {name!r} for auto; choose from {', '.join(CHOICES)}")


def decide(
    task: str,
    examples: int,
    *,
    rules: dict[str, int] | None = None,
    frozen_lr: float = 3e-3,
    lora_lr: float = 1e-3,
) -> Decision:
    """The strategy for ``examples`` labelled training examples of ``task``.

    Args:
        rules: ``{strategy: N}`` meaning "below N examples, use strategy", checked from the smallest N up; default
            the measured table for the task type (:data:`DEFAULT_RULES`).
    """
    table = DEFAULT_RULES[task] if rules is None else rules
    unknown = [name for name in table if name not in CHOICES]
    if unknown:
        raise ValueError(f"strategy.rules names {unknown}; choose from {', '.join(CHOICES)}")
    for name, below in sorted(table.items(), key=lambda item: item[1]):
        if examples < below:
            chosen = strategy_settings(name, task, frozen_lr=frozen_lr, lora_lr=lora_lr)
            reason = f"{examples} training examples < {below}: {name}"
            break
    else:
        chosen = strategy_settings("full", task, frozen_lr=frozen_lr, lora_lr=lora_lr)
        limits = ", ".join(
            f"{name} below {below}" for name, below in sorted(table.items(), key=lambda i: i[1])
        )
        reason = f"{examples} training examples, above every rule ({limits or 'none'}): full"
    source = "strategy.rules" if rules is not None else "the measured default table"
    return Decision(chosen.strategy, chosen.options, chosen.train, f"{reason} ({source}, {task})")


def decision_table(task: str, sizes: list[int], rules: dict[str, int] | None = None) -> list[tuple[int, str]]:
    """``[(size, strategy)]``: what ``auto`` picks at each size (for docs and tests)."""
    return [(size, decide(task, size, rules=rules).strategy) for size in sizes]

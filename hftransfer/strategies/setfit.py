"""SetFit-style few-shot classification (Tunstall et al., 2022): contrastive fine-tuning of the encoder on pairs of
the labelled texts, then a head on the tuned encoder's mean-pooled embeddings.

The first stage (``hftransfer/fewshot/body.py``) trains the encoder on the cosine pair loss over class-balanced
blocks, every pair inside a block counting, each text encoded once per block. The second stage *is* the ``frozen``
strategy on the tuned encoder: its features cached, a head trained by the run's loop with the usual evaluation and
best-model selection, and the same export (the encoder plus ``head.safetensors``, which ``Predictor`` and the CLI
load: no Hugging Face classification model mean-pools, so no plain one predicts the same).
"""

from __future__ import annotations

from dataclasses import dataclass

from hftransfer.config import EncoderStrategyConfig
from hftransfer.errors import ConfigError
from hftransfer.fewshot.losses import cosine_pair_loss
from hftransfer.fewshot.pairs import class_balanced_blocks, epoch_pair_counts
from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan
from hftransfer.strategies.frozen_plan import FrozenConfig, build_frozen


@dataclass
class SetfitConfig(FrozenConfig, EncoderStrategyConfig):
    """Contrastive pair training of the encoder, then a head on its (cached) features. ``layer_lr_decay`` applies
    to the pair stage's encoder learning rates, ``head_lr`` to the head."""

    name: str = "setfit"
    body_epochs: int = 10
    """Passes of the pair stage over the training texts; each pass deals new blocks, so new pairs."""
    body_lr: float = 5e-5
    """Learning rate of the encoder in the pair stage (AdamW, linear decay after warm-up). Higher than the setfit
    library's 2e-5: a block's step averages over all its pairs, so the stage takes fewer, less noisy steps than the
    library's batches of 16 pairs, and at 2e-5 it moved the encoder too little (measured: docs/results.md)."""
    block_size: int = 16
    """Texts per block: each block is one forward pass and trains on its ``b(b-1)/2`` pairs."""
    body_warmup_ratio: float = 0.1
    """Share of the pair stage's steps spent warming its learning rate up."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.body_epochs < 1:
            raise ConfigError(f"strategy.body_epochs must be >= 1, got {self.body_epochs}")
        if not self.body_lr > 0:
            raise ConfigError(f"strategy.body_lr must be > 0, got {self.body_lr}")
        if self.block_size < 2:
            raise ConfigError(
                f"strategy.block_size must be >= 2 (a pair needs two texts), got {self.block_size}"
            )
        if not 0.0 <= self.body_warmup_ratio < 1.0:
            raise ConfigError(f"strategy.body_warmup_ratio must be in [0, 1), got {self.body_warmup_ratio}")


def build_setfit(context: StrategyContext) -> StrategyPlan:
    """Tune the encoder on pairs of the training texts, then plan the frozen-encoder head on it.

    Raises:
        ConfigError: a token task, several labels or a number per text, several tasks, or objectives besides the
            task's (the head trains on cached features: nothing else has a forward pass to act on).
    """
    # Imported here, not at the top: fewshot.body imports the strategies package this module is part of.
    from hftransfer.fewshot.body import check_two_stage_run, tune_body

    check_two_stage_run(context, "pairs texts by their one class label")
    config, strategy = context.config, context.strategy
    labels = [int(label) for label in context.features["train"]["labels"]]

    # A new deal each epoch (new blocks, so new pairs), seeded by the run's seed; dealt once, for training and report.
    dealt = [
        class_balanced_blocks(labels, strategy.block_size, seed=config.train.seed + epoch)
        for epoch in range(strategy.body_epochs)
    ]
    report = tune_body(context, deal=dealt.__getitem__, loss=cosine_pair_loss, what="pairs")
    positive = negative = 0
    for blocks in dealt:
        counts = epoch_pair_counts(blocks, labels)
        positive, negative = positive + counts[0], negative + counts[1]
    report.update(block_size=strategy.block_size, pairs={"positive": positive, "negative": negative})
    plan = build_frozen(context)
    plan.report = {**plan.report, "name": "setfit", "contrastive_stage": report}
    return plan


def describe_setfit(strategy: dict, report: dict) -> str:
    stage = report.get("contrastive_stage", {})
    return (
        f"SetFit-style: encoder tuned on a contrastive pair loss ({stage.get('steps', '?')} steps), then a "
        f"{strategy.get('head')} head on its mean-pooled embeddings"
    )


register_strategy("setfit", config=SetfitConfig, build=build_setfit, describe=describe_setfit)

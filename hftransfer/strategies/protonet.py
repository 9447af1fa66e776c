"""Prototypical networks with episodic training (Snell et al., 2017): meta-learn an encoder on N-way K-shot
episodes drawn from the training classes, then train a head on its mean-pooled features.

The first stage (``hftransfer/fewshot/body.py``) trains the encoder so that each episode's queries lie nearest to
the prototype (mean embedding) of their class's support texts. The second stage is the ``frozen`` strategy on the
tuned encoder, as for ``setfit``: a head for the training classes, exported as the encoder plus the head. The
exported encoder also serves classes never trained on: ``hftransfer zero-shot --model <run>/model`` with a few
example texts per new class as the label's descriptions classifies by the nearest prototype, as in training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hftransfer.config import EncoderStrategyConfig
from hftransfer.errors import ConfigError
from hftransfer.fewshot.episodes import episode_support, sample_episodes
from hftransfer.fewshot.losses import episode_loss
from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan
from hftransfer.strategies.frozen_plan import FrozenConfig, build_frozen


@dataclass
class ProtonetConfig(FrozenConfig, EncoderStrategyConfig):
    """Episodic training of the encoder on a prototypical loss, then a head on its (cached) features."""

    name: str = "protonet"
    n_way: int = 2
    """Classes per episode (at most the number of training classes with ``k_shot + queries`` texts)."""
    k_shot: int = 4
    """Support texts per class of an episode: how few examples the encoder learns to generalise from."""
    queries: int = 4
    """Query texts per class of an episode, classified against the support prototypes."""
    episodes_per_epoch: int | None = None
    """Episodes per epoch; default: as many as the training texts fill (``texts / (n_way * (k_shot + queries))``,
    at least one)."""
    body_epochs: int = 10
    """Epochs of episodes; a new draw of episodes each epoch."""
    body_lr: float = 2e-5
    """Learning rate of the encoder in the episodic stage (AdamW, linear decay after warm-up)."""
    body_warmup_ratio: float = 0.1
    """Share of the episodic stage's steps spent warming its learning rate up."""
    scale: float = 10.0
    """Temperature of the scaled cosine between queries and prototypes (the logits are ``scale * cos``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("n_way", "k_shot", "queries", "body_epochs"):
            if getattr(self, field) < 1:
                raise ConfigError(f"strategy.{field} must be >= 1, got {getattr(self, field)}")
        if self.n_way < 2:
            raise ConfigError(
                f"strategy.n_way must be >= 2 (an episode tells classes apart), got {self.n_way}"
            )
        if self.episodes_per_epoch is not None and self.episodes_per_epoch < 1:
            raise ConfigError(f"strategy.episodes_per_epoch must be >= 1, got {self.episodes_per_epoch}")
        if not self.body_lr > 0 or not self.scale > 0:
            raise ConfigError("strategy.body_lr and strategy.scale must be > 0")
        if not 0.0 <= self.body_warmup_ratio < 1.0:
            raise ConfigError(f"strategy.body_warmup_ratio must be in [0, 1), got {self.body_warmup_ratio}")


def build_protonet(context: StrategyContext) -> StrategyPlan:
    """Meta-train the encoder on episodes of the training texts, then plan the frozen-encoder head on it.

    Raises:
        ConfigError: what :func:`~hftransfer.fewshot.body.check_two_stage_run` refuses, or too few classes with
            ``k_shot + queries`` texts for ``n_way``-way episodes.
    """
    # Imported here, not at the top: fewshot.body imports the strategies package this module is part of.
    from hftransfer.fewshot.body import check_two_stage_run, tune_body

    check_two_stage_run(context, "draws episodes of classes by the texts' one label")
    config, strategy = context.config, context.strategy
    labels = [int(label) for label in context.features["train"]["labels"]]
    per_episode = strategy.n_way * (strategy.k_shot + strategy.queries)
    episodes = strategy.episodes_per_epoch or max(1, len(labels) // per_episode)

    def deal(epoch: int) -> list[list[int]]:
        return sample_episodes(
            labels,
            n_way=strategy.n_way,
            k_shot=strategy.k_shot,
            queries=strategy.queries,
            episodes=episodes,
            seed=config.train.seed + epoch,
        )

    deal(0)  # refuses impossible episodes before any training
    loss = functools.partial(
        episode_loss, support=episode_support(strategy.n_way, strategy.k_shot), scale=strategy.scale
    )
    report = tune_body(context, deal=deal, loss=loss, what="episodes")
    report.update(
        n_way=strategy.n_way, k_shot=strategy.k_shot, queries=strategy.queries, episodes_per_epoch=episodes
    )
    plan = build_frozen(context)
    plan.report = {**plan.report, "name": "protonet", "episodic_stage": report}
    return plan


def describe_protonet(strategy: dict, report: dict) -> str:
    stage = report.get("episodic_stage", {})
    return (
        f"prototypical network: encoder meta-trained on {strategy.get('n_way')}-way {strategy.get('k_shot')}-shot "
        f"episodes ({stage.get('steps', '?')} steps), then a {strategy.get('head')} head on its mean-pooled embeddings"
    )


register_strategy("protonet", config=ProtonetConfig, build=build_protonet, describe=describe_protonet)

"""The first stage of the two-stage few-shot strategies: fine-tune the encoder on a loss over groups of texts
(SetFit's pair loss over class-balanced blocks, prototypical networks' loss over episodes), before a head is
trained on its features.

It runs before the run's own loop (which then trains a head on the tuned encoder's features), on every process
alike: few-shot training sets are a few dozen to a few hundred texts, so the stage is seconds to minutes, and
splitting it across processes would not pay for the synchronisation. Each process trains the same blocks from the
same seed; the main process's weights are then broadcast, so that every process caches and trains on exactly the
same features even where GPU kernels are not bit-for-bit deterministic.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import broadcast
from tqdm.auto import tqdm

from hftransfer.config.problem import SINGLE_LABEL
from hftransfer.data.batching import FeatureCollator
from hftransfer.errors import ConfigError
from hftransfer.strategies.feature_encoding import base_encoder, encoder_features
from hftransfer.strategies.transfer import param_groups
from hftransfer.training.optim import linear_schedule_with_warmup

logger = logging.getLogger("hftransfer")


def check_two_stage_run(context: Any, pairing: str) -> None:
    """What a two-stage few-shot strategy needs of its run (``pairing``: how it uses the labels, for the message).

    Raises:
        ConfigError: a token task, several labels or a number per text, several tasks, objectives besides the
            task's (the head trains on cached features: nothing else has a forward pass to act on), or a pooling
            other than the mean (what the first stage trains).
    """
    config, name = context.config, context.strategy.name
    problem = getattr(config.data, "problem_type", SINGLE_LABEL)
    if context.shared_encoder or config.task != "sequence-classification" or problem != SINGLE_LABEL:
        raise ConfigError(
            f"strategy.name={name} {pairing}: it needs a one-task, single-label sequence-classification run "
            f"(this one: task={config.task}, data.problem_type={problem}"
            f"{', several tasks' if context.shared_encoder else ''})"
        )
    others = [o.name for o in config.objectives if o.name != "task"]
    if others or context.encoder_forward:
        raise ConfigError(
            f"strategy.name={name} trains its head on cached features, so objectives: {others} have no forward "
            "pass to act on; use objectives: [{name: task}], or strategy.name=full with objectives: "
            "[{name: task}, {name: contrastive}] to train on the pair loss and the task's together"
        )
    if context.strategy.pooling != "mean":
        raise ConfigError(
            f"strategy.name={name} pools by the mean (what its first stage trains); leave pooling unset"
        )
    if context.strategy.feature_layer == "auto":
        raise ConfigError(
            f"strategy.name={name} trains the features of one choice of layers before the head exists; set "
            "strategy.feature_layer to a layer (default -1, the last) instead of auto"
        )


def tune_body(
    context: Any,
    *,
    deal: Callable[[int], list[list[int]]],
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    what: str = "groups",
) -> dict[str, Any]:
    """Train the encoder of ``context.model`` (in place) on ``loss`` over groups of the training texts, at
    ``strategy.body_lr``, and return what ``metrics.json`` records: steps, loss in the first and last epoch, seconds.

    Args:
        context: the strategy's context (model, run config, tokenised ``train`` features, tokenizer, accelerator).
        deal: ``deal(epoch) -> groups``, the index lists one epoch trains on, one optimizer step each (seeded by the
            caller from the run's seed, so that a resumed run deals the same).
        loss: ``loss(embeddings, labels)`` of one group: its texts' pooled embeddings and class ids, in its order.
        what: the groups' name in the progress bar and log.
    """
    started = time.perf_counter()
    config, strategy, accelerator = context.config, context.strategy, context.accelerator
    features, tokenizer = context.features["train"], context.tokenizer
    encoder = base_encoder(context.model)
    # The encoder's groups at the stage's own rate (layer_lr_decay applies); the task head gets no gradient here.
    rates = dataclasses.replace(config.train, lr=strategy.body_lr)
    encoder_groups = [
        g for g in param_groups(context.model, rates, strategy) if not g["name"].startswith("head/")
    ]
    labels = [int(label) for label in features["labels"]]
    inputs = features.select_columns([n for n in tokenizer.model_input_names if n in features.column_names])
    collate = FeatureCollator.for_device(tokenizer, accelerator.device)
    epochs = strategy.body_epochs
    layers = {"layer": strategy.feature_layer, "num_layers": strategy.feature_layers}
    dealt = [deal(epoch) for epoch in range(epochs)]
    total = sum(len(epoch_groups) for epoch_groups in dealt)
    peak_lr = max(group["lr"] for group in encoder_groups)  # before the schedule rewrites the groups' rates
    optimizer = torch.optim.AdamW(encoder_groups)
    schedule = linear_schedule_with_warmup(optimizer, math.ceil(strategy.body_warmup_ratio * total), total)
    encoder.to(accelerator.device).train()  # with dropout, as SetFit's sentence-transformers training
    losses: list[list[float]] = []
    progress = tqdm(
        total=total, desc=f"Encoder on {what}", leave=False, disable=not accelerator.is_local_main_process
    )
    for epoch_groups in dealt:
        losses.append([])
        for block in epoch_groups:
            batch = {k: v.to(accelerator.device) for k, v in collate([inputs[i] for i in block]).items()}
            block_labels = torch.tensor([labels[i] for i in block], device=accelerator.device)
            with (
                accelerator.autocast()
            ):  # the features the head will be trained on: same layer(s), mean-pooled
                embeddings = encoder_features(encoder, batch, pooling="mean", task=config.task, **layers)
            value = loss(embeddings, block_labels)
            value.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses[-1].append(float(value.detach()))
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1][-1]:.4f}")
    progress.close()
    encoder.eval()
    if accelerator.num_processes > 1:
        for tensor in encoder.state_dict().values():  # parameters and buffers, in place
            tensor.copy_(broadcast(tensor.detach().clone(), from_process=0))
    first, last = _mean(losses[0]), _mean(losses[-1])
    logger.info("encoder on %s: %d steps over %d epochs, loss %.4f -> %.4f", what, total, epochs, first, last)
    return {
        "epochs": epochs,
        "steps": total,
        "lr": peak_lr,
        "loss_first_epoch": round(first, 5),
        "loss_last_epoch": round(last, 5),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")

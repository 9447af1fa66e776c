"""At which learning rate each parameter trains: discriminative head LR and layer-wise LR decay.

Each strategy module decides *what* trains; all of
them take their learning rates from :func:`param_groups`, so ``head_lr`` and ``layer_lr_decay`` combine with every
strategy that trains encoder weights.
"""

from __future__ import annotations

import logging

import torch

from hftransfer.config import StrategyConfig, TrainConfig
from hftransfer.errors import ConfigError
from hftransfer.strategies.layers import EncoderLayout
from hftransfer.training.optim import no_decay

logger = logging.getLogger("hftransfer")


def param_groups(
    model: torch.nn.Module,
    train: TrainConfig,
    strategy: StrategyConfig,
    *,
    include_frozen: bool = False,
    encoder_weight_decay: bool = True,
) -> list[dict]:
    """AdamW parameter groups with per-group learning rates.

    The head gets ``strategy.head_lr`` (default ``train.lr``); encoder parameter at depth d below the top layer
    gets ``train.lr * layer_lr_decay**d`` (embeddings: d = L). Biases and normalisation weights get no weight
    decay. With ``encoder_weight_decay=False`` (an objective such as L2-SP pulls the encoder towards its pretrained
    weights) the encoder gets none either: decay pulls towards zero, and the two would fight.

    Args:
        include_frozen: also group parameters that do not require grad now (gradual unfreezing turns them on
            later; AdamW skips parameters whose gradient is None).
    """
    layout = EncoderLayout.of(model)
    head_lr = strategy.head_lr if strategy.head_lr is not None else train.lr
    grouped: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        if not (param.requires_grad or include_frozen):
            continue
        if layout.is_head(name):
            unit, lr = "head", head_lr
        else:
            layer = layout.layer_of(name)
            unit = (
                "embeddings"
                if layout.is_embedding(name)
                else f"layer.{layer}"
                if layer is not None
                else "encoder"
            )
            lr = train.lr * getattr(strategy, "layer_lr_decay", 1.0) ** layout.depth(name)
        decays = not no_decay(name, param) and (unit == "head" or encoder_weight_decay)
        key = (unit, decays)
        if key not in grouped:
            grouped[key] = {
                "params": [],
                "lr": lr,
                "weight_decay": train.weight_decay if decays else 0.0,
                "name": f"{unit}/{'decay' if decays else 'no_decay'}",
            }
        grouped[key]["params"].append(param)
    if not grouped:
        raise ConfigError("the strategy leaves no trainable parameter")
    return list(grouped.values())

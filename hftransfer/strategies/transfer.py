"""Which encoder weights train, and at which learning rate: full fine-tuning, layer freezing, gradual unfreezing,
discriminative head LR and layer-wise LR decay.

LoRA (``lora.py``) and the frozen-encoder head (``frozen.py``) decide *what* trains differently but take their
learning rates from :func:`param_groups` too, so ``head_lr`` and ``layer_lr_decay`` combine with every strategy
that trains encoder weights.
"""

from __future__ import annotations

import logging

import torch

from hftransfer.config import StrategyConfig, TrainConfig
from hftransfer.errors import ConfigError
from hftransfer.strategies.layers import EncoderLayout
from hftransfer.training.optim import no_decay

logger = logging.getLogger("hftransfer")


def resolve_freeze_count(freeze_layers: int, num_layers: int) -> int:
    """Bottom layers to freeze: N, or ``L + N`` for negative N (all but the top |N|)."""
    count = freeze_layers if freeze_layers >= 0 else num_layers + freeze_layers
    if not 0 <= count <= num_layers:
        raise ConfigError(
            f"strategy.freeze_layers={freeze_layers} does not fit a model with {num_layers} encoder layers "
            f"(use 0..{num_layers}, or -{num_layers}..-1 to keep the top layers trainable)"
        )
    return count


def freeze_bottom(model: torch.nn.Module, layout: EncoderLayout, count: int) -> None:
    """Fix the embeddings and encoder layers ``0..count-1``; everything else stays trainable."""
    for name, param in model.named_parameters():
        if layout.is_head(name):
            continue
        layer = layout.layer_of(name)
        if layout.is_embedding(name) or (layer is not None and layer < count):
            param.requires_grad_(False)


class GradualUnfreezing:
    """ULMFiT gradual unfreezing: train the head alone, then unfreeze one more layer group from the top every
    ``every`` epochs (or optimizer steps). Groups: head, top layer (+ pooler), ..., bottom layer, embeddings.

    The unfrozen set is a pure function of the step/epoch, so a resumed run unfreezes exactly as the original.
    """

    def __init__(self, model: torch.nn.Module, layout: EncoderLayout, every: int, unit: str) -> None:
        self.layout, self.every, self.unit = layout, every, unit
        self.num_groups = layout.num_layers + 2
        self.unfrozen = -1
        self.apply(model, step=0, epoch=0)

    def groups_unfrozen(self, step: int, epoch: int) -> int:
        count = step if self.unit == "step" else epoch
        return min(self.num_groups, 1 + count // self.every)

    def apply(self, model: torch.nn.Module, *, step: int, epoch: int) -> bool:
        """Set ``requires_grad`` for the current step; returns True when the set changed."""
        target = self.groups_unfrozen(step, epoch)
        if target == self.unfrozen:
            return False
        for name, param in model.named_parameters():
            param.requires_grad_(self.layout.group(name) < target)
        if self.unfrozen >= 0:
            logger.info("Gradual unfreezing: %d of %d layer groups trainable", target, self.num_groups)
        self.unfrozen = target
        return True


def param_groups(
    model: torch.nn.Module,
    train: TrainConfig,
    strategy: StrategyConfig,
    *,
    include_frozen: bool = False,
) -> list[dict]:
    """AdamW parameter groups with per-group learning rates.

    The head gets ``strategy.head_lr`` (default ``train.lr``); encoder parameter at depth d below the top layer
    gets ``train.lr * layer_lr_decay**d`` (embeddings: d = L). Biases and normalisation weights get no weight
    decay. Under L2-SP the encoder gets no weight decay either: decay pulls towards zero, L2-SP towards the
    pretrained weights, and the two would fight.

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
            lr = train.lr * strategy.layer_lr_decay ** layout.depth(name)
        decays = not no_decay(name, param) and not (unit != "head" and strategy.l2sp_weight > 0)
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

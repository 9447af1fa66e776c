"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from hftransfer.config import TrainConfig


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases and normalisation weights (all 1-D tensors) are not weight-decayed: shrinking them only hurts."""
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()


def parameter_groups(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float
) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed AdamW group (empty groups dropped)."""
    decay, plain = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        (plain if no_decay(name, param) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": plain, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [group for group in groups if group["params"]]


def adamw(param_groups: list[dict], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the run's settings; the fused kernel where torch has one for the parameters' device and dtype.

    The default implementation loops over the parameter tensors in Python; the fused one updates them all in one
    kernel, which on a small CPU makes the optimizer step several times cheaper (measured: docs/results.md); the
    update is the same AdamW up to float rounding.
    """
    settings = {"lr": config.lr, "betas": tuple(config.adam_betas), "eps": config.adam_eps}
    if config.fused_optimizer:
        try:
            return torch.optim.AdamW(param_groups, fused=True, **settings)
        except (RuntimeError, ValueError):  # torch refuses: no fused kernel for this device or dtype
            pass
    return torch.optim.AdamW(param_groups, **settings)


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters, with weight decay off for biases and LayerNorm."""
    return adamw(parameter_groups(model.named_parameters(), config.weight_decay), config)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the peak LR, then linear decay to 0 at ``total_steps``."""
    warmup = (
        config.warmup_steps if config.warmup_steps is not None else round(config.warmup_ratio * total_steps)
    )
    return linear_schedule_with_warmup(optimizer, warmup, total_steps)


def linear_schedule_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' ``get_linear_schedule_with_warmup``, restated: its module imports ``transformers.trainer_utils``,
    which imports peft whenever peft is installed. The factor is a ``functools.partial`` as theirs is, so the
    scheduler's ``state_dict`` (and resuming from checkpoints written with theirs) is the same."""
    schedule = functools.partial(_linear_with_warmup, warmup_steps=warmup_steps, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _linear_with_warmup(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The LR factor at ``step``: 0 -> 1 over the warm-up, then 1 -> 0 at ``total_steps``."""
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))


@contextmanager
def scaled_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> Iterator[None]:
    """Every group's learning rate times ``factor`` inside the block, the scheduled values again after it (also when
    the step inside raised or was skipped)."""
    if factor == 1.0:
        yield
        return
    scheduled = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] *= factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr


def prepare_training(
    accelerator: Any,
    model: torch.nn.Module,
    train_loader: Any,
    eval_loader: Any,
    config: TrainConfig,
    param_groups: list[dict] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, Any]:
    """Model, optimizer (AdamW over ``param_groups`` unless given) and loaders through ``accelerator.prepare``;
    a single training loader comes back as :class:`~hftransfer.data.mixing.LoaderBatches` (mixed sources are
    batches already), and the model compiled in place when ``train.torch_compile``."""
    from torch.utils.data import DataLoader

    from hftransfer.data.mixing import LoaderBatches

    if optimizer is None:
        optimizer = (
            adamw(param_groups, config) if param_groups is not None else build_optimizer(model, config)
        )
    if eval_loader is not None:
        model, optimizer, train_loader, eval_loader = accelerator.prepare(
            model, optimizer, train_loader, eval_loader
        )
    else:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if isinstance(train_loader, DataLoader):
        train_loader = LoaderBatches(train_loader, accelerator)
    if config.torch_compile:
        # Module.compile compiles in place: parameter names, saving and unwrapping stay as they were (a
        # torch.compile wrapper would prefix every state-dict key). Dynamic shapes: every batch has its own length.
        accelerator.unwrap_model(model, keep_torch_compile=False).compile(
            backend=config.compile_backend, dynamic=True
        )
    return model, optimizer, train_loader, eval_loader


def without_decay(groups: list[dict], undecayed: set[int]) -> list[dict]:
    """The same groups with the parameters in ``undecayed`` moved to their unit's ``/no_decay`` group."""
    regrouped: dict[str, dict] = {}
    for group in groups:
        for param in group["params"]:
            if group["weight_decay"] != 0.0 and id(param) in undecayed:
                name = group["name"].replace("/decay", "/no_decay")
                target = regrouped.setdefault(
                    name, {**group, "params": [], "name": name, "weight_decay": 0.0}
                )
            else:
                target = regrouped.setdefault(group["name"], {**group, "params": []})
            target["params"].append(param)
    return list(regrouped.values())

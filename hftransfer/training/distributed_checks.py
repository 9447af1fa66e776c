"""Checks before ``accelerator.prepare``: stop with one line where the asked-for distribution cannot work with this
run, and warn once where it will not be what runs (FSDP or DeepSpeed asked for on CPU). What is asked for and what
ran: :mod:`hftransfer.training.distributed`."""

from __future__ import annotations

import logging
from typing import Any

import torch
from accelerate.utils import DistributedType

from hftransfer.errors import ConfigError
from hftransfer.training.distributed import launched_processes, mismatch_note, requested_sharding

logger = logging.getLogger("hftransfer")


def check_processes_joined(accelerator: Any) -> None:
    """Fail when the launcher started more processes than Accelerate joined into one run.

    ``accelerate launch --multi_gpu`` (or ``--use_fsdp``) with 2 processes on a machine without GPUs and without
    ``ACCELERATE_USE_CPU=1`` gives each process ``distributed_type=NO``: two independent runs into one directory.

    Raises:
        ConfigError: the launcher's ``WORLD_SIZE`` exceeds ``accelerator.num_processes``.
    """
    launched = launched_processes()
    if launched > accelerator.num_processes:
        raise ConfigError(
            f"the launcher started {launched} processes but Accelerate set up distributed_type="
            f"{accelerator.distributed_type.value} with {accelerator.num_processes} in each, so they would train "
            f"independently; on a machine without GPUs launch with ACCELERATE_USE_CPU=1 (docs/distributed.md)"
        )


# Found with a harness that forces Accelerate's FSDP2 on CPU: these save, reload or compare live parameters as
# whole tensors, which FSDP has split across processes (peft's adapter save/merge, the frozen head's reload, L2-SP's
# reference difference). Until they gather first, a clear error beats a failure at the first best-model save.
FSDP_UNSUPPORTED_STRATEGIES = {"lora", "ia3", "frozen", "setfit"}
FSDP_UNSUPPORTED_OBJECTIVES = {"l2sp"}


def check_distributed_setup(
    accelerator: Any,
    model: torch.nn.Module,
    *,
    strategy: str | None = None,
    objectives: tuple[str, ...] = (),
) -> None:
    """Fail early where the requested sharding cannot work with this model; warn when it will not run at all.

    Call after the strategy has set ``requires_grad`` and before ``accelerator.prepare``.

    Args:
        model: the model ``prepare`` will wrap (the strategy plan's).
        strategy: the strategy's name, for the message.

    Raises:
        ConfigError: a strategy or objective that cannot run under FSDP yet, where FSDP really runs; the launched
            processes did not join (:func:`check_processes_joined`); FSDP version 1 with
            ``use_orig_params`` off and a model that mixes frozen and trainable parameters (FSDP1 flattens each
            unit's parameters into one tensor with one ``requires_grad``); or FSDP asked for with
            ``cpu_ram_efficient_loading`` where Accelerate does not use FSDP (the weights were loaded on one process
            only and nothing would broadcast them).
    """
    check_processes_joined(accelerator)
    requested = requested_sharding(accelerator)
    if accelerator.distributed_type == DistributedType.FSDP:
        blocked = sorted(
            ({strategy} & FSDP_UNSUPPORTED_STRATEGIES) | (set(objectives) & FSDP_UNSUPPORTED_OBJECTIVES)
        )
        if blocked:
            raise ConfigError(
                f"{', '.join(blocked)} cannot run under FSDP yet (it reads or saves whole parameters that FSDP has "
                "split across processes): launch with DDP (--multi_gpu) instead; LoRA, IA3 and a frozen encoder "
                "train few parameters, so sharding them saves little"
            )
    if (
        requested["sharding"].startswith("fsdp")
        and accelerator.distributed_type != DistributedType.FSDP
        and requested["fsdp_cpu_ram_efficient_loading"]
        and accelerator.num_processes > 1
    ):
        # transformers loaded the weights on the main process only (the others hold meta tensors); FSDP would have
        # broadcast them, DDP cannot.
        raise ConfigError(
            f"{requested['sharding']} with fsdp_cpu_ram_efficient_loading=true (accelerate launch's default) "
            f"loads the weights on the main process only, but Accelerate does not use FSDP here "
            f"(distributed_type={accelerator.distributed_type.value}, device {accelerator.device.type}), so "
            "the other processes would hold no weights: launch without --use_fsdp, or pass "
            "--fsdp_cpu_ram_efficient_loading false --fsdp_sync_module_states false"
        )
    mismatch = mismatch_note(accelerator, requested)
    if mismatch and accelerator.is_main_process:  # once, not once per process
        logger.warning(mismatch)
    if (
        accelerator.distributed_type == DistributedType.FSDP
        and requested["sharding"] == "fsdp1"
        and not requested.get("fsdp_use_orig_params")
    ):
        flags = {p.requires_grad for p in model.parameters()}
        if len(flags) > 1:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in model.parameters())
            raise ConfigError(
                f"strategy={strategy or '?'} trains {trainable:,} of {total:,} parameters, but FSDP version 1 with "
                "fsdp_use_orig_params=false cannot shard frozen and trainable parameters together: set "
                "fsdp_version: 2 (or fsdp_use_orig_params: true) in the accelerate config, or use strategy=full"
            )

"""What a run's distribution really is, next to what the launch asked for.

``accelerate launch --use_fsdp`` (or ``--use_deepspeed``) only *asks*: Accelerate picks FSDP or DeepSpeed when the
processes have GPUs (or another accelerator). On CPU it sets up ``distributed_type=MULTI_CPU`` whatever was asked and
wraps the model in ``DistributedDataParallel``: every process holds the whole model and nothing is sharded, and
nothing in the run says so. (Accelerate 1.16, ``AcceleratorState.__init__``: FSDP is chosen only inside the branch for
``MULTI_GPU`` / ``MULTI_XPU`` / ...; DeepSpeed only ``and not cpu``.)

- :func:`~hftransfer.training.distributed_checks.check_distributed_setup` (its own module): before
  ``accelerator.prepare``; fails early where the asked-for sharding cannot work, and warns once when it will not be
  what runs.
- :func:`distributed_report`: after ``prepare``; what ran (``metrics.json["distributed"]``).
- :func:`load_full_state_dict`: load a whole (unsharded) state dict into a prepared, possibly sharded, model.

docs/distributed.md has the table of what runs where.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from accelerate.utils import DistributedType

logger = logging.getLogger("hftransfer")

SHARDED_TYPES = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def _env_flag(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes")


def requested_sharding(accelerator: Any) -> dict[str, Any]:
    """What the launch asked for: the environment ``accelerate launch`` sets (``ACCELERATE_USE_FSDP``,
    ``FSDP_VERSION``, ``FSDP_USE_ORIG_PARAMS``, ``ACCELERATE_USE_DEEPSPEED``, ...), or the accelerator's plugin.

    The plugin is read first where the state kept it (FSDP/DeepSpeed in effect): it holds the resolved values. On CPU
    the state drops it and only the environment remains (``Accelerator(fsdp_plugin=...)`` sets
    ``ACCELERATE_USE_FSDP=true`` too).

    Returns:
        ``{"sharding": "fsdp1" | "fsdp2" | "deepspeed" | "none", ...}`` with ``fsdp_use_orig_params`` (FSDP1),
        ``fsdp_cpu_ram_efficient_loading`` (FSDP) or ``deepspeed_zero_stage`` (DeepSpeed) where they apply.
    """
    state = getattr(accelerator, "state", None)
    plugin = getattr(state, "fsdp_plugin", None)
    if plugin is not None or _env_flag("ACCELERATE_USE_FSDP"):
        version = int(getattr(plugin, "fsdp_version", None) or os.environ.get("FSDP_VERSION", "1"))
        requested: dict[str, Any] = {"sharding": f"fsdp{version}"}
        if version == 1:
            # accelerate's plugin default when the variable is unset: False (the launcher passes true by default)
            orig = getattr(plugin, "use_orig_params", None)
            requested["fsdp_use_orig_params"] = (
                bool(orig) if orig is not None else _env_flag("FSDP_USE_ORIG_PARAMS")
            )
        requested["fsdp_cpu_ram_efficient_loading"] = _env_flag("FSDP_CPU_RAM_EFFICIENT_LOADING")
        return requested
    ds_plugin = getattr(state, "deepspeed_plugin", None)
    if ds_plugin is not None or _env_flag("ACCELERATE_USE_DEEPSPEED"):
        stage = getattr(ds_plugin, "zero_stage", None) or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        return {"sharding": "deepspeed", "deepspeed_zero_stage": int(stage) if stage else None}
    return {"sharding": "none"}


def launched_processes() -> int:
    """How many processes the launcher started (torchrun's ``WORLD_SIZE``); 1 outside a launcher."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _expected_wrapper(distributed_type: DistributedType, num_processes: int, fsdp_version: int | None) -> str:
    if distributed_type == DistributedType.FSDP:
        return "FSDPModule" if fsdp_version == 2 else "FullyShardedDataParallel"
    if distributed_type == DistributedType.DEEPSPEED:
        return "DeepSpeedEngine"
    return "DistributedDataParallel" if num_processes > 1 else "none"


def mismatch_note(accelerator: Any, requested: dict[str, Any]) -> str | None:
    """The warning for a launch whose asked-for sharding is not what Accelerate set up, or None."""
    if requested["sharding"] == "none" or accelerator.distributed_type in SHARDED_TYPES:
        return None
    n = accelerator.num_processes
    what = _expected_wrapper(accelerator.distributed_type, n, None)
    holds = (
        f"each of the {n} processes holds the whole model ({what})"
        if n > 1
        else "one process holds the whole model"
    )
    why = (
        "Accelerate uses FSDP and DeepSpeed only on GPUs (or other accelerators), never on CPU"
        if accelerator.device.type == "cpu"
        else f"Accelerate set up {accelerator.distributed_type.value} instead"
    )
    return (
        f"{requested['sharding']} was requested, but this run is distributed_type="
        f"{accelerator.distributed_type.value}: {holds} and nothing is sharded; {why} (docs/distributed.md)"
    )


def _unwrap_compiled(model: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule (accelerate's dynamo backend)
    return (inner, True) if isinstance(inner, torch.nn.Module) else (model, False)


def wrapper_name(model: torch.nn.Module) -> str:
    """The distribution wrapper of a prepared model: ``DistributedDataParallel``, ``FullyShardedDataParallel``
    (FSDP1), ``FSDPModule`` (FSDP2 changes the model's class in place), ``DeepSpeedEngine`` or ``none``."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    model, _ = _unwrap_compiled(model)
    if isinstance(model, DistributedDataParallel):
        return "DistributedDataParallel"
    if isinstance(model, FullyShardedDataParallel):
        return "FullyShardedDataParallel"
    if isinstance(model, FSDPModule):
        return "FSDPModule"
    if any(cls.__name__ == "DeepSpeedEngine" for cls in type(model).__mro__):  # deepspeed is optional
        return "DeepSpeedEngine"
    return "none"


def _sharded_parameters(model: torch.nn.Module, num_processes: int) -> tuple[int, int]:
    """How many parameter tensors the model has, and how many of them are split across processes: FSDP2 DTensors
    with a ``Shard`` placement, every parameter of an FSDP1 model whose units shard (with ``use_orig_params`` its
    parameters are views into the local shard, so the strategy says it, not the tensors), DeepSpeed ZeRO-3
    partitioned parameters."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel, ShardingStrategy
    from torch.distributed.tensor import DTensor, Shard

    for module in model.modules():
        if isinstance(module, FSDPModule):
            # FSDP2 keeps a gathered unit's plain tensors registered after a forward without backward (the last
            # evaluation) until its next use; resharding registers the DTensor shards again (the next forward
            # gathers them as it would anyway).
            module.reshard()
    params = list(model.parameters())
    if num_processes > 1 and any(
        unit.sharding_strategy != ShardingStrategy.NO_SHARD
        for unit in FullyShardedDataParallel.fsdp_modules(model)
    ):
        return len(params), len(params)
    return len(params), sum(
        p.device_mesh.size() > 1 and any(isinstance(placement, Shard) for placement in p.placements)
        if isinstance(p, DTensor)
        else hasattr(p, "ds_id")  # set by DeepSpeed's ZeRO-3 partitioning
        for p in params
    )


def distributed_report(accelerator: Any, model: torch.nn.Module) -> dict[str, Any]:
    """What this run really ran: for ``metrics.json["distributed"]``.

    Args:
        model: the prepared model (``accelerator.prepare``'s result).

    Returns:
        ``requested`` (:func:`requested_sharding`), ``distributed_type``, ``num_processes``,
        ``launched_processes`` (the launcher's ``WORLD_SIZE``), ``device``, ``mixed_precision``, ``wrapper``
        (:func:`wrapper_name`), ``compiled``, ``parameters`` / ``sharded_parameters`` (how many of the model's
        parameter tensors are split across processes), ``parameters_sharded``, ``as_requested`` and ``note`` (why
        not, or None).
    """
    requested = requested_sharding(accelerator)
    inner, compiled = _unwrap_compiled(model)
    num_params, sharded = _sharded_parameters(inner, accelerator.num_processes)
    wrapper = wrapper_name(model)
    note = mismatch_note(accelerator, requested)
    if requested["sharding"] == "none":
        as_requested = note is None
    elif requested["sharding"] == "deepspeed":
        as_requested = wrapper == "DeepSpeedEngine"
    else:
        as_requested = wrapper == _expected_wrapper(
            DistributedType.FSDP, accelerator.num_processes, int(requested["sharding"][-1])
        ) and (sharded > 0 or accelerator.num_processes == 1)
    return {
        "requested": requested,
        "distributed_type": accelerator.distributed_type.value,
        "num_processes": accelerator.num_processes,
        "launched_processes": launched_processes(),
        "device": accelerator.device.type,
        "mixed_precision": str(accelerator.mixed_precision),
        "wrapper": wrapper,
        "compiled": compiled,
        "parameters": num_params,
        "sharded_parameters": sharded,
        "parameters_sharded": sharded > 0,
        "as_requested": as_requested,
        "note": note,
    }


def load_full_state_dict(
    accelerator: Any, model: torch.nn.Module, state_dict: dict[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    """Load a whole (unsharded) ``state_dict``, e.g. an exported model's safetensors, into a prepared ``model``;
    call on every process (under FSDP this is a collective).

    ``unwrap_model(model).load_state_dict`` cannot copy a plain tensor into an FSDP2 ``DTensor`` parameter (nor into
    FSDP1's flat parameters): under FSDP, torch's ``set_model_state_dict`` shards each full tensor to its place.

    Returns:
        ``(missing_keys, unexpected_keys)``, as ``load_state_dict(strict=False)``.
    """
    if accelerator.distributed_type != DistributedType.FSDP:
        result = accelerator.unwrap_model(model).load_state_dict(state_dict, strict=False)
        return list(result.missing_keys), list(result.unexpected_keys)
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        set_model_state_dict,
    )

    # The model's own keys, without gathering anything; set_model_state_dict(strict=False) leaves missing keys out
    # of its report, so they are counted here.
    expected = set(get_model_state_dict(model, options=StateDictOptions(full_state_dict=False)))
    unexpected = sorted(set(state_dict) - expected)
    known = {key: value for key, value in state_dict.items() if key in expected}
    set_model_state_dict(model, known, options=StateDictOptions(full_state_dict=True, strict=False))
    return sorted(expected - set(state_dict)), unexpected

"""Write the exported model: an ordinary Hugging Face model directory (safetensors + config + tokenizer)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hftransfer.training.disk import write_on_main
from hftransfer.training.distributed import load_full_state_dict
from hftransfer.utils import atomic_directory, recover_directory

logger = logging.getLogger(__name__)


def save_model(
    accelerator: Accelerator, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, directory: Path
) -> None:
    """Save ``model`` (unwrapped) and ``tokenizer`` to ``directory`` atomically; call on every process.

    The state dict is collected with ``accelerator.get_state_dict`` so sharded (FSDP/DeepSpeed) models are saved
    whole; only the main process writes.

    Raises:
        DiskFullError: on every process, when the disk filled up; the previous export is left intact.
    """
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    write_on_main(
        accelerator,
        "the exported model",
        directory,
        lambda: save_pretrained_atomic(unwrapped, tokenizer, directory, state_dict=state_dict),
    )


def save_pretrained_atomic(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    directory: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    *,
    what: str = "the exported model",
) -> None:
    """``save_pretrained`` (safetensors) + tokenizer into ``directory``, replacing it only once complete.

    No collective calls: call it from one process.

    Raises:
        DiskFullError: the disk filled up (the message names ``what``); ``directory`` is left as it was.
    """
    with atomic_directory(Path(directory), what=what) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def load_saved_weights(
    accelerator: Accelerator, model: torch.nn.Module, directory: Path, ignore: Iterable[str] = ()
) -> None:
    """Load the weights of a directory written by :func:`save_model` back into ``model`` (every process);
    ``ignore``: keys the directory holds for others (a masked LM's export carries the encoder's pooler).

    Raises:
        RuntimeError: the saved weights do not match the model's parameters.
    """
    directory = Path(directory)
    recover_directory(directory)
    shards = sorted(directory.glob("model*.safetensors"))
    if not shards:
        raise RuntimeError(f"{directory} holds no model*.safetensors to load")
    state_dict: dict[str, torch.Tensor] = {}
    for shard in shards:
        state_dict.update(load_file(shard))
    for key in ignore:
        state_dict.pop(key, None)
    unwrapped = accelerator.unwrap_model(model)
    missing, unexpected = load_full_state_dict(accelerator, model, state_dict)  # FSDP: into the shards
    # Tied weights may be stored once; anything else missing means the directory is not this model.
    tied = set(getattr(unwrapped, "_tied_weights_keys", None) or [])
    missing = [key for key in missing if key not in tied]
    if missing or unexpected:
        raise RuntimeError(
            f"{directory} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )

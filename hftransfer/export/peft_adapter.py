"""Saving, reloading and merging peft adapters of token and sequence classifiers, for any peft method.

An adapter directory holds what peft writes (``adapter_config.json``, ``adapter_model.safetensors``: the method's
weights and the trained head, peft's ``modules_to_save``), the tokenizer, and ``hftransfer_adapter.json`` (task,
label maps, base; a multi-label or regression head's ``problem_type`` and threshold) so that :func:`load_adapter`
needs no arguments. Nothing here depends on the method: the key sets are peft's own
(``get_peft_model_state_dict``), and merging is peft's ``merge_and_unload`` where the method has one.

Saved adapters reload three ways: :func:`load_adapter`, ``PeftModel.from_pretrained`` on a base built with the
label maps, and ``AutoPeftModelFor*.from_pretrained(dir, **base_model_kwargs(dir))``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hftransfer.errors import ConfigError
from hftransfer.evaluation.multilabel import THRESHOLD_KEY
from hftransfer.export.long_texts import LONG_TEXTS_KEY
from hftransfer.utils import atomic_directory, atomic_write_json, recover_directory

if TYPE_CHECKING:
    from peft import PeftModel

# peft is imported where an adapter is built, saved, loaded or merged, not here: it costs seconds at start-up and
# runs without an adapter never need it.

ADAPTER_META = "hftransfer_adapter.json"
# Config attributes an adapter carries for its base: the head's problem type and threshold, and how token
# predictions are decoded (``hftransfer_decoding``: iob2 or a CRF, whose scores are saved beside the adapter).
DECODING_KEY = "hftransfer_decoding"
CARRIED_KEYS = ("problem_type", THRESHOLD_KEY, DECODING_KEY, LONG_TEXTS_KEY)

# peft's TaskType values (a str enum, so these compare equal to its members).
TASK_TYPES = {"token-classification": "TOKEN_CLS", "sequence-classification": "SEQ_CLS"}
AUTO_CLASSES = {
    "token-classification": AutoModelForTokenClassification,
    "sequence-classification": AutoModelForSequenceClassification,
}


def is_peft_model(model: object) -> bool:
    """Whether ``model`` is a ``peft.PeftModel``, without importing peft: no model can be one before peft is."""
    if "peft" not in sys.modules:
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def is_adapter_directory(directory: str | Path) -> bool:
    """Whether ``directory`` holds a peft adapter (of any method)."""
    return (Path(directory) / "adapter_config.json").is_file()


def adapter_parameter_names(model: PeftModel, *, saved_modules: bool = True) -> set[str]:
    """Names (as in ``model.named_parameters()``) of what the peft method added and trains: the method's own
    weights (each tuner layer's ``adapter_layer_names``, e.g. LoRA's A/B matrices; a prompt-learning
    method's prompt encoder) and, unless ``saved_modules`` is false, the trained copies of ``modules_to_save``."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    wrappers = (BaseTunerLayer, ModulesToSaveWrapper) if saved_modules else (BaseTunerLayer,)
    names: set[str] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, wrappers):
            for attribute in module.adapter_layer_names:
                layer = getattr(module, attribute, None)
                if isinstance(layer, torch.nn.Module):
                    names |= {f"{module_name}.{attribute}.{name}" for name, _ in layer.named_parameters()}
    encoder = getattr(model, "prompt_encoder", None)
    if isinstance(encoder, torch.nn.Module):
        names |= {f"prompt_encoder.{name}" for name, _ in encoder.named_parameters()}
    return names


def base_model_kwargs(directory: str | Path) -> dict[str, Any]:
    """Keyword arguments that give the base model of a saved adapter its label count and names.

    ``AutoPeftModelFor*.from_pretrained`` builds the base from the checkpoint alone, with the checkpoint's
    default label count, so the saved head would not fit; pass these to it::

        AutoPeftModelForTokenClassification.from_pretrained(directory, **base_model_kwargs(directory))
    """
    meta = _read_meta(Path(directory))
    id2label = meta["id2label"]
    kwargs = {
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {label: index for index, label in id2label.items()},
    }
    if meta.get("problem_type"):  # multi-label or regression: the HF loss and pipeline follow it
        kwargs["problem_type"] = meta["problem_type"]
    return kwargs


def save_adapter(
    model: PeftModel,
    directory: Path,
    base_model_name_or_path: str,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> None:
    """Write the adapter and the trained head to ``directory`` atomically (safetensors only).

    The directory holds ``adapter_config.json`` (whose ``base_model_name_or_path`` names the base weights),
    ``adapter_model.safetensors``, the tokenizer if given, and ``hftransfer_adapter.json`` (task, ``id2label``,
    base) so that :func:`load_adapter` needs no arguments.

    Reloading elsewhere: ``PeftModel.from_pretrained(base, directory)`` where ``base`` was built with
    ``num_labels``/``id2label``/``label2id``; or
    ``AutoPeftModelForTokenClassification.from_pretrained(directory, **base_model_kwargs(directory))`` (the label
    kwargs are required: peft builds the base from ``base_model_name_or_path`` alone and cannot read them from
    the adapter directory).

    Args:
        model: a peft model of a token or sequence classifier (any peft method).
        directory: where the adapter goes; an existing directory is replaced.
        base_model_name_or_path: local path or Hub id of the pretrained base weights.
        tokenizer: saved alongside so the directory is self-contained for inference.

    Raises:
        DiskFullError: the disk filled up; ``directory`` is left as it was.
    """
    directory = Path(directory)
    local = Path(base_model_name_or_path).expanduser()
    # A relative path would only resolve from the current directory; record an absolute one.
    base = str(local.resolve()) if local.exists() else base_model_name_or_path
    peft_config = model.peft_config[model.active_adapter]
    task = next(name for name, task_type in TASK_TYPES.items() if task_type == peft_config.task_type)
    id2label = {int(index): label for index, label in model.config.id2label.items()}
    # A multi-label or regression head's problem type (and the threshold chosen on validation) travel with it,
    # as does the decoding of a token model.
    carried = {key: getattr(model.config, key, None) for key in CARRIED_KEYS}
    with atomic_directory(directory, what="the adapter") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        # Patch the written config rather than the live model's: saving must not change the model.
        config_path = tmp / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = base
        atomic_write_json(config_path, adapter_config)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_write_json(
            tmp / ADAPTER_META,
            {
                "task": task,
                "base_model_name_or_path": base,
                "id2label": {str(k): v for k, v in id2label.items()},
                **{key: value for key, value in carried.items() if value is not None},
            },
        )


def load_adapter(directory: str | Path) -> PeftModel:
    """Rebuild the base model with the saved label maps and load an adapter written by :func:`save_adapter`.

    Returns:
        The peft model in eval mode.

    Raises:
        ConfigError: ``directory`` holds no adapter (or one not written by hftransfer).
    """
    from peft import PeftModel

    directory = Path(directory)
    meta = _read_meta(directory)
    # The adapter carries the trained head; a base fine-tuned for another label set (an earlier run's model, in
    # sequential transfer) has a head of another size, which is replaced anyway.
    base = AUTO_CLASSES[meta["task"]].from_pretrained(
        meta["base_model_name_or_path"], **base_model_kwargs(directory), ignore_mismatched_sizes=True
    )
    for key in (THRESHOLD_KEY, DECODING_KEY, LONG_TEXTS_KEY):
        if meta.get(key) is not None:
            setattr(base.config, key, meta[key])
    model = PeftModel.from_pretrained(base, str(directory))
    return model.eval()


def can_merge(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a peft model whose method folds into the base weights (LoRA and most other tuners;
    not prompt learning, whose virtual tokens have no weights to fold into)."""
    if not is_peft_model(model):
        return False
    if model.peft_config[model.active_adapter].is_prompt_learning:
        return False
    return hasattr(model.base_model, "merge_and_unload")


def merge_adapter(model: PeftModel) -> PreTrainedModel:
    """A plain transformers model with the adapter folded into the weights and the trained head in place.

    ``model`` is not changed (a copy is merged), so training or evaluation can go on with it. The result saves
    with ``save_pretrained`` and loads with ``AutoModelFor*.from_pretrained`` or ``transformers.pipeline``.

    Raises:
        ConfigError: the method cannot be merged (see :func:`can_merge`).
    """
    if not can_merge(model):
        what = type(model).__name__
        if is_peft_model(model):
            peft_type = model.peft_config[model.active_adapter].peft_type
            what = f"a {getattr(peft_type, 'value', peft_type)} adapter"
        raise ConfigError(f"{what} cannot be merged into the base model's weights")
    from peft.utils import ModulesToSaveWrapper

    merged = copy.deepcopy(model)
    # Put each trained copy of a saved module (the head, BERT's pooler) in its wrapper's place first, as peft's own
    # unloading would: the generic unloading of peft's tuners (all but LoRA, which has its own) assumes that every
    # saved module is a layer with a weight, and fails on a module such as BERT's pooler.
    for name, module in list(merged.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            # merge=True: peft >= 0.22 hands back the untrained original for merge=False (earlier releases gave
            # the trained copy either way); a trained copy that is itself a tuner layer is merged too, as wanted.
            trained = module.unload_and_optionally_merge_module(
                merge=True, safe_merge=False, adapter_names=None
            )
            setattr(merged.get_submodule(parent), child, trained)
    merged = merged.merge_and_unload()
    # A plain model should behave like one loaded from the Hub: every weight trainable.
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged


def set_adapter_state(model: PeftModel, directory: str | Path) -> None:
    """Load adapter and head weights saved by :func:`save_adapter` into ``model`` (e.g. to restore the best).

    Raises:
        ConfigError: ``directory`` holds no adapter.
        RuntimeError: the saved adapter does not match ``model``.
    """
    directory = Path(directory)
    recover_directory(directory)
    _require_adapter(directory)
    from peft import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    device = next(model.parameters()).device
    weights = load_peft_weights(str(directory), device=str(device))
    adapter_name = model.active_adapter
    # peft's own key sets: what saving this model would write, against what the directory holds.
    expected = set(get_peft_model_state_dict(model, adapter_name=adapter_name))
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise RuntimeError(
            f"{directory} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    set_peft_model_state_dict(model, weights, adapter_name=adapter_name)


def _require_adapter(directory: Path) -> None:
    if not is_adapter_directory(directory):
        raise ConfigError(
            f"{directory} holds no peft adapter (no adapter_config.json); was it written by save_adapter?"
        )


def _read_meta(directory: Path) -> dict[str, Any]:
    recover_directory(directory)
    _require_adapter(directory)
    path = directory / ADAPTER_META
    if not path.is_file():
        raise ConfigError(
            f"{directory} holds a peft adapter but no {ADAPTER_META}; load it with "
            "PeftModel.from_pretrained(base_model, directory), building the base with its num_labels/id2label"
        )
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("task") not in AUTO_CLASSES:
        raise ConfigError(f"{path}: task must be one of {sorted(AUTO_CLASSES)}, got {meta.get('task')!r}")
    meta["id2label"] = {int(index): label for index, label in meta["id2label"].items()}
    return meta

"""LoRA adapters (via peft) for token and sequence classification encoders.

The encoder's pretrained weights stay fixed; small low-rank matrices are trained next to chosen linear layers,
while the new, randomly initialised head is trained in full and saved with the adapter (peft's
``modules_to_save``), because an adapter without its head reloads as a model that predicts noise.

Saved adapters reload three ways: :func:`load_adapter` (no arguments needed), ``PeftModel.from_pretrained`` on a
base built with the label maps, and ``AutoPeftModelFor*.from_pretrained(dir, **base_model_kwargs(dir))``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, load_peft_weights, set_peft_model_state_dict
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hftransfer.errors import ConfigError
from hftransfer.utils import atomic_directory, atomic_write_json, recover_directory

ADAPTER_META = "hftransfer_adapter.json"
ALL_LINEAR = "all-linear"

# Attention query/value projections: the choice of the LoRA paper, and peft's own defaults where it has any.
_DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "electra": ["query", "value"],
    "mpnet": ["q", "v"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
}

_TASK_TYPES = {"token-classification": TaskType.TOKEN_CLS, "sequence-classification": TaskType.SEQ_CLS}
_AUTO_CLASSES = {
    "token-classification": AutoModelForTokenClassification,
    "sequence-classification": AutoModelForSequenceClassification,
}


def default_target_modules(model: PreTrainedModel) -> list[str]:
    """The modules LoRA adapts when ``strategy.target_modules`` is not set: the attention query and value.

    Raises:
        ConfigError: the architecture has no default here.
    """
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _DEFAULT_TARGETS:
        raise ConfigError(
            f"no default LoRA target modules for model type {model_type!r} (known: {', '.join(_DEFAULT_TARGETS)}); "
            "set strategy.target_modules, e.g. [all-linear] or the names of its attention projections"
        )
    return list(_DEFAULT_TARGETS[model_type])


def apply_lora(
    model: PreTrainedModel,
    task: str,
    *,
    r: int,
    alpha: float,
    dropout: float,
    target_modules: list[str] | None,
    train_pooler: bool = True,
) -> PeftModel:
    """Wrap ``model`` (changed in place) with LoRA adapters; the head is trained in full and saved with them.

    Args:
        model: a transformers ``*ForTokenClassification`` / ``*ForSequenceClassification`` model.
        task: ``"token-classification"`` or ``"sequence-classification"``.
        r: adapter rank.
        alpha: scaling numerator (updates are scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names (suffixes, peft style) to adapt; ``["all-linear"]`` adapts every linear
            layer of the encoder; ``None`` uses :func:`default_target_modules`.
        train_pooler: sequence tasks: train the encoder's pooler in full with the head (default); ``False``
            treats it as an encoder layer (adapted if targeted, otherwise fixed).

    Returns:
        The peft model. Only the LoRA A/B matrices and the copies of the head (and, for sequence tasks, of the
        encoder's pooler) require gradients.

    Raises:
        ConfigError: unknown task, bad hyperparameters, or target names that match no encoder module.
    """
    task_type = _task_type(task)
    if r < 1:
        raise ConfigError(f"strategy.r must be >= 1, got {r}")
    if alpha <= 0:
        raise ConfigError(f"strategy.alpha must be > 0, got {alpha}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"strategy.lora_dropout must be in [0, 1), got {dropout}")

    trained_in_full = _trained_in_full(model, task, train_pooler=train_pooler)
    targets: str | list[str]
    if target_modules is None:
        targets = default_target_modules(model)
    elif ALL_LINEAR in target_modules:
        if len(target_modules) != 1:
            raise ConfigError(
                f"strategy.target_modules: {ALL_LINEAR} cannot be combined with names, got {target_modules}"
            )
        targets = ALL_LINEAR
    else:
        targets = list(target_modules)
    if isinstance(targets, list):
        _check_targets(model, targets, trained_in_full)

    config = LoraConfig(
        task_type=task_type,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        # The head is new and task-specific: train all of it rather than a low-rank update of random weights.
        # peft adds "classifier"/"score" itself; naming the real head modules also covers other head names.
        modules_to_save=list(trained_in_full),
        # Recent peft already skips modules_to_save when matching targets; older releases (and all-linear, which
        # expands to every nn.Linear including the head) need the explicit exclusion.
        exclude_modules=_module_regex(trained_in_full),
    )
    peft_model = get_peft_model(model, config)
    # Guarantee the contract whatever peft's defaults: adapters and head copies train, nothing else.
    for name, param in peft_model.named_parameters():
        param.requires_grad_(_is_adapter_parameter(name))
    return peft_model


def base_model_kwargs(directory: str | Path) -> dict[str, Any]:
    """Keyword arguments that give the base model of a saved adapter its label count and names.

    ``AutoPeftModelFor*.from_pretrained`` builds the base from the checkpoint alone, with the checkpoint's
    default label count, so the saved head would not fit; pass these to it::

        AutoPeftModelForTokenClassification.from_pretrained(directory, **base_model_kwargs(directory))
    """
    meta = _read_meta(Path(directory))
    id2label = meta["id2label"]
    return {
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {label: index for index, label in id2label.items()},
    }


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
        model: a peft model made by :func:`apply_lora`.
        directory: where the adapter goes; an existing directory is replaced.
        base_model_name_or_path: local path or Hub id of the pretrained base weights.
        tokenizer: saved alongside so the directory is self-contained for inference.
    """
    directory = Path(directory)
    local = Path(base_model_name_or_path).expanduser()
    # A relative path would only resolve from the current directory; record an absolute one.
    base = str(local.resolve()) if local.exists() else base_model_name_or_path
    peft_config = model.peft_config[model.active_adapter]
    task = next(name for name, task_type in _TASK_TYPES.items() if task_type == peft_config.task_type)
    id2label = {int(index): label for index, label in model.config.id2label.items()}
    with atomic_directory(directory) as tmp:
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
            },
        )


def load_adapter(directory: str | Path) -> PeftModel:
    """Rebuild the base model with the saved label maps and load an adapter written by :func:`save_adapter`.

    Returns:
        The peft model in eval mode.

    Raises:
        ConfigError: ``directory`` holds no adapter (or one not written by hftransfer).
    """
    directory = Path(directory)
    meta = _read_meta(directory)
    base = _AUTO_CLASSES[meta["task"]].from_pretrained(
        meta["base_model_name_or_path"], **base_model_kwargs(directory)
    )
    model = PeftModel.from_pretrained(base, str(directory))
    return model.eval()


def merge_lora(model: PeftModel) -> PreTrainedModel:
    """A plain transformers model with the adapter folded into the weights and the trained head in place.

    ``model`` is not changed (a copy is merged), so training or evaluation can go on with it. The result saves
    with ``save_pretrained`` and loads with ``AutoModelFor*.from_pretrained`` or ``transformers.pipeline``.
    """
    merged = copy.deepcopy(model).merge_and_unload()
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
    device = next(model.parameters()).device
    weights = load_peft_weights(str(directory), device=str(device))
    adapter_name = model.active_adapter
    result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    missing = [key for key in result.missing_keys if _is_adapter_parameter(key) and adapter_name in key]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{directory} does not match the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def _task_type(task: str) -> TaskType:
    if task not in _TASK_TYPES:
        raise ConfigError(f"task must be one of {sorted(_TASK_TYPES)} for LoRA, got {task!r}")
    return _TASK_TYPES[task]


def _trained_in_full(model: PreTrainedModel, task: str, *, train_pooler: bool = True) -> list[str]:
    """Module names (relative to ``model``) that train in full: the head, plus (unless ``train_pooler`` is false)
    the pooler for sequence tasks."""
    prefix = model.base_model_prefix
    # The head is whatever sits next to the encoder and has weights: "classifier", DistilBERT's "pre_classifier",
    # DeBERTa's "pooler" (ContextPooler), ... Dropout has none.
    names = [
        name
        for name, child in model.named_children()
        if name != prefix and any(True for _ in child.parameters())
    ]
    pooler = getattr(getattr(model, prefix, None), "pooler", None)
    if train_pooler and task == "sequence-classification" and isinstance(pooler, torch.nn.Module):
        # BERT's pooler feeds the classifier; its pretrained weights (never trained for classification in
        # sentence-transformers checkpoints) are part of the head, so train it fully rather than adapt it.
        names.append(f"{prefix}.pooler")
    return names


def _module_regex(names: list[str]) -> str:
    """A regex (peft ``fullmatch``es it against module names) for these modules and everything inside them."""
    return "^(" + "|".join(re.escape(name) for name in names) + r")(\..*)?$"


def _check_targets(model: PreTrainedModel, targets: list[str], trained_in_full: list[str]) -> None:
    """Every target name must match an encoder module (peft matches a name or a dotted suffix)."""
    inside_head = re.compile(_module_regex(trained_in_full))
    names = [name for name, _ in model.named_modules() if name]
    for target in targets:
        matches = [name for name in names if name == target or name.endswith("." + target)]
        if matches and all(inside_head.fullmatch(name) for name in matches):
            raise ConfigError(
                f"strategy.target_modules: {target!r} is part of the head ({', '.join(trained_in_full)}), which "
                "is trained in full; name encoder modules instead"
            )
        if not matches:
            linear = sorted(
                {
                    name.rsplit(".", 1)[-1]
                    for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear) and not inside_head.fullmatch(name)
                }
            )
            raise ConfigError(
                f"strategy.target_modules: {target!r} matches no module of {type(model).__name__}; its linear "
                f"modules are named {', '.join(linear[:10])} (or use [{ALL_LINEAR}])"
            )


def _is_adapter_parameter(name: str) -> bool:
    return "lora_A." in name or "lora_B." in name or ".modules_to_save." in name


def _require_adapter(directory: Path) -> None:
    if not (directory / "adapter_config.json").is_file():
        raise ConfigError(
            f"{directory} holds no LoRA adapter (no adapter_config.json); was it written by save_adapter?"
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
    if meta.get("task") not in _AUTO_CLASSES:
        raise ConfigError(f"{path}: task must be one of {sorted(_AUTO_CLASSES)}, got {meta.get('task')!r}")
    meta["id2label"] = {int(index): label for index, label in meta["id2label"].items()}
    return meta

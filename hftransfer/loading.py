"""Load what any hftransfer run exported, as a model to predict with, and its task.

A run's ``model/`` may hold an ordinary transformers model (full fine-tuning, freeze-N, merged adapters, native
frozen heads), an adapter of any peft method, a frozen encoder + head with no transformers equivalent, or a
progressive network; :func:`load_for_prediction` tells them apart so that ``Predictor``, the ONNX export and the
distillation teacher read them all the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

from hftransfer.errors import ConfigError
from hftransfer.export.peft_adapter import ADAPTER_META, load_adapter
from hftransfer.progressive.export import load_column, network_directory
from hftransfer.strategies.frozen import HEAD_CONFIG_FILE
from hftransfer.strategies.frozen_export import load_probe


def detect_task(model_dir: str) -> str:
    """``token-classification`` or ``sequence-classification`` from the checkpoint's architecture."""
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model={model_dir!r}: no loadable model config ({' '.join(str(err).split())[:200]})"
        ) from None
    for architecture in config.architectures or []:
        if architecture.endswith("ForTokenClassification"):
            return "token-classification"
        if architecture.endswith("ForSequenceClassification"):
            return "sequence-classification"
    raise ConfigError(
        f"model={model_dir!r} is not a token- or sequence-classification model ({config.architectures})"
    )


def run_model_directory(path: str) -> str:
    """A run directory's ``model/``, where its export is; any other path or name unchanged."""
    directory = Path(path)
    exported = directory / "model"
    if directory.is_dir() and not (directory / "config.json").is_file() and exported.is_dir():
        return str(exported)
    return path


def load_for_prediction(model_dir: str) -> tuple[torch.nn.Module, str]:
    """The model of a directory written by any hftransfer strategy, and its task.

    Besides ordinary transformers models (full fine-tuning, freeze-N, merged adapters, native frozen heads) this
    loads an adapter directory of any peft method (``hftransfer_adapter.json``) and a frozen encoder + head export
    (``head_config.json``) whose head has no transformers equivalent, and a progressive network (the last column's
    task, or the task of the ``column_<k>/`` named).
    """
    directory = Path(model_dir)
    if network_directory(directory) is not None:  # a progressive export or one of its columns
        return load_column(directory)
    if (directory / HEAD_CONFIG_FILE).is_file():
        probe = load_probe(directory)
        return probe, probe.options["task"]
    if (directory / ADAPTER_META).is_file():
        task = json.loads((directory / ADAPTER_META).read_text(encoding="utf-8"))["task"]
        return load_adapter(directory), task
    task = detect_task(model_dir)
    auto = (
        AutoModelForTokenClassification
        if task == "token-classification"
        else AutoModelForSequenceClassification
    )
    return auto.from_pretrained(model_dir), task

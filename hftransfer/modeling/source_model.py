"""Start from an earlier run: ``model.name_or_path`` may name a run directory, and a fine-tuned task model whose
labels differ from the new task's keeps its encoder but gets a new head.

Sequential transfer (source task -> target task) starts from what a run exported. Two things would otherwise go
wrong quietly: a run directory is not a model directory (its model is in ``<run>/model``), and a head whose size
happens to match (two binary tasks) would be kept although its classes mean something else. Here the head is
replaced whenever the checkpoint's labels are not the new task's, and the log says what was kept and what is new.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel

from hftransfer.errors import ConfigError

logger = logging.getLogger("hftransfer")

TASK_HEADS = ("ForTokenClassification", "ForSequenceClassification")


def model_directory(name_or_path: str) -> str:
    """``<run>/model`` for a run directory; anything else unchanged (a model directory, a Hub id, an alias).

    Raises:
        ConfigError: a multitask run (name one of its tasks), or a run whose model directory holds only an
            adapter (name its merged export, or the base model).
    """
    path = Path(name_or_path)
    if not path.is_dir() or (path / "config.json").is_file():
        return name_or_path
    exported = path / "model"
    if (exported / "tasks.json").is_file() or (path / "tasks.json").is_file():
        root = exported if (exported / "tasks.json").is_file() else path
        tasks = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
        raise ConfigError(
            f"model.name_or_path={name_or_path} is a multitask run: name the task whose model to start from, "
            f"e.g. model.name_or_path={root / tasks[0]}" + (f" (tasks: {', '.join(tasks)})" if tasks else "")
            if tasks
            else f"model.name_or_path={name_or_path} is a multitask run without task models"
        )
    if (exported / "config.json").is_file():
        logger.info(
            "model.name_or_path=%s is a run directory: starting from its exported model %s", path, exported
        )
        return str(exported)
    if (path / "adapter_config.json").is_file() or (exported / "adapter_config.json").is_file():
        raise ConfigError(
            f"model.name_or_path={name_or_path} holds a peft adapter only; start from the run's merged export "
            "(strategy.lora_export=merged or both) or from the base model"
        )
    return name_or_path


def checkpoint_labels(directory: str) -> tuple[list[str] | None, bool]:
    """The id2label of a local checkpoint's task head, and whether it is a fine-tuned task model at all."""
    config_file = Path(directory) / "config.json"
    if not config_file.is_file():
        return None, False
    config = json.loads(config_file.read_text(encoding="utf-8"))
    task_model = any(arch.endswith(TASK_HEADS) for arch in config.get("architectures") or [])
    id2label = config.get("id2label") or {}
    labels = [id2label[key] for key in sorted(id2label, key=int)] if id2label else None
    return labels, task_model


def replace_foreign_head(model: PreTrainedModel, source: str, label_names: Sequence[str]) -> list[str]:
    """Re-initialise the task head of ``model`` when the checkpoint at ``source`` was fine-tuned for other labels.

    Returns the names of the re-initialised parameters (empty when the head was kept or none was loaded).
    """
    labels, task_model = checkpoint_labels(source)
    if not task_model or labels is None or list(labels) == list(label_names):
        return []
    from hftransfer.strategies.layers import EncoderLayout

    layout = EncoderLayout.of(model)
    replaced = []
    with torch.no_grad():
        std = getattr(model.config, "initializer_range", 0.02)
        for name, module in model.named_modules():
            leaf_of_head = name and layout.is_head(name + ".") and not any(True for _ in module.children())
            if leaf_of_head and _reinitialise(module, std):
                replaced += [f"{name}.{p}" for p, _ in module.named_parameters()]
    encoder = sum(1 for name, _ in model.named_parameters() if not layout.is_head(name))
    logger.info(
        "%s was fine-tuned for labels %s; this task has %s: kept the encoder (%d tensors), new head (%s)",
        source,
        _short(labels),
        _short(list(label_names)),
        encoder,
        ", ".join(replaced),
    )
    return replaced


def _reinitialise(module: torch.nn.Module, std: float) -> bool:
    """A new head's start, as transformers gives one (its own ``_init_weights`` skips modules it already loaded)."""
    if isinstance(module, torch.nn.Linear):
        torch.nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            torch.nn.init.zeros_(module.bias)
        return True
    if isinstance(module, torch.nn.LayerNorm):
        torch.nn.init.ones_(module.weight)
        torch.nn.init.zeros_(module.bias)
        return True
    return False


def _short(labels: list[str]) -> str:
    return "[" + ", ".join(labels[:6]) + (", ...]" if len(labels) > 6 else "]")

"""The texts of a continued pre-training run: unlabelled text with a held-out slice, or a task's train split
(TAPT) split exactly as a fine-tuning run with the same ``data`` section splits it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from datasets import Dataset

from hftransfer.config import DataConfig
from hftransfer.data.readers import detect_format
from hftransfer.data.sources import (
    BUILTIN_TASKS,
    BUILTIN_UNLABELLED,
    load_task_data,
    read_transfer_set,
    read_unlabelled,
)
from hftransfer.errors import ConfigError
from hftransfer.pretrain.config import PretrainConfig


def _texts(examples: Dataset) -> list[str]:
    if "tokens" in examples.column_names:
        return [" ".join(tokens) for tokens in examples["tokens"]]
    pairs = examples["text_pair"] if "text_pair" in examples.column_names else []
    return [*examples["text"], *pairs]


def _carve(texts: list[str], data: DataConfig) -> dict[str, list[str]]:
    """A seeded ``validation_size`` slice of unlabelled texts held out for validation (none when 0)."""
    order = list(range(len(texts)))
    random.Random(data.split_seed).shuffle(order)
    held = round(len(texts) * data.validation_size)
    if data.validation_size > 0 and len(texts) > 1:
        held = min(max(held, 1), len(texts) - 1)
    splits = {"train": [texts[i] for i in sorted(order[held:])]}
    if held:
        splits["validation"] = [texts[i] for i in sorted(order[:held])]
    return splits


def _file_and_task(config: PretrainConfig) -> tuple[str | None, str]:
    """The data file, if the text comes from one, and the task it is read as (a builtin's own; a CoNLL file's
    words; else texts)."""
    data = config.data
    builtins = {**BUILTIN_UNLABELLED, **BUILTIN_TASKS}
    path = data.train_file
    if path is None and data.dataset not in builtins and Path(data.dataset).is_file():
        path = data.dataset
    if config.task is not None:
        return path, config.task
    if path is None:
        return None, builtins.get(data.dataset, "sequence-classification")
    conll = detect_format(Path(path), data.format) == "conll" and not str(path).endswith(".txt")
    return path, "token-classification" if conll else "sequence-classification"


def load_texts(config: PretrainConfig) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The training and validation texts (see the module docstring) and a report of where they came from.

    Raises:
        ConfigError / DataError: an unknown builtin, or unreadable data.
    """
    data = config.data
    path, task = _file_and_task(config)
    source = path or data.dataset
    examples = read_unlabelled(path, task, data) if path else None
    held_out: list[str] = []
    # A name that is both a labelled builtin and an unlabelled one (rotten_tomatoes) is read as the task: TAPT must
    # not see the texts of the test split that fine-tuning carves from it.
    unlabelled_builtin = source in BUILTIN_UNLABELLED and source not in BUILTIN_TASKS
    if unlabelled_builtin or (examples is not None and not {"label", "tags"} & set(examples.column_names)):
        kind = "unlabelled"
        texts = _texts(read_transfer_set(source, task, data) if examples is None else examples)
        if data.validation_file:
            splits = {"train": texts, "validation": _texts(read_unlabelled(data.validation_file, task, data))}
        else:
            splits = _carve(texts, data)
    else:  # TAPT: the task's splits, as a fine-tuning run with this data section makes them
        kind = "task texts (train split)"
        task_data = load_task_data(data, task)
        splits = {
            name: _texts(task_data.splits[name])
            for name in ("train", "validation")
            if name in task_data.splits
        }
        held_out = _texts(task_data.splits["test"]) if "test" in task_data.splits else []
    # Repeated texts once, and none that is also held out (datasets repeat texts across their splits).
    seen = {*splits.get("validation", []), *held_out}
    splits["train"] = [text for text in dict.fromkeys(splits["train"]) if text not in seen]
    limits = {"train": data.max_train_samples, "validation": data.max_eval_samples}
    splits = {name: texts[: limits[name]] for name, texts in splits.items() if texts}
    if "train" not in splits:
        raise ConfigError(
            f"data: {source!r} leaves no training text once validation and test texts are held out"
        )
    report = {"source": source, "task": task, "kind": kind, "texts": {s: len(t) for s, t in splits.items()}}
    return splits, report

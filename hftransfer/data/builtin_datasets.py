"""The builtin offline datasets: which task each serves and how its shipped file becomes rows.

``wnut16`` (token classification) is a CoNLL file read as any other; ``rotten_tomatoes`` (sequence
classification) is a CSV whose ``category`` column mixes reviews (fresh/rotten) with film synopses ("plot"), so
it gets its own reader: the synopses are dropped from the labelled data and are offered instead as unlabelled text
(``rotten_tomatoes_plot``) for a teacher to label. The files come from :mod:`hftransfer.assets`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from hftransfer import assets
from hftransfer.config import DataConfig
from hftransfer.data.readers import (
    SEQUENCE_TASK,
    TOKEN_TASK,
    ReadResult,
    csv_records,
    read_file,
    read_text,
    sequence_row,
)
from hftransfer.errors import ConfigError

BUILTIN_TASKS = {"wnut16": TOKEN_TASK, "rotten_tomatoes": SEQUENCE_TASK}
ROTTEN_TOMATOES_LABELS = {"fresh": "positive", "rotten": "negative"}
# Unlabelled text that ships with a builtin dataset: Rotten Tomatoes' film synopses, which are not reviews.
BUILTIN_UNLABELLED = {"rotten_tomatoes_plot": SEQUENCE_TASK}


def read_builtin(config: DataConfig, task: str) -> ReadResult:
    """The labelled rows of builtin dataset ``config.dataset``, which must serve ``task``."""
    name = config.dataset
    if BUILTIN_TASKS[name] != task:
        raise ConfigError(f"data.dataset={name!r} is a {BUILTIN_TASKS[name]} dataset, but the task is {task}")
    path = assets.locate(name)
    if name == "wnut16":
        wnut = dataclasses.replace(config, format="conll", conll_token_column=0, conll_tag_column=-1)
        return read_file(path, task, wnut)
    if config.text_pair_column:
        raise ConfigError("data.text_pair_column is set, but rotten_tomatoes holds single texts")
    # Read the records before validating rows: some plot rows, which are dropped anyway, have empty texts.
    csv_config = dataclasses.replace(config, text_column="text", label_column="category")
    records = csv_records(path, read_text(path), "csv", ["category", "text"])
    result, dropped, seen = ReadResult(str(path), [], []), Counter(), set()
    result.dropped = dropped
    for line, record in records:
        label = ROTTEN_TOMATOES_LABELS.get(record["category"])
        if label is None:  # "plot" rows are film synopses, not reviews
            dropped[f"category {record['category']!r} is not a review"] += 1
        elif record["text"] in seen:  # duplicates would leak between carved splits
            dropped["duplicate text (first kept)"] += 1
        else:
            seen.add(record["text"])
            result.rows.append(
                {**sequence_row(record, f"{path}:{line}", csv_config, labels=False), "label": label}
            )
            result.anchors.append(line)
    return result


def read_builtin_unlabelled(source: str, task: str) -> list[dict[str, Any]]:
    """The ``text`` rows of builtin unlabelled set ``source`` (a key of ``BUILTIN_UNLABELLED``) for ``task``.

    Raises:
        ConfigError: the set holds text of the other task.
    """
    if BUILTIN_UNLABELLED[source] != task:
        raise ConfigError(
            f"transfer set {source!r} is {BUILTIN_UNLABELLED[source]} text, but the task is {task}"
        )
    path = assets.locate("rotten_tomatoes")
    records = csv_records(path, read_text(path), "csv", ["category", "text"])
    return [{"text": r["text"]} for _, r in records if r["category"] == "plot" and r["text"].strip()]

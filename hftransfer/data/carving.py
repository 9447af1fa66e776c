"""Carve the evaluation splits a source does not have out of its training split, deterministically.

The test split (``data.test_size`` of all examples) is carved first, then validation (``data.validation_size`` of
all of them) from the rest, both with ``data.split_seed``; sequence classification stratifies by label, so that
every split keeps the label proportions of the source (single-label only: a multi-label row has no one class
to stratify by, a regression target none at all).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from datasets import ClassLabel, Dataset, Features, Value

from hftransfer.config import DataConfig
from hftransfer.config.problem import SINGLE_LABEL
from hftransfer.data.hub import column_values
from hftransfer.data.readers import SEQUENCE_TASK
from hftransfer.errors import DataError


def split_off(ds: Dataset, size: int, config: DataConfig, stratify: bool, what: str, source: str) -> tuple:
    """``(rest, part)`` with ``size`` examples in ``part``, stratified by ``label`` when asked."""
    columns: dict[str, Any] = {"index": list(range(len(ds)))}
    types: dict[str, Any] = {"index": Value("int64")}
    if stratify:
        # What class_encode_column does (names sorted), without its progress bar and extra pass over the data.
        labels = column_values(ds, "label")
        names = sorted(set(labels))
        ids = {name: i for i, name in enumerate(names)}
        columns["label"], types["label"] = [ids[label] for label in labels], ClassLabel(names=names)
    index = Dataset.from_dict(columns, features=Features(types))
    try:
        parts = index.train_test_split(
            test_size=size, seed=config.split_seed, stratify_by_column="label" if stratify else None
        )
    except ValueError as err:
        rare = sorted(label for label, count in Counter(column_values(ds, "label")).items() if count < 2)
        problem = f"label(s) {rare} have fewer than 2 examples" if rare else " ".join(str(err).split())
        raise DataError(
            f"{source}: cannot carve a stratified {what} split of {size} examples from {len(ds)}: {problem}; "
            f"add examples, change data.{what}_size or give data.{what}_file"
        ) from None
    return ds.select(column_values(parts["train"], "index")), ds.select(column_values(parts["test"], "index"))


def carve_missing_splits(splits: dict[str, Dataset], task: str, config: DataConfig, source: str) -> list[str]:
    """Carve the missing test and validation splits out of ``splits["train"]`` in place; returns the carved names."""
    total = len(splits["train"])
    sizes = {
        split: max(1, math.floor(fraction * total + 0.5))  # half up, and never an empty requested split
        for split, fraction in (("test", config.test_size), ("validation", config.validation_size))
        if split not in splits and fraction > 0
    }
    if total - sum(sizes.values()) < 1:
        raise DataError(f"{source}: {total} examples are too few to carve {sizes} and keep any for training")
    for split, size in sizes.items():
        splits["train"], splits[split] = split_off(
            splits["train"],
            size,
            config,
            task == SEQUENCE_TASK and config.problem_type == SINGLE_LABEL,
            split,
            source,
        )
    return list(sizes)

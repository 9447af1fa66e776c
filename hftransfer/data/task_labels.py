"""A task's label order, and the check that evaluation data holds no label the training data lacks.

The order is fixed here once per run: it becomes the model head's ``id2label``, so it must depend only on the data
(entity types found in training or declared by the Hub, numeric labels in numeric order), never on file order.
"""

from __future__ import annotations

import re

from hftransfer.data.readers import TOKEN_TASK, ReadResult
from hftransfer.data.tags import entity_types, tag_label_names
from hftransfer.errors import DataError


def derive_label_names(task: str, train: ReadResult, declared: list | None) -> list[str]:
    """Label order: IOB2 tags of the entity types seen or declared, the Hub's ClassLabel names, else the
    labels sorted (numerically when all are integers)."""
    if task == TOKEN_TASK:
        return tag_label_names(
            entity_types(tag for row in train.rows for tag in row["tags"]) | entity_types(declared or [])
        )
    if declared:
        return list(declared)
    labels = {row["label"] for row in train.rows}
    if all(re.fullmatch(r"[+-]?\d+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def check_known_labels(result: ReadResult, label_names: list[str], task: str, train_source: str) -> None:
    """Labels (entity types) of an evaluation source must occur in the training source: the model cannot learn them."""
    known, unknown, first = set(label_names), set(), None
    for index, row in enumerate(result.rows):
        values = enumerate(row["tags"]) if task == TOKEN_TASK else [(None, row["label"])]
        for token, value in values:
            if value not in known:
                unknown.add(value[2:] if task == TOKEN_TASK else value)
                if first is None:
                    first = result.where(index, token)
    if unknown:
        what = "entity types" if task == TOKEN_TASK else "labels"
        raise DataError(
            f"{first}: {what} {sorted(unknown)} do not occur in the training data ({train_source}); "
            f"this is the first one in {result.source}"
        )

"""A sequence task's label by problem type (``data.problem_type``): read from a record, listed, renamed, encoded.

* ``single_label_classification``: one string (read by :func:`hftransfer.data.rows.sequence_row`);
* ``multi_label_classification``: a list of strings, possibly empty (no label applies): a JSON list, or a CSV/TSV
  cell split at ``data.label_separator``; the model's target is a multi-hot row of floats;
* ``regression``: a finite number; the model's target is that float, its one "label" the label column's name.

Every reading error is a :class:`~hftransfer.errors.DataError` at the record's ``<file>:<line>``.
"""

from __future__ import annotations

import math
from typing import Any

from datasets import Sequence, Value

from hftransfer.config.problem import MULTI_LABEL, REGRESSION
from hftransfer.errors import DataError
from hftransfer.text_excerpt import excerpt, excerpt_names


def read_label(value: Any, where: str, config: Any) -> list[str] | float:
    """The label of a multi-label (a list of names) or regression (a float) record.

    Args:
        value: the label column's value (not None: the caller checks that).
        where: location prefix for messages; config: the data section (column, separator, problem type).

    Raises:
        DataError: a value that is neither a list nor a string (multi-label), a nested or empty label, or a value
            that is not a finite number (regression).
    """
    column = excerpt(config.label_column)
    if config.problem_type == REGRESSION:
        return _number(value, where, column)
    separator = config.label_separator
    if isinstance(value, list):
        parts = value
    elif isinstance(value, str):
        # A blank cell is a row with no label; a cell without a configured separator holds one label.
        parts = [] if not value.strip() else value.split(separator) if separator else [value]
    else:
        cell = f"a {separator!r}-separated string" if separator else "a string"
        raise DataError(
            f"{where}: column {column} must hold a list of labels or {cell} "
            f"(data.problem_type={MULTI_LABEL}), got {excerpt(value)}"
        )
    labels: list[str] = []
    for part in parts:
        if part is None or isinstance(part, (list, dict, bool)) or not str(part).strip():
            raise DataError(f"{where}: column {column} holds an empty or nested label in {excerpt(value)}")
        label = str(part).strip()
        if label not in labels:  # a label listed twice is still one label
            labels.append(label)
    return labels


def _number(value: Any, where: str, column: str) -> float:
    wrong = (
        f"{where}: column {column} must hold a number (data.problem_type={REGRESSION}), got {excerpt(value)}"
    )
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(wrong)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise DataError(wrong) from None
    if not math.isfinite(number):
        raise DataError(
            f"{where}: column {column} holds {excerpt(value)}; a regression target must be finite"
        )
    return number


def label_values(label: Any) -> list[Any]:
    """The label names a row holds: its list (multi-label) or the one label."""
    return list(label) if isinstance(label, list) else [label]


def map_label(label: Any, label_map: dict[str, str]) -> Any:
    """``label`` renamed by ``data.label_map`` (each name of a list; two that become one are kept once)."""
    if isinstance(label, list):
        return list(dict.fromkeys(label_map.get(name, name) for name in label))
    return label_map.get(label, label)


def drop_listed_labels(rows: list[dict[str, Any]], drop: set[str]) -> int:
    """Multi-label ``data.drop_labels``: take the names out of every row's list (the rows stay, maybe with no
    label left); returns how many labels were taken out."""
    removed = 0
    for row in rows:
        kept = [name for name in row["label"] if name not in drop]
        removed += len(row["label"]) - len(kept)
        row["label"] = kept
    return removed


def label_feature(problem_type: str) -> Any:
    """The ``datasets`` feature of the ``label`` column of the read splits."""
    if problem_type == MULTI_LABEL:
        return Sequence(Value("string"))
    return Value("float64") if problem_type == REGRESSION else Value("string")


def encode_label(label: list[str] | float, label2id: dict[str, int], example: int) -> list[float] | float:
    """A multi-hot row of floats (``[num_labels]``) for a list of names, the float itself for a number.

    Raises:
        DataError: a name that is not one of the model's labels.
    """
    if not isinstance(label, list):
        return float(label)
    row = [0.0] * len(label2id)
    for name in label:
        if name not in label2id:
            raise DataError(
                f"example {example}: label {excerpt(name)} is not one of the model's labels "
                f"{excerpt_names(sorted(label2id))}"
            )
        row[label2id[name]] = 1.0
    return row

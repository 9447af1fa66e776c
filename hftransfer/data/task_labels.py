"""A task's labels: renaming and dropping them as the config asks, their order, and the check that evaluation data
holds no label the training data lacks.

The order is fixed here once per run: it becomes the model head's ``id2label``, so it must depend only on the data
(entity types found in training or declared by the Hub, numeric labels in numeric order), never on file order.
Renaming (``data.label_map``) and dropping (``data.drop_labels``) come first, on every split alike, so that two
datasets of different label names (fresh/rotten, positive/negative/neutral) can share one head.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hftransfer.config import DataConfig
from hftransfer.data.readers import TOKEN_TASK, ReadResult
from hftransfer.data.tags import OUTSIDE, TAG_PATTERN, entity_types, tag_label_names
from hftransfer.errors import ConfigError, DataError


def _present(task: str, results: Iterable[ReadResult], declared: list | None) -> set[str]:
    """The labels (entity types, for NER) of all the rows read and of the Hub's declared names."""
    if task == TOKEN_TASK:
        tags = [tag for result in results for row in result.rows for tag in row["tags"]]
        return entity_types(tags + list(declared or []))
    return {row["label"] for result in results for row in result.rows} | set(declared or [])


def _map_tag(tag: str, label_map: dict[str, str]) -> str:
    if tag == OUTSIDE:
        return tag
    new = label_map.get(tag[2:], tag[2:])
    return OUTSIDE if new == OUTSIDE else f"{tag[:2]}{new}"


def relabel(
    results: dict[str, ReadResult], task: str, config: DataConfig, declared: list | None
) -> tuple[list | None, dict[str, int]]:
    """Rename labels (``data.label_map``), then leave out rows (``data.drop_labels``), in every split, in place.

    NER maps entity types (``B-x``/``I-x`` both), and a type mapped to ``O`` loses its entities; the tags stay
    IOB2, as an ``I-`` tag only ever follows a tag of its own type.

    Returns:
        The Hub's declared label names after the change (None stays None), and the rows dropped per split.

    Raises:
        ConfigError: a key of ``label_map`` or a name in ``drop_labels`` that is not a label of the data (the
            message lists those present), an entity type with whitespace, or ``drop_labels`` for NER.
        DataError: a split that has no rows left.
    """
    label_map, drop = config.label_map or {}, set(config.drop_labels)
    what = "entity types" if task == TOKEN_TASK else "labels"
    if drop and task == TOKEN_TASK:
        raise ConfigError(
            "data.drop_labels leaves out sequence-classification rows; a sentence has many tags, so for "
            "token-classification map the entity type to O instead: data.label_map={<type>: O}"
        )
    present = _present(task, results.values(), declared)
    unknown = sorted(set(label_map) - present)
    if unknown:
        raise ConfigError(
            f"data.label_map: {unknown} are not {what} of the data ({what} present: {sorted(present)})"
        )
    if task == TOKEN_TASK:
        bad = [value for value in label_map.values() if TAG_PATTERN.fullmatch(f"B-{value}") is None]
        if bad:
            raise ConfigError(f"data.label_map: entity type {bad[0]!r} must not contain whitespace")
    for result in results.values() if label_map else ():
        for row in result.rows:
            if task == TOKEN_TASK:
                row["tags"] = [_map_tag(tag, label_map) for tag in row["tags"]]
            else:
                row["label"] = label_map.get(row["label"], row["label"])
    if declared is not None:
        mapped = [_map_tag(n, label_map) if task == TOKEN_TASK else label_map.get(n, n) for n in declared]
        declared = [name for name in dict.fromkeys(mapped) if name not in drop]
    dropped: dict[str, int] = {}
    if drop:
        present = _present(task, results.values(), declared)
        unknown = sorted(drop - present)
        if unknown:
            after = " after data.label_map" if label_map else ""
            raise ConfigError(
                f"data.drop_labels: {unknown} are not labels of the data (labels present{after}: {sorted(present)})"
            )
        for split, result in results.items():
            dropped[split] = _drop_rows(result, drop)
    return declared, dropped


def _drop_rows(result: ReadResult, drop: set[str]) -> int:
    """Leave out ``result``'s rows whose label is in ``drop`` (with their anchors); count them by reason."""
    keep = [i for i, row in enumerate(result.rows) if row["label"] not in drop]
    for row in result.rows:
        if row["label"] in drop:
            reason = f"label {row['label']!r} in data.drop_labels"
            result.dropped[reason] = result.dropped.get(reason, 0) + 1
    count = len(result.rows) - len(keep)
    result.rows = [result.rows[i] for i in keep]
    if len(result.anchors) == len(keep) + count:  # a plug-in format may not locate its rows
        result.anchors = [result.anchors[i] for i in keep]
    if not result.rows:
        raise DataError(f"{result.source}: no examples left after data.drop_labels={sorted(drop)}")
    return count


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

"""A task's labels: renaming and dropping them as the config asks, their order, and the check that evaluation data
holds no label the training data lacks.

The order is fixed here once per run: it becomes the model head's ``id2label``, so it must depend only on the data
(entity types found in training or declared by the Hub, numeric labels in numeric order), never on file order.
Renaming (``data.label_map``) and dropping (``data.drop_labels``) come first, on every split alike, so that two
datasets of different label names (fresh/rotten, positive/negative/neutral) can share one head.

A label the training data holds only once or twice, while others occur far more often, is most likely a damaged
one (a tag cut to ``B-lo``, a misspelt ``postive``): it would silently become a class of its own, so it is
warned about; evaluation labels the training data lacks are an error (:func:`check_known_labels`).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import Counter
from collections.abc import Iterable

from hftransfer.config import DataConfig
from hftransfer.data.label_kinds import drop_listed_labels, label_values, map_label
from hftransfer.data.readers import TOKEN_TASK, ReadResult
from hftransfer.data.tags import OUTSIDE, TAG_PATTERN, entity_types, tag_label_names
from hftransfer.errors import ConfigError, DataError
from hftransfer.text_excerpt import excerpt, excerpt_names

logger = logging.getLogger(__name__)

RARE_COUNT = 3
"""A training label seen fewer times than this (entity spans for NER, rows otherwise) is suspect ...
"""
RARE_RATIO = 10
"""... when the most frequent label occurs at least this many times as often. Real label sets are skewed, but not
like this: the rarest WNUT-16 entity types (``movie``, ``tvshow``) have 34 spans in its training split, its most
frequent 449; a small file of 8 rows with 7 of one label and 1 of another is a small dataset, not a damaged one."""


def _present(task: str, results: Iterable[ReadResult], declared: list | None) -> set[str]:
    """The labels (entity types, for NER) of all the rows read and of the Hub's declared names."""
    if task == TOKEN_TASK:
        tags = [tag for result in results for row in result.rows for tag in row["tags"]]
        return entity_types(tags + list(declared or []))
    present = {name for result in results for row in result.rows for name in label_values(row["label"])}
    return present | set(declared or [])


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
            f"data.label_map: {excerpt_names(unknown)} are not {what} of the data ({what} present: "
            f"{excerpt_names(sorted(present))})"
        )
    if task == TOKEN_TASK:
        bad = [value for value in label_map.values() if TAG_PATTERN.fullmatch(f"B-{value}") is None]
        if bad:
            raise ConfigError(f"data.label_map: entity type {excerpt(bad[0])} must not contain whitespace")
    for result in results.values() if label_map else ():
        for row in result.rows:
            if task == TOKEN_TASK:
                row["tags"] = [_map_tag(tag, label_map) for tag in row["tags"]]
            else:
                row["label"] = map_label(row["label"], label_map)
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
                f"data.drop_labels: {excerpt_names(unknown)} are not labels of the data (labels present{after}: "
                f"{excerpt_names(sorted(present))})"
            )
        for split, result in results.items():
            dropped[split] = _drop_rows(result, drop)
    return declared, dropped


def _drop_rows(result: ReadResult, drop: set[str]) -> int:
    """Leave out ``result``'s rows whose label is in ``drop`` (with their anchors); count them by reason. Rows of
    several labels stay, without the dropped ones (counted as labels left out)."""
    if result.rows and isinstance(result.rows[0]["label"], list):
        removed = drop_listed_labels(result.rows, drop)
        if removed:
            result.dropped["labels in data.drop_labels (rows kept)"] = removed
        return removed
    keep = [i for i, row in enumerate(result.rows) if row["label"] not in drop]
    for row in result.rows:
        if row["label"] in drop:
            reason = f"label {excerpt(row['label'])} in data.drop_labels"
            result.dropped[reason] = result.dropped.get(reason, 0) + 1
    count = len(result.rows) - len(keep)
    result.rows = [result.rows[i] for i in keep]
    if len(result.anchors) == len(keep) + count:  # a plug-in format may not locate its rows
        result.anchors = [result.anchors[i] for i in keep]
    if not result.rows:
        raise DataError(
            f"{result.source}: no examples left after data.drop_labels={excerpt_names(sorted(drop))}"
        )
    return count


def derive_label_names(task: str, train: ReadResult, declared: list | None) -> list[str]:
    """Label order: IOB2 tags of the entity types seen or declared, the Hub's ClassLabel names, else the
    labels sorted (numerically when all are integers).

    It is here that the training data's labels become the head's classes, so here labels that look damaged
    are warned about (:func:`warn_rare_labels`)."""
    warn_rare_labels(train, task)
    if task == TOKEN_TASK:
        return tag_label_names(
            entity_types(tag for row in train.rows for tag in row["tags"]) | entity_types(declared or [])
        )
    if declared:
        return list(declared)
    labels = {name for row in train.rows for name in label_values(row["label"])}
    if all(re.fullmatch(r"[+-]?\d+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def label_counts(result: ReadResult, task: str) -> Counter[str]:
    """Entity spans per type (NER: its ``B-`` tags, the tags being IOB2) or rows per label."""
    if task == TOKEN_TASK:
        return Counter(tag[2:] for row in result.rows for tag in row["tags"] if tag.startswith("B-"))
    return Counter(name for row in result.rows for name in label_values(row["label"]))


def _close_to(names: Iterable[str], known: Iterable[str]) -> str:
    """``'lo' looks like 'loc'``-style hints for names that are near (cut or misspelt) one of ``known``."""
    known = list(known)
    hints = []
    for name in list(names)[:5]:  # a hint for the first few is enough, and difflib is slow on many
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if match:
            hints.append(f"{excerpt(name, 40)} looks like {excerpt(match[0], 40)}")
    return "; " + ", ".join(hints) if hints else ""


def warn_rare_labels(train: ReadResult, task: str) -> dict[str, int]:
    """Warn (one line naming the file) about training labels seen fewer than :data:`RARE_COUNT` times while the
    most frequent is :data:`RARE_RATIO` times as common or more.

    Returns:
        The suspect labels and their counts (empty when there are none).
    """
    counts = label_counts(train, task)
    top = max(counts.values(), default=0)
    rare = {name: count for name, count in counts.items() if count < RARE_COUNT and top >= RARE_RATIO * count}
    if rare:
        what, unit = ("entity types", "spans") if task == TOKEN_TASK else ("labels", "rows")
        listed = sorted(rare.items(), key=lambda item: (item[1], item[0]))
        shown = ", ".join(f"{excerpt(name, 40)}: {count}" for name, count in listed[:10])
        more = f" and {len(listed) - 10} more" if len(listed) > 10 else ""
        frequent = [name for name in counts if name not in rare]
        logger.warning(
            "%s: %s with very few %s in the training data: %s%s (the others have %d-%d each); a cut or misspelt "
            "label becomes a class of its own, and a model can hardly learn one from so few examples%s",
            train.source,
            what,
            unit,
            shown,
            more,
            min((counts[name] for name in frequent), default=0),
            top,
            _close_to(rare, frequent),
        )
    return rare


def check_known_labels(result: ReadResult, label_names: list[str], task: str, train_source: str) -> None:
    """Labels (entity types) of an evaluation source must occur in the training source: the model cannot learn them."""
    known, unknown, first = set(label_names), set(), None
    for index, row in enumerate(result.rows):
        values = (
            enumerate(row["tags"]) if task == TOKEN_TASK else [(None, v) for v in label_values(row["label"])]
        )
        for token, value in values:
            if value not in known:
                unknown.add(value[2:] if task == TOKEN_TASK else value)
                if first is None:
                    first = result.where(index, token)
    if unknown:
        what = "entity types" if task == TOKEN_TASK else "labels"
        trained = sorted(entity_types(label_names)) if task == TOKEN_TASK else label_names
        raise DataError(
            f"{first}: {what} {excerpt_names(sorted(unknown))} do not occur in the training data "
            f"({train_source}); this is the first one in {result.source}"
            f"{_close_to(sorted(unknown), trained)}"
        )

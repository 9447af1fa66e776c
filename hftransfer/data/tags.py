"""IOB tag validation and IOB1 -> IOB2 repair, and the label order of token-classification tasks.

Everything downstream (subword alignment, seqeval's strict IOB2 scoring, entity spans in predictions) assumes IOB2,
where every entity starts with ``B-``. IOB1 corpora (``I-`` starts an entity unless it continues one of the same
type) are common, so such starts are repaired and counted instead of rejected. Any other scheme (BIOES, bare types)
is an error: guessing what ``E-`` or ``PER`` means would silently change the entities.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hftransfer.errors import DataError
from hftransfer.text_excerpt import excerpt

OUTSIDE = "O"
# The type may contain dashes ("B-geo-loc") but no whitespace: such a type could not round-trip through CoNLL.
TAG_PATTERN = re.compile(r"([BI])-(\S+)")


def is_tag(value: Any) -> bool:
    """True for ``O``, ``B-<type>`` and ``I-<type>``."""
    return value == OUTSIDE or (isinstance(value, str) and TAG_PATTERN.fullmatch(value) is not None)


def normalize_tags(tags: Sequence[Any], *, where: Callable[[int], str]) -> tuple[list[str], int]:
    """Validate one sentence's tags and repair IOB1-style entity starts to IOB2.

    An ``I-X`` that follows ``O``, the sentence start, or a tag of another type starts a new entity, so it becomes
    ``B-X``.

    Args:
        tags: the sentence's tags, one per word.
        where: maps a tag's index to its location for error messages, e.g. ``"train.conll:12"``.

    Returns:
        The IOB2 tags and the number of tags that were repaired.

    Raises:
        DataError: a tag is not ``O``, ``B-<type>`` or ``I-<type>``; the message starts with ``where(index)``.
    """
    out: list[str] = []
    repairs = 0
    previous_type: str | None = None  # entity type of the previous tag; None at the start and after O
    for index, tag in enumerate(tags):
        if tag == OUTSIDE:
            out.append(OUTSIDE)
            previous_type = None
            continue
        match = TAG_PATTERN.fullmatch(tag) if isinstance(tag, str) else None
        if match is None:
            raise DataError(
                f"{where(index)}: malformed tag {excerpt(tag)} (expected O, B-<type> or I-<type>)"
            )
        prefix, entity_type = match.groups()
        if prefix == "I" and previous_type != entity_type:
            prefix = "B"
            repairs += 1
        out.append(f"{prefix}-{entity_type}")
        previous_type = entity_type
    return out, repairs


def entity_types(tags: Iterable[str]) -> set[str]:
    """The entity types of well-formed tags (``"B-person"`` -> ``"person"``); ``O`` and other strings are skipped."""
    types = set()
    for tag in tags:
        match = TAG_PATTERN.fullmatch(tag) if isinstance(tag, str) else None
        if match is not None:
            types.add(match.group(2))
    return types


def tag_label_names(types: Iterable[str]) -> list[str]:
    """Label order of a token task: ``O``, then ``B-<type>``, ``I-<type>`` for each type in alphabetical order.

    Both prefixes of every type are included even when only ``B-`` occurs in the data, so that a model trained on
    single-word entities of a type can still continue one.

    Args:
        types: entity types (duplicates allowed).

    Returns:
        The label names, ``O`` first.
    """
    names = [OUTSIDE]
    for name in sorted(set(types)):
        names += [f"B-{name}", f"I-{name}"]
    return names


def entity_spans(tokens: Sequence[str], tags: Sequence[str]) -> list[dict[str, Any]]:
    """IOB2 tags -> ``[{"type", "start", "end", "text"}]`` with word offsets (end exclusive)."""
    spans: list[dict[str, Any]] = []
    for index, tag in enumerate(tags):
        if tag.startswith("B-") or (
            tag.startswith("I-") and (not spans or spans[-1]["end"] != index or spans[-1]["type"] != tag[2:])
        ):
            spans.append({"type": tag[2:], "start": index, "end": index + 1})
        elif tag.startswith("I-"):
            spans[-1]["end"] = index + 1
    for span in spans:
        span["text"] = " ".join(tokens[span["start"] : span["end"]])
    return spans

"""IOB tag validation and IOB1 -> IOB2 repair."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hftransfer.errors import DataError


def split_tag(tag: str) -> tuple[str, str] | None:
    """``"B-person"`` -> ``("B", "person")``; ``"O"`` -> ``("O", "")``; None when the tag is malformed."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[0] in "BI" and tag[1] == "-" and tag[2:].strip():
        return tag[0], tag[2:]
    return None


def normalize_tags(tags: Sequence[str], where: Callable[[int], str]) -> tuple[list[str], int]:
    """Validate IOB tags and repair IOB1-style entity starts to strict IOB2.

    An ``I-X`` that does not continue an ``X`` entity (it follows ``O``, the sentence start or another type) starts
    a new entity, so it becomes ``B-X``; such repairs are counted so the caller can report them.

    Args:
        tags: the tags of one sentence.
        where: maps a tag's position to its location for error messages (e.g. ``"train.conll:12"``).

    Returns:
        The IOB2 tags and the number of repaired tags.

    Raises:
        DataError: a tag is neither ``O`` nor ``B-<type>`` / ``I-<type>``.
    """
    fixed, repairs, previous_type = [], 0, None
    for index, tag in enumerate(tags):
        parts = split_tag(tag)
        if parts is None:
            raise DataError(f"{where(index)}: malformed tag {tag!r} (expected O, B-<type> or I-<type>)")
        prefix, entity_type = parts
        if prefix == "I" and previous_type != entity_type:
            tag = f"B-{entity_type}"
            repairs += 1
        fixed.append(tag)
        previous_type = entity_type if prefix != "O" else None
    return fixed, repairs


def entity_label_names(tag_sets: Sequence[str]) -> list[str]:
    """Label order for token tasks: ``O`` first, then ``B-``/``I-`` of every entity type, types sorted."""
    types = sorted({tag[2:] for tag in tag_sets if tag != "O"})
    return ["O"] + [f"{prefix}-{entity_type}" for entity_type in types for prefix in ("B", "I")]

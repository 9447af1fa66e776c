"""Bounded quotes of user data for error messages and warnings.

An error that quotes a line, a field or a label of a data file (or a value of a config) must stay one readable line
whatever the input holds: a damaged file can have a line of a megabyte, a label that is a list of a million items, or
an object with thousands of keys. Every such quote goes through :func:`excerpt` (one value) or
:func:`excerpt_names` (a list of names), which keep the start and say how long the whole was.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any

__all__ = ["EXCERPT_LIMIT", "excerpt", "excerpt_names", "shorten"]

EXCERPT_LIMIT = 80
"""Characters of a quoted value kept in a message: enough to recognise a line or a label, short enough for a
terminal line."""


class _BoundedRepr(reprlib.Repr):
    """repr of a container without building the whole repr first (a list of a million labels costs nothing
    here); strings inside keep their start, as :func:`excerpt` quotes them, rather than reprlib's middle cut."""

    def repr_str(self, x: str, level: int) -> str:
        return excerpt(x, EXCERPT_LIMIT // 2)


_BOUNDED_REPR = _BoundedRepr()
_BOUNDED_REPR.maxlevel, _BOUNDED_REPR.maxlist, _BOUNDED_REPR.maxtuple = 3, 8, 8
_BOUNDED_REPR.maxdict, _BOUNDED_REPR.maxset, _BOUNDED_REPR.maxother = 8, 8, 2 * EXCERPT_LIMIT


def _quoted_prefix(text: str, limit: int) -> str:
    """``repr`` of the longest prefix of ``text`` whose repr has at most ``limit`` characters (quotes included).

    Cutting the repr itself could split an escape (``\\x00``); cutting the text keeps every escape whole. Escapes
    make a repr up to ten times longer than its text, so the prefix is found by bisection over the text.
    """
    low, high = 0, min(len(text), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if len(repr(text[:middle])) <= limit:
            low = middle
        else:
            high = middle - 1
    return repr(text[:low])


def excerpt(value: Any, limit: int = EXCERPT_LIMIT) -> str:
    """``repr(value)`` when it is short; else its start and the size of the whole.

    Args:
        value: a string (a line, a field, a label) or any other value read from a file or a config.
        limit: the most characters of the quote kept (quotes and escapes included).

    Returns:
        ``'short text'``; ``'the first characters'… (1048576 characters)`` for a long string; ``[0, 1, 2, 3, 4,
        5, 6, 7, ...] (5000 items)`` for a long list. Never longer than ``limit`` plus the size note.
    """
    if isinstance(value, str):
        quoted = repr(value)
        if len(quoted) <= limit:
            return quoted
        return f"{_quoted_prefix(value, limit)}… ({len(value)} characters)"
    try:
        quoted = _BOUNDED_REPR.repr(value)
    except Exception:  # a value whose __repr__ fails must not replace the error being reported
        quoted = f"<{type(value).__name__}>"
    # reprlib shows the first 8 items of a container; say how many there were.
    sized = isinstance(value, (list, tuple, dict, set, frozenset))
    items = f" ({len(value)} item{'s' if sized and len(value) != 1 else ''})" if sized else ""
    note = items if sized and len(value) > _BOUNDED_REPR.maxlist else ""
    if len(quoted) > limit:
        quoted, note = quoted[:limit] + "…", items
    return quoted + note


def excerpt_names(names: Iterable[Any], *, limit: int = 40, budget: int = 3 * EXCERPT_LIMIT) -> str:
    """A list of names (columns, labels, entity types) for a message: each quoted by :func:`excerpt` with
    ``limit``, as many as fit in ``budget`` characters, and how many more there are.

    Returns:
        ``['label', 'text']``, or ``['a', 'b', … 9988 more]``.
    """
    shown: list[str] = []
    size, more = 0, 0
    for name in names:
        if more == 0:
            quoted = excerpt(name, limit)
            if size + len(quoted) <= budget or not shown:  # the first name is always shown
                shown.append(quoted)
                size += len(quoted) + 2
                continue
        more += 1
    tail = [f"… {more} more"] if more else []
    return "[" + ", ".join(shown + tail) + "]"


def shorten(text: str, limit: int = 4 * EXCERPT_LIMIT) -> str:
    """A message of another library that may quote user data (jsonargparse quotes the value it rejects), cut to
    its first ``limit`` characters: the part that names the key comes first."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"

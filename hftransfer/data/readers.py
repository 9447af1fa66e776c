"""Read task files (CoNLL/IOB, JSON, JSONL, CSV/TSV, plain text; optionally .bz2/.gz) into validated rows.

Rows: ``tokens``/``tags`` (IOB2 strings) or ``text``/[``text_pair``]/``label`` (always a string). Every problem is
a :class:`~hftransfer.errors.DataError` starting with ``<file>:<line>:`` (``<file>: row N:`` for JSON arrays, N from
0) that says what was expected; no KeyError, IndexError or decoding error escapes. Rows keep their location so that
later checks (labels unknown to the training data) can point at them. Token-task CSV/TSV cells hold space-separated
words and tags.

This module finds the format and decodes the file, then hands the text to the reader that format registered
(:mod:`hftransfer.data.formats`): :mod:`hftransfer.data.conll` (CoNLL/IOB), :mod:`hftransfer.data.record_files`
(JSON, JSONL, CSV/TSV, plain text), or one registered outside the package. Rows and their checks are :mod:`hftransfer.data.rows`; their names are importable from here too, as the
Hub reader, the builtin datasets and older code import them from this module.
"""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hftransfer.config import DataConfig
from hftransfer.data.formats import format_for_extension, format_names, get_format, known_extensions
from hftransfer.data.record_files import csv_records, read_plain_text
from hftransfer.data.rows import SEQUENCE_TASK, TASKS, TOKEN_TASK, ReadResult, sequence_row, token_row
from hftransfer.errors import DataError

__all__ = [
    "OPENERS",
    "SEQUENCE_TASK",
    "TASKS",
    "TOKEN_TASK",
    "ReadResult",
    "csv_records",
    "detect_format",
    "read_file",
    "read_text",
    "sequence_row",
    "strip_compression",
    "token_row",
]

OPENERS: dict[str, Callable[..., Any]] = {".bz2": bz2.open, ".gz": gzip.open}


def strip_compression(path: Path) -> str:
    """The file name without a ``.bz2``/``.gz`` suffix, lower-cased (``train.CSV.bz2`` -> ``train.csv``)."""
    name = path.name.lower()
    for suffix in OPENERS:
        name = name.removesuffix(suffix)
    return name


def detect_format(path: Path, configured: str = "auto") -> str:
    """``configured`` unless it is ``auto``, else the format that the extension names (compression ignored).

    Raises:
        DataError: the extension names no registered format (:mod:`hftransfer.data.formats`).
        ConfigError: ``configured`` names none.
    """
    if configured != "auto":
        return get_format(configured).name
    fmt = format_for_extension(Path(strip_compression(path)).suffix)
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the extension (known: {', '.join(known_extensions())}, also "
            f"with .bz2/.gz); set data.format to {', '.join(format_names())}"
        )
    return fmt


def _unix_newlines(text: str) -> str:
    # Universal newlines, but not str.splitlines: that also splits on U+2028 and U+0085, which occur inside tweets
    # and reviews (the Rotten Tomatoes corpus has them) and must stay part of the text.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: Path) -> str:
    """The file's text, decompressed, newlines normalised to ``\\n``, without a UTF-8 byte-order mark.

    Raises:
        DataError: the file is missing, cannot be decompressed, is not UTF-8 or holds only whitespace.
    """
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    opener = OPENERS.get(path.suffix.lower(), open)
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, ValueError) as err:  # truncated or corrupt .gz/.bz2, unreadable file
        raise DataError(f"{path}: cannot read the file ({err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        prefix = _unix_newlines(data[: err.start].decode("utf-8").removeprefix("\ufeff"))
        line, column = prefix.count("\n") + 1, len(prefix) - prefix.rfind("\n")
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column}); "
            "re-encode the file as UTF-8"
        ) from None
    text = _unix_newlines(text.removeprefix("\ufeff"))
    if not text.strip():
        raise DataError(f"{path}: no examples found (the file is empty)")
    return text


def read_file(
    path: str | Path, task: str, config: DataConfig, *, require_labels: bool = True, plain_text: bool = False
) -> ReadResult:
    """Read and validate one data file of any supported format.

    Args:
        path: the file; ``.bz2``/``.gz`` compressed files are decompressed on the fly.
        task: ``token-classification`` or ``sequence-classification``.
        config: column names, CoNLL columns and the format override (``data.format``).
        require_labels: tags/labels must be present (training, evaluation). When False (prediction) they are
            kept if the file has them (CoNLL: the first token line has a tag column; JSON: the first object has
            the column; CSV: the header has it).
        plain_text: with ``data.format=auto``, read a ``.txt`` file that is not CoNLL as one text (token task:
            one sentence split on whitespace) per non-blank line.

    Returns:
        The rows with their locations and the number of repaired IOB tags.

    Raises:
        DataError: missing, empty, non-UTF-8 or malformed files; the message names the file and line or row.
    """
    from hftransfer.data.conll import looks_like_conll  # conll.py imports ReadResult from here

    path = Path(path)
    fmt = detect_format(path, config.format)
    text = read_text(path)
    plain = plain_text and config.format == "auto" and strip_compression(path).endswith(".txt")
    if plain and (task != TOKEN_TASK or not looks_like_conll(text, config)):
        if config.text_pair_column and task != TOKEN_TASK:
            raise DataError(f"{path}: a plain text file holds single texts, but data.text_pair_column is set")
        result = read_plain_text(path, text, task)
    else:
        entry = get_format(fmt)
        if task not in entry.tasks:
            held = "word tags" if entry.tasks == (TOKEN_TASK,) else f"{', '.join(entry.tasks)} data"
            others = " or ".join(get_format(name).title for name in format_names(task))
            raise DataError(f"{path}: {entry.title} files hold {held}; {task} needs {others}")
        result = entry.read(path, text, task, config, require_labels)
    result.log_skipped()
    if not result.rows:
        left_out = " (every row was left out by data.invalid_rows=skip)" if result.skipped_at else ""
        raise DataError(f"{path}: no examples found{left_out}")
    return result

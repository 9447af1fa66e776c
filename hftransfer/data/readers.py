"""Read task files (CoNLL/IOB, JSON, JSONL, CSV/TSV, plain text; optionally .bz2/.gz) into validated rows.

Rows: ``tokens``/``tags`` (IOB2 strings) or ``text``/[``text_pair``]/``label`` (always a string). Every problem is
a :class:`~hftransfer.errors.DataError` starting with ``<file>:<line>:`` (``<file>: row N:`` for JSON arrays, N from
0) that says what was expected; no KeyError, IndexError or decoding error escapes. Rows keep their location so that
later checks (labels unknown to the training data) can point at them. Token-task CSV/TSV cells hold space-separated
words and tags.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftransfer.config import DataConfig
from hftransfer.data.tags import normalize_tags
from hftransfer.errors import DataError

TOKEN_TASK = "token-classification"
SEQUENCE_TASK = "sequence-classification"
TASKS = (TOKEN_TASK, SEQUENCE_TASK)
EXTENSION_FORMATS = {
    **dict.fromkeys((".conll", ".iob", ".bio", ".txt"), "conll"),
    **{f".{fmt}": fmt for fmt in ("json", "jsonl", "csv", "tsv")},
}
OPENERS: dict[str, Callable[..., Any]] = {".bz2": bz2.open, ".gz": gzip.open}


@dataclass
class ReadResult:
    """Validated rows of one source and where each came from."""

    source: str
    """The file (or ``hub-id[split]``) the rows come from."""
    rows: list[dict[str, Any]]
    anchors: list[int]
    """Per row: its first line (1-based), or its index in a JSON array / Hub split when ``by_line`` is False."""
    by_line: bool = True
    consecutive_tokens: bool = False
    """CoNLL: token i of a row is on line ``anchor + i``."""
    has_labels: bool = True
    iob_repairs: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows left out, by reason."""

    def where(self, row: int, token: int | None = None) -> str:
        """Location prefix of a row (or of one of its tokens) for error messages."""
        if not self.by_line:
            return f"{self.source}: row {self.anchors[row]}"
        offset = token if token is not None and self.consecutive_tokens else 0
        return f"{self.source}:{self.anchors[row] + offset}"


def strip_compression(path: Path) -> str:
    """The file name without a ``.bz2``/``.gz`` suffix, lower-cased (``train.CSV.bz2`` -> ``train.csv``)."""
    name = path.name.lower()
    for suffix in OPENERS:
        name = name.removesuffix(suffix)
    return name


def detect_format(path: Path, configured: str = "auto") -> str:
    """``configured`` unless it is ``auto``, else the format that the extension names (compression ignored).

    Raises:
        DataError: the extension names no supported format.
    """
    if configured != "auto":
        return configured
    fmt = EXTENSION_FORMATS.get(Path(strip_compression(path)).suffix)
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the extension (known: {', '.join(EXTENSION_FORMATS)}, also "
            "with .bz2/.gz); set data.format to conll, json, jsonl, csv or tsv"
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


def _json_records(path: Path, text: str, fmt: str) -> tuple[list[tuple[int, Any]], bool]:
    """``(anchor, object)`` pairs and whether anchors are line numbers (JSONL) rather than array indices."""
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise DataError(
                    f"{path}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})"
                ) from None
            fmt = "jsonl"  # several top-level values: a JSON Lines file with a .json name, which is common
        else:
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise DataError(f'{path}: expected a JSON list of objects or {{"data": [...]}}')
            return list(enumerate(data)), False
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
    return records, True


def csv_records(path: Path, text: str, fmt: str, needed: list[str]) -> list[tuple[int, dict[str, str]]]:
    """``(first line, row)`` pairs of a CSV/TSV text with a header row; blank lines are skipped.

    Raises:
        DataError: a column of ``needed`` is not in the header, a row has the wrong number of fields, or the
            CSV syntax is broken.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    records: list[tuple[int, dict[str, str]]] = []
    header: list[str] | None = None
    try:
        for row in reader:
            start = reader.line_num - sum(field.count("\n") for field in row)
            if not row:
                continue
            if header is None:
                header = [name.strip() for name in row]
                missing = [name for name in needed if name not in header]
                if missing:
                    raise DataError(
                        f"{path}:{start}: no column {missing[0]!r} in the header {header}; set data.*_column "
                        "to the right name (a header row is required)"
                    )
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}:{start}: {len(row)} fields, but the header has {len(header)} ({header}); "
                    "quote fields that contain the delimiter"
                )
            records.append((start, dict(zip(header, row))))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({err})") from None
    return records


def _field(obj: dict[str, Any], name: str, where: str) -> Any:
    if name not in obj or obj[name] is None:
        raise DataError(f"{where}: missing column {name!r} (present: {sorted(map(str, obj))})")
    return obj[name]


def token_row(
    obj: dict[str, Any], where: str, config: DataConfig, *, labels: bool, cells: bool = False
) -> dict:
    """A ``tokens`` [+ ``tags``] row from one record; tags are not yet normalised.

    Args:
        obj: the record (a JSON object, a CSV row as a dict, a Hub row).
        where: location prefix for error messages.
        config: names the tokens and tags columns.
        labels: read the tags column (it must then be present).
        cells: the values are space-separated strings (CSV) rather than lists.

    Raises:
        DataError: a missing column, a non-list value, no tokens, or tokens and tags of different lengths.
    """
    columns = [("tokens", config.tokens_column)] + ([("tags", config.tags_column)] if labels else [])
    row: dict[str, Any] = {}
    for key, column in columns:
        value = _field(obj, column, where)
        if cells and isinstance(value, str):
            value = value.split()
        if not isinstance(value, list):
            raise DataError(f"{where}: column {column!r} must be a list, got {type(value).__name__}")
        row[key] = value
    if not row["tokens"]:
        raise DataError(f"{where}: column {config.tokens_column!r} holds no tokens")
    if not all(isinstance(token, str) for token in row["tokens"]):
        raise DataError(f"{where}: column {config.tokens_column!r} must hold strings (words)")
    if labels and len(row["tags"]) != len(row["tokens"]):
        raise DataError(f"{where}: {len(row['tokens'])} tokens but {len(row['tags'])} tags")
    return row


def sequence_row(obj: dict[str, Any], where: str, config: DataConfig, *, labels: bool) -> dict[str, Any]:
    """A ``text`` [+ ``text_pair``] [+ ``label``] row from one record; the label becomes a string.

    Raises:
        DataError: a missing column, an empty or non-string text, or a label that is not a single value.
    """
    columns = [("text", config.text_column)]
    if config.text_pair_column:
        columns.append(("text_pair", config.text_pair_column))
    row: dict[str, Any] = {}
    for key, column in columns:
        value = _field(obj, column, where)
        if not isinstance(value, str):
            raise DataError(f"{where}: column {column!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: empty text in column {column!r}")
        row[key] = value
    if labels:
        label = _field(obj, config.label_column, where)
        # Surrounding spaces are layout ("text, positive" in hand-written CSVs), not part of the label.
        if isinstance(label, (list, dict)) or not str(label).strip():
            raise DataError(f"{where}: column {config.label_column!r} must hold one label, got {label!r}")
        row["label"] = str(label).strip()
    return row


def _read_table(path: Path, text: str, task: str, config: DataConfig, fmt: str, require: bool) -> ReadResult:
    token_task = task == TOKEN_TASK
    label_column = config.tags_column if token_task else config.label_column
    if fmt in ("csv", "tsv"):
        needed = [config.tokens_column] if token_task else [config.text_column]
        needed += [config.text_pair_column] if config.text_pair_column and not token_task else []
        records = csv_records(path, text, fmt, needed + ([label_column] if require else []))
        labels = require or bool(records and label_column in records[0][1])
        by_line = True
    else:
        records, by_line = _json_records(path, text, fmt)
        labels = require or bool(
            records and isinstance(records[0][1], dict) and label_column in records[0][1]
        )
    result = ReadResult(str(path), [], [], by_line=by_line, has_labels=labels)
    for anchor, obj in records:
        result.anchors.append(anchor)
        where = result.where(len(result.rows))
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected an object with named fields, got {type(obj).__name__}")
        if token_task:
            row = token_row(obj, where, config, labels=labels, cells=fmt in ("csv", "tsv"))
            if labels:
                row["tags"], repairs = normalize_tags(row["tags"], where=lambda i, w=where: f"{w}: tag {i}")
                result.iob_repairs += repairs
        else:
            row = sequence_row(obj, where, config, labels=labels)
        result.rows.append(row)
    return result


def _read_plain_text(path: Path, text: str, task: str) -> ReadResult:
    result = ReadResult(str(path), [], [], has_labels=False)
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():  # blank lines separate nothing here; skipping them keeps a trailing newline harmless
            result.rows.append({"tokens": line.split()} if task == TOKEN_TASK else {"text": line.strip()})
            result.anchors.append(number)
    return result


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
    from hftransfer.data.conll import looks_like_conll, read_conll  # conll.py imports ReadResult from here

    path = Path(path)
    fmt = detect_format(path, config.format)
    text = read_text(path)
    plain = plain_text and config.format == "auto" and strip_compression(path).endswith(".txt")
    if plain and (task != TOKEN_TASK or not looks_like_conll(text, config)):
        if config.text_pair_column and task != TOKEN_TASK:
            raise DataError(f"{path}: a plain text file holds single texts, but data.text_pair_column is set")
        result = _read_plain_text(path, text, task)
    elif fmt == "conll":
        if task != TOKEN_TASK:
            raise DataError(f"{path}: CoNLL files hold word tags; {task} needs JSON, JSONL, CSV or TSV")
        result = read_conll(path, text, config, require_labels)
    else:
        result = _read_table(path, text, task, config, fmt, require_labels)
    if not result.rows:
        raise DataError(f"{path}: no examples found")
    return result

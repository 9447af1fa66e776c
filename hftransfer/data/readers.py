"""Read task files (CoNLL/IOB, JSON/JSONL, CSV/TSV, plain text) into validated rows.

Every problem is reported as a :class:`~hftransfer.errors.DataError` that starts with ``<file>:<line>:`` (or
``<file>: row N:`` for JSON arrays) and says what was expected, never as a KeyError or UnicodeDecodeError from deep
inside a parser. Each row keeps its location so that later checks (labels unknown to the training data) can point
at it too.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftransfer.config import DataConfig
from hftransfer.data.tags import normalize_tags, split_tag
from hftransfer.errors import DataError

TOKEN_TASK = "token-classification"
EXTENSION_FORMATS = {
    ".conll": "conll",
    ".iob": "conll",
    ".bio": "conll",
    ".txt": "conll",
    ".json": "json",
    ".jsonl": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
}
COMPRESSED = {".bz2": bz2.decompress, ".gz": gzip.decompress}


@dataclass
class ReadResult:
    """Rows (``tokens``/``tags`` or ``text``/[``text_pair``]/``label``) with a location string per row."""

    rows: list[dict[str, Any]]
    locations: list[str]
    iob_repairs: int = 0
    has_labels: bool = True
    notes: dict[str, Any] = field(default_factory=dict)


def detect_format(path: Path, configured: str = "auto") -> str:
    """The format of ``path``: ``configured`` unless ``auto``, else from the extension (``.bz2``/``.gz`` ignored)."""
    if configured != "auto":
        return configured
    suffixes = [s for s in path.suffixes if s not in COMPRESSED]
    fmt = EXTENSION_FORMATS.get(suffixes[-1].lower()) if suffixes else None
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the extension; set data.format to one of conll, json, jsonl, csv, tsv"
        )
    return fmt


def read_text(path: Path) -> str:
    """The file's text (decompressed), with a line-precise error for bytes that are not UTF-8."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    decompress = COMPRESSED.get(path.suffix.lower())
    if decompress is not None:
        try:
            data = decompress(data)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: cannot decompress ({err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column}); re-encode the file as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not part of the first token
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text


def _lines(text: str) -> list[str]:
    # str.splitlines would also split on U+2028 and other separators that occur inside tweets.
    return [line.rstrip("\r") for line in text.split("\n")]


def read_conll(path: Path, config: DataConfig, *, require_labels: bool = True) -> ReadResult:
    """CoNLL/IOB: a ``word ... tag`` line per token, blank lines between sentences, ``-DOCSTART-`` skipped."""
    rows, locations, repairs = [], [], 0
    tokens: list[str] = []
    tags: list[str] = []
    line_numbers: list[int] = []
    missing_tags = 0

    def flush() -> None:
        nonlocal repairs
        if not tokens:
            return
        row: dict[str, Any] = {"tokens": list(tokens)}
        if tags and len(tags) == len(tokens):
            numbers = list(line_numbers)
            fixed, count = normalize_tags(tags, lambda i: f"{path}:{numbers[i]}")
            row["tags"], repairs = fixed, repairs + count
        rows.append(row)
        locations.append(f"{path}:{line_numbers[0]}")
        tokens.clear()
        tags.clear()
        line_numbers.clear()

    for number, line in enumerate(_lines(read_text(path)), start=1):
        if not line.strip() or line.lstrip().startswith("-DOCSTART-"):
            flush()
            continue
        columns = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
        try:
            token = columns[config.conll_token_column]
        except IndexError:
            raise DataError(
                f"{path}:{number}: no column {config.conll_token_column} for the word in {line!r}"
            ) from None
        if len(columns) < 2:
            if require_labels:
                raise DataError(f"{path}:{number}: missing tag column in {line!r} (expected 'word<TAB>tag')")
            missing_tags += 1
        else:
            tags.append(columns[config.conll_tag_column])
        tokens.append(token)
        line_numbers.append(number)
    flush()
    if not rows:
        raise DataError(f"{path}: no sentences found")
    has_labels = missing_tags == 0 and all("tags" in row for row in rows)
    if not has_labels:
        for row in rows:
            row.pop("tags", None)
    return ReadResult(rows, locations, repairs, has_labels)


def _json_objects(path: Path, fmt: str) -> list[tuple[str, Any]]:
    text = read_text(path)
    if fmt == "jsonl":
        objects = []
        for number, line in enumerate(_lines(text), start=1):
            if not line.strip():
                continue
            try:
                objects.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
        return objects
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}:{err.lineno}: invalid JSON ({err.msg}); JSON Lines files need the .jsonl extension"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a JSON list of objects (or {{"data": [...]}})')
    return [(f"{path}: row {index}", item) for index, item in enumerate(data)]


def _csv_objects(path: Path, fmt: str) -> list[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter="\t" if fmt == "tsv" else ",")
    if not reader.fieldnames:
        raise DataError(f"{path}: no header row")
    objects = []
    try:
        for row in reader:
            objects.append((f"{path}:{reader.line_num}", row))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({err})") from None
    return objects


def _field(obj: Any, name: str, where: str, required: bool) -> Any:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object with named fields, got {type(obj).__name__}")
    if name not in obj or obj[name] is None:
        if not required:
            return None
        raise DataError(
            f"{where}: missing column {name!r} (present: {sorted(obj)}); set data.*_column to rename"
        )
    return obj[name]


def _token_row(
    obj: Any, where: str, config: DataConfig, from_csv: bool, require_labels: bool
) -> dict[str, Any]:
    tokens = _field(obj, config.tokens_column, where, True)
    tags = _field(obj, config.tags_column, where, require_labels)
    if from_csv:  # CSV cells hold space-separated words and tags
        tokens = tokens.split()
        tags = tags.split() if tags is not None else None
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise DataError(f"{where}: {config.tokens_column!r} must be a non-empty list of strings")
    row: dict[str, Any] = {"tokens": tokens}
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DataError(
                f"{where}: {config.tags_column!r} must be a list of tag strings such as 'B-person'"
            )
        if len(tags) != len(tokens):
            raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
        row["tags"] = tags
    return row


def _sequence_row(obj: Any, where: str, config: DataConfig, require_labels: bool) -> dict[str, Any]:
    row: dict[str, Any] = {}
    columns = [("text", config.text_column)]
    if config.text_pair_column:
        columns.append(("text_pair", config.text_pair_column))
    for key, column in columns:
        value = _field(obj, column, where, True)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: column {column!r} must be a non-empty text")
        row[key] = value
    label = _field(obj, config.label_column, where, require_labels)
    if label is not None:
        if isinstance(label, (list, dict)) or str(label).strip() == "":
            raise DataError(f"{where}: column {config.label_column!r} must be one label, got {label!r}")
        row["label"] = str(label).strip()
    return row


def read_table(
    path: Path, task: str, config: DataConfig, fmt: str, *, require_labels: bool = True
) -> ReadResult:
    """JSON, JSONL, CSV or TSV rows for either task."""
    objects = _json_objects(path, fmt) if fmt in ("json", "jsonl") else _csv_objects(path, fmt)
    if not objects:
        raise DataError(f"{path}: no examples found")
    rows, locations, repairs = [], [], 0
    for where, obj in objects:
        if task == TOKEN_TASK:
            row = _token_row(obj, where, config, fmt in ("csv", "tsv"), require_labels)
            if "tags" in row:
                row["tags"], count = normalize_tags(row["tags"], lambda i, w=where: f"{w} (tag {i})")
                repairs += count
        else:
            row = _sequence_row(obj, where, config, require_labels)
        rows.append(row)
        locations.append(where)
    key = "tags" if task == TOKEN_TASK else "label"
    has_labels = all(key in row for row in rows)
    if not has_labels:
        for row in rows:
            row.pop(key, None)
    return ReadResult(rows, locations, repairs, has_labels)


def read_plain_text(path: Path, task: str, config: DataConfig) -> ReadResult:
    """One sentence (token task: split on whitespace) or one text per non-blank line; no labels."""
    rows, locations = [], []
    for number, line in enumerate(_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        rows.append({"tokens": line.split()} if task == TOKEN_TASK else {"text": line.strip()})
        locations.append(f"{path}:{number}")
    return ReadResult(rows, locations, 0, has_labels=False)


def looks_like_conll(path: Path) -> bool:
    """A .txt file is CoNLL when it has tab-separated columns or every line ends in an IOB tag."""
    lines = [line for line in _lines(read_text(path)) if line.strip() and not line.startswith("-DOCSTART-")]
    if any("\t" in line for line in lines):
        return True
    return all(len(line.split()) >= 2 and split_tag(line.split()[-1]) is not None for line in lines)


def read_file(path: str | Path, task: str, config: DataConfig, *, require_labels: bool = True) -> ReadResult:
    """Read one data file of any supported format.

    Args:
        path: the file (``.bz2``/``.gz`` compressed files are read directly).
        task: ``token-classification`` or ``sequence-classification``.
        config: column names, CoNLL columns and the format override.
        require_labels: labels must be present (training/evaluation); False for prediction.

    Raises:
        DataError: the file is missing, empty, not UTF-8 or malformed; the message names file and line.
    """
    path = Path(path)
    fmt = detect_format(path, config.format)
    if fmt == "conll":
        plain_text_allowed = not require_labels and config.format == "auto" and path.suffix.lower() == ".txt"
        if plain_text_allowed and (task != TOKEN_TASK or not looks_like_conll(path)):
            return read_plain_text(path, task, config)
        if task != TOKEN_TASK:
            raise DataError(
                f"{path}: CoNLL files hold token tags; sequence classification needs JSON(L) or CSV/TSV"
            )
        return read_conll(path, config, require_labels=require_labels)
    return read_table(path, task, config, fmt, require_labels=require_labels)

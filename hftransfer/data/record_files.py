"""Files of records: JSON arrays, JSON Lines, CSV/TSV with a header row, and plain text with one example a line.

Each is parsed into ``(anchor, record)`` pairs and every record is checked by :mod:`hftransfer.data.rows`; which
of these readers a file gets is decided by :func:`hftransfer.data.readers.read_file` (CoNLL files have their own
reader, :mod:`hftransfer.data.conll`). Every problem is a :class:`~hftransfer.errors.DataError` starting with
``<file>:<line>:`` or ``<file>: row N:``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hftransfer.config import DataConfig
from hftransfer.data.rows import TOKEN_TASK, ReadResult, read_row, sequence_row, token_row
from hftransfer.data.tags import normalize_tags
from hftransfer.errors import DataError
from hftransfer.text_excerpt import excerpt, excerpt_names


def _loads(text: str, where: str) -> Any:
    """``json.loads`` whose every failure is a DataError at ``where`` (``<file>`` or ``<file>:<line>``).

    Besides syntax errors, json raises a plain ValueError for an integer of more than 4300 digits and a
    RecursionError for arrays nested some thousand levels deep; both occur in damaged files.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError as err:
        raise DataError(f"{where}: invalid JSON ({err})") from None
    except RecursionError:
        raise DataError(f"{where}: invalid JSON (values nested too deeply)") from None


def json_records(path: Path, text: str, fmt: str) -> tuple[list[tuple[int, Any]], bool]:
    """``(anchor, object)`` pairs and whether anchors are line numbers (JSONL) rather than array indices."""
    if fmt == "json":
        try:
            data = _loads(text, str(path))
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
            records.append((number, _loads(line, f"{path}:{number}")))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
    return records, True


@contextmanager
def _field_size_limit(size: int) -> Iterator[None]:
    """Let the csv module read fields of up to ``size`` characters, then restore its limit.

    Its default of 131072 characters rejects a long review or document that JSON Lines reads fine; a field cannot
    be longer than the text it comes from, so the text's length is the limit that never rejects a valid file. The
    limit is process-wide, hence restored (and never lowered) rather than left raised.
    """
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, size))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def csv_records(path: Path, text: str, fmt: str, needed: list[str]) -> list[tuple[int, dict[str, str]]]:
    """``(first line, row)`` pairs of a CSV/TSV text with a header row; blank lines are skipped.

    Raises:
        DataError: a column of ``needed`` is not in the header, a row has the wrong number of fields, or the
            CSV syntax is broken.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    records: list[tuple[int, dict[str, str]]] = []
    header: list[str] | None = None
    start = 1  # first line of the row being read: the line after the previous row's last one
    try:
        with _field_size_limit(len(text) + 1):
            for row in reader:
                next_start = reader.line_num + 1
                if not row:
                    start = next_start
                    continue
                if header is None:
                    header = [name.strip() for name in row]
                    missing = [name for name in needed if name not in header]
                    if missing:
                        raise DataError(
                            f"{path}:{start}: no column {excerpt(missing[0])} in the header "
                            f"{excerpt_names(header)}; set data.*_column to the right name (a header row is "
                            "required)"
                        )
                elif len(row) != len(header):
                    # A quote opened and never closed takes in the lines after it (to the end of a cut file).
                    hint = f"; the row spans lines {start}-{reader.line_num}: is a quote left open?"
                    raise DataError(
                        f"{path}:{start}: {len(row)} fields, but the header has {len(header)} "
                        f"({excerpt_names(header)}); quote fields that contain the delimiter"
                        f"{hint if reader.line_num > start else ''}"
                    )
                else:
                    records.append((start, dict(zip(header, row))))
                start = next_start
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({err})") from None
    return records


def read_record_file(
    path: Path, text: str, task: str, config: DataConfig, fmt: str, require: bool
) -> ReadResult:
    """Rows of a JSON, JSONL, CSV or TSV text; with ``require`` False, labels only if the file has them."""
    token_task = task == TOKEN_TASK
    label_column = config.tags_column if token_task else config.label_column
    if fmt in ("csv", "tsv"):
        needed = [config.tokens_column] if token_task else [config.text_column]
        needed += [config.text_pair_column] if config.text_pair_column and not token_task else []
        records = csv_records(path, text, fmt, needed + ([label_column] if require else []))
        labels = require or bool(records and label_column in records[0][1])
        by_line = True
    else:
        records, by_line = json_records(path, text, fmt)
        labels = require or bool(
            records and isinstance(records[0][1], dict) and label_column in records[0][1]
        )
    result = ReadResult(str(path), [], [], by_line=by_line, has_labels=labels)
    for anchor, obj in records:

        def make_row(where: str, obj: Any = obj) -> dict[str, Any]:
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected an object with named fields, got {type(obj).__name__}")
            if not token_task:
                return sequence_row(obj, where, config, labels=labels)
            row = token_row(obj, where, config, labels=labels, cells=fmt in ("csv", "tsv"))
            if labels:
                row["tags"], repairs = normalize_tags(row["tags"], where=lambda i, w=where: f"{w}: tag {i}")
                result.iob_repairs += repairs
            return row

        read_row(result, anchor, config, make_row)
    return result


def read_plain_text(path: Path, text: str, task: str) -> ReadResult:
    """Unlabelled rows, one per non-blank line (token task: the line split on whitespace)."""
    result = ReadResult(str(path), [], [], has_labels=False)
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():  # blank lines separate nothing here; skipping them keeps a trailing newline harmless
            result.rows.append({"tokens": line.split()} if task == TOKEN_TASK else {"text": line.strip()})
            result.anchors.append(number)
    return result

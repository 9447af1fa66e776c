"""What every reader produces: validated task rows (:class:`ReadResult`) and the checks that turn one record into
one row.

A record is whatever a source yields per example (a JSON object, a CSV row as a dict, a Hub row); the row is the
task's fixed shape: ``tokens``/``tags`` or ``text``/[``text_pair``]/``label``. The checks live here, apart from
the file formats, because the file readers, the Hub reader and the builtin datasets all share them, so that a bad
record reads the same wherever it came from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from hftransfer.config import DataConfig
from hftransfer.config.problem import REGRESSION, SINGLE_LABEL
from hftransfer.data.label_kinds import read_label
from hftransfer.errors import DataError
from hftransfer.text_excerpt import excerpt, excerpt_names

logger = logging.getLogger(__name__)

TOKEN_TASK = "token-classification"
SEQUENCE_TASK = "sequence-classification"
TASKS = (TOKEN_TASK, SEQUENCE_TASK)

SKIPPED_SHOWN = 5  # locations of skipped rows named in the log


class InvalidRow(DataError):
    """A row with no text or, in labelled data, no label: an error (``data.invalid_rows=error``, the default), or
    left out and counted (``skip``). Anything else wrong with a record or its file is always an error."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    skipped_at: list[str] = field(default_factory=list)
    """Where the rows left out by ``data.invalid_rows=skip`` were (``file:line``)."""

    def where(self, row: int, token: int | None = None) -> str:
        """Location prefix of a row (or of one of its tokens) for error messages."""
        if not self.by_line:
            return f"{self.source}: row {self.anchors[row]}"
        offset = token if token is not None and self.consecutive_tokens else 0
        return f"{self.source}:{self.anchors[row] + offset}"

    def skip(self, error: InvalidRow, where: str) -> None:
        """Leave out the row being read (whose anchor was appended last) and count it by reason."""
        self.anchors.pop()
        reason = f"{error.reason} (data.invalid_rows=skip)"
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.skipped_at.append(where)

    def log_skipped(self) -> None:
        """Warn once about the rows :meth:`skip` left out, naming the first few."""
        if self.skipped_at:
            shown = ", ".join(self.skipped_at[:SKIPPED_SHOWN])
            more = (
                f" and {len(self.skipped_at) - SKIPPED_SHOWN} more"
                if len(self.skipped_at) > SKIPPED_SHOWN
                else ""
            )
            logger.warning(
                "%s: data.invalid_rows=skip left out %d rows without text or label: %s%s",
                self.source,
                len(self.skipped_at),
                shown,
                more,
            )


def read_row(result: ReadResult, anchor: int, config: DataConfig, make_row: Any) -> None:
    """Append ``make_row(where)`` to ``result`` at ``anchor``; an :class:`InvalidRow` it raises is left out and
    counted when ``config.invalid_rows`` is ``skip``."""
    result.anchors.append(anchor)
    where = result.where(len(result.rows))
    try:
        result.rows.append(make_row(where))
    except InvalidRow as error:
        if getattr(config, "invalid_rows", "error") != "skip":
            raise
        result.skip(error, where)


def _field(obj: dict[str, Any], name: str, where: str, what: str) -> Any:
    """``obj[name]``; ``what`` names its value in the message (``the label is``, ``the tags are``)."""
    if name not in obj:
        raise DataError(
            f"{where}: missing column {excerpt(name)} (present: {excerpt_names(sorted(map(str, obj)))})"
        )
    if obj[name] is None:  # JSON null: the column is there, its value is not
        raise InvalidRow(
            f"{where}: {what} null (column {excerpt(name)}); every row needs a value (data.invalid_rows=skip "
            "leaves such rows out)",
            "null label" if "label" in what or "tags" in what else "null text",
        )
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
        value = _field(obj, column, where, "the words are" if key == "tokens" else "the tags are")
        if cells and isinstance(value, str):
            value = value.split()
        if not isinstance(value, list):
            raise DataError(f"{where}: column {excerpt(column)} must be a list, got {type(value).__name__}")
        row[key] = value
    if not row["tokens"]:
        raise InvalidRow(f"{where}: column {excerpt(config.tokens_column)} holds no tokens", "no words")
    if not all(isinstance(token, str) for token in row["tokens"]):
        raise DataError(f"{where}: column {excerpt(config.tokens_column)} must hold strings (words)")
    if labels and len(row["tags"]) != len(row["tokens"]):
        raise DataError(f"{where}: {len(row['tokens'])} tokens but {len(row['tags'])} tags")
    return row


def sequence_row(obj: dict[str, Any], where: str, config: DataConfig, *, labels: bool) -> dict[str, Any]:
    """A ``text`` [+ ``text_pair``] [+ ``label``] row from one record; the label becomes a string (a list of
    strings, or a float, as ``config.problem_type`` says: :func:`~hftransfer.data.label_kinds.read_label`).

    Raises:
        DataError: a missing column, an empty or non-string text, or a label that is not a single value (not a
            list of labels, not a number).
    """
    columns = [("text", config.text_column)]
    if config.text_pair_column:
        columns.append(("text_pair", config.text_pair_column))
    row: dict[str, Any] = {}
    for key, column in columns:
        value = _field(obj, column, where, "the text is")
        if not isinstance(value, str):
            raise DataError(f"{where}: column {excerpt(column)} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise InvalidRow(
                f"{where}: empty text in column {excerpt(column)} (data.invalid_rows=skip leaves such rows out)",
                "empty text",
            )
        row[key] = value
    if labels:
        label = _field(obj, config.label_column, where, "the label is")
        if config.problem_type == REGRESSION and isinstance(label, str) and not label.strip():
            raise InvalidRow(
                f"{where}: the value is empty (column {excerpt(config.label_column)})", "empty label"
            )
        if config.problem_type != SINGLE_LABEL:
            row["label"] = read_label(label, where, config)
            return row
        column = excerpt(config.label_column)
        if isinstance(label, (list, dict)):
            raise DataError(f"{where}: column {column} must hold one label, got {excerpt(label)}")
        # Surrounding spaces are layout ("text, positive" in hand-written CSVs), not part of the label.
        if not str(label).strip():
            raise InvalidRow(
                f"{where}: the label is empty (column {column}); every row needs a label (data.invalid_rows=skip "
                "leaves such rows out)",
                "empty label",
            )
        row["label"] = str(label).strip()
    return row

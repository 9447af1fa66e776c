"""CoNLL/IOB files: one ``word ... tag`` line per token, blank lines between sentences, ``-DOCSTART-`` skipped.

Columns are split on ASCII whitespace only (a non-breaking space inside a token is part of the token), the word and
tag columns are configurable, and every problem names ``<file>:<line>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hftransfer.config import DataConfig
from hftransfer.data.readers import ReadResult
from hftransfer.data.tags import OUTSIDE, is_tag, normalize_tags
from hftransfer.errors import DataError
from hftransfer.text_excerpt import excerpt


def _conll_columns(line: str) -> list[str]:
    # Only ASCII spaces and tabs separate columns: str.split() would also cut a token at U+00A0 or U+2028, which
    # occur inside tweets, and silently lose the rest of the token.
    if "\t" in line:
        return [column.strip(" ") for column in line.split("\t")]
    return [column for column in line.split(" ") if column]


def read_conll(path: Path, text: str, config: DataConfig, require_labels: bool) -> ReadResult:
    result = ReadResult(str(path), [], [], consecutive_tokens=True)
    # Without require_labels the first token line decides whether the file has tags; every line must then agree.
    with_tags: bool | None = True if require_labels else None
    tokens: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if not tokens:
            return
        row: dict[str, Any] = {"tokens": list(tokens)}
        if with_tags:
            first = start
            row["tags"], repairs = normalize_tags(tags, where=lambda i: f"{path}:{first + i}")
            result.iob_repairs += repairs
        result.rows.append(row)
        result.anchors.append(start)
        tokens.clear()
        tags.clear()

    for number, line in enumerate(text.split("\n"), start=1):
        columns = _conll_columns(line)
        if not any(columns) or columns[0] == "-DOCSTART-":  # blank line or document marker: sentence ends
            flush()
            continue
        if with_tags is None:
            with_tags = len(columns) >= 2
        if with_tags and len(columns) < 2:
            raise DataError(
                f"{path}:{number}: missing tag column in {excerpt(line.strip())} (expected 'word<TAB>tag' or "
                "'word tag')"
            )
        if with_tags is False and len(columns) >= 2:
            raise DataError(
                f"{path}:{number}: this line has a tag column but the first token line has none; "
                "give every token a tag, or none"
            )
        try:
            word = columns[config.conll_token_column]
            tag = columns[config.conll_tag_column] if with_tags else None
        except IndexError:
            raise DataError(
                f"{path}:{number}: the line has {len(columns)} columns, but data.conll_token_column="
                f"{config.conll_token_column} and data.conll_tag_column={config.conll_tag_column}"
            ) from None
        if not word:
            raise DataError(f"{path}:{number}: empty word in column {config.conll_token_column}")
        if not tokens:
            start = number
        tokens.append(word)
        if tag is not None:
            tags.append(tag)
    flush()
    result.has_labels = bool(with_tags)
    return result


def looks_like_conll(text: str, config: DataConfig) -> bool:
    # A .txt for prediction is either CoNLL or one sentence per line. CoNLL lines all have the same number of
    # columns, their tag column always holds a tag, and NER data always has some O tags; prose almost never does.
    lines = [_conll_columns(line) for line in text.split("\n") if line.strip()]
    lines = [columns for columns in lines if columns[0] != "-DOCSTART-"]
    widths = {len(columns) for columns in lines}
    if len(widths) != 1 or widths == {1}:
        return False
    try:
        tags = [columns[config.conll_tag_column] for columns in lines]
    except IndexError:
        return False
    return all(is_tag(tag) for tag in tags) and OUTSIDE in tags

"""Data file formats: each is a name, the file extensions that select it under ``data.format=auto``, the tasks
it holds, and a reader from decoded text to validated rows. A new format is one :func:`register_format` call
(``docs/extending.md`` has a worked example); ``data.format=<name>`` then selects it for any file.

A reader gets ``(path, text, task, config, require_labels)``: the text is already decompressed and decoded (UTF-8,
``\\n`` newlines, no byte-order mark), and it returns a :class:`~hftransfer.data.rows.ReadResult` built with
:func:`~hftransfer.data.rows.token_row` / :func:`~hftransfer.data.rows.sequence_row`, which check every row and
keep its location for later messages. Its errors are :class:`~hftransfer.errors.DataError` naming the file and
line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hftransfer.config import DataConfig
from hftransfer.data.rows import SEQUENCE_TASK, TASKS, TOKEN_TASK, ReadResult
from hftransfer.errors import ConfigError
from hftransfer.text_excerpt import excerpt

Reader = Callable[[Path, str, str, DataConfig, bool], ReadResult]


@dataclass(frozen=True)
class DataFormatEntry:
    name: str
    read: Reader
    """``read(path, text, task, config, require_labels) -> ReadResult``."""
    extensions: tuple[str, ...]
    """Lower-case suffixes (``.conll``) that select the format under ``data.format=auto``."""
    tasks: tuple[str, ...]
    """The tasks its files can hold."""
    title: str
    """How messages name it (``CoNLL``, ``JSON``)."""


_FORMATS: dict[str, DataFormatEntry] = {}


def register_format(
    name: str,
    *,
    read: Reader,
    extensions: tuple[str, ...] = (),
    tasks: tuple[str, ...] = TASKS,
    title: str | None = None,
    replace: bool = False,
) -> DataFormatEntry:
    """Make ``data.format=<name>`` (and files ending in one of ``extensions``) read with ``read``.

    Raises:
        ValueError: a taken name or extension without ``replace``, or an unknown task.
    """
    if not name.isidentifier():
        raise ValueError(f"data format name {name!r}: use letters, digits and '_'")
    if name in _FORMATS and not replace:
        raise ValueError(f"data format {name!r} is registered already; pass replace=True to replace it")
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise ValueError(f"data format {name!r}: unknown task {unknown[0]!r} (known: {', '.join(TASKS)})")
    for extension in extensions:
        owner = format_for_extension(extension)
        if owner not in (None, name) and not replace:
            raise ValueError(f"data format {name!r}: extension {extension} already selects {owner!r}")
    entry = DataFormatEntry(name, read, tuple(e.lower() for e in extensions), tuple(tasks), title or name)
    _FORMATS[name] = entry
    return entry


def get_format(name: str) -> DataFormatEntry:
    """The registered format ``name``.

    Raises:
        ConfigError: an unknown name, listing the registered ones.
    """
    if name not in _FORMATS:
        raise ConfigError(
            f"data.format={excerpt(name)} is not a registered format (known: auto, {', '.join(format_names())}); "
            "formats registered outside hftransfer load with plugins=[module]"
        )
    return _FORMATS[name]


def format_names(task: str | None = None) -> list[str]:
    """The registered formats (those that hold ``task``'s files when given)."""
    return [name for name, entry in _FORMATS.items() if task is None or task in entry.tasks]


def format_for_extension(suffix: str) -> str | None:
    """The format that a lower-case file suffix selects, if any."""
    for name, entry in _FORMATS.items():
        if suffix.lower() in entry.extensions:
            return name
    return None


def known_extensions() -> list[str]:
    return [extension for entry in _FORMATS.values() for extension in entry.extensions]


def _read_conll(path: Path, text: str, task: str, config: DataConfig, require_labels: bool) -> ReadResult:
    from hftransfer.data.conll import read_conll

    return read_conll(path, text, config, require_labels)


def _record_reader(fmt: str) -> Reader:
    def read(path: Path, text: str, task: str, config: DataConfig, require_labels: bool) -> ReadResult:
        from hftransfer.data.record_files import read_record_file

        return read_record_file(path, text, task, config, fmt, require_labels)

    return read


register_format(
    "conll",
    read=_read_conll,
    extensions=(".conll", ".iob", ".bio", ".txt"),
    tasks=(TOKEN_TASK,),
    title="CoNLL",
)
for _fmt in ("json", "jsonl", "csv", "tsv"):
    register_format(
        _fmt, read=_record_reader(_fmt), extensions=(f".{_fmt}",), tasks=TASKS, title=_fmt.upper()
    )

__all__ = [
    "SEQUENCE_TASK",
    "DataFormatEntry",
    "format_for_extension",
    "format_names",
    "get_format",
    "known_extensions",
    "register_format",
]

"""Data besides the task's splits: named sources of extra training batches (unlabelled text that objectives read
besides the tasks' batches) and labelled sets scored only in the final report."""

from __future__ import annotations

from dataclasses import dataclass

from hftransfer.config.schema import DataConfig
from hftransfer.errors import ConfigError


@dataclass
class SourceConfig:
    """One named source: at every training step, each objective that reads it gets one batch of it."""

    name: str
    """How objectives refer to it (``source: <name>`` in their section): letters, digits, ``_``, ``-``."""
    data: str
    """Where its text comes from: a builtin unlabelled set (``rotten_tomatoes_plot``) or a file of any format the
    recipes read (one text per line, JSONL, CSV/TSV, CoNLL); labels in it are ignored, and texts of the run's
    validation and test splits are left out."""
    max_samples: int | None = None
    """Keep only the first N examples."""
    batch_size: int | None = None
    """Examples per batch of this source; default ``train.batch_size``."""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ConfigError(f"sources: name {self.name!r} must be letters, digits, '_' or '-'")
        for name in ("max_samples", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"sources.{self.name}.{name} must be >= 1, got {value}")


def check_sources(sources: list[SourceConfig], section: str = "sources") -> None:
    """Names are unique within ``section`` (``sources``, ``report``)."""
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{section}: two entries are named {duplicates[0]!r}; names must be unique")


@dataclass
class ReportSetConfig:
    """A labelled set scored only in the final report (a target domain's test set): read after training, so
    neither training nor model selection can see its labels."""

    name: str
    """Its key in ``metrics.json``'s ``report`` (letters, digits, ``_``, ``-``)."""
    data: DataConfig | None = None
    """Where it comes from (a builtin or files, with ``label_map`` / ``drop_labels`` to match the run's labels)."""
    split: str = "test"
    """Which split of ``data`` is the set."""
    file: str | None = None
    """A single labelled file that is the whole set (instead of ``data``'s dataset or files; ``data`` still gives
    its columns, format and label mapping)."""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ConfigError(f"report: name {self.name!r} must be letters, digits, '_' or '-'")
        if self.file is None and self.data is None:
            raise ConfigError(f"report.{self.name}: set data (a builtin, Hub id or files) or file")
        if self.split not in ("train", "validation", "test"):
            raise ConfigError(
                f"report.{self.name}.split must be train, validation or test, got {self.split!r}"
            )

"""Named sources of extra training batches: unlabelled text that objectives read besides the tasks' batches."""

from __future__ import annotations

from dataclasses import dataclass

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
        for field in ("max_samples", "batch_size"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ConfigError(f"sources.{self.name}.{field} must be >= 1, got {value}")


def check_sources(sources: list[SourceConfig]) -> None:
    """Source names are unique."""
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"sources: two sources are named {duplicates[0]!r}; source names must be unique")

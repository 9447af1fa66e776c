"""The ``transfer`` section: what the source task of a sequential-transfer run was, to measure forgetting."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.errors import ConfigError


@dataclass
class TransferConfig:
    """Sequential transfer (source task -> this task): re-score the source task when training ends."""

    source_eval: str | None = None
    """The source task's labelled data, re-scored after training by the source model with its own head and this
    run's encoder (``metrics.json``'s ``transfer``: score before, after, change): the source run's directory (the
    split it was scored on, carved as it carved it), a labelled file, or a builtin dataset. The source model is
    ``model.name_or_path`` (``strategy.columns`` for a progressive run), which must be a fine-tuned task model."""
    source_split: str = "test"
    """Which split of ``source_eval`` (a run directory or builtin) is scored; a file is scored whole."""
    earlier_runs: list[str] = field(default_factory=list)
    """A chain of three or more tasks: the run directories of the tasks before the source task, oldest first. Each
    is re-scored after training too (``metrics.json``'s ``transfer.earlier``): its own split ``source_split``,
    "before" by its run's model, "after" by its run's head on this run's encoder (for a progressive run, the
    network's column for that task). Needs ``source_eval``."""

    def __post_init__(self) -> None:
        if self.earlier_runs and not self.source_eval:
            raise ConfigError(
                "transfer.earlier_runs re-scores the tasks before the source task; set transfer.source_eval too"
            )
        if self.source_split not in ("train", "validation", "test"):
            raise ConfigError(
                f"transfer.source_split must be train, validation or test, got {self.source_split!r}"
            )

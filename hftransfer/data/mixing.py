"""Training batches as the loop draws them: one loader, or several sources mixed by a schedule, each batch tagged.

Both expose the same small interface (``len``, ``set_epoch``, ``iterate(start)``), so the loop never asks which
it has. ``iterate(start)`` resumes an epoch at batch ``start`` exactly: a single loader skips the batches already
seen; mixed sources replay the schedule's counts to find where each source stands (see
:class:`~hftransfer.multitask.sampling.TaskSchedule`), with no extra state in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from accelerate import Accelerator
from torch.utils.data import DataLoader


class Schedule(Protocol):
    """Which source each batch of an epoch comes from: a pure function of (seed, epoch)."""

    steps_per_epoch: int

    def epoch(self, epoch: int) -> list[int]: ...

    def consumed(self, epoch: int, step: int) -> list[int]: ...


class LoaderBatches:
    """The batches of one (prepared) loader."""

    def __init__(self, loader: DataLoader, accelerator: Accelerator) -> None:
        self.loader, self.accelerator = loader, accelerator

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        return self.iterate(0)

    def iterate(self, start: int = 0) -> Iterator[dict]:
        """Batches of the current epoch from batch ``start`` on."""
        if start:
            return iter(self.accelerator.skip_first_batches(self.loader, start))
        return iter(self.loader)


class MixedBatches:
    """An epoch of ``schedule.steps_per_epoch`` batches drawn from named sources, each tagged ``batch[tag] = name``.

    Each source has its own (prepared) loader; a source whose loader runs out starts a new, reshuffled pass.
    """

    def __init__(
        self,
        loaders: dict[str, DataLoader],
        schedule: Schedule,
        accelerator: Accelerator,
        tag: str = "task",
    ) -> None:
        self.loaders, self.schedule, self.accelerator, self.tag = loaders, schedule, accelerator, tag
        self.names = list(loaders)
        self.epoch = 0

    def __len__(self) -> int:
        return self.schedule.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        return self.iterate(0)

    def iterate(self, start: int = 0) -> Iterator[dict]:
        """Batches of the current epoch from step ``start`` on."""
        consumed = self.schedule.consumed(self.epoch, start)
        streams = {}
        for index, name in enumerate(self.names):
            passes, offset = divmod(consumed[index], len(self.loaders[name]))
            streams[name] = self._stream(name, passes, offset)
        for index in self.schedule.epoch(self.epoch)[start:]:
            name = self.names[index]
            yield {**next(streams[name]), self.tag: name}

    def _stream(self, name: str, passes: int, offset: int) -> Iterator[dict]:
        loader = self.loaders[name]
        while True:
            loader.set_epoch(passes)  # each pass over a source is shuffled differently
            batches = self.accelerator.skip_first_batches(loader, offset) if offset else loader
            yield from batches
            passes, offset = passes + 1, 0

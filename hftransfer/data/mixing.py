"""Training batches as the loop draws them: one loader, or several sources mixed by a schedule, each batch tagged;
optionally with a batch of each named source attached to every batch (:class:`WithSourceBatches`).

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
        return _cycle(self.loaders[name], passes, offset, self.accelerator)


class WrappedBatches:
    """Base of the wrappers that change each batch of ``batches`` as the loop draws them (attach source batches,
    mask): the same length and epochs; subclasses implement :meth:`iterate` with ``self.epoch`` to know where they
    are (their state is a pure function of (epoch, step), so a resumed run continues exactly)."""

    def __init__(self, batches: LoaderBatches | MixedBatches) -> None:
        self.batches = batches
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        return self.iterate(0)

    def iterate(self, start: int = 0) -> Iterator[dict]:
        raise NotImplementedError


class WithSourceBatches(WrappedBatches):
    """The training batches with one batch of each named source attached to every one (``batch["sources"] =
    {name: batch}``): what objectives that read a source (unlabelled target-domain text, ...) get at each step.

    Each source cycles through its own (prepared) loader, reshuffled on every pass. Its position is a pure
    function of the steps taken (one of its batches per training batch), so ``iterate(start)`` resumes it exactly
    with no state in the checkpoint.
    """

    def __init__(
        self, batches: LoaderBatches | MixedBatches, sources: dict[str, DataLoader], accelerator: Accelerator
    ) -> None:
        super().__init__(batches)
        self.sources, self.accelerator = sources, accelerator

    def iterate(self, start: int = 0) -> Iterator[dict]:
        drawn = self.epoch * len(self.batches) + start  # source batches used before this point
        streams = {}
        for name, loader in self.sources.items():
            passes, offset = divmod(drawn, len(loader))
            streams[name] = _cycle(loader, passes, offset, self.accelerator)
        for batch in self.batches.iterate(start):
            yield {**batch, "sources": {name: next(stream) for name, stream in streams.items()}}


def _cycle(loader: DataLoader, passes: int, offset: int, accelerator: Accelerator) -> Iterator[dict]:
    """A loader's batches, pass after pass (each shuffled by its pass number), from batch ``offset`` of ``passes``."""
    while True:
        loader.set_epoch(passes)
        yield from accelerator.skip_first_batches(loader, offset) if offset else loader
        passes, offset = passes + 1, 0

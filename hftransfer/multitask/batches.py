"""Single-task batches in the order a :class:`~hftransfer.multitask.sampling.TaskSchedule` draws.

Each task has its own (prepared) loader; a task whose loader runs out starts a new, reshuffled pass. Where each
task's loader stands at any step follows from the schedule alone, so resuming at step ``s`` of epoch ``e``
replays the counts and skips exactly the batches already seen, with no extra state in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator

from accelerate import Accelerator
from torch.utils.data import DataLoader

from hftransfer.multitask.sampling import TaskSchedule


class MultitaskBatches:
    """An epoch of ``schedule.steps_per_epoch`` batches, each tagged with ``batch["task"]``."""

    def __init__(
        self, loaders: dict[str, DataLoader], schedule: TaskSchedule, accelerator: Accelerator
    ) -> None:
        self.loaders, self.schedule, self.accelerator = loaders, schedule, accelerator
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
            yield {**next(streams[name]), "task": name}

    def _stream(self, name: str, passes: int, offset: int) -> Iterator[dict]:
        loader = self.loaders[name]
        while True:
            loader.set_epoch(passes)  # each pass over a task is shuffled differently
            batches = self.accelerator.skip_first_batches(loader, offset) if offset else loader
            yield from batches
            passes, offset = passes + 1, 0

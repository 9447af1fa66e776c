"""Which task each optimizer step trains on.

Every step trains one task (its batch comes from that task's own loader). The order of tasks within an epoch is
a pure function of ``(seed, epoch)``, so every process draws the same task at the same step (no process ever waits
on another's head) and a resumed run replays exactly the same order.

Samplers, for task sizes ``n_i``:

* ``proportional``: ``p_i ∝ n_i`` (every example is seen about once per epoch);
* ``temperature``: ``p_i ∝ n_i^(1/T)`` (T = 1 is proportional, T → ∞ uniform; T = 2..5 is common for
  imbalanced tasks);
* ``uniform``: ``p_i = 1 / #tasks``;
* ``round_robin``: tasks in turn, in the order they are declared.

Per-task sampling weights ``w_i`` (default 1) multiply those probabilities: ``p_i ∝ w_i n_i`` for proportional, so
``w_i`` = the epochs a single-task run would spend on task ``i`` reproduces its step budget. ``round_robin`` with
unequal weights is deterministic: a smooth weighted round-robin gives task ``i`` exactly its share ``w_i / sum(w)``
of every period of ``sum(w)`` steps (integer weights), interleaved rather than in blocks.

An epoch is ``steps_per_epoch`` steps, by default the number of batches of all tasks together (``sum_i
ceil(n_i / batch_size)``): with the proportional sampler every example is then seen once per epoch on average. A task
whose loader runs out starts its next pass (reshuffled) and continues; task loaders never stop an epoch early.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

SAMPLERS = ("proportional", "temperature", "uniform", "round_robin")


def task_probabilities(
    sizes: Sequence[int], kind: str, temperature: float = 1.0, weights: Sequence[float] | None = None
) -> list[float]:
    """Probability of drawing each task at a step (for ``round_robin``: its share of the steps)."""
    if kind == "proportional":
        base = [float(n) for n in sizes]
    elif kind == "temperature":
        base = [float(n) ** (1.0 / temperature) for n in sizes]
    elif kind in ("uniform", "round_robin"):
        base = [1.0] * len(sizes)
    else:
        raise ValueError(f"unknown task sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")
    if weights is not None:
        if len(weights) != len(sizes) or any(w <= 0 for w in weights):
            raise ValueError(f"sampling weights must be one positive number per task, got {list(weights)}")
        base = [b * w for b, w in zip(base, weights)]
    total = sum(base)
    return [b / total for b in base]


class TaskSchedule:
    """The task index of every step of every epoch.

    Args:
        sizes: batches (or examples) per task; only their ratios matter for the random samplers.
        kind: one of :data:`SAMPLERS`.
        steps_per_epoch: optimizer steps in an epoch.
        seed: base seed; epoch ``e`` draws with ``seed + e``.
        temperature: for ``kind="temperature"``.
        weights: per-task sampling weights (multiply the probabilities), default all 1.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        kind: str,
        steps_per_epoch: int,
        seed: int,
        temperature: float = 1.0,
        weights: Sequence[float] | None = None,
    ) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.kind, self.steps_per_epoch, self.seed = kind, steps_per_epoch, seed
        self.probabilities = task_probabilities(sizes, kind, temperature, weights)
        # The round-robin order from step 0 on, extended on demand, and each task's credit at its end.
        self._round_robin: list[int] = []
        self._credit = [0.0] * len(self.probabilities)

    def epoch(self, epoch: int) -> list[int]:
        """Task indices of the steps of ``epoch``."""
        if self.kind == "round_robin":
            start = epoch * self.steps_per_epoch
            self._extend_round_robin(start + self.steps_per_epoch)
            return self._round_robin[start : start + self.steps_per_epoch]
        generator = torch.Generator().manual_seed(self.seed + epoch)
        draws = torch.multinomial(
            torch.tensor(self.probabilities, dtype=torch.float64),
            self.steps_per_epoch,
            replacement=True,
            generator=generator,
        )
        return draws.tolist()

    def _extend_round_robin(self, count: int) -> None:
        """Extend the smooth weighted round-robin order (plain turns when the weights are equal) to ``count`` steps.

        Every step each task earns its share of credit and the richest task (the first declared on a tie) trains
        and pays one step; over any run of steps each task's count stays within one step of ``share × steps``.
        """
        order, credit = self._round_robin, self._credit
        while len(order) < count:
            for i, share in enumerate(self.probabilities):
                credit[i] += share
            # A tolerance keeps float rounding from breaking ties against the declared order.
            best = max(credit) - 1e-9
            index = next(i for i, c in enumerate(credit) if c >= best)
            credit[index] -= 1.0
            order.append(index)

    def consumed(self, epoch: int, steps_in_epoch: int) -> Counter:
        """Batches each task has consumed before step ``steps_in_epoch`` of ``epoch`` (over all earlier epochs)."""
        counts: Counter = Counter()
        for past in range(epoch):
            counts.update(self.epoch(past))
        counts.update(self.epoch(epoch)[:steps_in_epoch])
        return counts


def default_steps_per_epoch(num_batches: Sequence[int]) -> int:
    """Batches of all tasks together: one pass over every task's data, on average, under proportional sampling."""
    return max(1, sum(num_batches))


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)

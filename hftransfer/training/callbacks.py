"""What the loop does besides optimising, as callbacks: a strategy's per-step hook (gradual unfreezing), CPU
dropout masks, and memory sampling. The loop calls every callback at the same points and knows none of them.

Hook points, in order: ``on_fit_start(loop)`` once; per optimizer step ``on_step_start(state)``, then
``before_last_backward()`` just before the backward pass of the step's last micro-batch (activations of the whole
step are alive), then ``on_step_end(state)`` after the update; ``on_evaluate(state)`` after each validation (the
best score so far in ``state.best_metric``; setting ``state.stopped_early`` ends training there, as hyper-parameter
search's pruning does); ``on_fit_end(state)`` once, also when training fails (a callback that entered a context
leaves it there).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from hftransfer.runs import current_rss_mb, peak_memory_mb
from hftransfer.training.fast_dropout import fast_cpu_dropout


class Callback:
    """Base: every hook does nothing."""

    def on_fit_start(self, loop: Any) -> None:
        pass

    def on_step_start(self, state: Any) -> None:
        pass

    def before_last_backward(self) -> None:
        pass

    def on_step_end(self, state: Any) -> None:
        pass

    def on_evaluate(self, state: Any) -> None:
        pass

    def on_fit_end(self, state: Any) -> None:
        pass


class StepHook(Callback):
    """A plain ``hook(state)`` run before every optimizer step (a strategy's, such as gradual unfreezing)."""

    def __init__(self, hook: Callable[[Any], None]) -> None:
        self.hook = hook

    def on_step_start(self, state: Any) -> None:
        self.hook(state)


class FastCpuDropout(Callback):
    """Dropout masks drawn four to a 64-bit random number on CPU (``train.fast_cpu_dropout``; see
    ``fast_dropout.py``): on while training, off with ``torch.compile`` (the compiler draws its own) or off CPU."""

    def __init__(self) -> None:
        self._context: AbstractContextManager | None = None

    def on_fit_start(self, loop: Any) -> None:
        train = loop.train_config
        if train.fast_cpu_dropout and not train.torch_compile and loop.accelerator.device.type == "cpu":
            self._context = fast_cpu_dropout(loop.accelerator.unwrap_model(loop.model))
            self._context.__enter__()

    def on_fit_end(self, state: Any) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)


class MemorySampler(Callback):
    """Resident memory before training and at its highest inside the steps (after the forward passes of a step,
    when its activations are alive, and after the update, with the optimizer state): their difference is what
    training itself needs, which the process peak hides when loading the model and data peaked higher."""

    def __init__(self) -> None:
        self.before_training: float | None = None
        self.max_in_steps: float | None = None
        self.peak_at_end: dict[str, float] | None = None

    def on_fit_start(self, loop: Any) -> None:
        self.before_training = current_rss_mb()

    def before_last_backward(self) -> None:
        self._sample()

    def on_step_end(self, state: Any) -> None:
        self._sample()

    def on_fit_end(self, state: Any) -> None:
        # The process peak up to here (loading and evaluations included), before a final export adds its own.
        self.peak_at_end = peak_memory_mb()

    def _sample(self) -> None:
        rss = current_rss_mb()
        if rss is not None:
            self.max_in_steps = max(rss, self.max_in_steps or 0.0)

    def report(self) -> dict[str, float | None]:
        growth = (
            self.max_in_steps - self.before_training
            if self.max_in_steps is not None and self.before_training is not None
            else None
        )
        return {
            "before_training": _round(self.before_training),
            "max_in_steps": _round(self.max_in_steps),
            "growth_in_steps": _round(growth),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)

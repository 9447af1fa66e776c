"""A multitask run: the one run flow (``hftransfer.flow``) of a config with several ``tasks``, which share one
encoder (``layout.py``)::

    run = setup(config)
    train(run)
    evaluate_best(run)
    finish(run)

The run directory holds ``model/<task>/`` for every task (an ordinary transformers model: the shared encoder plus
that task's head, which ``pipeline`` loads) and ``model/tasks.json``, from which :func:`load_multitask` rebuilds the
multitask model with one shared encoder.
"""

from __future__ import annotations

from hftransfer.flow.core import Run, evaluate_best, finish, train
from hftransfer.flow.setup import setup as flow_setup
from hftransfer.multitask.config import MultitaskConfig
from hftransfer.multitask.export import TASKS_FILE, load_multitask, load_multitask_weights, save_multitask

__all__ = [
    "TASKS_FILE",
    "evaluate_best",
    "finish",
    "load_multitask",
    "load_multitask_weights",
    "save_multitask",
    "setup",
    "train",
]


def setup(config: MultitaskConfig, recipe: str = "multitask") -> Run:
    """Load every task's data, build one task model per task around one shared encoder, and the loop.

    Raises:
        ConfigError / DataError: bad config or data, before any training starts.
    """
    return flow_setup(config, recipe)

"""Strategies by name: the one place a strategy name is looked up.

A strategy joins the library with one call in its own module (peft's ``register_peft_method`` is the model)::

    from hftransfer.registry import register_strategy

    register_strategy("bitfit", build=build_bitfit)

``build(context) -> StrategyPlan`` receives a :class:`~hftransfer.strategies.base.StrategyContext` (the freshly
built model, the run config, tokenizer, run directory, the tokenised features) and returns the plan the loop trains
(see ``hftransfer/strategies/base.py``). Registering from outside the package works the same: import the module
that calls ``register_strategy`` before the run's config is parsed.

Traits describe what the flow must know without naming the strategy:

* ``trains_encoder`` (default True): False when the pretrained encoder never changes (a frozen feature extractor).
* ``changes_trainable_set`` (default False): True when parameters start or stop training mid-run (gradual
  unfreezing), so DDP must look for parameters without gradients.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hftransfer.errors import ConfigError

__all__ = ["StrategyEntry", "get_strategy", "register_strategy", "strategy_names"]


@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy: its name, its builder and its traits."""

    name: str
    build: Callable[[Any], Any]
    trains_encoder: bool = True
    changes_trainable_set: bool = False
    describe: Callable[[dict[str, Any], dict[str, Any]], str] | None = None
    """``describe(strategy_config, report) -> str``: one line for model cards, from the saved ``strategy``
    section of ``config.yaml`` and the run's ``strategy`` report in ``metrics.json``."""
    module: str = field(default="", compare=False)


_STRATEGIES: dict[str, StrategyEntry] = {}
# Importing this package registers the built-in strategies (each module registers itself).
_BUILTIN_PACKAGE = "hftransfer.strategies"


def register_strategy(
    name: str,
    *,
    build: Callable[[Any], Any],
    trains_encoder: bool = True,
    changes_trainable_set: bool = False,
    describe: Callable[[dict[str, Any], dict[str, Any]], str] | None = None,
    replace: bool = False,
) -> StrategyEntry:
    """Make ``strategy.name=<name>`` build a plan with ``build``.

    Args:
        name: the value users write in ``strategy.name`` (letters, digits, ``_``, ``-``).
        build: ``build(context) -> StrategyPlan``.
        trains_encoder: False when the encoder's pretrained weights never train.
        changes_trainable_set: True when the trainable parameters change during training.
        describe: ``describe(strategy_config, report) -> str``, the strategy in one line of a model card.
        replace: allow replacing an existing registration (otherwise registering a taken name is an error).

    Raises:
        ValueError: a malformed name, or a name already registered by another builder.
    """
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"strategy name {name!r} must be letters, digits, '_' or '-'")
    existing = _STRATEGIES.get(name)
    if existing is not None and existing.build is not build and not replace:
        raise ValueError(
            f"strategy {name!r} is already registered by {existing.module or existing.build!r}; "
            "pass replace=True to override it"
        )
    entry = StrategyEntry(
        name,
        build,
        trains_encoder=trains_encoder,
        changes_trainable_set=changes_trainable_set,
        describe=describe,
        module=getattr(build, "__module__", ""),
    )
    _STRATEGIES[name] = entry
    return entry


def _load_builtins() -> None:
    importlib.import_module(_BUILTIN_PACKAGE)


def get_strategy(name: str) -> StrategyEntry:
    """The registered strategy ``name``.

    Raises:
        ConfigError: no strategy of that name; the message lists the registered ones.
    """
    _load_builtins()
    if name not in _STRATEGIES:
        raise ConfigError(
            f"strategy.name={name!r} is not a registered strategy; use one of {strategy_names()}"
        )
    return _STRATEGIES[name]


def strategy_names() -> list[str]:
    """Registered strategy names, sorted."""
    _load_builtins()
    return sorted(_STRATEGIES)

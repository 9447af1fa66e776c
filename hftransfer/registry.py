"""Strategies and objectives by name: the one place a name is looked up.

A method joins the library with one call in its own module (peft's ``register_peft_method`` is the model)::

    from hftransfer.registry import register_strategy

    register_strategy("bitfit", build=build_bitfit)

    register_objective("l2sp", config=L2SPConfig, build=L2SP, regulariser=True)

    register_objective("distill_soft", config=DistillSoftConfig, build=SoftLabels, teacher_outputs=("logits",))

A strategy's ``build(context) -> StrategyPlan`` receives a :class:`~hftransfer.strategies.base.StrategyContext`
(the freshly built model, the run config, tokenizer, run directory, tokenised features) and returns the plan the
loop trains. An objective's ``build(context) -> Objective`` receives an
:class:`~hftransfer.objectives.base.ObjectiveContext` and returns the object that gives the loss terms of a batch.
Each has a config dataclass holding only its own fields (``strategy: {name: lora, r: 8}``,
``objectives: [{name: task}, {name: l2sp, weight: 0.01}]``); registering from outside the package works the same
(``plugins: [my_module]`` in a config imports it before the rest is parsed).

Strategy traits describe what the flow must know without naming the strategy:

* ``trains_encoder`` (default True): False when the encoder's outputs never change (a frozen feature extractor).
* ``updates_pretrained_weights`` (default: ``trains_encoder``): False when the pretrained tensors stay as they
  are and something added next to them trains (LoRA's adapters).
* ``changes_trainable_set`` (default False): True when parameters start or stop training mid-run (gradual
  unfreezing), so DDP must look for parameters without gradients.

Objective traits: ``regulariser`` (it alone teaches nothing), ``requires(strategy)`` (a strategy it refuses), and
``teacher_outputs`` (what it reads from a teacher; only a distillation run has one).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hftransfer.config.plugins import EncoderStrategyConfig, ObjectiveConfig, StrategyConfig
from hftransfer.errors import ConfigError

__all__ = [
    "TEACHER_OUTPUTS",
    "ObjectiveEntry",
    "StrategyEntry",
    "get_objective",
    "get_strategy",
    "objective_names",
    "register_objective",
    "register_strategy",
    "strategy_names",
]


@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy: its name, config class, builder and traits."""

    name: str
    config: type[StrategyConfig]
    build: Callable[[Any], Any]
    trains_encoder: bool = True
    updates_pretrained_weights: bool = True
    changes_trainable_set: bool = False
    describe: Callable[[dict[str, Any], dict[str, Any]], str] | None = None
    """``describe(strategy_config, report) -> str``: one line for model cards, from the saved ``strategy``
    section of ``config.yaml`` and the run's ``strategy`` report in ``metrics.json``."""
    module: str = field(default="", compare=False)


@dataclass(frozen=True)
class ObjectiveEntry:
    """A registered objective: its name, config class, builder and what it needs from the strategy."""

    name: str
    config: type[ObjectiveConfig]
    build: Callable[[Any], Any]
    regulariser: bool = False
    """True for terms that only hold training back (L2-SP, drift): a run needs at least one objective that is not."""
    requires: Callable[[StrategyEntry], str | None] | None = None
    """``requires(strategy) -> reason`` or None: why this objective cannot go with that strategy."""
    legacy_keys: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """Old fields this objective replaces: ``{old_key: (new_field, old_default)}``; ``old_key`` is a
    ``strategy.<key>`` field, or ``section.key`` of a core section (``distill.soft_weight``)."""
    describe: Callable[[dict[str, Any]], str] | None = None
    """``describe(objective_config) -> str``: a few words for model cards."""
    teacher_outputs: tuple[str, ...] = ()
    """What the objective reads from a teacher (see ``hftransfer/distill/teaching.py``): ``logits`` (its cached
    predictions on the training data), ``hidden_states``, ``attentions`` (from its forward pass on the batch, so
    the student needs its tokenizer), ``example_states`` (its hidden states on its own tokenisation of the batch's
    examples, compared per example or word, so any tokenizer)."""
    on_cached_features: bool = False
    """True when its terms need only a head's outputs and the batch's labels, so a frozen encoder's features may be
    cached (the ``frozen`` strategy otherwise keeps the encoder, fixed, inside the token model)."""
    module: str = field(default="", compare=False)

    @property
    def needs_teacher(self) -> bool:
        """True when a run must load a teacher for this objective (a distillation run)."""
        return bool(self.teacher_outputs)


# What a teacher can give an objective: its cached predictions, what its forward pass on the batch returns, and
# its hidden states on its own tokenisation of the batch's examples.
TEACHER_OUTPUTS = ("logits", "hidden_states", "attentions", "example_states")

_STRATEGIES: dict[str, StrategyEntry] = {}
_OBJECTIVES: dict[str, ObjectiveEntry] = {}
# Importing these packages registers the built-in methods (each module registers itself).
_BUILTIN_PACKAGES = ("hftransfer.strategies", "hftransfer.objectives")


def _check_name(kind: str, name: str, table: dict, build: Callable, replace: bool) -> None:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"{kind} name {name!r} must be letters, digits, '_' or '-'")
    existing = table.get(name)
    if existing is not None and existing.build is not build and not replace:
        raise ValueError(
            f"{kind} {name!r} is already registered by {existing.module or existing.build!r}; "
            "pass replace=True to override it"
        )


def _config_class(name: str, config: type | None, base: type) -> type:
    """The config class of a registration; without one, a subclass of ``base`` whose ``name`` defaults to ``name``
    (a method with no options of its own)."""
    if config is None:
        config = dataclasses.make_dataclass(
            f"{name.title().replace('-', '').replace('_', '')}Config",
            [("name", str, field(default=name))],
            bases=(base,),
        )
    if not (dataclasses.is_dataclass(config) and issubclass(config, base)):
        raise ValueError(f"the config of {name!r} must be a dataclass subclassing {base.__name__}")
    if {item.name: item.default for item in dataclasses.fields(config)}.get("name") != name:
        raise ValueError(f"{config.__name__}.name must default to {name!r}, the name it is registered under")
    return config


def register_strategy(
    name: str,
    *,
    build: Callable[[Any], Any],
    config: type[StrategyConfig] | None = None,
    trains_encoder: bool = True,
    updates_pretrained_weights: bool | None = None,
    changes_trainable_set: bool = False,
    describe: Callable[[dict[str, Any], dict[str, Any]], str] | None = None,
    replace: bool = False,
) -> StrategyEntry:
    """Make ``strategy.name=<name>`` build a plan with ``build``.

    Args:
        name: the value users write in ``strategy.name`` (letters, digits, ``_``, ``-``).
        build: ``build(context) -> StrategyPlan``.
        config: the strategy's config dataclass (a subclass of ``StrategyConfig``, or of ``EncoderStrategyConfig``
            when it trains encoder weights, whose ``name`` defaults to ``name``); default: no options of its own.
        trains_encoder / updates_pretrained_weights / changes_trainable_set: traits (see the module docstring).
        describe: ``describe(strategy_config, report) -> str``, the strategy in one line of a model card.
        replace: allow replacing an existing registration (otherwise registering a taken name is an error).

    Raises:
        ValueError: a malformed name or config class, or a name already registered by another builder.
    """
    _check_name("strategy", name, _STRATEGIES, build, replace)
    base = EncoderStrategyConfig if trains_encoder else StrategyConfig
    entry = StrategyEntry(
        name,
        _config_class(name, config, base),
        build,
        trains_encoder=trains_encoder,
        updates_pretrained_weights=trains_encoder
        if updates_pretrained_weights is None
        else updates_pretrained_weights,
        changes_trainable_set=changes_trainable_set,
        describe=describe,
        module=getattr(build, "__module__", ""),
    )
    _STRATEGIES[name] = entry
    return entry


def register_objective(
    name: str,
    *,
    build: Callable[[Any], Any],
    config: type[ObjectiveConfig] | None = None,
    regulariser: bool = False,
    requires: Callable[[StrategyEntry], str | None] | None = None,
    legacy_keys: dict[str, tuple[str, Any]] | None = None,
    describe: Callable[[dict[str, Any]], str] | None = None,
    teacher_outputs: tuple[str, ...] = (),
    on_cached_features: bool = False,
    replace: bool = False,
) -> ObjectiveEntry:
    """Make ``objectives: [{name: <name>, ...}]`` add the terms of ``build(context)`` to the loss.

    Args:
        name: the value users write in an objective's ``name``.
        build: ``build(context) -> Objective`` (see ``hftransfer/objectives/base.py``).
        config: the objective's config dataclass (a subclass of ``ObjectiveConfig`` whose ``name`` defaults to
            ``name``); default: only ``weight``.
        regulariser: True when the objective alone teaches nothing (it holds other objectives back).
        requires: ``requires(strategy_entry) -> reason | None``, checked against the run's strategy.
        legacy_keys: old fields it replaces, ``{old_key: (new_field, old_default)}``. A ``strategy.<key>`` set in
            an old config fails naming the objective (the old default is accepted and ignored). A core section's
            ``section.key`` set by a user fails naming the new form; in a config.yaml an older version saved
            (where the section lists every such key) it is read as the objective it became
            (``hftransfer/config/sections.py``).
        describe: ``describe(objective_config) -> str``, a few words for model cards.
        teacher_outputs: what it reads from a teacher (``logits``, ``hidden_states``, ``attentions``,
            ``example_states``; see :attr:`ObjectiveEntry.teacher_outputs`): a run
            without one refuses it, a distillation run prepares exactly these.
        on_cached_features: its terms need only a head's outputs on cached encoder features and the labels.
        replace: allow replacing an existing registration.

    Raises:
        ValueError: a malformed name or config class, a name taken, or an unknown teacher output.
    """
    _check_name("objective", name, _OBJECTIVES, build, replace)
    unknown = set(teacher_outputs) - set(TEACHER_OUTPUTS)
    if unknown:
        raise ValueError(f"objective {name!r}: teacher_outputs {sorted(unknown)} not in {TEACHER_OUTPUTS}")
    entry = ObjectiveEntry(
        name,
        _config_class(name, config, ObjectiveConfig),
        build,
        regulariser=regulariser,
        requires=requires,
        legacy_keys=dict(legacy_keys or {}),
        describe=describe,
        teacher_outputs=tuple(teacher_outputs),
        on_cached_features=on_cached_features,
        module=getattr(build, "__module__", ""),
    )
    _OBJECTIVES[name] = entry
    return entry


def _load_builtins() -> None:
    for package in _BUILTIN_PACKAGES:
        importlib.import_module(package)


def _lookup(table: dict, name: str, unknown: str) -> Any:
    _load_builtins()
    if name not in table:
        raise ConfigError(f"{unknown}; use one of {sorted(table)}")
    return table[name]


def get_strategy(name: str) -> StrategyEntry:
    """The registered strategy ``name``.

    Raises:
        ConfigError: no strategy of that name; the message lists the registered ones.
    """
    return _lookup(_STRATEGIES, name, f"strategy.name={name!r} is not a registered strategy")


def get_objective(name: str) -> ObjectiveEntry:
    """The registered objective ``name``.

    Raises:
        ConfigError: no objective of that name; the message lists the registered ones.
    """
    return _lookup(_OBJECTIVES, name, f"objectives: {name!r} is not a registered objective")


def strategy_names() -> list[str]:
    """Registered strategy names, sorted."""
    _load_builtins()
    return sorted(_STRATEGIES)


def objective_names() -> list[str]:
    """Registered objective names, sorted."""
    _load_builtins()
    return sorted(_OBJECTIVES)

"""The plug-in sections of a run config, ``strategy`` and ``objectives``, typed by their registered classes.

Each registered strategy and objective owns a config dataclass with only its own fields (see
``hftransfer/registry.py``). This module holds their common bases and turns a mapping (from YAML, the command line
or Python) into an instance of the registered class, with messages that name the field: an unknown key says which
other strategy has it, a key that moved says where it went.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any

from hftransfer.config.checks import POSITIVE, Range, check_value
from hftransfer.errors import ConfigError


@dataclass
class StrategyConfig:
    """Options every strategy has (each strategy's config subclasses this, or ``EncoderStrategyConfig``)."""

    name: str = "full"
    """The registered strategy (``hftransfer.registry.strategy_names()``)."""
    head_lr: float | None = None
    """LR of the new head(s); default ``train.lr``. Discriminative fine-tuning: a head LR above the encoder's.
    With a fixed encoder it is the LR of the head, the only thing that trains."""

    def __post_init__(self) -> None:
        check_value("strategy.head_lr", self.head_lr, Range(low=0, low_open=True, optional=True))


@dataclass
class EncoderStrategyConfig(StrategyConfig):
    """Options of the strategies that train encoder weights."""

    layer_lr_decay: float = 1.0
    """Layer-wise LR decay: the top encoder layer gets ``train.lr``, each layer below ``decay`` times the one
    above, the embeddings ``decay^(L)`` times it. 1.0 disables."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError(f"strategy.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")


@dataclass
class ObjectiveConfig:
    """Base of every objective's config: ``name`` picks the registered objective, ``weight`` scales its terms."""

    name: str = "task"
    """The registered objective (``hftransfer.registry.objective_names()``)."""
    weight: float = 1.0
    """Multiplier of the objective's term(s) in the loss."""

    def __post_init__(self) -> None:
        if POSITIVE.problem(self.weight) is not None:  # NaN and infinity too
            raise ConfigError(
                f"objectives: {self.name}.weight must be > 0, got {self.weight} (remove the objective instead)"
            )


def field_names(cls: type) -> list[str]:
    return [item.name for item in dataclasses.fields(cls)]


@functools.cache
def _parser(cls: type):
    """A jsonargparse parser typed by ``cls``: values from YAML or the command line get the same checks (types,
    ``Literal`` choices, strings converted) as the core sections."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, nested_key=None, fail_untyped=True)
    return parser


def typed(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)`` after type checks; ``where`` (``strategy``, ``objectives[1]``) prefixes every message."""
    from jsonargparse import ArgumentError

    parser = _parser(cls)
    try:
        namespace = parser.parse_object(values)
    except ArgumentError as err:
        message = " ".join(str(err).split()).replace('Parser key "', f'"{where}.')
        raise ConfigError(f"{where}: {message}") from None
    return cls(**{name: namespace[name] for name in field_names(cls)})


def strategy_config(
    spec: StrategyConfig | dict[str, Any] | str | None = None, **fields: Any
) -> StrategyConfig:
    """The registered strategy's typed config from a mapping (``{"name": "lora", "r": 4}``), a name, or an
    instance (returned as it is); ``fields`` add to the mapping.

    Raises:
        ConfigError: an unknown strategy, a field it does not have (naming who has it), a wrong value.
    """
    from hftransfer.registry import get_strategy

    if isinstance(spec, StrategyConfig) and not fields:
        return spec
    values = dict(_as_mapping(spec, "strategy"), **fields)
    entry = get_strategy(values.setdefault("name", StrategyConfig.name))
    hints = typing.get_type_hints(entry.config)
    for key, value in list(values.items()):
        if key in hints:
            if value is None and type(None) not in typing.get_args(hints[key]):
                del values[
                    key
                ]  # null for a field that cannot be null: its default (older configs wrote unset ones so)
        elif _unset_in_older_configs(key, value):
            del values[key]
        else:
            raise ConfigError(_foreign_field(key, value, entry))
    return typed(entry.config, values, "strategy")


# An older config.yaml lists every strategy's fields: the others' unset (null), layer_lr_decay at its default.
_ENCODER_DEFAULTS = {item.name: item.default for item in dataclasses.fields(EncoderStrategyConfig)}


def _unset_in_older_configs(key: str, value: Any) -> bool:
    from hftransfer.registry import get_strategy, strategy_names

    if _legacy_key(key, value) == "ignore" or _ENCODER_DEFAULTS.get(key, dataclasses.MISSING) == value:
        return True
    return value is None and any(key in field_names(get_strategy(n).config) for n in strategy_names())


def _foreign_field(key: str, value: Any, entry: Any) -> str:
    """Why ``strategy.<key>`` does not belong under ``entry``'s strategy: it moved, it needs encoder weights that
    train, or another strategy has it."""
    from hftransfer.registry import get_strategy, strategy_names

    moved = _legacy_key(key, value)
    if moved:
        return moved
    if key in _ENCODER_DEFAULTS:
        return (
            f"strategy.{key} needs encoder weights that train, but strategy.name={entry.name} keeps the encoder "
            "fixed (the head's LR is strategy.head_lr, default train.lr)"
        )
    owners = [n for n in strategy_names() if key in field_names(get_strategy(n).config)]
    where = f"it is a field of strategy {', '.join(owners)}" if owners else "no registered strategy has it"
    own = sorted(set(field_names(entry.config)) - {"name"})
    return f"strategy.{key} is not a field of strategy.name={entry.name} ({where}); {entry.name} has: {', '.join(own)}"


def objective_config(
    spec: ObjectiveConfig | dict[str, Any] | str, where: str = "objectives", **fields: Any
) -> ObjectiveConfig:
    """The registered objective's typed config from a mapping (``{"name": "l2sp", "weight": 0.01}``) or a name.

    Raises:
        ConfigError: no name, an unknown objective or field, a wrong value; ``where`` names the list entry.
    """
    from hftransfer.registry import get_objective

    if isinstance(spec, ObjectiveConfig) and not fields:
        return spec
    values = dict(_as_mapping(spec, where), **fields)
    if "name" not in values:
        raise ConfigError(f"{where}: every objective needs a name, e.g. {{name: task}}; got {values}")
    entry = get_objective(values["name"])
    unknown = sorted(set(values) - set(field_names(entry.config)))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]} is not a field of objective {entry.name}; it has: "
            f"{', '.join(n for n in field_names(entry.config) if n != 'name')}"
        )
    return typed(entry.config, values, where)


def objective_configs(specs: Any) -> list[ObjectiveConfig]:
    """Typed configs of an ``objectives`` list (entries: mappings, names or instances)."""
    if specs is None:
        return default_objectives()
    if not isinstance(specs, list):
        raise ConfigError(f"objectives must be a list such as [{{name: task}}], got {specs!r}")
    return [objective_config(spec, f"objectives[{index}]") for index, spec in enumerate(specs)]


def load_plugins(plugins: list[str] | None) -> None:
    """Import each plug-in module (a dotted name, or a path to a ``.py`` file) so that its registrations exist.

    A module name is looked up on ``sys.path`` and then in the working directory: ``accelerate launch
    recipes/x.py`` puts ``recipes/`` on the path, not the directory the user typed it in.
    """
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    for plugin in plugins or []:
        path = Path(plugin)
        try:
            if plugin.endswith(".py"):
                if not path.is_file():
                    raise ConfigError(f"plugins: {plugin} is not a file (relative to {Path.cwd()})")
                name = f"hftransfer_plugin_{path.stem}"
                if name not in sys.modules:
                    spec = importlib.util.spec_from_file_location(name, path)
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[name] = module
                    spec.loader.exec_module(module)
                continue
            try:
                importlib.import_module(plugin)
            except ModuleNotFoundError as err:
                if err.name != plugin.split(".")[0] or str(Path.cwd()) in sys.path:
                    raise
                sys.path.append(str(Path.cwd()))
                importlib.import_module(plugin)
        except ConfigError:
            raise
        except ModuleNotFoundError as err:
            raise ConfigError(
                f"plugins: cannot import {plugin!r} ({err}); give a module on sys.path or in {Path.cwd()}, or a "
                "path to a .py file"
            ) from None


def default_strategy() -> StrategyConfig:
    return strategy_config({"name": StrategyConfig.name})


def default_objectives() -> list[ObjectiveConfig]:
    """The task's own loss alone."""
    return [objective_config({"name": ObjectiveConfig.name})]


def _as_mapping(spec: Any, where: str) -> dict[str, Any]:
    if spec is None:
        return {}
    if isinstance(spec, str):
        return {"name": spec}
    if dataclasses.is_dataclass(spec):
        return dataclasses.asdict(spec)
    if isinstance(spec, dict):
        return dict(spec)
    raise ConfigError(f"{where} must be a mapping with a name (e.g. {{name: ...}}) or a name, got {spec!r}")


def moved_keys() -> dict[str, tuple[str, str]]:
    """``{"section.key": (objective, field)}``: the core sections' keys that became fields of an objective
    (registered as dotted ``legacy_keys``, e.g. ``distill.soft_weight``)."""
    from hftransfer.registry import get_objective, objective_names

    return {
        key: (name, new_field)
        for name in objective_names()
        for key, (new_field, _) in get_objective(name).legacy_keys.items()
        if "." in key
    }


def moved_key_message(key: str, value: Any) -> str:
    """Where the core-section key ``key`` (set to ``value``) went, in the forms users type."""
    name, new_field = moved_keys()[key]
    if new_field == "weight" and value == 0:  # the old way to switch a term off
        return (
            f"{key}={value} moved to the objectives list, where a term that is off is one not listed: leave {name} "
            f"out of objectives (e.g. objectives=[{{name: {ObjectiveConfig.name}}}])"
        )
    if name == ObjectiveConfig.name:  # listed in every run already
        return (
            f"{key} moved: it is the {name} objective's {new_field} now; use objectives.{name}.{new_field}={value}, "
            f"or in YAML: objectives: [{{name: {name}, {new_field}: {value}}}, ...]"
        )
    return (
        f"{key} moved: use objectives+=[{{name: {name}, {new_field}: {value}}}] or "
        f"objectives.{name}.{new_field}={value} (when {name} is listed); in YAML: objectives: "
        f"[{{name: {ObjectiveConfig.name}}}, {{name: {name}, {new_field}: {value}}}]"
    )


def _legacy_key(key: str, value: Any) -> str | None:
    """For an old ``strategy.<key>`` that an objective replaced: the message saying where it went, or ``ignore``
    when it holds the old default (older saved configs list it with that value)."""
    from hftransfer.registry import get_objective, objective_names

    for name in objective_names():
        entry = get_objective(name)
        if key in entry.legacy_keys:
            new_field, old_default = entry.legacy_keys[key]
            if value == old_default or value is None:
                return "ignore"
            return (
                f"strategy.{key} moved to the objectives list: add objectives+=[{{name: {name}, {new_field}: "
                f"{value}}}] on the command line, or in YAML: objectives: [{{name: task}}, {{name: {name}, "
                f"{new_field}: {value}}}]"
            )
    return None

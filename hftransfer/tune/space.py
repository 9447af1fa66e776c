"""The search-space file of ``hftransfer tune``: which config keys vary and how, and the study's settings.

    metric: f1                      # default: the run's train.metric_for_best
    direction: maximize             # default: from the metric (train.greater_is_better)
    sampler: {type: tpe, seed: 0, startup_trials: 4}
    pruner: {type: median, startup_trials: 2, warmup_epochs: 1}
    params:
      train.lr: {type: float, low: 5.0e-5, high: 5.0e-4, log: true}
      train.batch_size: {type: categorical, choices: [16, 32]}

The searched keys sit under ``params`` rather than beside the settings, so a mistyped setting (``prunner:``) is
an error instead of a config key. A key is any ``key=value`` override the recipe accepts; :func:`check_space`
proves it by parsing the recipe's config with each bound and each choice. Every error names the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hftransfer.errors import ConfigError

KINDS = ("float", "int", "categorical")
DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "percentile", "threshold", "none")
# Set by tune itself for every trial (searching them would break the study's bookkeeping), or fixed for the process
# (Accelerate's state, shared by the trials, refuses another mixed precision once it exists).
RESERVED_KEYS = (
    "output_dir",
    "overwrite_output_dir",
    "train.resume_from_checkpoint",
    "push_to_hub",
    "train.mixed_precision",
)

_SETTINGS = {
    "sampler": {"type", "seed", "startup_trials"},
    "pruner": {"type", "startup_trials", "warmup_epochs", "percentile", "lower", "upper"},
}
_PARAM_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution (optuna's ``suggest_float`` / ``_int`` / ``_categorical``)."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The trial's value (optuna names the parameter by the config key)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))

    def probes(self) -> list[Any]:
        """Values to check against the config schema: both bounds, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file; ``path`` is named in every error."""

    path: Path
    params: dict[str, Param]
    metric: str | None = None
    direction: str | None = None
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def suggest(self, trial: Any) -> dict[str, Any]:
        """``{config key: value}`` of one trial, in file order."""
        return {key: param.suggest(trial) for key, param in self.params.items()}

    def overrides(self) -> list[str]:
        """What the space's settings change in every trial's config: the metric and its direction (so the
        model each trial keeps is the one its score comes from)."""
        extra = [f"train.metric_for_best={self.metric}"] if self.metric else []
        if self.direction:
            extra.append(f"train.greater_is_better={str(self.direction == 'maximize').lower()}")
        return extra

    def summary(self) -> dict[str, Any]:
        """What identifies the space (stored in the study, so a resume with another space is refused)."""
        return {
            "params": {key: _param_dict(p) for key, p in self.params.items()},
            "metric": self.metric,
            "direction": self.direction,
        }


def override(key: str, value: Any) -> str:
    """``key=value`` as the recipes parse it. Strings pass as written, so a choice ``"[query,value]"`` reaches
    the config as a list; other values as YAML (``1.0e-05``: a float with a dot, which YAML 1.1 needs)."""
    if isinstance(value, str):
        return f"{key}={value}"
    return f"{key}={yaml.safe_dump(value).splitlines()[0]}"  # a scalar document: "1.0e-05\n...\n"


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file.

    Raises:
        ConfigError: ``file: key: problem`` for a missing file, bad YAML, an unknown setting or a bad distribution.
    """
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the search space ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping with `params:` (and optional metric, direction, ...)")
    unknown = set(content) - {"params", "metric", "direction", *_SETTINGS}
    if unknown:
        raise ConfigError(
            f"{path}: {sorted(unknown)[0]}: unknown setting; use params, metric, direction, sampler, pruner "
            "(searched config keys go under params:)"
        )
    raw = content.get("params")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: params: expected a mapping of config keys to distributions")
    params = {str(key): _param(path, str(key), spec) for key, spec in raw.items()}
    metric = content.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError(f"{path}: metric: expected a metric name such as f1")
    direction = content.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"{path}: direction: expected maximize or minimize, got {direction!r}")
    settings = {name: _settings(path, name, content.get(name)) for name in _SETTINGS}
    return SearchSpace(path, params, metric, direction, settings["sampler"], settings["pruner"])


def check_space(space: SearchSpace, parse: Callable[[list[str]], Any], argv: list[str]) -> None:
    """Parse the recipe's config (``argv``: its preset and overrides) with each bound and choice of each key, so a
    key the schema lacks or a value it refuses fails now, named, instead of in trial 7.

    Raises:
        ConfigError: ``file: key: what the config parser said``.
    """
    searched = {key.removeprefix("--").split("=", 1)[0] for key in argv if "=" in key}
    for key, param in space.params.items():
        if key in searched:
            raise space.fail(key, "also set on the command line; drop one of the two")
        for value in param.probes():
            try:
                parse([*argv, override(key, value)])
            except ConfigError as err:
                raise space.fail(key, f"{value!r} is refused: {err}") from None


def _param(path: Path, key: str, spec: Any) -> Param:
    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {problem}")

    if key in RESERVED_KEYS:
        raise fail("set by tune for every trial, or fixed for its process; it cannot be searched")
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise fail("expected {type: float|int|categorical, ...}")
    kind = spec["type"]
    extra = set(spec) - _PARAM_FIELDS[kind]
    if extra:
        raise fail(f"unknown field {sorted(extra)[0]!r} for type {kind}; use {sorted(_PARAM_FIELDS[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise fail("categorical needs a non-empty list of choices")
        for choice in choices:
            if choice is not None and not isinstance(choice, bool | int | float | str):
                raise fail(
                    f"choice {choice!r} is not a scalar; write a list as a string, e.g. '[query,value]'"
                )
        return Param(key, kind, choices=tuple(choices))
    number = (int,) if kind == "int" else (int, float)
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise fail(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if low >= high:
        raise fail(f"low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise fail(f"log must be true or false, got {log!r}")
    if log and low <= 0:
        raise fail(f"log: true needs low > 0, got {low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise fail(f"step must be a positive {'integer' if kind == 'int' else 'number'}, got {step!r}")
        if log:
            raise fail("step and log: true cannot be combined (optuna)")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def _settings(path: Path, name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {name}: expected a mapping such as {{type: ...}}")
    unknown = set(value) - _SETTINGS[name]
    if unknown:
        raise ConfigError(
            f"{path}: {name}.{sorted(unknown)[0]}: unknown field; use {sorted(_SETTINGS[name])}"
        )
    allowed = SAMPLERS if name == "sampler" else PRUNERS
    if value.get("type", allowed[0]) not in allowed:
        raise ConfigError(f"{path}: {name}.type: expected one of {', '.join(allowed)}, got {value['type']!r}")
    for count in ("seed", "startup_trials"):
        item = value.get(count)
        if item is not None and (isinstance(item, bool) or not isinstance(item, int) or item < 0):
            raise ConfigError(f"{path}: {name}.{count}: expected a whole number >= 0, got {item!r}")
    for number in ("warmup_epochs", "percentile", "lower", "upper"):
        item = value.get(number)
        if item is not None and (isinstance(item, bool) or not isinstance(item, int | float)):
            raise ConfigError(f"{path}: {name}.{number}: expected a number, got {item!r}")
    return dict(value)


def _param_dict(param: Param) -> dict[str, Any]:
    if param.kind == "categorical":
        return {"type": param.kind, "choices": list(param.choices)}
    return {"type": param.kind, "low": param.low, "high": param.high, "log": param.log, "step": param.step}

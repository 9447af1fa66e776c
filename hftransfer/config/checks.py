"""Range checks of numeric config fields, for the sections' ``__post_init__``.

jsonargparse checks a value's type when it parses YAML or the command line, but not whether the number makes sense
(``train.epochs=-1``, ``train.seed=-5``, ``train.lr=1e400``, which YAML reads as infinity), and nothing checks a
config built in Python. A nonsense value must fail before any work, with a message that names the field and the
allowed range: ``train.batch_size must be >= 1, got 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hftransfer.errors import ConfigError
from hftransfer.text_excerpt import excerpt

__all__ = [
    "COUNT",
    "FRACTION",
    "NON_NEGATIVE",
    "OPTIONAL_COUNT",
    "POSITIVE",
    "SEED",
    "Range",
    "check_fields",
    "check_value",
]


@dataclass(frozen=True)
class Range:
    """The numbers a field accepts: between ``low`` and ``high`` (each excluded when ``*_open``), integers only
    with ``integer``, and None too with ``optional``. Never NaN or infinite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    def describe(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)``, with ``or null`` when None is allowed."""
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
            text += ")" if self.high_open else "]"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_number(self.high)}"
        else:
            text = "an integer" if self.integer else "a finite number"
        return text + (" or null" if self.optional else "")

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (the text after the field's name), or None when it is in range."""
        if value is None and self.optional:
            return None
        bounded = self.low is not None or self.high is not None
        kind = "an integer" if self.integer else "a number"
        typed = f"{kind} {self.describe()}" if bounded else self.describe()
        # bool is an int to Python, but ``train.seed=true`` is a mistake, not the seed 1.
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return f"must be {typed}, got {excerpt(value)}"
        # ints are always finite (and one too large for a float would make math.isfinite raise)
        if isinstance(value, float) and not math.isfinite(value):
            wanted = f"a finite number {self.describe()}" if bounded else self.describe()
            return f"must be {wanted}, got {value}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            return f"must be {self.describe()}, got {excerpt(value)}"
        return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


COUNT = Range(low=1, integer=True)
"""Sizes and step counts: batch sizes, accumulation steps, logging intervals."""
OPTIONAL_COUNT = Range(low=1, integer=True, optional=True)
"""Counts where null means "not set": ``max_steps``, ``eval_every_steps``, ``max_train_samples``."""
POSITIVE = Range(low=0, low_open=True)
"""Learning rates, epsilons, norms."""
NON_NEGATIVE = Range(low=0)
"""Weight decay and other amounts where 0 means "none"."""
FRACTION = Range(low=0, high=1, high_open=True)
"""Shares of something that cannot take all of it: warm-up ratio, carved split sizes, Adam's betas."""
SEED = Range(low=0, high=2**32 - 1, integer=True)
"""What every random generator the run seeds accepts: numpy's seeds are unsigned 32-bit integers."""


def check_value(field: str, value: Any, allowed: Range) -> None:
    """Raise a :class:`~hftransfer.errors.ConfigError` naming ``field`` unless ``value`` is in ``allowed``."""
    problem = allowed.problem(value)
    if problem is not None:
        raise ConfigError(f"{field} {problem}")


def check_fields(section: str, config: Any, ranges: dict[str, Range]) -> None:
    """Check each ``config.<name>`` against its range; messages name ``<section>.<name>``.

    Raises:
        ConfigError: the first field out of its range, e.g. ``train.epochs must be > 0, got -1``.
    """
    for name, allowed in ranges.items():
        check_value(f"{section}.{name}", getattr(config, name), allowed)

"""How a sequence model trained on windows of long texts predicts: the run's settings travel in its config.

A run with ``data.long_texts=window`` learnt from overlapping windows of ``data.max_length`` tokens, and scored its
splits on one combined row per text. Its exported config carries those settings (``hftransfer_long_texts``), so
``Predictor`` and ``hftransfer predict`` read a long text the same way by default instead of truncating it at the
model's limit. Plain ``transformers`` ignores the key (``pipeline`` truncates, as for any model).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hftransfer.config.schema import DataConfig

LONG_TEXTS_KEY = "hftransfer_long_texts"
WINDOW_FIELDS = ("long_texts", "window_context", "window_aggregation")
# What a model without the key gets: DataConfig's defaults, and max_length None (the model's own limit).
TRUNCATE = {
    "max_length": None,
    **{item.name: item.default for item in dataclasses.fields(DataConfig) if item.name in WINDOW_FIELDS},
}


def saved_long_texts(data_config: Any) -> dict[str, Any] | None:
    """What a run exports under :data:`LONG_TEXTS_KEY`: its window settings, or None for a truncating run."""
    if getattr(data_config, "long_texts", "truncate") != "window":
        return None
    return {
        "long_texts": "window",
        "max_length": data_config.max_length,
        "window_context": data_config.window_context,
        "window_aggregation": data_config.window_aggregation,
    }


def prediction_long_texts(model_config: Any, **given: Any) -> dict[str, Any]:
    """The settings a prediction uses: each one given (not None) wins, then the model's saved ones, then
    truncation at the model's limit."""
    saved = getattr(model_config, LONG_TEXTS_KEY, None) or {}
    return {
        name: given[name] if given.get(name) is not None else saved.get(name, default)
        for name, default in TRUNCATE.items()
    }


def named_window_options(overrides: list[str], data_config: Any) -> dict[str, Any]:
    """The window settings a command line names (``data.long_texts=truncate`` must win over a saved ``window``
    even though it is the default value)."""
    named = {arg.lstrip("-").split("=", 1)[0] for arg in overrides if "=" in arg}
    return {name: getattr(data_config, name) for name in WINDOW_FIELDS if f"data.{name}" in named}

"""Cross-field checks of the data section (``DataConfig.__post_init__``): labels, and the long-text options.

Kept apart from :mod:`hftransfer.config.schema` so that the schema stays a list of documented fields.
"""

from __future__ import annotations

from typing import Any

from hftransfer.config.problem import MULTI_LABEL, REGRESSION
from hftransfer.errors import ConfigError
from hftransfer.text_excerpt import excerpt


def check_label_fields(data: Any) -> None:
    """``label_separator``, ``label_map`` and ``drop_labels`` make sense together and with ``problem_type``;
    ``label_map`` and ``drop_labels`` are normalised to stripped strings.

    Raises:
        ConfigError: naming the field.
    """
    if data.label_separator is not None and (data.problem_type != MULTI_LABEL or not data.label_separator):
        raise ConfigError(
            f"data.label_separator={data.label_separator!r} splits multi-label cells; it needs a non-empty "
            f"separator and data.problem_type={MULTI_LABEL}"
        )
    if data.problem_type == REGRESSION and (data.label_map or data.drop_labels):
        which = "data.label_map" if data.label_map else "data.drop_labels"
        raise ConfigError(f"{which} names class labels; data.problem_type={REGRESSION} has a number per text")
    # YAML reads ``{1: negative}`` with an integer key; labels are strings once read, so compare as strings.
    if data.label_map is not None:
        if not isinstance(data.label_map, dict):
            raise ConfigError(
                f"data.label_map must be a mapping of label names, got {excerpt(data.label_map)}"
            )
        # An empty map (a preset's placeholder) is no map: builtins keep their default label names.
        data.label_map = {
            str(key).strip(): str(value).strip() for key, value in data.label_map.items()
        } or None
        if data.label_map and not all(key and value for key, value in data.label_map.items()):
            raise ConfigError(
                f"data.label_map maps label names to non-empty names, got {excerpt(data.label_map)}"
            )
    if isinstance(data.drop_labels, str) or not all(str(label).strip() for label in data.drop_labels):
        raise ConfigError(f"data.drop_labels must be a list of label names, got {excerpt(data.drop_labels)}")
    data.drop_labels = [str(label).strip() for label in data.drop_labels]


def check_long_text_fields(data: Any) -> None:
    """``long_texts``, ``window_aggregation`` and ``invalid_rows`` hold known values; ``max`` has no meaning for a
    regression target (the largest of a text's predicted numbers is no estimate of it).

    Raises:
        ConfigError: naming the field.
    """
    for name, allowed in (
        ("long_texts", ("truncate", "window")),
        ("window_aggregation", ("mean", "max")),
        ("invalid_rows", ("error", "skip")),
    ):
        if getattr(data, name) not in allowed:
            raise ConfigError(
                f"data.{name} must be one of {', '.join(allowed)}, got {excerpt(getattr(data, name))}"
            )
    if data.window_aggregation == "max" and data.problem_type == REGRESSION and data.long_texts == "window":
        raise ConfigError(
            f"data.window_aggregation=max with data.problem_type={REGRESSION}: a text's value is the mean of its "
            "windows' values; use data.window_aggregation=mean"
        )

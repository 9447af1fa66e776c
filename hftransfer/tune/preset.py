"""``best.yaml``: the study's preset with what the best trial changed, a preset the recipe takes with ``--config``.

What to write is found by the config parser itself, not by editing YAML by hand: the preset alone and the best
trial's sources (preset, command-line overrides, best parameters) are both parsed, and the keys whose resolved
values differ are set in the preset's own YAML. So a searched key of any form (``objectives.l2sp.weight``, a list
written as a string) lands where the parser put it, and the file keeps the preset's shape instead of being a whole
resolved config. A changed ``strategy`` or ``objectives`` is written as a whole section (a strategy's fields belong
to its name), as is any list (``tasks``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hftransfer.tune.flows import RecipeFlow
from hftransfer.tune.space import override
from hftransfer.utils import atomic_write_text

logger = logging.getLogger("hftransfer")

WHOLE_SECTIONS = ("strategy", "objectives")


def write_best_preset(
    path: Path,
    flow: RecipeFlow,
    preset: Path,
    overrides: Sequence[str],
    params: dict[str, Any],
    *,
    header: Sequence[str] = (),
) -> None:
    """Write ``path``: ``preset`` with the differences that ``overrides`` and ``params`` make, under a header
    whose first line is the launch command (as every preset's is), then ``header``'s lines."""
    base = _plain(flow.parse(["--config", str(preset)]).to_dict())
    argv = ["--config", str(preset), *overrides, *(override(key, value) for key, value in params.items())]
    best = _plain(flow.parse(argv).to_dict())
    content = yaml.safe_load(preset.read_text(encoding="utf-8")) or {}
    merged = merge_differences(content, base, best)
    lines = [f"accelerate launch recipes/{flow.script.name} --config {path}", *header]
    text = "".join(f"# {line}\n" for line in lines) + yaml.safe_dump(merged, sort_keys=False)
    atomic_write_text(path, text)
    reread = _plain(flow.parse(["--config", str(path)]).to_dict())
    if reread != best:  # a key that the merge above does not express: say which, rather than mislead
        differing = sorted(key for key, value in _flatten(best).items() if _flatten(reread).get(key) != value)
        logger.warning("%s does not reproduce the best trial's config in: %s", path, ", ".join(differing))


def merge_differences(content: dict[str, Any], base: dict[str, Any], best: dict[str, Any]) -> dict[str, Any]:
    """``content`` (a preset's YAML) with every leaf where the resolved configs ``base`` and ``best`` differ set to
    ``best``'s value; dicts are walked by key, lists and the plug-in sections are replaced whole."""
    merged = _plain(content)
    flat_base, flat_best = _flatten(base), _flatten(best)
    for key, value in flat_best.items():
        if flat_base.get(key, _MISSING) == value:
            continue
        section = key.split(".", 1)[0]
        if section in WHOLE_SECTIONS:
            merged[section] = best[section]
        else:
            _set(merged, key.split("."), value)
    return merged


_MISSING = object()


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[path[-1]] = value


def _plain(value: Any) -> Any:
    """Tuples as lists, so the config dumps as plain YAML and compares with what YAML reads back."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value

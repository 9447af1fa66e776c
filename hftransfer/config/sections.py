"""Collect the plug-in sections (``strategy``, ``objectives``) from every config source, in the order they apply.

They are typed by whichever class the registry holds for the chosen name, which a static parser cannot know before
it has read the name, so they are taken out of the YAML sources and the command line before jsonargparse parses
the core sections, merged here, and typed afterwards (``plugins.py``). The rules:

* ``strategy``: later sources update earlier ones (``strategy.r=4`` on top of a preset's ``{name: lora}``). A source
  that names another strategy keeps only the fields the new one also has (``head_lr``, ``layer_lr_decay``).
* ``objectives``: a list set by a later source replaces the earlier one whole; ``objectives+=[...]`` appends;
  ``objectives.NAME.FIELD=VALUE`` (or ``objectives.INDEX.FIELD``) changes one field of a listed objective.

Core-section keys that became objective fields (an objective's dotted ``legacy_keys``: ``distill.soft_weight``)
fail naming the new form when a user sets them; a config.yaml an older version saved (it lists all of them) is
read as the objectives they became, so old run directories load with the same meaning (:func:`older_objectives`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from hftransfer.config.plugins import ObjectiveConfig, moved_key_message, moved_keys
from hftransfer.errors import ConfigError
from hftransfer.text_excerpt import excerpt

logger = logging.getLogger("hftransfer")

PLUGIN_SECTIONS = ("strategy", "objectives")


class _Loader(yaml.SafeLoader):
    """YAML as jsonargparse reads command-line values: ``1e-4`` is a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    __import__("re").compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_value(raw: str) -> Any:
    """A command-line value as YAML (numbers, lists, mappings, null); text that is not YAML stays text."""
    try:
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError:
        return raw


def extract_sections(
    argv: list[str], default_config: str | Path | None, sections: tuple[str, ...], tmp: Path
) -> tuple[list[str], str | Path | None, dict[str, Any]]:
    """Take ``sections`` out of the preset, the ``--config`` files and the overrides in ``argv``.

    Returns:
        ``argv`` and the preset with those sections removed (YAML sources that had them are replaced by copies in
        ``tmp``), and the merged value of each section that any source set.
    """
    if not sections:
        return argv, default_config, {}
    merged: dict[str, Any] = {}
    if default_config:
        default_config = _strip_file(Path(default_config), sections, merged, tmp, "preset")
    out: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--config" and index + 1 < len(argv):
            out += [arg, str(_strip_file(Path(argv[index + 1]), sections, merged, tmp, str(index)))]
            index += 2
            continue
        if arg.startswith("--config="):
            out.append(f"--config={_strip_file(Path(arg[9:]), sections, merged, tmp, str(index))}")
        elif arg.startswith("--") and arg[2:].split("=")[0] in moved_keys():
            key, equals, raw = arg[2:].partition("=")
            raw = raw if equals or index + 1 >= len(argv) else argv[index + 1]
            raise ConfigError(moved_key_message(key, load_value(raw)))
        elif arg.startswith("--") and arg[2:].split("=")[0].split(".")[0].rstrip("+") in sections:
            key, equals, raw = arg[2:].partition("=")
            if not equals:  # argparse style: --strategy.r 4
                if index + 1 >= len(argv):
                    raise ConfigError(f"{key}: give a value ({key}=VALUE)")
                index, raw = index + 1, argv[index + 1]
            _apply_override(merged, key, load_value(raw))
        else:
            out.append(arg)
        index += 1
    return out, default_config, merged


def mentioned_plugins(argv: list[str], default_config: str | Path | None) -> list[str]:
    """Every module any source lists under ``plugins`` (importing one a later source drops does no harm)."""
    found: list[str] = []
    for arg in argv:
        if arg.startswith(("--plugins=", "--plugins+=")):
            value = load_value(arg.split("=", 1)[1])
            found += value if isinstance(value, list) else [value]
    for path in config_files(argv, default_config).values():
        content = read_yaml(path)
        if isinstance(content, dict) and isinstance(content.get("plugins"), list):
            found += content["plugins"]
    return [str(item) for item in found if item]


def config_files(argv: list[str], default_config: str | Path | None) -> dict[int, Path]:
    """The YAML sources in the order jsonargparse applies them, keyed by their argv index (-1: the preset)."""
    paths = {-1: Path(default_config)} if default_config else {}
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            paths[index] = Path(arg.split("=", 1)[1])
        elif arg == "--config" and index + 1 < len(argv):
            paths[index + 1] = Path(argv[index + 1])
    return paths


def read_yaml(path: Path) -> Any:
    """A YAML source as the command line's values are read (``1e-4`` a float); None when there is no such file."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) if path.is_file() else None


def _strip_file(path: Path, sections: tuple[str, ...], merged: dict, tmp: Path, tag: str) -> Path:
    """Merge ``path``'s plug-in sections and return a copy without them (``path`` itself when it has none)."""
    content = read_yaml(path)  # a missing file: None, and jsonargparse reports it
    if not isinstance(content, dict):
        return path
    moved = _moved_in(content)
    if moved:
        objectives = older_objectives(content)
        if objectives is None:  # only some of a section's moved keys: a user's file, not a saved one
            raise ConfigError(f"{path}: {moved_key_message(*next(iter(moved.items())))}")
        logger.info("%s: an older config; %s read as objectives %s", path, ", ".join(moved), objectives)
        content["objectives"] = objectives
        for section, _, key in (moved_key.partition(".") for moved_key in moved):
            del content[section][key]
    elif not any(name in content for name in sections):
        return path
    for name in sections:
        if name in content:
            _apply_source(merged, name, content.pop(name), str(path))
    copy = tmp / f"sections-{tag}-{path.name}"
    copy.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return copy


def _moved_in(content: dict) -> dict[str, Any]:
    """``{"section.key": value}`` of the moved keys ``content`` sets, in file order."""
    moved = moved_keys()
    return {
        f"{section}.{key}": value
        for section, values in content.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if f"{section}.{key}" in moved
    }


def older_objectives(content: dict) -> list[dict] | None:
    """The objectives list of a config an older version saved, with its moved keys in it; None when ``content``
    sets no moved key, or only some of a section's (a user's file, not a saved one).

    A weight of 0 was the old way to leave a term out: that objective is not listed (a task weight of 0 removes
    the task's loss). Others are set on the listed objective, or inserted before the first regulariser (the
    order the older flows added them in).
    """
    found, moved = _moved_in(content), moved_keys()
    sections = {key.partition(".")[0] for key in found}
    if not found or {k for k in moved if k.partition(".")[0] in sections} != set(found):
        return None
    listed = _objective_list(content.get("objectives") or [{"name": ObjectiveConfig.name}], "config.yaml")
    fields: dict[str, dict[str, Any]] = {}
    for key, value in found.items():
        fields.setdefault(moved[key][0], {})[moved[key][1]] = value
    for name, values in fields.items():
        index = next((i for i, item in enumerate(listed) if item.get("name") == name), None)
        if values.get("weight") == 0:
            listed = [item for item in listed if item.get("name") != name]
        elif index is not None:
            listed[index].update(values)
        else:
            listed.insert(_first_regulariser(listed), {"name": name, **values})
    return listed


def _first_regulariser(listed: list[dict]) -> int:
    from hftransfer.registry import get_objective

    for index, item in enumerate(listed):
        try:
            if get_objective(item.get("name")).regulariser:
                return index
        except ConfigError:  # a plug-in objective this process does not know
            continue
    return len(listed)


def _apply_source(merged: dict, section: str, value: Any, source: str) -> None:
    if section == "strategy":
        merged["strategy"] = merge_strategy(merged.get("strategy"), value, source)
    else:
        merged["objectives"] = _objective_list(value, source)


def _apply_override(merged: dict, key: str, value: Any) -> None:
    section, _, rest = key.partition(".")
    if section == "strategy":
        if not rest:
            merged["strategy"] = merge_strategy(merged.get("strategy"), value, "the command line")
        elif rest.endswith("+"):  # strategy.target_modules+=dense appends to a list field
            current = dict(merged.get("strategy") or {})
            items = current.get(rest[:-1]) or []
            current[rest[:-1]] = list(items) + (value if isinstance(value, list) else [value])
            merged["strategy"] = current
        else:
            merged["strategy"] = merge_strategy(merged.get("strategy"), {rest: value}, "the command line")
        return
    if section == "objectives+" and not rest:
        added = value if isinstance(value, list) else [value]
        merged["objectives"] = _current_objectives(merged) + _objective_list(added, "objectives+=")
    elif section == "objectives" and not rest:
        merged["objectives"] = _objective_list(value, "objectives=")
    elif section == "objectives":
        ident, _, field_name = rest.partition(".")
        if not field_name:
            raise ConfigError(f"{key}: write objectives.NAME.FIELD=VALUE (e.g. objectives.l2sp.weight=0.01)")
        objectives = _current_objectives(merged)
        entry = _find_objective(objectives, ident, f"{key}={value}")
        entry[field_name] = value
        merged["objectives"] = objectives
    else:
        raise ConfigError(f"{key}: not an option (did you mean {section.rstrip('+')}.FIELD=VALUE?)")


def merge_strategy(current: dict | None, update: Any, source: str) -> dict:
    """``current`` updated by ``update`` (a mapping or a strategy name) from ``source``."""
    from hftransfer.config.plugins import field_names
    from hftransfer.registry import get_objective, get_strategy, objective_names

    if isinstance(update, str):
        update = {"name": update}
    if not isinstance(update, dict):
        raise ConfigError(
            f"strategy in {source} must be a mapping such as {{name: lora, r: 8}}, got {excerpt(update)}"
        )
    current = dict(current or {})
    old_name = current.get("name", "full")
    if "name" in update and update["name"] != old_name:
        # Another strategy: what both have carries over, the old one's own fields go (said, not silently).
        own = set(field_names(get_strategy(update["name"]).config))
        legacy = {key for name in objective_names() for key in get_objective(name).legacy_keys}
        dropped = sorted(k for k, v in current.items() if k not in own | legacy and v is not None)
        if dropped:
            logger.warning(
                "strategy.name=%s (from %s) replaces %s: dropping its %s",
                update["name"],
                source,
                old_name,
                ", ".join(f"strategy.{k}" for k in dropped),
            )
        current = {k: v for k, v in current.items() if k in own | legacy}
    current.update(update)
    return current


def _objective_list(value: Any, source: str) -> list[dict]:
    if not isinstance(value, list):
        raise ConfigError(
            f"objectives in {source} must be a list such as [{{name: task}}, {{name: l2sp, weight: 0.01}}], "
            f"got {excerpt(value)}"
        )
    out = []
    for index, item in enumerate(value):
        item = {"name": item} if isinstance(item, str) else item
        if not isinstance(item, dict):
            raise ConfigError(
                f"objectives[{index}] in {source} must be a mapping with a name, got {excerpt(item)}"
            )
        out.append(dict(item))
    return out


def _current_objectives(merged: dict) -> list[dict]:
    if merged.get("objectives") is None:  # the default list, which appends and field overrides start from
        return [{"name": ObjectiveConfig.name}]
    return [dict(item) for item in merged["objectives"]]


def _find_objective(objectives: list[dict], ident: str, override: str) -> dict:
    names = [item.get("name") for item in objectives]
    if ident.isdigit() and int(ident) < len(objectives):
        return objectives[int(ident)]
    if names.count(ident) == 1:
        return objectives[names.index(ident)]
    raise ConfigError(
        f"{override}: the objectives list {names} has no {excerpt(ident)}; add it with "
        f"objectives+=[{{name: {ident}, ...}}]"
    )

"""Parse a run config from a recipe's preset, ``--config`` files and ``key=value`` overrides, and write it back.

The core sections are parsed by jsonargparse from the dataclasses, so a wrong key, a wrong type or a value outside a
``Literal`` fails before any work with a message that names the key. The plug-in sections (``strategy``,
``objectives``) are merged from the same sources first (``sections.py``) and typed by their registered classes.

CLI overrides may be written torchtune-style (``train.lr=1e-4``) or argparse-style (``--train.lr=1e-4``).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hftransfer.config.help import plugin_help
from hftransfer.config.plugins import load_plugins
from hftransfer.config.run import RunConfig
from hftransfer.config.sections import (
    PLUGIN_SECTIONS,
    config_files,
    extract_sections,
    mentioned_plugins,
    read_yaml,
)
from hftransfer.errors import ConfigError
from hftransfer.text_excerpt import shorten


def normalise_overrides(argv: Sequence[str]) -> list[str]:
    """Accept torchtune-style ``key.sub=value`` as well as ``--key.sub=value``.

    A value in one pair of matching quotes loses them (``key="a b"`` as a program passes it, with no shell to strip
    them): jsonargparse keeps quotes in a ``str`` field, while the plug-in sections read values as YAML and drop
    them, so the same override would mean two things.
    """
    out = []
    for arg in argv:
        if not arg.startswith("-") and "=" in arg:
            arg = "--" + arg
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            arg = f"{key}={_unquoted(value)}"
        out.append(arg)
    return out


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" and value[0] not in value[1:-1]:
        return value[1:-1]
    return value


def _plugin_fields(schema: type) -> tuple[str, ...]:
    names = {item.name for item in dataclasses.fields(schema)}
    return tuple(name for name in PLUGIN_SECTIONS if name in names)


def build_parser(default_config: str | Path | None = None, prog: str | None = None, schema: type = RunConfig):
    """The jsonargparse parser of ``schema``'s core sections; ``default_config`` is a preset applied first."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog=prog,
        exit_on_error=False,
        default_config_files=[str(default_config)] if default_config else None,
        description="Options are key=value (or --key=value); --config FILE.yaml loads a preset first.",
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="YAML preset; later key=value options override it"
    )
    parser.add_class_arguments(schema, nested_key=None, fail_untyped=True, skip=set(_plugin_fields(schema)))
    return parser


def parse_config(
    argv: Sequence[str] | None = None, default_config: str | Path | None = None, schema: type = RunConfig
) -> Any:
    """Parse a run config from a preset, ``--config`` files and overrides.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``); ``--help`` prints every option and exits.
        default_config: preset YAML loaded first (a recipe's default).
        schema: the config dataclass (:class:`RunConfig`, or ``MultitaskConfig`` for multitask runs).

    Returns:
        The validated ``schema`` instance.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a failed cross-field check; the message names it.
    """
    from jsonargparse import ArgumentError

    argv = normalise_overrides(sys.argv[1:] if argv is None else argv)
    plugin_fields = _plugin_fields(schema)
    if plugin_fields:  # their strategies and objectives must be registered before the sections are merged
        load_plugins(mentioned_plugins(argv, default_config))
    with tempfile.TemporaryDirectory() as tmp:
        argv, default_config, sections = extract_sections(argv, default_config, plugin_fields, Path(tmp))
        argv, default_config = _replace_lists_whole(argv, default_config, schema, Path(tmp))
        wants_help = "-h" in argv or "--help" in argv
        if wants_help:  # field docstrings are the help text; reading them costs time, so only for --help
            from jsonargparse import set_parsing_settings

            set_parsing_settings(docstring_parse_attribute_docstrings=True)
        parser = build_parser(default_config, prog=Path(sys.argv[0]).name, schema=schema)
        if wants_help:
            sys.stdout.write(parser.format_help() + ("\n" + plugin_help() if plugin_fields else ""))
            raise SystemExit(0)
        try:
            namespace = parser.parse_args(argv)
            init = parser.instantiate(namespace)
        except ArgumentError as err:  # jsonargparse quotes the rejected value, which may be any length
            raise ConfigError(f"config: {shorten(' '.join(str(err).split()))}") from None
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config: {shorten(str(err))}") from None
    values = {
        f.name: getattr(init, f.name) for f in dataclasses.fields(schema) if f.name not in plugin_fields
    }
    # Unset sections take the schema's defaults; set ones are typed by their registered classes in __post_init__.
    values.update(sections)
    return schema(**values)


def _dataclass_list_fields(schema: type) -> list[str]:
    """Top-level fields of ``schema`` typed as a list of dataclasses (a multitask run's ``tasks``)."""
    hints = typing.get_type_hints(schema)
    names = []
    for item in dataclasses.fields(schema):
        if item.name in PLUGIN_SECTIONS:  # taken out before the parser sees the sources (sections.py)
            continue
        hint = hints[item.name]
        if typing.get_origin(hint) is list and all(
            dataclasses.is_dataclass(a) for a in typing.get_args(hint)
        ):
            names.append(item.name)
    return names


def _replace_lists_whole(
    argv: list[str], default_config: str | Path | None, schema: type, tmp: Path
) -> tuple[list[str], str | Path | None]:
    """Make a list of dataclasses set by a later source replace the one of an earlier source as a whole.

    jsonargparse parses such a list element by element on top of the list it already holds, so a preset's first
    task would lend its unset fields (a learning rate, a sampling weight, a data limit) to the first task of a
    ``--config`` file or of a ``tasks=[...]`` override. Earlier YAML sources that set a list a later source also
    sets are given to the parser as copies without it. ``tasks+=...`` (append) keeps the earlier list.
    """
    fields = _dataclass_list_fields(schema)
    if not fields:
        return argv, default_config
    paths = config_files(argv, default_config)
    contents = {}
    for position, path in paths.items():
        content = read_yaml(path)
        contents[position] = content if isinstance(content, dict) else {}
    argv = list(argv)
    for name in fields:
        overridden = [i for i, arg in enumerate(argv) if arg.startswith((f"--{name}=", f"--{name}."))]
        set_at = [position for position, content in contents.items() if name in content] + overridden
        for position in set_at:
            if position == max(set_at) or position not in contents:
                continue
            contents[position].pop(name)
            copy = tmp / f"{position + 1}-{paths[position].name}"
            copy.write_text(yaml.safe_dump(contents[position], sort_keys=False), encoding="utf-8")
            if position == -1:
                default_config = copy
            elif argv[position].startswith("--config="):
                argv[position] = f"--config={copy}"
            else:
                argv[position] = str(copy)
    return argv, default_config


def load_config_file(path: str | Path) -> RunConfig:
    """Load and validate one YAML preset or a run directory's saved ``config.yaml``."""
    return parse_config(["--config", str(path)])


def save_config(config: Any, path: str | Path) -> None:
    """Write a resolved config (``RunConfig`` or ``MultitaskConfig``) as YAML that ``--config`` accepts back."""
    from hftransfer.utils import atomic_write_text

    data = config.to_dict()  # the plug-in sections as their typed classes resolved them, defaults included
    data["train"]["adam_betas"] = list(data["train"]["adam_betas"])
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))

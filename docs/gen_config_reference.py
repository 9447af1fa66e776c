"""The configuration reference page, written from the config dataclasses when the site is built (docs/hooks.py).

Every key of every recipe's schema and of every registered strategy and objective, with its type, its default and
the attribute docstring under the field: the text ``--help`` prints, so the page cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`~?([\w.]+)`")  # Sphinx roles in docstrings


def configuration_page(anchors: dict[type, str]) -> str:
    from hftransfer.config.plugins import EncoderStrategyConfig, ObjectiveConfig, StrategyConfig

    anchors.update({StrategyConfig: "strategy", EncoderStrategyConfig: "strategy-encoder",
                    ObjectiveConfig: "objectives"})  # fmt: skip
    out = [
        "# Configuration reference",
        "Every key of every recipe, generated from the config dataclasses when this site is built; `--help` "
        "prints the same text. A key is set in a YAML preset, in a `--config` file or on the command line as "
        "`key=value` ([configuration](../configuration.md) has the syntax and the order sources apply in). "
        "`sources[].name` is the `name` of each item of the `sources` list.",
    ]
    for title, cls, recipes in _schemas():
        out += _schema_section(title, cls, recipes, anchors)
    out += _strategy_sections(anchors)
    out += _objective_sections(anchors)
    return "\n\n".join(out) + "\n"


def _schemas() -> list[tuple[str, type, list[str]]]:
    """Each schema, and the recipes that parse it."""
    from hftransfer.config.run import RunConfig
    from hftransfer.distill.config import DistillRunConfig
    from hftransfer.multitask.config import MultitaskConfig
    from hftransfer.pretrain.config import PretrainConfig

    return [
        ("Runs", RunConfig, ["finetune_ner.py", "finetune_classifier.py", "domain_adapt.py"]),
        ("Multitask runs", MultitaskConfig, ["multitask.py"]),
        ("Distillation runs", DistillRunConfig, ["distill.py"]),
        ("Continued pre-training", PretrainConfig, ["pretrain_mlm.py"]),
    ]


def _schema_section(title: str, cls: type, recipes: list[str], anchors: dict[type, str]) -> list[str]:
    slug = _slug(title)
    launch = ", ".join(f"[`recipes/{name}`](../../recipes/{name})" for name in recipes)
    out = [f"## {title} {{#{slug}}}", f"{_summary(cls)} Recipes: {launch}."]
    base = next((b for b in cls.__mro__[1:] if b in anchors), None)
    fields = dataclasses.fields(cls)
    if base is not None:  # a run config extended: only what it adds or changes
        inherited = {f.name: _default(f) for f in dataclasses.fields(base)}
        fields = [
            f for f in fields if f.name not in inherited or repr(_default(f)) != repr(inherited[f.name])
        ]
        out.append(f"Every key of [{base.__name__}](#{anchors[base]}), and these:")
    anchors.setdefault(cls, slug)
    nested: list[tuple[str, type]] = []
    rows = []
    for item in fields:
        section = _section_type(item, cls)
        if section is not None and section not in anchors:  # documented once, where it first appears
            listed = typing.get_origin(typing.get_type_hints(cls)[item.name]) is list
            key = f"{item.name}[]" if listed else item.name
            anchors[section] = _slug(key)
            nested.append((key, section))
        rows.append(field_row(cls, item, item.name, anchors))
    out.append(table(rows))
    for key, section in nested:
        rows = [
            field_row(section, item, f"{key}.{item.name}", anchors) for item in dataclasses.fields(section)
        ]
        out += [f"### `{key}` {{#{anchors[section]}}}", _summary(section), table(rows)]
    return out


def _strategy_sections(anchors: dict[type, str]) -> list[str]:
    from hftransfer.config.plugins import EncoderStrategyConfig, StrategyConfig, field_names
    from hftransfer.registry import get_strategy, strategy_names

    out = [
        "## Strategies {#strategy}",
        "What trains: `strategy.name=NAME`, then `strategy.FIELD=VALUE` (in YAML `strategy: {name: NAME, ...}`). "
        "The keys every strategy has:",
        table([field_row(StrategyConfig, f, f"strategy.{f.name}", anchors) for f in dataclasses.fields(StrategyConfig)]),
        "### Strategies that train encoder weights {#strategy-encoder}",
        _summary(EncoderStrategyConfig),
        table([field_row(EncoderStrategyConfig, f, f"strategy.{f.name}", anchors)
                for f in dataclasses.fields(EncoderStrategyConfig) if f.name not in field_names(StrategyConfig)]),
    ]  # fmt: skip
    for name in strategy_names():
        entry = get_strategy(name)
        encoder = issubclass(entry.config, EncoderStrategyConfig)
        base = EncoderStrategyConfig if encoder else StrategyConfig
        own = [f for f in dataclasses.fields(entry.config) if f.name not in field_names(base)]
        also = "every strategy's keys" + (
            " and those of strategies that train encoder weights" if encoder else ""
        )
        summary = f"{_summary(entry.config, entry.build)} Registered in `{entry.module}`; it has {also}"
        out += [f"### `{name}` {{#strategy-{name}}}", summary + (", and:" if own else ", none of its own.")]
        if own:
            out.append(table([field_row(entry.config, f, f"strategy.{f.name}", anchors) for f in own]))
    return out


def _objective_sections(anchors: dict[type, str]) -> list[str]:
    from hftransfer.config.plugins import ObjectiveConfig, field_names
    from hftransfer.registry import get_objective, objective_names

    out = [
        "## Objectives {#objectives}",
        "What the loss is: a list, `objectives=[{name: task}, {name: NAME, weight: W, ...}]`; `objectives+=[...]` "
        "appends, `objectives.NAME.FIELD=VALUE` sets a field of a listed one. The keys every objective has:",
        table([field_row(ObjectiveConfig, f, f"objectives.NAME.{f.name}", anchors)
                for f in dataclasses.fields(ObjectiveConfig)]),
    ]  # fmt: skip
    for name in objective_names():
        entry = get_objective(name)
        own = [f for f in dataclasses.fields(entry.config) if f.name not in field_names(ObjectiveConfig)]
        summary = f"{_summary(entry.config, entry.build)} Registered in `{entry.module}`"
        out += [
            f"### `{name}` {{#objective-{name}}}",
            summary + (", and its keys:" if own else "; no keys of its own."),
        ]
        if own:
            out.append(
                table([field_row(entry.config, f, f"objectives.{name}.{f.name}", anchors) for f in own])
            )
    return out


def _section_type(item: dataclasses.Field, owner: type) -> type | None:
    """The dataclass a field holds (``model``), or holds a list of (``sources``), or may hold (``X | None``)."""
    hint = typing.get_type_hints(owner)[item.name]
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate) and isinstance(candidate, type):
            return candidate
    return None


def field_row(owner: type, item: dataclasses.Field, key: str, anchors: dict[type, str]) -> list[str]:
    """A table row of ``owner``'s field: its key, type, default and docstring; a section links to its keys."""
    hint = typing.get_type_hints(owner)[item.name]
    doc = clean(_field_docs(owner).get(item.name, ""))
    section = _section_type(item, owner)
    if section is not None:
        link = f"[{section.__name__}](#{anchors[section]})" if section in anchors else f"`{section.__name__}`"
        doc = (doc or _summary(section)) + f" Its keys: {link}."
    default = _default(item)
    if default is dataclasses.MISSING:
        default = "required"
    elif section is None or _value(default) not in ("{}", "[]"):
        default = f"`{_value(default)}`"  # a section shows what its default sets: {name: full}
    else:
        default = ""
    return [f"`{key}`", f"`{_type(hint)}`", default, doc]


def table(rows: list[list[str]]) -> str:
    """A Markdown table of :func:`field_row` rows."""
    lines = ["| key | type | default | what it does |", "|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(_escape_pipes(cell) for cell in row) + " |" for row in rows])


def _escape_pipes(text: str) -> str:
    """``|`` outside code spans would split a table cell; inside them Python-Markdown keeps it."""
    parts = re.split(r"(``.*?``|`[^`]*`)", text)
    return "".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


@functools.cache  # it parses the source of the class and its bases
def _field_docs(cls: type) -> dict[str, str]:
    from hftransfer.config.help import field_docs

    return field_docs(cls)


def _default(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return dataclasses.MISSING


def _value(value: Any) -> str:
    """A default as it is written in YAML or on the command line."""
    if dataclasses.is_dataclass(value):
        keys = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                if f.name == "name" or repr(getattr(value, f.name)) != repr(_default(f))}  # fmt: skip
        return "{" + ", ".join(f"{key}: {_value(v)}" for key, v in keys.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_value(v)}" for key, v in value.items()) + "}"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value) if value != "" else '""'


def _type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(_value(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(arg) for arg in args)
    if hint is type(None):
        return "None"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type(arg) for arg in args)}]"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def _summary(cls: type, build: Any = None) -> str:
    """The first paragraph of a class's docstring (of its builder's, for a config class generated without one)."""
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # the signature dataclasses write for a class without a docstring
        doc = (inspect.getdoc(build) or "") if build is not None else ""
    return clean(" ".join(doc.split("\n\n")[0].split()))


def clean(text: str) -> str:
    """Sphinx roles as code: ``:class:`~a.b.C``` -> `C`."""
    return ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

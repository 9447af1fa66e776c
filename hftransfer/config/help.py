"""``--help`` for the plug-in sections: every registered strategy's and objective's fields, with types, defaults
and their attribute docstrings."""

from __future__ import annotations

import dataclasses
from typing import Any

from hftransfer.config.plugins import EncoderStrategyConfig, StrategyConfig, field_names


def plugin_help() -> str:
    """``--help`` text of every registered strategy and objective: their fields, types, defaults and docs."""
    from hftransfer.registry import get_objective, get_strategy, objective_names, strategy_names

    trains = [n for n in strategy_names() if issubclass(get_strategy(n).config, EncoderStrategyConfig)]
    sections = [
        "strategy: what trains (strategy.name=NAME, then strategy.FIELD=VALUE; in YAML strategy: {name: NAME, ...})",
        _class_help("every strategy", StrategyConfig, "strategy", skip=()),
        _class_help(f"strategies that train encoder weights ({', '.join(trains)})", EncoderStrategyConfig, "strategy",
                    skip=field_names(StrategyConfig)),
    ]  # fmt: skip
    for name in strategy_names():
        entry = get_strategy(name)
        base = EncoderStrategyConfig if issubclass(entry.config, EncoderStrategyConfig) else StrategyConfig
        sections.append(
            _class_help(f"strategy.name={name}", entry.config, "strategy", field_names(base), entry)
        )
    sections.append(
        "objectives: what the loss is, a list (objectives=[{name: task}, {name: NAME, ...}]; objectives+=[...] "
        "appends; objectives.NAME.FIELD=VALUE sets a field of a listed one)"
    )
    for name in objective_names():
        entry = get_objective(name)
        sections.append(
            _class_help(f"{{name: {name}}}", entry.config, f"objectives.{name}", ("name",), entry)
        )
    return "\n\n".join(sections) + "\n"


def _class_help(title: str, cls: type, prefix: str, skip: Any = ("name",), entry: Any = None) -> str:
    """``cls``'s own fields as ``prefix.FIELD (type, default): doc`` lines, under its summary."""
    import textwrap
    import typing

    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    summary = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
    if summary.startswith(
        f"{cls.__name__}("
    ):  # the signature dataclasses write for a class without a docstring
        summary = " ".join(((entry.build.__doc__ or "") if entry else "").split("\n\n")[0].split())
    lines = [f"  {title}{': ' + summary if summary else ''}"]
    for item in dataclasses.fields(cls):
        if item.name in skip or item.name == "name":
            continue
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        kind = str(hints[item.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
        head = f"{prefix}.{item.name} ({kind}, default {default!r}): "
        lines.append(
            textwrap.fill(
                head + docs.get(item.name, ""), 116, initial_indent="    ", subsequent_indent="      "
            )
        )
    return "\n".join(lines)


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of ``cls`` and its bases (the subclass's win), one line each."""
    import docstring_parser

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            parsed = docstring_parser.parse_from_object(klass)
        except Exception:  # a class defined without source (generated, or in a frozen module): no docs
            continue
        docs.update({p.arg_name: " ".join((p.description or "").split()) for p in parsed.params})
    return docs

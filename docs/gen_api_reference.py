"""The API reference page: the names ``hftransfer`` exports (``__all__``), from their signatures and docstrings
(docs/hooks.py writes it when the site is built).

A docstring's ``Args`` entry that the signature lacks is a warning, so ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
from typing import Any

from gen_config_reference import ROLE, field_row, table

log = logging.getLogger("mkdocs.hooks.api_reference")


def api_page(config_anchors: dict[type, str]) -> str:
    import hftransfer

    groups: dict[str, list[str]] = {"Functions": [], "Classes": [], "Config dataclasses": [], "Errors": []}
    for name in hftransfer.__all__:
        obj = getattr(hftransfer, name)
        if not isinstance(obj, type):
            groups["Functions"].append(name)
        elif issubclass(obj, BaseException):
            groups["Errors"].append(name)
        else:
            groups["Config dataclasses" if dataclasses.is_dataclass(obj) else "Classes"].append(name)
    out = [
        "# API reference",
        "The names `hftransfer` exports (`from hftransfer import Predictor`), generated from their signatures and "
        "docstrings when this site is built. The recipes in `recipes/` are written with them; "
        "[architecture](../architecture.md) shows how they fit together.",
    ]
    for group, names in groups.items():
        out.append(f"## {group}")
        out += [
            _api_entry(name, getattr(hftransfer, name), config_anchors, set(hftransfer.__all__))
            for name in names
        ]
    return "\n\n".join(out) + "\n"


def _api_entry(name: str, obj: Any, config_anchors: dict[type, str], exported: set[str]) -> str:
    out = [f"### `{name}` {{#{name.lower()}}}", f"*from `{obj.__module__}`*"]
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        out.append(_docstring(obj, exported, check=None))
        if obj in config_anchors:
            out.append(f"Its keys: [configuration reference](configuration.md#{config_anchors[obj]}).")
        else:
            out.append(table([field_row(obj, f, f.name, config_anchors) for f in dataclasses.fields(obj)]))
    elif isinstance(obj, type) and issubclass(obj, BaseException):
        out.append(_docstring(obj, exported, check=None))
    elif isinstance(obj, type):
        out += [_signature(f"hftransfer.{name}", obj), _docstring(obj, exported, check=obj.__init__)]
        out += [_method(name, attr, member, exported) for attr, member in vars(obj).items()]
    else:
        out += [_signature(f"hftransfer.{name}", obj), _docstring(obj, exported, check=obj)]
    return "\n\n".join(part for part in out if part)


def _method(owner: str, attr: str, member: Any, exported: set[str]) -> str:
    """A public method or property of a class (its own, not inherited); '' for anything else."""
    if attr.startswith("_") or not (
        inspect.isfunction(member) or isinstance(member, (property, classmethod, staticmethod))
    ):
        return ""
    if isinstance(member, property):
        return f"#### `{owner}.{attr}` (property)\n\n" + _docstring(member.fget, exported, check=None)
    function = getattr(member, "__func__", member)
    signature = _signature(f"{owner}.{attr}", function, drop_self=True)
    return f"#### `{owner}.{attr}`\n\n{signature}\n\n" + _docstring(function, exported, check=function)


def _signature(title: str, obj: Any, drop_self: bool = False) -> str:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    params, star = [], False
    for param in signature.parameters.values():
        if drop_self and param.name in ("self", "cls") and not params:
            continue
        if param.kind is param.KEYWORD_ONLY and not star:
            params.append("*")
        star = star or param.kind in (param.KEYWORD_ONLY, param.VAR_POSITIONAL)
        text = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "") + param.name
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:  # a class or a function by its name
            default = getattr(param.default, "__qualname__", None) or repr(param.default)
            text += f" = {default}" if param.annotation is not param.empty else f"={default}"
        params.append(text)
    returns = signature.return_annotation
    returns = "" if returns is signature.empty or isinstance(obj, type) else f" -> {_annotation(returns)}"
    one_line = f"{title}({', '.join(params)}){returns}"
    if len(one_line) > 100:
        one_line = f"{title}(\n" + "".join(f"    {p},\n" for p in params) + f"){returns}"
    return f"```python\n{one_line}\n```"


def _annotation(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _docstring(obj: Any, exported: set[str], check: Any) -> str:
    """A Google-style docstring as Markdown; Args entries that ``check``'s signature lacks are warnings."""
    import docstring_parser

    text = inspect.getdoc(obj) or ""
    if not text or (isinstance(obj, type) and text.startswith(f"{obj.__name__}(")):
        return ""
    parsed = docstring_parser.parse(text, style=docstring_parser.DocstringStyle.GOOGLE)
    gap = "\n\n" if parsed.blank_after_short_description else "\n"  # a summary may run over several lines
    body = gap.join(part for part in (parsed.short_description, parsed.long_description) if part)
    out = [_link_roles(body.replace("::\n", ":\n"), exported)]
    if check is not None and parsed.params:
        try:
            names = set(inspect.signature(check).parameters)
        except (TypeError, ValueError):
            names = None
        for param in parsed.params if names is not None else ():  # ``a, b`` or ``a / b`` documents several
            missing = [arg for arg in re.split(r"[\s,/]+", param.arg_name) if arg.lstrip("*") not in names]
            if missing:
                log.warning("docstring of %s documents %s, which its signature lacks",
                            getattr(obj, "__qualname__", obj), ", ".join(missing))  # fmt: skip
    returns = parsed.returns.description if parsed.returns else None
    sections = {
        "Args": [f"- `{p.arg_name}`: {_flat(p.description)}" for p in parsed.params],
        "Returns": [_flat(returns)] if returns else [],
        "Raises": [f"- `{r.type_name}`: {_flat(r.description)}" for r in parsed.raises],
    }
    for title, lines in sections.items():
        if lines:
            out.append(f"**{title}**\n\n" + _link_roles("\n".join(lines), exported))
    return "\n\n".join(out)


def _flat(text: str | None) -> str:
    return " ".join((text or "").split())


def _link_roles(text: str, exported: set[str]) -> str:
    """Sphinx roles as code, linked when they name an exported object (an entry on this page)."""

    def replace(match: re.Match) -> str:
        name = match.group(1).rsplit(".", 1)[-1]
        return f"[`{name}`](#{name.lower()})" if name in exported else f"`{name}`"

    return ROLE.sub(replace, text)

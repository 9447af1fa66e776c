"""mkdocs hook: the pages that are not files in ``docs/``, and links that leave it.

* ``reference/configuration.md`` and ``reference/api.md``, written from the code (``gen_config_reference.py``,
  ``gen_api_reference.py``);
* ``index.md`` is the README (the tour), so the home page and the repository's front page are one text;
* ``tutorials/<name>.md`` is each ``notebooks/<name>.ipynb``: its Markdown cells, its code cells as Python blocks,
  and after a cell that names a figure committed in ``notebooks/figures/``, that figure (the notebooks are
  committed without outputs, so this is all a rendering would show);
* a link from any page to a repository file outside ``docs/`` (``../recipes/accelerate/fsdp2.yaml``,
  ``../benchmarks/RESULTS.md``) brings that file into the site under ``repo/`` and points there, so the site has
  no dead links and a Markdown file linked that way is rendered and checked like a page. A link to a directory
  or to a file that does not exist is left as it is, and mkdocs reports it.

Links are written as they are on GitHub, relative to the file they are in; this hook rewrites them for the site.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from gen_api_reference import api_page  # beside this file: mkdocs puts docs/ on sys.path while loading a hook
from gen_config_reference import configuration_page
from mkdocs.structure.files import File, InclusionLevel

log = logging.getLogger("mkdocs.hooks.links")

LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # the link syntax tests/test_docs.py checks too
FENCE = re.compile(r"^\s*(```|~~~)")
REPO = "repo"  # where files from outside docs/ go in the site
_origins: dict[str, str] = {}  # site page (src_uri) -> the file its text comes from (absolute path)


def on_files(files: Any, config: Any) -> Any:
    root, docs = _roots(config)
    _origins.clear()
    for file in files.documentation_pages():
        _origins[file.src_uri] = file.abs_src_path
    anchors: dict[type, str] = {}  # config class -> its section of the configuration reference
    for src_uri, content in (("reference/configuration.md", configuration_page(anchors)),
                             ("reference/api.md", api_page(anchors))):  # fmt: skip
        _add(files, config, src_uri, os.path.join(docs, src_uri), content=content)  # as if it were in docs/
    readme = os.path.join(root, "README.md")
    _add(files, config, "index.md", readme, content=_read(readme))
    for notebook in sorted(Path(root, "notebooks").glob("*.ipynb")):
        _add(
            files, config, f"tutorials/{notebook.stem}.md", str(notebook), content=notebook_markdown(notebook)
        )
    # Repository files that pages link to, and the files those link to in turn.
    queue = [(src_uri, files.get_file_from_path(src_uri)) for src_uri in list(_origins)]
    while queue:
        src_uri, file = queue.pop()
        for target in _targets(file.content_string, _origins[src_uri]):
            if os.path.commonpath([target, docs]) == docs or os.path.commonpath([target, root]) != root:
                continue
            site = _site_path(target, root, docs)
            if files.get_file_from_path(site) is None and os.path.isfile(target):
                added = _add(files, config, site, target)
                if added.is_documentation_page():
                    queue.append((site, added))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    root, docs = _roots(config)
    origin = _origins.get(page.file.src_uri, os.path.join(docs, page.file.src_uri))
    here = posixpath.dirname(page.file.src_uri)

    def relink(match: re.Match) -> str:
        path, anchor = _split(match.group(2))
        if path is None:
            return match.group(0)
        target = os.path.normpath(os.path.join(os.path.dirname(origin), path))
        inside = os.path.commonpath([target, docs]) == docs
        if not inside and not os.path.isfile(target):
            return match.group(0)  # mkdocs reports it: not among the site's files (a directory is not either)
        site = _site_path(target, root, docs)
        return match.group(1) + posixpath.relpath(site, here or ".") + anchor + match.group(3)

    return _outside_fences(markdown, lambda line: LINK.sub(relink, line))


def notebook_markdown(path: Path) -> str:
    """A notebook as a page: Markdown cells as they are, code cells as Python blocks, committed figures."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    figures = path.parent / "figures"
    parts = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        elif cell.cell_type == "code" and cell.source.strip():
            parts.append(f"```python\n{cell.source}\n```")
            for name in re.findall(r"[\"']([\w.-]+\.png)[\"']", cell.source):
                if (figures / name).is_file():
                    parts.append(f"![{name}](figures/{name})")
        if index == 0:  # under the notebook's title
            parts.append(
                f"*This page is the notebook [`notebooks/{path.name}`]({path.name}) without its outputs, and the "
                "figures of a full-mode run; [running the notebooks](../docs/running.md#notebooks) says how to run "
                "it.*"
            )
    return "\n\n".join(parts) + "\n"


def _add(files: Any, config: Any, src_uri: str, origin: str, content: str | None = None) -> File:
    if files.get_file_from_path(src_uri) is not None:
        files.remove(files.get_file_from_path(src_uri))
        log.warning("docs/%s is replaced by the page generated from %s", src_uri, origin)
    inclusion = InclusionLevel.NOT_IN_NAV if src_uri.startswith(f"{REPO}/") else InclusionLevel.UNDEFINED
    if content is None:
        file = File.generated(config, src_uri, abs_src_path=origin, inclusion=inclusion)
    else:
        file = File.generated(config, src_uri, content=content, inclusion=inclusion)
    files.append(file)
    if file.is_documentation_page():
        _origins[src_uri] = origin
    return file


def _targets(markdown: str, origin: str) -> list[str]:
    """The absolute paths of the relative links in ``markdown``, a file at ``origin``."""
    found: list[str] = []

    def collect(line: str) -> str:
        for match in LINK.finditer(line):
            path, _ = _split(match.group(2))
            if path is not None:
                found.append(os.path.normpath(os.path.join(os.path.dirname(origin), path)))
        return line

    _outside_fences(markdown, collect)
    return found


def _split(link: str) -> tuple[str | None, str]:
    """``(path, '#anchor')`` of a relative link to a file; ``(None, '')`` for URLs, absolute paths and anchors."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) or link.startswith(("/", "#")):
        return None, ""
    path, hash_, anchor = link.partition("#")
    return unquote(path), hash_ + anchor


def _roots(config: Any) -> tuple[str, str]:
    """The repository (where mkdocs.yml is) and docs/, as absolute paths."""
    return os.path.dirname(os.path.abspath(config.config_file_path)), os.path.abspath(config.docs_dir)


def _site_path(target: str, root: str, docs: str) -> str:
    if os.path.commonpath([target, docs]) == docs:
        return Path(os.path.relpath(target, docs)).as_posix()
    relative = Path(os.path.relpath(target, root)).as_posix()
    return "index.md" if relative == "README.md" else f"{REPO}/{relative}"


def _outside_fences(markdown: str, change: Any) -> str:
    lines, fence = [], None
    for line in markdown.split("\n"):
        match = FENCE.match(line)
        if match and (fence is None or match.group(1) == fence):
            fence = match.group(1) if fence is None else None
            lines.append(line)
        else:
            lines.append(line if fence else change(line))
    return "\n".join(lines)


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")

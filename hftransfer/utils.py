"""Small filesystem helpers: every file and directory the library writes appears atomically.

A run killed at any moment leaves either the previous or the new version of a file or directory, never a
half-written one: content is written to a temporary sibling and moved into place with ``os.replace``. A full disk
leaves the previous version too, removes the temporary and raises :class:`~hftransfer.errors.DiskFullError` naming
what could not be written (``what``, by default the file's name).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hftransfer.training.disk import writing


def atomic_write(path: str | Path, write: Callable[[str], Any], *, what: str | None = None) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it over ``path``.

    For writers that take a file name (``safetensors.torch.save_file``, ``torch.save``): readers see the old
    file or the whole new one, and a failed write leaves no temporary file behind.

    Raises:
        DiskFullError: no space was left for it (the message names ``what``, by default the file's name).
    """
    path = Path(path)
    with writing(what or path.name, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | Path, text: str, *, what: str | None = None) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, fsync, rename)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write, what=what)


def atomic_write_json(path: str | Path, data: Any, *, what: str | None = None) -> None:
    """Write ``data`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", what=what)


@contextmanager
def atomic_directory(path: str | Path, *, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block succeeds.

    The old directory (if any) is moved aside and deleted only after the new one is in place, so at every moment
    either the old or the new complete directory exists under ``path`` (or under its ``.old`` sibling during the
    two renames; :func:`recover_directory` restores that case).

    Raises:
        DiskFullError: the block ran out of space (the message names ``what``, by default the directory's name);
            the temporary is removed and the old directory is left as it was.
    """
    path = Path(path)
    with writing(what or f"{path.name}/", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_directory(tmp, path)


def replace_directory(src: Path, dst: Path) -> None:
    """Move the finished directory ``src`` to ``dst``, replacing any existing ``dst``."""
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def recover_directory(path: str | Path) -> None:
    """If a previous process died between the two renames of :func:`replace_directory`, restore the old copy."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists() and not path.exists():
        os.replace(old, path)


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete ``.*.tmp`` leftovers of writes that were interrupted."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for leftover in directory.glob(".*.tmp"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def flatten_dict(data: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for trackers that take flat scalars)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_dict(value, name, sep))
        else:
            flat[name] = value
    return flat


def run_main(main: Callable[[], Any]) -> None:
    """Run a recipe's ``main`` and turn user errors into one clear line and exit code 2 instead of a traceback."""
    import sys

    from hftransfer.errors import HFTransferError

    try:
        main()
    except HFTransferError as err:
        _close_progress_bars()
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        _close_progress_bars()
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None


def _close_progress_bars() -> None:
    """Close the bars an error interrupted, so the message starts a line of its own (``error:`` at the start of
    a line is what scripts and the tests look for) instead of trailing a half-drawn bar."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()

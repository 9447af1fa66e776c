"""What an ONNX export directory holds and where one is found; importable without torch or ONNX Runtime.

``hftransfer export RUN_DIR`` writes ``RUN_DIR/onnx/``::

    model.onnx           fp32 graph (``--format onnx``)
    model-int8.onnx      int8 weights of every MatMul, dynamically quantised activations (``--format onnx-int8``)
    config.json          the model's config: label names, maximum length
    tokenizer*.json ...  the tokenizer, so the directory predicts on its own
    crf.safetensors      a ``model.head=crf`` run's transition scores (the graph computes the emissions)
    onnx_export.json     task, graph inputs, the files and the checks made at export (see docs/onnx.md)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

from hftransfer.errors import ConfigError

ONNX_FORMATS = ("onnx", "onnx-int8")
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
META_FILE = "onnx_export.json"
BACKENDS = ("auto", "torch", *ONNX_FORMATS)
INSTALL_HINT = 'ONNX export and inference need the onnx extra: pip install "hftransfer[onnx]"'
# onnxscript is what torch's exporter translates with; onnx and onnxruntime build, quantise and run the graph.
REQUIRED_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def missing_onnx_packages(packages: Iterable[str] = REQUIRED_PACKAGES) -> list[str]:
    """The packages of the ``onnx`` extra that are not installed (found without importing them)."""
    return [name for name in packages if importlib.util.find_spec(name) is None]


def require_onnx(packages: Iterable[str] = REQUIRED_PACKAGES, *, field: str | None = None) -> None:
    """Raise one actionable line when a package of the ``onnx`` extra is missing.

    Raises:
        ConfigError: names ``field`` (a config key) when given, the missing packages and the install command.
    """
    missing = missing_onnx_packages(packages)
    if missing:
        where = f"{field}: " if field else ""
        raise ConfigError(f"{where}{INSTALL_HINT} (missing: {', '.join(missing)})")


def check_formats(formats: Iterable[str], field: str = "--format") -> list[str]:
    """``formats`` without repeats, in the order given.

    Raises:
        ConfigError: an unknown format (naming ``field``), or none at all.
    """
    chosen: list[str] = []
    for name in formats:
        if name not in ONNX_FORMATS:
            raise ConfigError(f"{field}: unknown format {name!r}; use {' or '.join(ONNX_FORMATS)}")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ConfigError(f"{field}: name at least one format ({', '.join(ONNX_FORMATS)})")
    return chosen


def is_onnx_directory(directory: str | Path) -> bool:
    """Whether ``directory`` is an export written by ``hftransfer export``."""
    return (Path(directory) / META_FILE).is_file()


def find_onnx_directory(model: str | Path, backend: str) -> Path:
    """The export directory to predict from with ``backend``: ``model`` itself, ``model/onnx`` (a run directory)
    or ``../onnx`` next to a run's ``model/``.

    Raises:
        ConfigError: no export there, or one without the file of ``backend``; the message says how to make it.
    """
    path = Path(model)
    candidates = [path, path / "onnx", path.parent / "onnx"]
    found = next((candidate for candidate in candidates if is_onnx_directory(candidate)), None)
    run_dir = path.parent if path.name == "model" else path
    make = f"hftransfer export {run_dir} --format {backend}"
    if found is None:
        raise ConfigError(f"{path}: no ONNX export here or in {path / 'onnx'} ({META_FILE}); run `{make}`")
    if not (found / ONNX_FILES[backend]).is_file():
        raise ConfigError(f"{found} holds no {ONNX_FILES[backend]} (backend={backend}); run `{make}`")
    return found


def default_backend(directory: str | Path) -> str:
    """``auto``'s choice: fp32 ONNX for an export directory that has it, else its int8 model; else PyTorch."""
    directory = Path(directory)
    if not is_onnx_directory(directory):
        return "torch"
    return next((fmt for fmt in ONNX_FORMATS if (directory / ONNX_FILES[fmt]).is_file()), "torch")

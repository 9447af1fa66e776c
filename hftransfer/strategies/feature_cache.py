"""Encode a dataset once with a frozen encoder and keep only the vectors a head needs, cached on disk.

A frozen encoder gives the same features every epoch, so training a head on a cache is as exact as running the
encoder each time and many times faster. Token tasks keep only the positions that are labelled or predicted
(first subwords), sequence tasks one pooled vector per row. The cache key hashes everything the vectors depend on
(weights, config, tokenised data, layer choice, pooling), so a stale entry can never be returned.

The encoding itself is :mod:`hftransfer.strategies.feature_encoding`; this module keys, stores and loads its
results. The encoding names are importable from here too, where the frozen strategy and older code import them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from hftransfer.strategies.feature_encoding import (
    IGNORE_INDEX,
    FeatureStore,
    base_encoder,
    encode_features,
    encode_layer_features,
    encoder_features,
    resolve_layer,
)
from hftransfer.utils import atomic_write, atomic_write_json

__all__ = [
    "FORMAT_VERSION",
    "IGNORE_INDEX",
    "KEY_COLUMNS",
    "FeatureStore",
    "base_encoder",
    "cached_features",
    "cached_layer_features",
    "default_cache_dir",
    "encode_features",
    "encode_layer_features",
    "encoder_features",
    "feature_cache_key",
    "feature_cache_keys",
    "hash_features",
    "hash_state",
    "load_store",
    "resolve_layer",
    "save_store",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the stored layout or the meaning of a key changes
KEY_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels", "word_index", "example_id")


def hash_state(digest: Any, module: torch.nn.Module) -> None:
    """Feed every weight byte of ``module`` to ``digest``, in sorted name order."""
    # Exact identity; hashing the weights is far cheaper than the encoding or inference that a key stands for.
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())  # buffer protocol: no copy


def hash_features(digest: Any, features: Dataset) -> None:
    """Feed the tokenised columns of ``features`` (ids, masks, labels, word alignment) to ``digest``."""
    columns = [name for name in KEY_COLUMNS if name in features.column_names]
    digest.update(f"rows={len(features)}|{columns}".encode())
    for batch in features.select_columns(columns).iter(batch_size=1024):
        for name in columns:
            values = batch[name]
            # Float labels (regression targets, multi-hot rows) are hashed as floats: as integers 3.5 and 3.7 would
            # share a key, and a cached store would bring back the other run's labels.
            dtype = np.float64 if _holds_floats(values) else np.int64
            if values and isinstance(values[0], list):
                # Lengths keep row boundaries in the hash: [1, 2] + [3] must differ from [1] + [2, 3].
                digest.update(np.fromiter((len(v) for v in values), dtype=np.int64).tobytes())
                digest.update(np.fromiter(itertools.chain.from_iterable(values), dtype=dtype).tobytes())
            else:
                digest.update(np.asarray(values, dtype=dtype).tobytes())


def _holds_floats(values: list) -> bool:
    first = values[0] if values else None
    if isinstance(first, list):
        first = first[0] if first else None
    return isinstance(first, float)


def feature_cache_key(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    *,
    layer: int,
    num_layers: int,
    pooling: str | None,
    task: str,
) -> str:
    """sha256 hex of everything the encoded features depend on.

    The tokenised columns stand for both the data and the tokenisation settings (max_length, windows, label
    alignment). The layer is hashed as an absolute index so ``-1`` and ``L`` share an entry, and pooling only for
    sequence tasks, where it is used.
    """
    return feature_cache_keys(
        encoder, tokenizer, features, [(layer, num_layers)], pooling=pooling, task=task
    )[0]


def feature_cache_keys(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    choices: list[tuple[int, int]],
    *,
    pooling: str | None,
    task: str,
) -> list[str]:
    """:func:`feature_cache_key` of each ``(layer, num_layers)`` choice; the weights and data are hashed once."""
    encoder = base_encoder(encoder)
    config = {k: v for k, v in encoder.config.to_dict().items() if not k.startswith("_")}
    for volatile in ("transformers_version", "id2label", "label2id", "architectures"):
        config.pop(volatile, None)
    shared = {
        "version": FORMAT_VERSION,
        "task": task,
        "pooling": None if task == "token-classification" else pooling,
        "tokenizer": type(tokenizer).__name__,
        "config": config,
    }
    digest = hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode())
    hash_state(digest, encoder)
    hash_features(digest, features)
    keys = []
    for layer, num_layers in choices:
        index = resolve_layer(layer, encoder.config.num_hidden_layers, num_layers)
        choice = digest.copy()
        choice.update(json.dumps({"layer": index, "num_layers": num_layers}).encode())
        keys.append(choice.hexdigest())
    return keys


def _tensors(store: FeatureStore) -> dict[str, torch.Tensor]:
    names = ("vectors", "offsets", "labels", "example_id", "word_index")
    return {n: getattr(store, n).contiguous() for n in names if getattr(store, n) is not None}


def save_store(store: FeatureStore, path: str | Path) -> None:
    """Write ``store`` to ``path`` (safetensors) and ``path.json`` (metadata), each atomically.

    The JSON is written last and carries the key that the tensors' header repeats, so a reader never pairs the
    metadata of one write with the tensors of another.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _tensors(store)
    meta = {"version": FORMAT_VERSION, "key": store.key, "task": store.task, "info": store.info}
    meta["shapes"] = {name: list(t.shape) for name, t in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"key": store.key}))
    atomic_write_json(path.with_suffix(".json"), meta)


def load_store(path: str | Path, key: str | None = None) -> FeatureStore | None:
    """The store at ``path``, or None when it is missing, unreadable, corrupt or (given ``key``) another key's."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(path)
        with safe_open(path, "pt") as handle:  # the key written into the tensors' own header
            header_key = (handle.metadata() or {}).get("key")
        if meta["version"] != FORMAT_VERSION or (key is not None and meta["key"] != key):
            raise ValueError(f"version/key mismatch ({meta['version']}, {meta['key'][:12]})")
        if header_key != meta["key"]:
            raise ValueError("tensors and metadata come from different writes")
        if {n: list(t.shape) for n, t in tensors.items()} != meta["shapes"]:
            raise ValueError("tensor shapes differ from the metadata")
        store = FeatureStore(task=meta["task"], key=meta["key"], info=meta["info"], **tensors)
        if store.offsets[-1] != len(store.vectors) or len(store.offsets) != store.rows + 1:
            raise ValueError("offsets do not match the stored vectors")
        return store
    except Exception as err:  # any damage means "recompute", never a crash
        logger.warning("feature cache %s is unreadable (%s); recomputing", path, err)
        return None


def default_cache_dir() -> Path:
    """``$HFTRANSFER_CACHE`` or ``~/.cache/hftransfer/features``."""
    return Path(os.environ.get("HFTRANSFER_CACHE") or Path.home() / ".cache" / "hftransfer" / "features")


def cached_features(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    *,
    cache_dir: str | Path | None = None,
    layer: int = -1,
    num_layers: int = 1,
    pooling: str | None = "mean",
    task: str,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    use_cache: bool = True,
) -> tuple[FeatureStore, bool]:
    """Encoded features from ``cache_dir/<key>.safetensors``, or encode them (and cache unless ``use_cache`` is
    False). Returns ``(store, hit)``. In multi-process runs call it under ``accelerator.main_process_first()``."""
    stores, hits = cached_layer_features(
        encoder,
        tokenizer,
        features,
        [(layer, num_layers)],
        cache_dir=cache_dir,
        pooling=pooling,
        task=task,
        batch_size=batch_size,
        device=device,
        use_cache=use_cache,
    )
    return stores[0], hits[0]


def cached_layer_features(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    choices: list[tuple[int, int]],
    *,
    cache_dir: str | Path | None = None,
    pooling: str | None = "mean",
    task: str,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    use_cache: bool = True,
) -> tuple[list[FeatureStore], list[bool]]:
    """The stores of several ``(layer, num_layers)`` choices: cached ones are read, the others encoded together in
    one pass over the data. Returns ``(stores, hits)`` in the order of ``choices``."""
    options = {"pooling": pooling, "task": task, "batch_size": batch_size, "device": device}
    if not use_cache:
        return encode_layer_features(encoder, tokenizer, features, choices=choices, **options), [False] * len(
            choices
        )
    keys = feature_cache_keys(encoder, tokenizer, features, choices, pooling=pooling, task=task)
    root = Path(cache_dir or default_cache_dir())
    stores = [load_store(root / f"{key}.safetensors", key) for key in keys]
    hits = [store is not None for store in stores]
    missing = [i for i, store in enumerate(stores) if store is None]
    if len(choices) == 1:
        logger.info("feature cache %s: %s", "hit" if hits[0] else "miss", root / f"{keys[0]}.safetensors")
    else:
        logger.info("feature cache in %s: %d of %d layer choices hit", root, sum(hits), len(choices))
    if missing:
        encoded = encode_layer_features(
            encoder, tokenizer, features, choices=[choices[i] for i in missing], **options
        )
        for i, store in zip(missing, encoded):
            store.key = keys[i]
            save_store(store, root / f"{keys[i]}.safetensors")
            stores[i] = store
    return stores, hits

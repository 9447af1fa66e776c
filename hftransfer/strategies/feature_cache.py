"""Encode a dataset once with a frozen encoder and keep only the vectors a head needs, cached on disk.

A frozen encoder gives the same features every epoch, so training a head on a cache is as exact as running the
encoder each time and many times faster. Token tasks keep only the positions that are labelled or predicted
(first subwords), sequence tasks one pooled vector per row. The cache key hashes everything the vectors depend on
(weights, config, tokenised data, layer choice, pooling), so a stale entry can never be returned.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from hftransfer.data.batching import FeatureCollator, LengthSortedSampler, feature_lengths
from hftransfer.utils import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
FORMAT_VERSION = 1  # bump when the stored layout or the meaning of a key changes
KEY_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "labels", "word_index", "example_id")


@dataclass
class FeatureStore:
    """Encoded features of one split; row ``i`` owns ``vectors[offsets[i]:offsets[i + 1]]``.

    Token tasks keep one vector per labelled or predicted position, with its ``labels`` and ``word_index``;
    sequence tasks keep one pooled vector per row (``offsets`` is then ``0..rows``) and a label per row.
    """

    task: str
    vectors: torch.Tensor  # [positions, hidden] float32
    offsets: torch.Tensor  # [rows + 1] int64
    labels: torch.Tensor  # [positions] (token) or [rows] (sequence); -100 = no label
    example_id: torch.Tensor  # [rows]
    word_index: torch.Tensor | None = None  # [positions], token tasks only
    key: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # layer, num_layers, pooling

    @property
    def rows(self) -> int:
        return len(self.example_id)

    @property
    def lengths(self) -> list[int]:
        return (self.offsets[1:] - self.offsets[:-1]).tolist()


def base_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder of a (possibly task-headed) Hugging Face model."""
    return getattr(model, "base_model", model)


def resolve_layer(layer: int, num_hidden_layers: int, num_layers: int = 1) -> int:
    """Absolute hidden-state index (0 = embeddings, L = last layer) of ``layer``; negative counts from the top.

    Raises:
        ValueError: the index, or the ``num_layers`` averaged below it, falls outside ``0..L``.
    """
    index = layer if layer >= 0 else num_hidden_layers + 1 + layer
    if not 0 <= index <= num_hidden_layers or index - num_layers + 1 < 0:
        raise ValueError(
            f"feature_layer={layer} with feature_layers={num_layers} needs hidden states outside 0..{num_hidden_layers}"
        )
    return index


def encoder_features(
    encoder: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    layer: int,
    num_layers: int,
    pooling: str | None,
    task: str,
) -> torch.Tensor:
    """Run ``encoder`` and return ``[batch, seq, hidden]`` (token task) or pooled ``[batch, hidden]`` features."""
    encoder = base_encoder(encoder)
    index = resolve_layer(layer, encoder.config.num_hidden_layers, num_layers)
    kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    # DistilBERT-style encoders have no segment embeddings and reject the argument.
    if "token_type_ids" in inputs and "token_type_ids" in inspect.signature(encoder.forward).parameters:
        kwargs["token_type_ids"] = inputs["token_type_ids"]
    hidden_states = encoder(**kwargs, output_hidden_states=True, return_dict=True).hidden_states
    chosen = hidden_states[index - num_layers + 1 : index + 1]
    hidden = chosen[0].float() if num_layers == 1 else torch.stack(chosen).float().mean(dim=0)
    if task == "token-classification":
        return hidden  # [batch, seq, hidden]
    mask = inputs["attention_mask"]
    if pooling == "cls":
        # First attended position: index 0 with right padding, still the [CLS] token with left padding.
        first = mask.long().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


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
            if values and isinstance(values[0], list):
                # Lengths keep row boundaries in the hash: [1, 2] + [3] must differ from [1] + [2, 3].
                digest.update(np.fromiter((len(v) for v in values), dtype=np.int64).tobytes())
                digest.update(np.fromiter(itertools.chain.from_iterable(values), dtype=np.int64).tobytes())
            else:
                digest.update(np.asarray(values, dtype=np.int64).tobytes())


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
    encoder = base_encoder(encoder)
    config = {k: v for k, v in encoder.config.to_dict().items() if not k.startswith("_")}
    for volatile in ("transformers_version", "id2label", "label2id", "architectures"):
        config.pop(volatile, None)
    index = resolve_layer(layer, encoder.config.num_hidden_layers, num_layers)
    digest = hashlib.sha256()
    choice = {
        "version": FORMAT_VERSION,
        "task": task,
        "layer": index,
        "num_layers": num_layers,
        "pooling": None if task == "token-classification" else pooling,
        "tokenizer": type(tokenizer).__name__,
        "config": config,
    }
    digest.update(json.dumps(choice, sort_keys=True, default=str).encode())
    hash_state(digest, encoder)
    hash_features(digest, features)
    return digest.hexdigest()


def encode_features(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    *,
    layer: int,
    num_layers: int = 1,
    pooling: str | None = "mean",
    task: str,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> FeatureStore:
    """Encode every row of ``features`` (longest first, so batches pad little) into a :class:`FeatureStore`.

    ``device``: where to run (the encoder is moved there); None keeps the encoder where it is.
    """
    encoder = base_encoder(encoder)
    if device is not None:
        encoder.to(device)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    collator = FeatureCollator(tokenizer)
    order = list(LengthSortedSampler(feature_lengths(features)))
    token_task = task == "token-classification"
    index = resolve_layer(layer, encoder.config.num_hidden_layers, num_layers)
    rows: dict[int, tuple[torch.Tensor, ...]] = {}
    chunks = range(0, len(order), batch_size)
    for start in tqdm(chunks, desc=f"Encoding features (hidden state {index}, frozen encoder)", leave=False):
        indices = order[start : start + batch_size]
        batch = features[indices]
        batch = collator([dict(zip(batch, values)) for values in zip(*batch.values())])
        inputs = {
            k: v.to(device)
            for k, v in batch.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        with torch.inference_mode():
            out = encoder_features(
                encoder, inputs, layer=layer, num_layers=num_layers, pooling=pooling, task=task
            ).cpu()
        labels = batch.get("labels")
        if labels is None:  # prediction data without labels
            labels = torch.full(batch["input_ids"].shape[: 2 if token_task else 1], IGNORE_INDEX)
        for i, row in enumerate(indices):
            if token_task:
                word_index = batch["word_index"][i]
                keep = (word_index >= 0) | (labels[i] != IGNORE_INDEX)
                rows[row] = (out[i][keep], labels[i][keep], word_index[keep])
            else:
                rows[row] = (out[i : i + 1], labels[i : i + 1])
    encoder.train(was_training)
    # Assembled outside inference mode (torch.cat makes ordinary tensors), so a head can train on them.
    parts = [rows[row] for row in range(len(features))]
    counts = torch.tensor([0] + [len(part[0]) for part in parts], dtype=torch.long)
    hidden = encoder.config.hidden_size
    return FeatureStore(
        task=task,
        vectors=torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, hidden),
        offsets=counts.cumsum(0),
        labels=torch.cat([p[1] for p in parts]).long() if parts else torch.zeros(0, dtype=torch.long),
        word_index=torch.cat([p[2] for p in parts]).long() if token_task and parts else None,
        example_id=torch.tensor(features["example_id"][:], dtype=torch.long),
        info={"layer": index, "num_layers": num_layers, "pooling": None if token_task else pooling},
    )


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
    options = {"layer": layer, "num_layers": num_layers, "pooling": pooling, "task": task}
    if not use_cache:
        store = encode_features(encoder, tokenizer, features, batch_size=batch_size, device=device, **options)
        return store, False
    key = feature_cache_key(encoder, tokenizer, features, **options)
    path = Path(cache_dir or default_cache_dir()) / f"{key}.safetensors"
    store = load_store(path, key)
    if store is not None:
        logger.info("feature cache hit: %s", path)
        return store, True
    logger.info("feature cache miss: %s", path)
    store = encode_features(encoder, tokenizer, features, batch_size=batch_size, device=device, **options)
    store.key = key
    save_store(store, path)
    return store, False

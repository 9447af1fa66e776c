"""Rebuild a Hugging Face ``BertModel`` checkpoint from a BERT encoder that ships only as an ONNX graph.

``minilm-l3`` (paraphrase-MiniLM-L3-v2) is packaged as a single ``.onnx`` file, exported from sentence-transformers
with TorchScript-based ``torch.onnx.export``. :func:`bert_from_onnx` reads the weights back out of the graph, infers
the ``BertConfig`` from it, saves ``config.json``, ``model.safetensors`` and a tokenizer, and keeps the directory only
if the rebuilt model reproduces the graph's outputs under ONNX Runtime.

How the graph maps onto ``BertModel``:

- Embedding tables, LayerNorm weights and every bias keep their parameter names behind the exporter's module prefix
  (``model.0.auto_model.`` for a sentence-transformers model). The prefix is whatever precedes
  ``embeddings.word_embeddings.weight``, the table that the ``input_ids`` input indexes.
- Every Linear weight is folded into an anonymous initializer stored transposed, ``[in, out]``
  (``onnx::MatMul_470``), that feeds a MatMul. The Add right after that MatMul adds the layer's named bias
  (``...attention.self.query.bias``), which names the weight (``...attention.self.query.weight``, transposed back).
  A MatMul fed by a Transpose of a named ``[out, in]`` weight, and a Gemm with its bias as third input, map alike.
- Config: vocabulary, hidden size, maximum positions and token types come from the embedding tables; layers and
  the intermediate size from the bias names and shapes; ``layer_norm_eps`` from the LayerNormalization nodes
  (1e-12, BERT's value, when layer norm is decomposed); the activation must be the exact GELU (an Erf node).
  The number of heads is read from the constant target shape of the Reshape that splits the query into heads,
  ``[batch, seq, heads, head_dim]`` or ``[batch, seq, -1, head_dim]``: heads = hidden / head_dim. Assuming
  head_dim 64 would be wrong here: MiniLM's 384-wide layers have 12 heads of 32.
- Dropout rates are not in an inference graph; BERT's defaults are kept. A graph without the pooler (sentence
  encoders do not use it) gives a checkpoint without one: models that read ``pooler_output`` (BERT's sequence
  classifier) start it from scratch, as transformers' load report says.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hftransfer.errors import AssetError
from hftransfer.modeling.onnx_graph import BertGraph, infer_config, not_bert, read_weights
from hftransfer.modeling.onnx_import_check import TOLERANCE, VERIFY_SENTENCES, verify_against_onnx
from hftransfer.utils import atomic_directory

__all__ = [
    "INSTALL_HINT",
    "RECORD_FILE",
    "TOLERANCE",
    "VERIFY_SENTENCES",
    "bert_from_onnx",
    "verify_against_onnx",
]

logger = logging.getLogger("hftransfer")

REQUIRED_PACKAGES = ("onnx", "onnxruntime")
INSTALL_HINT = "converting an ONNX encoder needs the onnx extra: pip install 'hftransfer[onnx]'"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)
RECORD_FILE = "onnx_import.json"  # what was converted and how closely the result matched the graph


def missing_packages() -> list[str]:
    """The packages that a conversion needs and that are not installed (found without importing them)."""
    return [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]


def _build_model(weights: dict[str, np.ndarray], options: dict[str, Any], path: Path) -> Any:
    """A BertModel holding exactly the graph's weights (with a pooler only when the graph has one)."""
    import torch
    from transformers import BertConfig, BertModel

    with_pooler = "pooler.dense.weight" in weights and "pooler.dense.bias" in weights
    model = BertModel(BertConfig(**options), add_pooling_layer=with_pooler)
    expected = model.state_dict()
    missing = [name for name in expected if name not in weights]
    if missing:
        raise not_bert(path, f"{len(missing)} BertModel weights are not in the graph, e.g. {missing[:3]}")
    wrong = [
        f"{name} {list(weights[name].shape)}"
        for name, t in expected.items()
        if weights[name].shape != t.shape
    ]
    if wrong:
        raise not_bert(path, f"weights of unexpected shape: {', '.join(wrong[:3])}")
    model.load_state_dict({name: torch.from_numpy(np.array(weights[name])) for name in expected})  # copies
    return model.eval()


def _copy_tokenizer(tokenizer_dir: Path, output_dir: Path) -> None:
    files = [tokenizer_dir / name for name in TOKENIZER_FILES if (tokenizer_dir / name).is_file()]
    if not any(file.name in ("tokenizer.json", "vocab.txt") for file in files):
        raise AssetError(f"{tokenizer_dir} holds no tokenizer (tokenizer.json or vocab.txt)")
    for file in files:
        shutil.copyfile(file, output_dir / file.name)


def _make_readable(directory: Path) -> None:
    """The temporary directory and safetensors' file are private (0700 / 0600); a checkpoint is not."""
    directory.chmod(0o755)
    for file in directory.iterdir():
        file.chmod(0o644)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Transformers draws a bar for every save and load; a conversion is one step of whatever runs it."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def bert_from_onnx(
    onnx_path: str | Path, tokenizer_dir: str | Path, output_dir: str | Path, *, atol: float = TOLERANCE
) -> Path:
    """Convert a BERT encoder's ONNX graph into a ``BertModel`` checkpoint directory, verified against the graph.

    ``output_dir`` receives ``config.json``, ``model.safetensors``, the tokenizer files of ``tokenizer_dir`` and
    ``onnx_import.json`` (source, inferred config, verification result). Everything is written into a temporary
    sibling that replaces ``output_dir`` only after the check passed: on any error nothing is left there.

    Args:
        onnx_path: the ``.onnx`` file (exported from a ``BertModel``, possibly inside a sentence-transformers model).
        tokenizer_dir: a directory with the matching tokenizer (``tokenizer.json`` and/or ``vocab.txt``); its
            vocabulary size must equal the graph's word-embedding rows.
        output_dir: the checkpoint directory to write (replaced if it exists).
        atol: the largest max-abs difference accepted between ONNX Runtime and the converted model.

    Returns:
        ``output_dir``, loadable with ``AutoModel``/``AutoTokenizer``/``AutoModelFor*.from_pretrained``.

    Raises:
        AssetError: onnx or onnxruntime is not installed, the file is missing or not an ONNX model, the graph is
            not a BERT encoder, the tokenizer does not fit, or the converted model does not reproduce the graph.
    """
    missing = missing_packages()
    if missing:
        raise AssetError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
    import onnx

    onnx_path, tokenizer_dir, output_dir = Path(onnx_path), Path(tokenizer_dir), Path(output_dir)
    if not onnx_path.is_file():
        raise AssetError(f"ONNX file {onnx_path} does not exist")
    started = time.perf_counter()
    try:
        graph = BertGraph(onnx.load(str(onnx_path)))
    except Exception as err:  # protobuf's DecodeError and friends: the bytes are not an ONNX model
        raise AssetError(f"{onnx_path} is not a readable ONNX model ({type(err).__name__}: {err})") from None
    weights = read_weights(graph, onnx_path)
    options = infer_config(graph, weights, onnx_path)
    model = _build_model(weights, options, onnx_path)
    from transformers import AutoTokenizer

    with _no_progress_bars(), atomic_directory(output_dir) as tmp:
        _copy_tokenizer(tokenizer_dir, tmp)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        if len(tokenizer) != options["vocab_size"]:
            raise AssetError(
                f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens but the graph's word embeddings "
                f"have {options['vocab_size']} rows: it is not this model's tokenizer"
            )
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        try:
            check = verify_against_onnx(onnx_path, tmp, atol)
        except AssetError:
            raise
        except Exception as err:  # ONNX Runtime refusing the graph, for one
            raise AssetError(f"{onnx_path}: the converted model could not be verified ({err})") from None
        record = {
            "source": onnx_path.name,
            "source_bytes": onnx_path.stat().st_size,
            "tokenizer_from": str(tokenizer_dir),
            "config": options,
            "pooler": model.pooler is not None,
            "verification": check,
            "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _make_readable(tmp)
    worst = max(entry["max_abs_diff"] for entry in check["outputs"].values())
    logger.info("converted %s into %s (max abs difference %.1e)", onnx_path.name, output_dir, worst)
    return output_dir

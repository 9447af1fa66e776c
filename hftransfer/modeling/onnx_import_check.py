"""The check that makes an ONNX-to-BertModel conversion trustworthy (:mod:`hftransfer.modeling.onnx_import`): ONNX
Runtime and the rebuilt model run the same padded sentences, and every float output of the graph must match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hftransfer.errors import AssetError

TOLERANCE = 1e-4  # max abs difference allowed between ONNX Runtime's and the rebuilt model's outputs
# Different lengths, so padding and the attention mask are part of the check.
VERIFY_SENTENCES = (
    "Transfer learning adapts a pretrained encoder to a new task.",
    "A man is playing a guitar.",
    "Short one.",
)


def verify_against_onnx(
    onnx_path: str | Path, model_dir: str | Path, atol: float = TOLERANCE
) -> dict[str, Any]:
    """Run ONNX Runtime and the saved BertModel on :data:`VERIFY_SENTENCES` and compare every float output.

    A ``[batch, seq, hidden]`` output is compared with ``last_hidden_state``; a ``[batch, hidden]`` one with the
    closest of mean pooling over the attention mask, the [CLS] vector and ``pooler_output``.

    Returns:
        ``{"tolerance", "outputs": {name: {"matches", "max_abs_diff"}}}``.

    Raises:
        AssetError: a difference above ``atol``, no ``[batch, seq, hidden]`` output, or a graph input that the
            tokenizer does not produce.
    """
    import onnxruntime
    import torch
    from transformers import AutoTokenizer, BertModel

    model_dir = Path(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=_has_pooler(model_dir)).eval()
    batch = tokenizer(list(VERIFY_SENTENCES), padding=True, return_tensors="np")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {}
    for graph_input in session.get_inputs():
        if graph_input.name not in batch:
            raise AssetError(
                f"{onnx_path}: graph input {graph_input.name!r} is not something a tokenizer produces"
            )
        dtype = np.int32 if graph_input.type == "tensor(int32)" else np.int64
        feeds[graph_input.name] = batch[graph_input.name].astype(dtype)
    expected = session.run(None, feeds)
    with torch.no_grad():
        out = model(**{name: torch.from_numpy(value.astype(np.int64)) for name, value in feeds.items()})
    hidden = out.last_hidden_state.numpy()  # [batch, seq, hidden]
    mask = batch["attention_mask"][..., None].astype(np.float32)  # [batch, seq, 1]
    sentence_candidates = {
        "mean pooling": (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None),  # [batch, hidden]
        "[CLS]": hidden[:, 0],
    }
    if out.pooler_output is not None:
        sentence_candidates["pooler_output"] = out.pooler_output.numpy()
    compared: dict[str, dict[str, Any]] = {}
    for meta, value in zip(session.get_outputs(), expected):
        if value.dtype.kind != "f":
            continue  # e.g. the input ids passed through
        if value.shape == hidden.shape:
            compared[meta.name] = {"matches": "last_hidden_state", "max_abs_diff": _diff(value, hidden)}
        elif value.shape == (hidden.shape[0], hidden.shape[2]):
            label = min(sentence_candidates, key=lambda key: _diff(value, sentence_candidates[key]))
            compared[meta.name] = {"matches": label, "max_abs_diff": _diff(value, sentence_candidates[label])}
    if not any(entry["matches"] == "last_hidden_state" for entry in compared.values()):
        raise AssetError(
            f"{onnx_path}: no graph output of shape [batch, seq, hidden] to verify the conversion with"
        )
    for name, entry in compared.items():
        if entry["max_abs_diff"] > atol:
            raise AssetError(
                f"{onnx_path}: the converted model differs from the graph's output {name!r} "
                f"({entry['matches']}) by {entry['max_abs_diff']:.2e}, more than {atol:g}; nothing was kept"
            )
    return {"tolerance": atol, "outputs": compared}


def _has_pooler(model_dir: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "np") as weights:
        return "pooler.dense.weight" in list(weights.keys())


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))

"""ONNX Runtime behind the interface of a transformers classifier, so that :class:`~hftransfer.predict.Predictor`
predicts from an ONNX export with its own windows, batching, word alignment and entity spans.

:class:`OnnxModel` is called like the model it was exported from (``model(input_ids=..., attention_mask=...)``,
returning an object with ``.logits``), which is all :func:`hftransfer.evaluation.inference.run_inference` asks of
a model. ONNX Runtime runs on the CPU whatever device the batches are on; the logits go back to that device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig

from hftransfer.export.onnx_layout import META_FILE, ONNX_FILES, find_onnx_directory, require_onnx


@dataclass
class OnnxOutput:
    logits: torch.Tensor  # [batch, seq, num_labels] or [batch, num_labels]


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options: ``threads`` intra-op threads (default: torch's, so both runtimes use the same cores),
    one inter-op thread (these graphs are a chain of ops with nothing to run side by side), all graph
    optimisations (ORT fuses LayerNorm, GELU and the attention's MatMul + Add when it loads the graph)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxModel(torch.nn.Module):
    """An ONNX Runtime session called like a transformers token or sequence classifier.

    Args:
        path: the ``.onnx`` file.
        config: the exported model's config (label names; ``max_position_embeddings`` bounds the windows).
        threads: intra-op threads (default: ``torch.get_num_threads()`` when the session is made).
    """

    def __init__(self, path: str | Path, config: PretrainedConfig, *, threads: int | None = None) -> None:
        super().__init__()
        require_onnx(("onnxruntime",))
        import onnxruntime as ort

        self.path = Path(path)
        self.config = config
        self.session = ort.InferenceSession(
            str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = [node.name for node in self.session.get_inputs()]

    def forward(self, input_ids: torch.Tensor, **inputs: torch.Tensor) -> OnnxOutput:
        inputs["input_ids"] = input_ids
        feeds = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None:  # a graph input the batch lacks (BERT's segment ids): the model's own default
                value = (
                    torch.ones_like(input_ids) if name == "attention_mask" else torch.zeros_like(input_ids)
                )
            feeds[name] = value.detach().to("cpu", torch.int64).numpy()
        (logits,) = self.session.run(["logits"], feeds)
        return OnnxOutput(torch.from_numpy(logits).to(input_ids.device))


def read_export_meta(directory: str | Path) -> dict[str, Any]:
    """The ``onnx_export.json`` of an export directory (task, inputs, files, checks)."""
    return json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))


def load_onnx_model(model: str | Path, backend: str) -> tuple[OnnxModel, str, Path]:
    """The model of an ONNX export for ``backend`` (``onnx`` or ``onnx-int8``), its task and its directory.

    ``model`` is the export directory, a run directory holding ``onnx/``, or a run's ``model/``.

    Raises:
        ConfigError: ONNX Runtime is not installed, or there is no such export (the message says how to make it).
    """
    require_onnx(("onnxruntime",))
    directory = find_onnx_directory(model, backend)
    meta = read_export_meta(directory)
    config = AutoConfig.from_pretrained(directory)
    return OnnxModel(directory / ONNX_FILES[backend], config), meta["task"], directory

"""Export a run's model to ONNX for CPU inference with ONNX Runtime: fp32 (``onnx``) and int8 (``onnx-int8``).

    hftransfer export runs/ner                                   # runs/ner/onnx/: model.onnx, model-int8.onnx
    hftransfer predict runs/ner/onnx tweets.txt out.jsonl        # ONNX Runtime (--backend onnx-int8 for int8)

The graph is traced by torch's exporter, ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript; the
TorchScript exporter is deprecated), with the batch and sequence dimensions dynamic, so one file serves every
batch size and window length. int8 is ONNX Runtime's dynamic quantisation of every MatMul with a weight: int8
weights per output channel, activations quantised per call. torch's own ``quantize_dynamic``
(``torch.ao.quantization``) warns that it is deprecated in torch 2.13 and points to torchao, which is no
dependency of ours, and its output does not export to ONNX anyway. A peft adapter is merged into the weights first.

Everything lands in one directory, replaced atomically (see :mod:`hftransfer.export.onnx_layout`), with the checks
of :mod:`hftransfer.export.onnx_check` in ``onnx_export.json``; an export that fails a check is still written, and
its report and a warning say what it lost.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from hftransfer.errors import ConfigError
from hftransfer.export.onnx_check import check_export, summary_lines
from hftransfer.export.onnx_layout import META_FILE, ONNX_FILES, ONNX_FORMATS, check_formats, require_onnx
from hftransfer.modeling.crf import CRF_FILE
from hftransfer.utils import atomic_directory, atomic_write_json

logger = logging.getLogger(__name__)

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Per-channel scales keep a row with small weights from losing its precision to a row with large ones; 7-bit
# weights (reduce_range) avoid the int16 overflow of u8 x s8 products on AVX2 CPUs without VNNI. Measured on
# MiniLM-L6 WNUT-16 NER: see docs/onnx.md.
QUANTIZATION = {"op_types_to_quantize": ["MatMul"], "per_channel": True, "reduce_range": True}


def locate_model(source: str | Path) -> tuple[Path, Path | None]:
    """``(model directory, run directory or None)`` of a run directory, a run's ``model/`` or a model directory.

    Raises:
        ConfigError: ``source`` holds no model (the message names the path).
    """
    path = Path(source)
    if (path / "model").is_dir():
        return path / "model", path
    if any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
        run_dir = path.parent if (path.parent / "config.yaml").is_file() else None
        return path, run_dir
    raise ConfigError(
        f"{path}: no model to export (expected a run directory with model/, or a model directory with "
        "config.json or adapter_config.json)"
    )


def load_exportable(model_dir: Path) -> tuple[torch.nn.Module, str, bool]:
    """The model of ``model_dir`` as one plain module, its task, and whether an adapter was merged into it.

    Raises:
        ConfigError: an adapter that cannot be merged (prompt learning has no weights to fold into).
    """
    from hftransfer.export.peft_adapter import can_merge, is_peft_model, merge_adapter
    from hftransfer.loading import load_for_prediction

    model, task = load_for_prediction(str(model_dir))
    merged = can_merge(model)
    if merged:
        model = merge_adapter(model)
    elif is_peft_model(model):
        raise ConfigError(
            f"{model_dir}: this adapter cannot be merged into the encoder, so it cannot be exported"
        )
    return model.eval(), task, merged


class LogitsOnly(torch.nn.Module):
    """The classifier with the plain signature the exporter traces: tensors in, logits out."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.model(**inputs).logits  # [batch, seq, num_labels] or [batch, num_labels]


def export_graph(model: torch.nn.Module, tokenizer: Any, path: Path) -> dict[str, Any]:
    """Trace ``model`` to an fp32 ONNX file at ``path``; returns its inputs and opset."""
    # BERT-like tokenizers make segment ids, RoBERTa-like ones do not: the graph takes what the tokenizer makes
    names = [name for name in GRAPH_INPUTS if name != "token_type_ids" or name in tokenizer.model_input_names]
    # Two texts of different lengths: a batch of 1 or a length of 1 would let torch.export specialise on it.
    encoded = tokenizer(["alice lives in paris .", "a very good film"], padding=True, return_tensors="pt")
    args = tuple(encoded[name] for name in names)
    module = LogitsOnly(model).eval()  # a new module trains by default; dropout must be off when tracing
    with warnings.catch_warnings(), quiet_loggers("torch.onnx", "onnx_ir", "onnxscript"):
        # the exporter's internal deprecation notices and pass-by-pass log: not the user's to act on
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            input_names=names,
            output_names=["logits"],
            dynamic_shapes=tuple({0: "batch", 1: "sequence"} for _ in names),
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))
    opset = next((entry.version for entry in program.model_proto.opset_import if entry.domain == ""), None)
    return {"inputs": names, "opset": opset}


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of ``source`` into ``target`` (see :data:`QUANTIZATION`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_loggers("root"):  # ORT logs a hint about static-quantisation pre-processing on the root logger
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, **QUANTIZATION)


def export_onnx(
    source: str | Path,
    formats: Sequence[str] = ONNX_FORMATS,
    *,
    output_dir: str | Path | None = None,
    check: bool = True,
    check_examples: int | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Export the model of a run (or a model directory) to ONNX, check it, and write the directory atomically.

    Args:
        source: a run directory, a run's ``model/`` (a plain model or a peft adapter) or any model directory.
        formats: ``onnx`` (fp32) and/or ``onnx-int8``.
        output_dir: default ``<run>/onnx``; for a model outside a run, ``<model>-onnx`` next to it.
        check: compare with PyTorch (logits on a sample; predictions and metric on the run's test split).
        check_examples: at most this many test examples in the check (default: all).
        batch_size: examples per forward pass in the test-split check (``hftransfer predict``'s default: int8
            activations are scaled per batch, so the check predicts as prediction will).

    Returns:
        The report written to ``onnx_export.json``, with ``directory`` added.

    Raises:
        ConfigError: the onnx extra is missing, an unknown format, or no model at ``source``.
    """
    require_onnx()
    formats = check_formats(formats)
    model_dir, run_dir = locate_model(source)
    if output_dir is None:  # a model outside a run gets a sibling: its own directory stays a plain HF model
        output_dir = run_dir / "onnx" if run_dir else model_dir.with_name(f"{model_dir.name}-onnx")
    output = Path(output_dir)
    started = time.perf_counter()
    model, task, merged = load_exportable(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    report: dict[str, Any] = {
        "task": task,
        "source": str(model_dir.resolve()),
        "merged_adapter": merged,
        "checks": {},
    }
    with atomic_directory(output, what="the ONNX export") as tmp:
        fp32 = tmp / ONNX_FILES["onnx"]
        report.update(
            export_graph(model, tokenizer, fp32),
            exporter=f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        )
        if "onnx-int8" in formats:
            quantize_int8(fp32, tmp / ONNX_FILES["onnx-int8"])
            report["quantization"] = {"method": "onnxruntime.quantization.quantize_dynamic", **QUANTIZATION}
        if "onnx" not in formats:
            fp32.unlink()
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        crf_scores = model_dir / CRF_FILE
        if (
            crf_scores.is_file()
        ):  # the config says hftransfer_decoding=crf: the export decodes with the same scores
            shutil.copy2(crf_scores, tmp / CRF_FILE)
        report["files"] = {
            fmt: {"file": ONNX_FILES[fmt], "mb": round((tmp / ONNX_FILES[fmt]).stat().st_size / 2**20, 2)}
            for fmt in formats
        }
        report["export_seconds"] = round(time.perf_counter() - started, 2)
        # written before the checks too: the check's Predictor reads the task from it
        atomic_write_json(tmp / META_FILE, {**report, "checks": {}})
        if check:
            report.update(
                check_export(
                    tmp, formats, model, model_dir, run_dir, examples=check_examples, batch_size=batch_size
                )
            )
        report["passed"] = all(entry["passed"] for entry in report["checks"].values()) if check else None
        atomic_write_json(tmp / META_FILE, report)
    report["directory"] = str(output)
    for fmt, entry in report["checks"].items():
        if not entry["passed"]:
            logger.warning("%s export lost: %s (%s)", fmt, "; ".join(entry["lost"]), output / META_FILE)
    return report


def export_after_run(config: Any, run_dir: Path, accelerator: Any, final_metrics: dict[str, Any]) -> None:
    """``export_onnx=[...]`` in a recipe: export the run's saved and scored ``model/`` from the main process; the
    outcome goes to ``metrics.json`` (``onnx``). A failed export keeps the run's results and says how to retry."""
    formats = list(getattr(config, "export_onnx", None) or [])
    if not formats or not accelerator.is_main_process:
        return
    retry = f"hftransfer export {run_dir} " + " ".join(f"--format {fmt}" for fmt in formats)
    if accelerator.num_processes > 1:
        # The checks predict through accelerate, whose state still spans the run's processes: a fresh process must.
        logger.warning(
            "export_onnx: a %d-process run does not export; run `%s`", accelerator.num_processes, retry
        )
        final_metrics["onnx"] = {"skipped": "multi-process run", "retry": retry}
    else:
        try:
            report = export_onnx(run_dir, formats)
        except Exception as err:  # the model and metrics are saved already: keep them, say how to retry
            logger.exception(
                "export_onnx failed; the run's model and metrics are kept; retry with `%s`", retry
            )
            final_metrics["onnx"] = {"error": " ".join(str(err).split())[:300], "retry": retry}
        else:
            for line in summary_lines(report):
                logger.info("ONNX %s", line)
            final_metrics["onnx"] = {
                "directory": report["directory"],
                "passed": report["passed"],
                "lost": {fmt: entry["lost"] for fmt, entry in report["checks"].items() if entry["lost"]},
            }
    atomic_write_json(run_dir / "metrics.json", final_metrics)


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise loggers to ERROR for a block (``root``: the root logger): the exporter and the quantiser log notes
    meant for their own developers."""
    loggers = [logging.getLogger(None if name == "root" else name) for name in names]
    levels = [one.level for one in loggers]
    for one in loggers:
        one.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for one, level in zip(loggers, levels):
            one.setLevel(level)

"""The checks made when a model is exported to ONNX: what the exported graph computes against what PyTorch does.

Two checks per format, each recorded in ``onnx_export.json``:

- **logits**, on a sample of inputs (the run's first test examples, else a few fixed sentences) batched with padding
  as prediction batches them: the largest absolute difference at real (not padded) positions, and how often the
  argmax agrees. fp32 must stay within :data:`LOGIT_TOLERANCE`; int8 weights move logits far more than that by
  design, so for int8 the difference is recorded, not judged.
- **the test split** of the run (read from its ``config.yaml`` as training read it), predicted by
  :class:`~hftransfer.predict.Predictor` with both backends: the share of words (NER) or examples (classification)
  whose prediction agrees, and the headline metric (entity F1 / accuracy) of each. An export must agree on at
  least :data:`MIN_AGREEMENT` of them and change the metric by at most :data:`MAX_METRIC_CHANGE` points.

A failed check does not stop the export: the report lists what the format lost (``lost``) and ``passed`` is false.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.data.features import tokenize
from hftransfer.errors import HFTransferError
from hftransfer.evaluation.inference import model_inputs
from hftransfer.export.onnx_layout import ONNX_FILES

logger = logging.getLogger(__name__)

LOGIT_TOLERANCE = 1e-4
"""fp32 ONNX vs PyTorch: largest absolute logit difference allowed (float32 reassociation stays far below it)."""
MIN_AGREEMENT = 0.99
"""Share of test words (NER) or examples (classification) whose prediction must not change."""
MAX_METRIC_CHANGE = 0.5
"""Largest change of the test metric (entity F1 / accuracy), in points (0-100 scale)."""
SAMPLE_EXAMPLES = 32

# Used when the run has no readable test split: fixed text, long and short, so batches carry padding.
SAMPLE_TEXTS = [
    "alice lives in paris and works near the city of london .",
    "a very good film .",
    "bob visited rome with carol today , and the plot was dull .",
    "oslo",
    "this movie was really awful , but berlin was lovely .",
]


def run_test_split(run_dir: Path | None) -> tuple[Dataset | None, int | None, str | None]:
    """The test split of a single-task run as its training read it: ``(examples, data.max_length, None)``, or
    ``(None, max_length or None, why not)``."""
    from hftransfer.config import load_config_file
    from hftransfer.data.sources import load_task_data

    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return None, None, "not a run directory (no config.yaml): no test split to check on"
    try:
        config = load_config_file(run_dir / "config.yaml")
        splits = load_task_data(config.data, config.task).splits
    except (HFTransferError, OSError) as err:
        return None, None, f"the run's test split could not be read ({' '.join(str(err).split())[:200]})"
    if "test" not in splits:
        return None, config.data.max_length, "the run has no test split"
    return splits["test"], config.data.max_length, None


def sample_examples(task: str, test: Dataset | None) -> Dataset:
    """The inputs of the logits check: the first test examples, else :data:`SAMPLE_TEXTS`."""
    if test is not None and len(test):
        return test.select(range(min(SAMPLE_EXAMPLES, len(test))))
    if task == "token-classification":
        return Dataset.from_dict({"tokens": [text.split() for text in SAMPLE_TEXTS]})
    return Dataset.from_dict({"text": SAMPLE_TEXTS})


def sample_batches(
    examples: Dataset, tokenizer: Any, task: str, max_length: int, batch_size: int = 8
) -> list[dict[str, torch.Tensor]]:
    """``examples`` tokenised and batched exactly as :class:`~hftransfer.predict.Predictor` does (padded)."""
    columns = [name for name in ("tags", "label") if name in examples.column_names]
    features, _ = tokenize(examples.remove_columns(columns), tokenizer, task, None, max_length=max_length)
    loader = build_eval_dataloader(features, FeatureCollator(tokenizer), batch_size=batch_size)
    return [model_inputs(batch) for batch in loader]


@torch.inference_mode()
def compare_logits(
    reference: torch.nn.Module, exported: torch.nn.Module, batches: list[dict[str, torch.Tensor]]
) -> dict[str, Any]:
    """Largest absolute logit difference and argmax agreement at the real positions of ``batches``."""
    largest, agree, count = 0.0, 0, 0
    for batch in batches:
        expected = reference(**batch).logits.float()  # [batch, seq, labels] or [batch, labels]
        actual = exported(**batch).logits.float()
        if expected.dim() == 3:  # token task: padded positions predict nothing
            real = batch["attention_mask"].bool()
            expected, actual = expected[real], actual[real]
        largest = max(largest, float((expected - actual).abs().max()))
        agree += int((expected.argmax(-1) == actual.argmax(-1)).sum())
        count += expected.shape[0]
    return {"max_abs_diff": largest, "argmax_agreement": agree / count, "positions": count}


def compare_predictions(task: str, reference: Any, exported: Any) -> dict[str, Any]:
    """Agreement and headline metric of two :class:`~hftransfer.predict.Predictions` of the same examples."""
    if task == "token-classification":
        pairs = [
            (a, b) for ra, rb in zip(reference.rows, exported.rows) for a, b in zip(ra["tags"], rb["tags"])
        ]
        unit, metric = "words", "f1"
    else:
        pairs = [(ra["label"], rb["label"]) for ra, rb in zip(reference.rows, exported.rows)]
        unit, metric = "examples", "accuracy"
    result: dict[str, Any] = {
        "examples": len(reference.rows),
        "unit": unit,
        "compared": len(pairs),
        "agreement": sum(a == b for a, b in pairs) / max(1, len(pairs)),
    }
    if reference.metrics is not None and exported.metrics is not None:
        before, after = reference.metrics[metric], exported.metrics[metric]
        result.update(
            metric=metric, pytorch=before, exported=after, change_points=round(100 * (after - before), 4)
        )
    return result


def judge(fmt: str, logits: dict[str, Any], test: dict[str, Any] | None) -> list[str]:
    """What ``fmt`` lost against PyTorch, one readable phrase per failed check (empty: every check passed)."""
    lost = []
    if fmt == "onnx" and logits["max_abs_diff"] > LOGIT_TOLERANCE:
        lost.append(
            f"logits differ from PyTorch by up to {logits['max_abs_diff']:.2e} (> {LOGIT_TOLERANCE:g})"
        )
    if test is None:  # no test split: the argmax on the sample is all there is to judge predictions by
        if logits["argmax_agreement"] < MIN_AGREEMENT:
            lost.append(
                f"predictions agree with PyTorch at {logits['argmax_agreement']:.2%} of "
                f"{logits['positions']} sample positions (< {MIN_AGREEMENT:.0%})"
            )
        return lost
    if test["agreement"] < MIN_AGREEMENT:
        lost.append(
            f"predictions agree with PyTorch on {test['agreement']:.2%} of {test['compared']} test "
            f"{test['unit']} (< {MIN_AGREEMENT:.0%})"
        )
    if "metric" in test and abs(test["change_points"]) > MAX_METRIC_CHANGE:
        lost.append(
            f"test {test['metric']} {test['exported']:.4f} vs {test['pytorch']:.4f} with PyTorch "
            f"({test['change_points']:+.2f} points; allowed ±{MAX_METRIC_CHANGE})"
        )
    return lost


def check_export(
    export_dir: Path,
    formats: list[str],
    reference: torch.nn.Module,
    model_dir: Path,
    run_dir: Path | None,
    *,
    examples: int | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Check every format of ``export_dir`` against ``reference`` (the PyTorch model that was exported).

    Args:
        model_dir: the model as saved (an adapter, unmerged): the test split's reference predictions come from it.
        run_dir: the run whose ``config.yaml`` names the test split (None: the sample only).
        examples: at most this many test examples (default: all).
        batch_size: examples per forward pass; int8 activations are scaled per batch, so it matters a little.

    Returns:
        ``checks`` (per format: ``logits``, ``test``, ``passed``, ``lost``), ``test_split_skipped`` (why not,
        when the test split was not checked) and ``check_seconds``.
    """
    from transformers import AutoTokenizer

    from hftransfer.onnx_predict import OnnxModel, read_export_meta
    from hftransfer.predict import Predictor

    started = time.perf_counter()
    task = read_export_meta(export_dir)["task"]
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    test, max_length, skipped = run_test_split(run_dir)
    if test is not None and examples is not None:
        test = test.select(range(min(examples, len(test))))
    limit = min(getattr(reference.config, "max_position_embeddings", 512), 512, tokenizer.model_max_length)
    batches = sample_batches(sample_examples(task, test), tokenizer, task, max_length or limit)
    options = {"max_length": max_length, "batch_size": batch_size}
    pytorch = (
        Predictor(str(model_dir), backend="torch", **options).predict(test) if test is not None else None
    )
    checks = {}
    for fmt in formats:
        logits = compare_logits(reference, OnnxModel(export_dir / ONNX_FILES[fmt], reference.config), batches)
        on_test = None
        if pytorch is not None:
            exported = Predictor(str(export_dir), backend=fmt, **options).predict(test)
            on_test = compare_predictions(task, pytorch, exported)
        lost = judge(fmt, logits, on_test)
        checks[fmt] = {"logits": logits, "test": on_test, "passed": not lost, "lost": lost}
    return {
        "checks": checks,
        "test_split_skipped": skipped,
        "check_seconds": round(time.perf_counter() - started, 2),
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per exported format: its file, size and checks (what ``hftransfer export`` prints)."""
    lines = []
    for fmt, entry in report["files"].items():
        check = report["checks"].get(fmt)
        parts = [f"{fmt}: {entry['file']} ({entry['mb']:.1f} MB)"]
        if check:
            parts.append(f"logits max |diff| {check['logits']['max_abs_diff']:.1e}")
            test = check.get("test")
            if test:
                parts.append(f"{test['agreement']:.2%} of {test['compared']} test {test['unit']} agree")
                if "metric" in test:
                    parts.append(
                        f"{test['metric']} {test['exported']:.4f} vs {test['pytorch']:.4f} "
                        f"({test['change_points']:+.2f} points)"
                    )
            parts.append("checks passed" if check["passed"] else "LOST: " + "; ".join(check["lost"]))
        lines.append(", ".join(parts))
    if report.get("test_split_skipped"):
        lines.append(f"test split not checked: {report['test_split_skipped']}")
    return lines

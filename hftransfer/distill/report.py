"""Teacher vs distilled student after a run: score, parameters and inference throughput on the same texts, with
the same batch size, in the same process (each model with its own tokenizer)."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.data.features import tokenize
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import model_inputs, run_inference
from hftransfer.finetune import Run
from hftransfer.strategies.layers import count_parameters
from hftransfer.utils import atomic_write_json

logger = logging.getLogger("hftransfer")


@torch.inference_mode()
def _samples_per_second(model: torch.nn.Module, loader: Any, device: torch.device, repeats: int = 2) -> float:
    """Forward passes only (no metric work), best of ``repeats`` full passes after a one-batch warm-up."""
    model.eval().to(device)
    batches = [{k: v.to(device) for k, v in model_inputs(batch).items()} for batch in loader]
    model(**batches[0])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            model(
                **batch
            ).logits.float().sum().item()  # .item(): wait for the device before stopping the clock
        best = min(best, time.perf_counter() - started)
    return sum(len(batch["input_ids"]) for batch in batches) / best


def compare_with_teacher(run: Run, split: str = "test") -> dict[str, Any]:
    """Teacher vs exported student on ``split`` (validation when there is no test split): score, parameters and
    inference samples/s (same texts, same batch size, same process, each with its own tokenizer). Adds
    ``distill_report`` to ``metrics.json``."""
    from hftransfer.predict import load_for_prediction

    config, accelerator, teacher = run.config, run.accelerator, run.extras["teacher"]
    split = split if split in run.data.splits else "validation"
    label2id = {label: index for index, label in enumerate(run.data.label_names)}
    student, _ = load_for_prediction(str(run.model_dir))
    entries: dict[str, Any] = {}
    for name, model, tokenizer in (
        ("teacher", teacher.model, teacher.tokenizer),
        ("student", student, run.tokenizer),
    ):
        features, _ = tokenize(
            run.data.splits[split],
            tokenizer,
            config.task,
            label2id,
            max_length=config.data.max_length,
            label_all_subwords=config.data.label_all_subwords,
            window_context=config.data.window_context,
        )
        loader = build_eval_dataloader(
            features, FeatureCollator(tokenizer), batch_size=config.train.eval_batch_size
        )
        model.to(accelerator.device)
        if name == "teacher":
            model = _TeacherInTaskOrder(model, teacher.label_order)
        metrics = compute_metrics(
            run_inference(
                model, accelerator.prepare(loader), accelerator, config.task, desc=f"Scoring {name}"
            ),
            run.data.splits[split],
            config.task,
            run.data.label_names,
        )
        entry = {"metrics": metrics, "parameters": count_parameters(model)["total"]}
        if accelerator.is_main_process:
            entry["samples_per_second"] = round(_samples_per_second(model, loader, accelerator.device), 2)
        accelerator.wait_for_everyone()
        entries[name] = entry
    metric = run.loop.metric_name
    report = {
        "split": split,
        "batch_size": config.train.eval_batch_size,
        "device": str(accelerator.device),
        **entries,
    }
    if accelerator.is_main_process:
        teacher_score, student_score = (
            entries["teacher"]["metrics"][metric],
            entries["student"]["metrics"][metric],
        )
        report["score_retained"] = round(student_score / teacher_score, 4) if teacher_score else None
        report["speedup"] = round(
            entries["student"]["samples_per_second"] / entries["teacher"]["samples_per_second"], 3
        )
        report["parameter_ratio"] = round(
            entries["student"]["parameters"] / entries["teacher"]["parameters"], 4
        )
        logger.info(
            "Teacher %s %.4f, %.1fM parameters, %.1f samples/s | student %.4f (%.1f%% of the teacher), %.1fM, "
            "%.1f samples/s (%.2fx)",
            metric,
            teacher_score,
            entries["teacher"]["parameters"] / 1e6,
            entries["teacher"]["samples_per_second"],
            student_score,
            100 * report["score_retained"],
            entries["student"]["parameters"] / 1e6,
            entries["student"]["samples_per_second"],
            report["speedup"],
        )
        run.final_metrics["distill_report"] = report
        atomic_write_json(run.run_dir / "metrics.json", run.final_metrics)
    return report


class _TeacherInTaskOrder(torch.nn.Module):
    """The teacher with its label columns reordered into the task's label order (for scoring it like the student)."""

    def __init__(self, teacher: torch.nn.Module, label_order: list[int]) -> None:
        super().__init__()
        self.teacher = teacher
        self.register_buffer("order", torch.as_tensor(label_order), persistent=False)

    def forward(self, **inputs: Any) -> Any:
        outputs = self.teacher(**inputs)
        outputs["logits"] = outputs.logits[..., self.order.to(outputs.logits.device)]
        return outputs

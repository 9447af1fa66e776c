"""Teacher vs distilled student after a run: score, parameters and inference throughput on the same texts, with
the same batch size, in the same process (each model with its own tokenizer)."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.data.features import tokenize, tokenize_options
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import model_inputs, run_inference
from hftransfer.finetune import Run
from hftransfer.strategies.layers import count_parameters
from hftransfer.utils import atomic_write_json

logger = logging.getLogger("hftransfer")


@torch.inference_mode()
def inference_throughput(
    models: dict[str, tuple[torch.nn.Module, Any]],
    device: torch.device,
    *,
    rounds: int = 5,
    min_seconds: float = 1.0,
) -> dict[str, float]:
    """Samples/s of each model's forward passes (no metric work) over its own loader.

    The models take turns, one full pass each per round, so that drift in the machine's speed (other processes,
    clock changes) hits all of them alike; a pass is repeated until it lasts ``min_seconds`` (short test sets would
    otherwise be timed in milliseconds) and each model's best round counts.

    Args:
        models: ``name -> (model, loader)``; each loader yields that model's own tokenisation of the same texts.
    """
    prepared = {}
    for name, (model, loader) in models.items():
        model.eval().to(device)
        batches = [{k: v.to(device) for k, v in model_inputs(batch).items()} for batch in loader]
        model(**batches[0])  # warm-up: first-call allocations and kernel selection
        prepared[name] = (model, batches, sum(len(batch["input_ids"]) for batch in batches))
    best = dict.fromkeys(prepared, 0.0)
    for _ in range(rounds):
        for name, (model, batches, samples) in prepared.items():
            done, started = 0, time.perf_counter()
            while True:
                for batch in batches:
                    # .item(): wait for the device before the clock stops
                    model(**batch).logits.float().sum().item()
                done += samples
                elapsed = time.perf_counter() - started
                if elapsed >= min_seconds:
                    break
            best[name] = max(best[name], done / elapsed)
    return best


def compare_with_teacher(run: Run, split: str = "test") -> dict[str, Any]:
    """Teacher vs exported student on ``split`` (validation when there is no test split): score, parameters and
    inference samples/s (same texts, same batch size, same process, each with its own tokenizer). Adds
    ``distill_report`` to ``metrics.json``."""
    from hftransfer.loading import load_for_prediction

    config, accelerator, teacher = run.config, run.accelerator, run.extras["teacher"]
    split = split if split in run.data.splits else "validation"
    label2id = {label: index for index, label in enumerate(run.data.label_names)}
    student, _ = load_for_prediction(str(run.model_dir))
    entries: dict[str, Any] = {}
    timed: dict[str, tuple[torch.nn.Module, Any]] = {}
    for name, model, tokenizer in (
        ("teacher", teacher.model, teacher.tokenizer),
        ("student", student, run.tokenizer),
    ):
        features, _ = tokenize(
            run.data.splits[split],
            tokenizer,
            config.task,
            label2id,
            **tokenize_options(config.data),
        )
        loader = build_eval_dataloader(
            features, FeatureCollator(tokenizer), batch_size=config.train.eval_batch_size
        )
        model.to(accelerator.device)
        if name == "teacher":
            model = _TeacherInTaskOrder(model, teacher.label_order)
        metrics = compute_metrics(
            run_inference(
                model,
                accelerator.prepare(loader),
                accelerator,
                config.task,
                desc=f"Scoring {name}",
                window_aggregation=config.data.window_aggregation,
            ),
            run.data.splits[split],
            config.task,
            run.data.label_names,
        )
        entries[name] = {"metrics": metrics, "parameters": count_parameters(model)["total"]}
        timed[name] = (model, loader)
    if accelerator.is_main_process:
        for name, speed in inference_throughput(timed, accelerator.device).items():
            entries[name]["samples_per_second"] = round(speed, 2)
    accelerator.wait_for_everyone()
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
            "Teacher %s %.4f, %.1fM parameters, %.1f samples/s | student %.4f (%s of the teacher), %.1fM, "
            "%.1f samples/s (%.2fx)",
            metric,
            teacher_score,
            entries["teacher"]["parameters"] / 1e6,
            entries["teacher"]["samples_per_second"],
            student_score,
            # A teacher scoring 0 (a tiny or collapsed one) leaves no ratio to report, not a crash.
            "n/a" if report["score_retained"] is None else f"{100 * report['score_retained']:.1f}%",
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

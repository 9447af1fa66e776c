"""Validation and test of a multitask run: every task on its own data, and the average that selects the best model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from hftransfer.data.sources import TaskData
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import run_inference
from hftransfer.multitask.config import TaskSpec
from hftransfer.multitask.model import TaskView


def task_evaluator(
    specs: dict[str, TaskSpec], data: dict[str, TaskData], accelerator: Accelerator
) -> Callable[..., dict[str, Any]]:
    """``evaluate(model, {task: loader}, split)``: each task's metrics under ``tasks``, flat ``<task>.<metric>``
    copies for trackers, and ``average`` (the mean of each task's primary metric)."""

    def evaluate(trained: torch.nn.Module, loaders: dict[str, DataLoader], split: str = "validation") -> dict:
        metrics: dict[str, Any] = {"tasks": {}}
        for name, loader in loaders.items():
            spec = specs[name]
            output = run_inference(
                TaskView(trained, name),
                loader,
                accelerator,
                spec.task,
                desc=f"Evaluating {name}",
                window_aggregation=spec.data.window_aggregation,
            )
            task_metrics = compute_metrics(
                output, data[name].splits[split], spec.task, data[name].label_names
            )
            metrics["tasks"][name] = task_metrics
            for key, value in task_metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[f"{name}.{key}"] = value
        metrics["average"] = sum(metrics["tasks"][n][specs[n].primary_metric()] for n in loaders) / len(
            loaders
        )
        return metrics

    return evaluate

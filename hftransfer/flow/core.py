"""The steps every run shares, whatever its tasks, strategy and objectives: the :class:`Run` passed between the
recipe steps, the training loop with the run directory's config, trackers and resumed state (:func:`start_loop`),
training, the final evaluation of the best model with ``metrics.json`` (:func:`evaluate_best`), and the end of the
run (:func:`finish`).

A run of one task keeps its ``data`` as one :class:`~hftransfer.data.sources.TaskData`; a run of several keeps
``{task: TaskData}``, its evaluation returns each task's metrics under ``tasks`` with their ``average``, and its
``extras`` say what it adds (each task's primary metric, the steps each task got).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from hftransfer.config import save_config
from hftransfer.data.sources import TaskData
from hftransfer.export.onnx_export import export_after_run
from hftransfer.flow.forgetting import forgetting_report
from hftransfer.flow.label_shift import apply_label_shift
from hftransfer.flow.report_sets import evaluate_report_sets
from hftransfer.flow.sources import check_source_readers
from hftransfer.objectives.base import ObjectiveSet, build_objectives
from hftransfer.objectives.owned import attach_owned_modules
from hftransfer.runs import end_run, peak_memory_mb, publish_if_asked, tracker_config
from hftransfer.strategies import StrategyPlan, plan_strategy
from hftransfer.training.checkpoint import checkpoints_root
from hftransfer.training.distributed import distributed_report
from hftransfer.training.loop import FitResult, TrainingLoop
from hftransfer.training.threads import thread_report
from hftransfer.training.tracker_resume import start_trackers
from hftransfer.utils import atomic_write_json, remove_stale_temporaries

logger = logging.getLogger("hftransfer")


@dataclass
class Run:
    """The state of one fine-tuning run, passed between the recipe steps."""

    config: Any
    """The run config (``RunConfig``, a multitask or a distillation config)."""
    accelerator: Accelerator
    run_dir: Path
    data: TaskData | dict[str, TaskData]
    """The task's data, or ``{task: TaskData}`` in a run of several tasks."""
    tokenizer: PreTrainedTokenizerBase
    loop: TrainingLoop
    evaluate: Callable[..., dict[str, Any]]
    plan: StrategyPlan
    eval_loaders: dict[str, DataLoader] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    fit: FitResult | None = None
    final_metrics: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    """Flow-specific state (e.g. a distillation run's teacher)."""

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def label_names(self) -> list[str] | dict[str, list[str]]:
        """The label names, or each task's when the run has several (``data`` is then ``{task: TaskData}``)."""
        if isinstance(self.data, dict):
            return {name: task_data.label_names for name, task_data in self.data.items()}
        return self.data.label_names


def plan_training(
    model: torch.nn.Module,
    config: Any,
    accelerator: Accelerator,
    *,
    teacher: Any = None,
    sources: dict[str, Any] | None = None,
    encode: Any = None,
    **strategy_options: Any,
) -> tuple[ObjectiveSet, StrategyPlan]:
    """The run's objectives and strategy plan, in the one order that works: objectives on the pretrained model
    (references such as L2-SP's are its weights; ``teacher`` for those that read one; ``sources``: the named
    sources' tokenised examples, the task's ``features`` and ``encode`` (pooled pretrained features, once per
    dataset), for those that compute from the data), then the strategy
    (``strategy_options``: :func:`~hftransfer.strategies.plan_strategy`'s), then the objectives' own modules
    attached to the plan's model."""
    objectives = build_objectives(
        config,
        model,
        accelerator,
        teacher=teacher,
        tokenizer=strategy_options.get("tokenizer"),
        features=strategy_options.get("features"),
        sources=sources or {},
        encode=encode,
    )
    plan = plan_strategy(
        model,
        config,
        accelerator=accelerator,
        encoder_weight_decay=not objectives.replaces_weight_decay,
        encoder_forward=encoder_forward_reason(config, objectives),
        **strategy_options,
    )
    check_source_readers(config, objectives, plan)
    run_dir = strategy_options.get("run_dir")
    attach_owned_modules(
        plan,
        objectives.owners,
        config,
        reads_sources=bool(objectives.sources),
        model_dir=Path(run_dir) / "model" if run_dir is not None else None,
    )
    return objectives, plan


def encoder_forward_reason(config: Any, objectives: ObjectiveSet) -> str | None:
    """Why the encoder must run on every batch (objectives that need more than a head's outputs on cached
    features, or that read named sources), or None when a frozen encoder's features may be cached."""
    from hftransfer.registry import get_objective

    needing = [o.name for o in config.objectives if not get_objective(o.name).on_cached_features]
    if objectives.sources:
        needing += [o.name for o in objectives.objectives if o.sources and o.name not in needing]
    return f"objectives: {', '.join(needing)}" if needing else None


def start_loop(
    config: Any,
    accelerator: Accelerator,
    run_dir: Path,
    *,
    trackers: list[str],
    resume_from: Path | None,
    model: torch.nn.Module,
    train_loader: Any,
    eval_loader: Any,
    **loop_options: Any,
) -> TrainingLoop:
    """The training loop of any run (one task or several), with the run directory's ``config.yaml`` written (and
    the temporaries of a killed run's writes removed), the trackers started and, when resuming, the checkpoint's
    state loaded. ``loop_options``: the rest of :class:`TrainingLoop`'s keyword arguments."""
    loop = TrainingLoop(
        accelerator, model, train_loader, eval_loader, config=config, run_dir=run_dir, **loop_options
    )
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        # What a killed run left half-written (an export's .model.XXXX.tmp, a checkpoint half pruned or half saved):
        # the run directory's lock makes this the only run here, and nothing of it is being written yet. A resume
        # from the last checkpoint saves none, so the checkpoints' own clean-up would never run.
        remove_stale_temporaries(run_dir)
        remove_stale_temporaries(checkpoints_root(run_dir))
        save_config(config, run_dir / "config.yaml")
    accelerator.wait_for_everyone()
    if resume_from is not None:
        loop.resume(resume_from)
    if trackers:  # after the resume: a resumed run continues its tracker runs from the checkpoint's step
        resumed_step = loop.state.step if resume_from is not None else None
        start_trackers(accelerator, trackers, run_dir, tracker_config(config), resumed_step)
    return loop


def train(run: Run) -> FitResult:
    """Run the training loop (resuming if the run was set up from a checkpoint)."""
    run.fit = run.loop.fit()
    return run.fit


def evaluate_best(run: Run) -> dict[str, Any]:
    """Reload the exported (best) model and score it on validation and test; writes ``metrics.json``."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    run.plan.restore_best(accelerator, run.loop.model)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for split, loader in run.eval_loaders.items():
        split_started = time.perf_counter()
        results[split] = run.evaluate(run.loop.model, loader, split)
        # Inference and metrics of the split: what a user waits for when scoring a dataset.
        results[split]["seconds"] = round(time.perf_counter() - split_started, 3)
        run.loop.log.log(split, results[split], step=run.loop.state.step, epoch=run.loop.epoch_progress())
    if "label_shift_texts" in run.extras:  # after the source splits are scored, before the target is reported
        run.report["label_shift"] = apply_label_shift(run)
    if getattr(run.config, "report", None):  # read only now: nothing before the report sees their labels
        results["report"] = evaluate_report_sets(run)
        for name, scores in results["report"].items():
            run.loop.log.log(
                f"report/{name}", scores, step=run.loop.state.step, epoch=run.loop.epoch_progress()
            )
    if run.plan.export is not None:
        run.report["export"] = run.plan.export(accelerator, run.loop.model)
    if run.extras.get("source_eval") is not None:  # the forgetting report, from what was just exported
        run.report["transfer"] = forgetting_report(run, run.extras["source_eval"])
    state = run.loop.state
    train_summary = run.loop.summary()
    if "train_summary" in run.extras:  # what a flow adds (a multitask run: the steps each task got)
        train_summary.update(run.extras["train_summary"](run))
    run.final_metrics = {
        **results,
        "best_step": state.best_step,
        f"best_validation_{run.loop.metric_name}": state.best_metric,
        "train": train_summary,
        "peak_memory_mb": peak_memory_mb(),
        "threads": thread_report(),
        "distributed": distributed_report(accelerator, run.loop.model),
        "eval_seconds": round(time.perf_counter() - started, 2),
        "label_names": run.label_names,
        **run.report,
    }
    if accelerator.is_main_process:
        atomic_write_json(run.run_dir / "metrics.json", run.final_metrics)
    return run.final_metrics


def finish(run: Run) -> None:
    """Close trackers, push to the Hub when asked (``push_to_hub``), and print where the results are."""
    # The DDP wrapper's reducer holds the process group that end_training destroys: release it first, so that it
    # is not torn down after the group (a rare 2-process hang at exit showed only the recipe's main frame).
    run.loop.model = run.accelerator.unwrap_model(run.loop.model)
    run.accelerator.free_memory()
    run.accelerator.end_training()
    export_after_run(run.config, run.run_dir, run.accelerator, run.final_metrics)  # export_onnx=[...]
    publish_if_asked(run.config, run.run_dir, run.accelerator, run.final_metrics)
    metric = run.loop.metric_name
    for split in ("validation", "test"):
        if split in run.final_metrics and metric in run.final_metrics[split]:
            scores = run.final_metrics[split]
            per_task = {n: round(m[run.extras["metrics"][n]], 4) for n, m in scores.get("tasks", {}).items()}
            logger.info("%s %s = %.4f%s", split, metric, scores[metric], f" {per_task}" if per_task else "")
    logger.info("Model: %s  Metrics: %s", run.model_dir, run.run_dir / "metrics.json")
    end_run(run.run_dir)  # last: publishing above still writes into the run directory

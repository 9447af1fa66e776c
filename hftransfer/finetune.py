"""Fine-tuning, wired end to end: data -> features -> model -> training loop -> evaluation -> export.

Recipes call the four steps in order::

    run = setup(config, recipe="finetune_ner")
    train(run)
    evaluate_best(run)
    finish(run)

Everything is written under ``run.run_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl`` (every log
record), ``metrics.json`` (final validation/test metrics), ``checkpoints/`` and ``model/`` (the best model with its
tokenizer, an ordinary Hugging Face model directory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from hftransfer.assets import resolve_model_name
from hftransfer.config import RunConfig
from hftransfer.data.batching import FeatureCollator, build_eval_dataloader, build_train_dataloader
from hftransfer.data.features import tokenize, tokenize_options
from hftransfer.data.sources import TaskData, load_task_data
from hftransfer.errors import ConfigError
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import run_inference
from hftransfer.flow.core import Run, evaluate_best, finish, plan_training, start_loop, train
from hftransfer.modeling.build import build_model, load_tokenizer, model_max_length
from hftransfer.modeling.head_init import init_head_bias_to_prior
from hftransfer.runs import start_run
from hftransfer.strategies import StrategyPlan, needs_unused_parameter_search

__all__ = ["Run", "assemble_run", "evaluate_best", "finish", "setup", "start_loop", "token_loaders", "train"]
logger = logging.getLogger("hftransfer")


def setup(config: RunConfig, recipe: str) -> Run:
    """Create the accelerator and run directory, load data and model, tokenise, and build the training loop.

    Raises:
        ConfigError / DataError: bad config or data, before any training starts.
    """
    accelerator, run_dir, trackers, resume_from = start_run(
        config, recipe, find_unused_parameters=needs_unused_parameter_search(config)
    )

    with accelerator.main_process_first():
        data = load_task_data(config.data, config.task)
    tokenizer = load_tokenizer(config.model)
    model = build_model(config.model, config.task, data.label_names)
    limit = model_max_length(tokenizer, model)
    if config.data.max_length > limit:
        raise ConfigError(
            f"data.max_length={config.data.max_length} exceeds what this model accepts ({limit})"
        )

    features, report = tokenize_splits(data, tokenizer, config)
    if config.model.head_bias_init == "prior" and "train" in features:
        report["label_prior"] = init_head_bias_to_prior(model, features["train"]["labels"])

    objectives, plan = plan_training(
        model,
        config,
        accelerator,
        tokenizer=tokenizer,
        run_dir=run_dir,
        base_model_name_or_path=resolve_model_name(config.model.name_or_path),
        features=features,
    )
    if plan.train_loader is not None:  # the strategy trains on data of its own (e.g. cached encoder features)
        train_loader, eval_loaders = plan.train_loader, plan.eval_loaders or {}
    else:
        train_loader, eval_loaders = token_loaders(features, tokenizer, config, accelerator)
    return assemble_run(
        config,
        accelerator,
        run_dir,
        trackers=trackers,
        resume_from=resume_from,
        data=data,
        tokenizer=tokenizer,
        plan=plan,
        objectives=objectives,
        train_loader=train_loader,
        eval_loaders=eval_loaders,
        report=report,
    )


def tokenize_splits(
    data: TaskData, tokenizer: PreTrainedTokenizerBase, config: Any
) -> tuple[dict[str, Dataset], dict[str, Any]]:
    """Every split's features, and the report (data report + per-split feature counts) they start."""
    features, counts = tokenize_task(data, tokenizer, config.task, config.data)
    return features, {"data": data.report, "features": counts}


def tokenize_task(
    data: TaskData, tokenizer: PreTrainedTokenizerBase, task: str, data_config: Any
) -> tuple[dict[str, Dataset], dict[str, dict[str, int]]]:
    """One task's features per split (cached by ``datasets``), and each split's example/feature counts."""
    label2id = {label: index for index, label in enumerate(data.label_names)}
    features: dict[str, Dataset] = {}
    counts: dict[str, dict[str, int]] = {}
    for split, examples in data.splits.items():
        features[split], split_counts = tokenize(
            examples, tokenizer, task, label2id, **tokenize_options(data_config)
        )
        counts[split] = {"examples": len(examples), "features": len(features[split]), **split_counts}
    return features, counts


def assemble_run(
    config: RunConfig,
    accelerator: Accelerator,
    run_dir: Path,
    *,
    trackers: list[str],
    resume_from: Path | None,
    data: TaskData,
    tokenizer: PreTrainedTokenizerBase,
    plan: StrategyPlan,
    objectives: Callable[..., Any],
    train_loader: DataLoader,
    eval_loaders: dict[str, DataLoader],
    report: dict[str, Any],
) -> Run:
    """The training loop around ``plan`` (its model, LR groups and hooks) and ``objectives`` (the loss function:
    an :class:`~hftransfer.objectives.base.ObjectiveSet`, or a flow's own such as distillation's), the saved
    config, trackers and the resumed state: a :class:`Run` ready for :func:`train`."""

    def evaluate(model: torch.nn.Module, loader: DataLoader, split: str = "validation") -> dict[str, Any]:
        output = run_inference(model, loader, accelerator, config.task, desc=f"Evaluating {split}")
        return compute_metrics(output, data.splits[split], config.task, data.label_names)

    loop = start_loop(
        config,
        accelerator,
        run_dir,
        trackers=trackers,
        resume_from=resume_from,
        model=plan.model,
        train_loader=train_loader,
        eval_loader=eval_loaders.get("validation"),
        evaluate=evaluate,
        save_model=lambda m: plan.save_best(accelerator, m),
        loss_fn=objectives,
        param_groups=plan.param_groups,
        on_step_start=plan.on_step_start,
    )
    # Loaders for the final evaluation; validation reuses the loop's prepared one.
    prepared = {"validation": loop.eval_loader} if loop.eval_loader is not None else {}
    if "test" in eval_loaders:
        prepared["test"] = accelerator.prepare(eval_loaders["test"])
    report["strategy"] = plan.report
    run = Run(config, accelerator, run_dir, data, tokenizer, loop, evaluate, plan, prepared, report)
    _log_summary(run)
    return run


def token_loaders(
    features: dict[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    config: RunConfig,
    accelerator: Accelerator,
) -> tuple[DataLoader, dict[str, DataLoader]]:
    pad_to = 8 if accelerator.device.type == "cuda" else None
    collator = FeatureCollator(tokenizer, pad_to_multiple_of=pad_to)
    train_loader = build_train_dataloader(
        features["train"],
        collator,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        group_by_length=config.train.group_by_length,
        num_workers=config.train.num_workers,
    )
    eval_loaders = {
        split: build_eval_dataloader(
            features[split],
            collator,
            batch_size=config.train.eval_batch_size,
            num_workers=config.train.num_workers,
        )
        for split in ("validation", "test")
        if split in features
    }
    return train_loader, eval_loaders


def _log_summary(run: Run) -> None:
    run.report["parameters"] = run.plan.report["parameters"]
    total, trainable = run.report["parameters"]["total"], run.report["parameters"]["trainable"]
    sizes = ", ".join(f"{split}={len(ds)}" for split, ds in run.data.splits.items())
    logger.info("Run directory: %s", run.run_dir)
    logger.info("Data: %s; %d labels; features %s", sizes, len(run.data.label_names), run.report["features"])
    logger.info(
        "Model: %s, strategy %s: %.2fM of %.1fM parameters trainable (%.2f%%); LR groups %s",
        run.config.model.name_or_path,
        run.config.strategy.name,
        trainable / 1e6,
        total / 1e6,
        100 * trainable / total,
        {name: f"{lr:.2g}" for name, lr in run.plan.report["lr_groups"].items()},
    )

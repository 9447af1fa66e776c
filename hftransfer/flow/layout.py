"""A run's tasks and what their number decides: the model, its batches, its evaluation, its exports.

* :class:`OneTask` (a ``RunConfig``: ``task`` + ``data``): the plain transformers model of that task, trained on
  one loader (or on the strategy's own data, e.g. cached encoder features); metrics and labels are flat.
* :class:`~hftransfer.multitask.layout.SharedEncoderTasks` (a config with ``tasks``): one encoder shared by a
  model per task, batches drawn from every task by the sampler; metrics per task plus their ``average``.

:func:`~hftransfer.flow.setup.setup` asks the layout for these pieces and is otherwise the same for both.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from accelerate import Accelerator
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from hftransfer.assets import resolve_model_name
from hftransfer.data.batching import FeatureCollator, build_eval_dataloader, build_train_dataloader
from hftransfer.data.features import tokenize, tokenize_options
from hftransfer.data.sources import TaskData, load_task_data
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import run_inference
from hftransfer.evaluation.multilabel import THRESHOLD_KEY, model_threshold
from hftransfer.export.long_texts import LONG_TEXTS_KEY, saved_long_texts
from hftransfer.modeling.build import build_model, load_tokenizer
from hftransfer.modeling.crf import find_crf
from hftransfer.modeling.source_model import model_directory
from hftransfer.multitask.config import TaskSpec
from hftransfer.strategies import StrategyPlan, needs_unused_parameter_search

logger = logging.getLogger("hftransfer")


def task_layout(config: Any) -> Any:
    """The layout of ``config``'s tasks: several (``config.tasks``) share one encoder, one trains a plain model."""
    if hasattr(config, "tasks"):
        from hftransfer.multitask.layout import SharedEncoderTasks

        return SharedEncoderTasks(config)
    return OneTask(config)


class OneTask:
    """A run of one task (``config.task``, ``config.data``)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.name = "task"
        self.specs = {self.name: TaskSpec(self.name, config.task, config.data)}
        self.model_config: Any = None  # the HF config of the model built, which the exports save

    def find_unused_parameters(self) -> bool:
        return needs_unused_parameter_search(self.config)

    def field(self, task: str, name: str) -> str:
        """How the config names a task's field in messages."""
        return name

    def single(self, per_task: dict[str, Any]) -> Any:
        """A per-task value as the run keeps it: the task's own (one task) or all of them (several)."""
        return per_task[self.name]

    def load_data(self) -> dict[str, TaskData]:
        return {name: load_task_data(spec.data, spec.task) for name, spec in self.specs.items()}

    def build_model(self, data: dict[str, TaskData]) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str]:
        """The model, its tokenizer, and the name that adapters and cards refer to."""
        tokenizer = load_tokenizer(self.config.model)
        problem_type = self.config.data.problem_type
        model = build_model(self.config.model, self.config.task, data[self.name].label_names, problem_type)
        if run_decoding(self.config) != "argmax":  # exported with the model: Predictor decodes the same way
            model.config.hftransfer_decoding = run_decoding(self.config)
        long_texts = saved_long_texts(self.config.data)
        if long_texts is not None:  # Predictor reads long texts in the run's windows, not truncated
            setattr(model.config, LONG_TEXTS_KEY, long_texts)
        self.model_config = model.config
        # A run directory stands for its model/: what an adapter's base_model_name_or_path must name.
        return model, tokenizer, resolve_model_name(model_directory(self.config.model.name_or_path))

    def task_model(self, model: torch.nn.Module, task: str) -> torch.nn.Module:
        return model

    def tokenize(
        self, data: dict[str, TaskData], tokenizer: PreTrainedTokenizerBase
    ) -> tuple[dict[str, dict[str, Dataset]], dict[str, Any]]:
        """``{task: {split: features}}`` and the report they start (data report, per-split feature counts)."""
        features, counts = {}, {}
        for name, spec in self.specs.items():
            features[name], counts[name] = tokenize_task(data[name], tokenizer, spec.task, spec.data)
        report = {
            "data": self.single({name: task_data.report for name, task_data in data.items()}),
            "features": self.single(counts),
        }
        return features, report

    def strategy_options(
        self,
        run_dir: Any,
        tokenizer: PreTrainedTokenizerBase,
        data: dict[str, TaskData],
        features: dict[str, dict[str, Dataset]],
    ) -> dict[str, Any]:
        """What :func:`~hftransfer.strategies.plan_strategy` gets besides the model and config: the task's
        features (a frozen encoder's strategy encodes them once into its feature cache)."""
        return {"features": features[self.name]}

    def batches(
        self,
        plan: StrategyPlan,
        features: dict[str, dict[str, Dataset]],
        tokenizer: PreTrainedTokenizerBase,
        accelerator: Accelerator,
        report: dict[str, Any],
    ) -> tuple[Any, dict[str, Any]]:
        """The training batches and the (unprepared) evaluation loaders per split."""
        if plan.train_loader is not None:  # the strategy trains on data of its own (cached encoder features)
            return plan.train_loader, plan.eval_loaders or {}
        return token_loaders(features[self.name], tokenizer, self.config, accelerator)

    def evaluator(self, data: dict[str, TaskData], accelerator: Accelerator, selection: Any = None) -> Any:
        """``evaluate(model, loader, split) -> metrics``; ``selection(output, examples)`` adds the label-free
        selection metrics to the validation split's (``flow/selection.py``)."""
        task_data, task = data[self.name], self.config.task
        problem_type, metric = self.config.data.problem_type, self.config.metric_for_best()
        decoding = run_decoding(self.config)

        def evaluate(model: torch.nn.Module, loader: DataLoader, split: str = "validation") -> dict[str, Any]:
            crf = None
            # The CRF's scores as they are now: trained with the model, restored with the best one.
            if decoding == "crf":
                crf = find_crf(accelerator.unwrap_model(model))
                if crf is None:
                    raise RuntimeError("model.head=crf: the evaluated model holds no CRF")
            output = run_inference(
                model,
                loader,
                accelerator,
                task,
                desc=f"Evaluating {split}",
                problem_type=problem_type,
                window_aggregation=self.config.data.window_aggregation,
                decoding=decoding,
                label_names=task_data.label_names,
                crf=crf.scores() if crf is not None else None,
            )
            # Multi-label: validation chooses the decision threshold, into the config the exports save; the
            # other splits use the one chosen last (the best model's, once evaluate_best re-scored validation).
            threshold = None if split == "validation" else model_threshold(self.model_config)
            metrics = compute_metrics(
                output,
                task_data.splits[split],
                task,
                task_data.label_names,
                problem_type=problem_type,
                threshold=threshold,
                metric=metric,
            )
            if task == "token-classification":
                metrics["decoding"] = decoding  # which decoding produced the scores
            if "threshold" in metrics and split == "validation" and self.model_config is not None:
                setattr(self.model_config, THRESHOLD_KEY, metrics["threshold"])
            if selection is not None and split == "validation":
                metrics.update(selection(output, task_data.splits[split]))
            return metrics

        return evaluate

    def loop_options(
        self, plan: StrategyPlan, report: dict[str, Any], accelerator: Accelerator
    ) -> dict[str, Any]:
        return {}

    def final_loaders(
        self, loop: Any, eval_loaders: dict[str, Any], accelerator: Accelerator
    ) -> dict[str, Any]:
        """Loaders of the final evaluation; validation reuses the loop's prepared one."""
        prepared = {"validation": loop.eval_loader} if loop.eval_loader is not None else {}
        if "test" in eval_loaders:
            prepared["test"] = accelerator.prepare(eval_loaders["test"])
        return prepared

    def extras(self) -> dict[str, Any]:
        return {}

    def log_summary(self, run: Any) -> None:
        run.report["parameters"] = run.plan.report["parameters"]
        total, trainable = run.report["parameters"]["total"], run.report["parameters"]["trainable"]
        sizes = ", ".join(f"{split}={len(ds)}" for split, ds in run.data.splits.items())
        logger.info("Run directory: %s", run.run_dir)
        logger.info(
            "Data: %s; %d labels; features %s", sizes, len(run.data.label_names), run.report["features"]
        )
        logger.info(
            "Model: %s, strategy %s: %.2fM of %.1fM parameters trainable (%.2f%%); LR groups %s",
            run.config.model.name_or_path,
            run.config.strategy.name,
            trainable / 1e6,
            total / 1e6,
            100 * trainable / total,
            {name: f"{lr:.2g}" for name, lr in run.plan.report["lr_groups"].items()},
        )


def run_decoding(config: Any) -> str:
    """How a run's token predictions are decoded: ``crf`` with a CRF head, else ``model.decoding``."""
    return "crf" if config.model.head == "crf" else config.model.decoding


SPLIT_NAMES = {"train": "training"}  # as the truncation warning names a split


def tokenize_task(
    data: TaskData, tokenizer: PreTrainedTokenizerBase, task: str, data_config: Any
) -> tuple[dict[str, Dataset], dict[str, dict[str, int]]]:
    """One task's features per split (cached by ``datasets``), and each split's example/feature counts."""
    label2id = {label: index for index, label in enumerate(data.label_names)}
    features: dict[str, Dataset] = {}
    counts: dict[str, dict[str, int]] = {}
    for split, examples in data.splits.items():
        features[split], split_counts = tokenize(
            examples,
            tokenizer,
            task,
            label2id,
            **tokenize_options(data_config),
            split=SPLIT_NAMES.get(split, split),
        )
        counts[split] = {"examples": len(examples), "features": len(features[split]), **split_counts}
    return features, counts


def token_loaders(
    features: dict[str, Dataset], tokenizer: PreTrainedTokenizerBase, config: Any, accelerator: Accelerator
) -> tuple[DataLoader, dict[str, DataLoader]]:
    """The training loader and the evaluation loaders (validation, test) of one task's features."""
    collator = FeatureCollator.for_device(tokenizer, accelerator.device)
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

"""The layout of a run of several tasks: one encoder shared by a model per task, batches drawn from every task.

The run directory holds ``model/<task>/`` for every task (an ordinary transformers model: the shared encoder plus
that task's head, which ``pipeline`` loads) and ``model/tasks.json``, from which
:func:`~hftransfer.multitask.export.load_multitask` rebuilds the multitask model with one shared encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.assets import resolve_model_name
from hftransfer.data.mixing import MixedBatches
from hftransfer.data.sources import TaskData
from hftransfer.errors import ConfigError
from hftransfer.flow.layout import OneTask, token_loaders
from hftransfer.modeling.build import build_model, load_tokenizer
from hftransfer.multitask.config import MultitaskConfig
from hftransfer.multitask.evaluation import task_evaluator
from hftransfer.multitask.export import load_multitask_weights, save_multitask
from hftransfer.multitask.model import MultitaskModel
from hftransfer.multitask.optim import PerTaskAdamW, groups_per_task, task_step
from hftransfer.multitask.sampling import TaskSchedule, default_steps_per_epoch
from hftransfer.objectives.owned import inner_model
from hftransfer.strategies import StrategyPlan

logger = logging.getLogger("hftransfer")


class SharedEncoderTasks(OneTask):
    """The tasks of ``config.tasks``, each with its own data, head, metric and share of the steps."""

    def __init__(self, config: MultitaskConfig) -> None:
        self.config = config
        self.specs = {spec.name: spec for spec in config.tasks}
        self.model: MultitaskModel | None = None
        self.schedule: TaskSchedule | None = None

    def find_unused_parameters(self) -> bool:
        # Heads of the tasks not drawn in a step get no gradient: DDP must not wait for them.
        return True

    def field(self, task: str, name: str) -> str:
        return f"tasks.{task}.{name}"

    def single(self, per_task: dict[str, Any]) -> Any:
        return per_task

    def build_model(self, data: dict[str, TaskData]) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str]:
        tokenizer = load_tokenizer(self.config.model)
        task_models = {
            name: build_model(self.config.model, spec.task, data[name].label_names)
            for name, spec in self.specs.items()
        }
        self.model = MultitaskModel(task_models)
        return self.model, tokenizer, resolve_model_name(self.config.model.name_or_path)

    def task_model(self, model: torch.nn.Module, task: str) -> torch.nn.Module:
        return model.task_models[task]

    def strategy_options(
        self,
        run_dir: Path,
        tokenizer: PreTrainedTokenizerBase,
        data: dict[str, TaskData],
        features: dict[str, dict[str, Dataset]],
    ) -> dict[str, Any]:
        """The strategy adapts the shared encoder and saves the best model as every task's export."""
        model_dir = run_dir / "model"
        return {
            "shared_encoder": True,
            "save_model": lambda acc, trained: save_multitask(
                acc, trained, tokenizer, model_dir, self.specs, data
            ),
            "restore_model": lambda acc, trained: load_multitask_weights(
                acc.unwrap_model(trained), model_dir
            ),
        }

    def batches(
        self,
        plan: StrategyPlan,
        features: dict[str, dict[str, Dataset]],
        tokenizer: PreTrainedTokenizerBase,
        accelerator: Accelerator,
        report: dict[str, Any],
    ) -> tuple[Any, dict[str, Any]]:
        """Tagged batches from every task by the sampler, and ``{split: {task: prepared loader}}``."""
        config = self.config
        if plan.train_loader is not None or inner_model(plan.model) is not self.model:
            raise ConfigError(
                f"strategy.name={config.strategy.name} replaces the model it trains, which a multitask run (one "
                "encoder shared by several task models) cannot do"
            )
        train_loaders, eval_loaders = {}, {"validation": {}, "test": {}}
        for name, task_features in features.items():
            train_loader, task_eval = token_loaders(task_features, tokenizer, config, accelerator)
            train_loaders[name] = accelerator.prepare(train_loader)
            for split, loader in task_eval.items():
                eval_loaders[split][name] = accelerator.prepare(loader)
        sizes = [len(loader) for loader in train_loaders.values()]
        steps = config.sampler.steps_per_epoch or default_steps_per_epoch(sizes)
        weights = [spec.sampling_weight for spec in self.specs.values()]
        self.schedule = TaskSchedule(
            sizes, config.sampler.name, steps, config.train.seed, config.sampler.temperature, weights
        )
        report["sampler"] = {
            "name": config.sampler.name,
            "steps_per_epoch": steps,
            "batches_per_task": dict(zip(self.specs, sizes)),
            "sampling_weights": dict(zip(self.specs, weights)),
            "probabilities": dict(zip(self.specs, self.schedule.probabilities)),
        }
        batches = MixedBatches(train_loaders, self.schedule, accelerator, tag="task")
        return batches, {split: loaders for split, loaders in eval_loaders.items() if loaders}

    def evaluator(self, data: dict[str, TaskData], accelerator: Accelerator, selection: Any = None) -> Any:
        return task_evaluator(self.specs, data, accelerator)

    def loop_options(
        self, plan: StrategyPlan, report: dict[str, Any], accelerator: Accelerator
    ) -> dict[str, Any]:
        """Per-task learning rates (and, with ``optimizer_state=per_task``, each task's own AdamW moments)."""
        config = self.config
        lr_scales = {
            name: (spec.lr or config.train.lr) / config.train.lr for name, spec in self.specs.items()
        }
        report["sampler"]["lr_scales"] = lr_scales
        optimizer = None
        if config.optimizer_state == "per_task":
            if accelerator.mixed_precision == "fp16":
                raise ConfigError(
                    "optimizer_state=per_task does not work with fp16 mixed precision (the gradient scaler would "
                    "unscale the shared encoder's gradients once per task); set train.mixed_precision to bf16 "
                    "or no"
                )
            groups = groups_per_task(plan.param_groups, self.model.encoder, self.model.task_models)
            optimizer = PerTaskAdamW(groups, config.train)
        return {"optimizer": optimizer, "before_update": task_step(lr_scales, optimizer)}

    def final_loaders(
        self, loop: Any, eval_loaders: dict[str, Any], accelerator: Accelerator
    ) -> dict[str, Any]:
        return eval_loaders

    def extras(self) -> dict[str, Any]:
        return {
            "specs": self.specs,
            "metrics": {name: spec.primary_metric() for name, spec in self.specs.items()},
            "train_summary": self._steps_per_task,
        }

    def _steps_per_task(self, run: Any) -> dict[str, Any]:
        state = run.loop.state
        drawn = self.schedule.consumed(state.epoch, state.batches_in_epoch)
        return {"steps_per_task": {name: drawn[i] for i, name in enumerate(self.specs)}}

    def log_summary(self, run: Any) -> None:
        parameters = run.report["strategy"]["parameters"]
        logger.info(
            "Multitask run %s: tasks %s; %.2fM of %.1fM parameters trainable; sampler %s, %d steps per epoch",
            run.run_dir,
            {name: {split: len(ds) for split, ds in run.data[name].splits.items()} for name in self.specs},
            parameters["trainable"] / 1e6,
            parameters["total"] / 1e6,
            self.config.sampler.name,
            self.schedule.steps_per_epoch,
        )

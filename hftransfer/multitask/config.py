"""Configuration of a multitask run: shared model, training and strategy; a list of tasks; a task sampler."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hftransfer.config import (
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    StrategyConfig,
    TaskType,
    TrainConfig,
    check_hub_fields,
    parse_config,
    resolve_plugins,
)
from hftransfer.config.checks import POSITIVE, Range, check_value
from hftransfer.config.plugins import default_objectives, default_strategy
from hftransfer.config.problem import refuse_problem_type
from hftransfer.errors import ConfigError


@dataclass
class TaskSpec:
    """One task of a multitask run: its data, its head and how much its loss counts."""

    name: str
    """Task name: the key of its head, its metrics and its export directory (letters, digits, ``_``, ``-``)."""
    task: TaskType
    """``token-classification`` or ``sequence-classification`` (pairs with ``data.text_pair_column``)."""
    data: DataConfig
    """Where the task's data comes from (any format the single-task recipes read)."""
    loss_weight: float = 1.0
    """Multiplier of this task's loss (with AdamW this mostly changes the balance within mixed steps; to change
    how fast a task moves the shared encoder, set ``lr`` or ``sampling_weight``)."""
    lr: float | None = None
    """Learning rate on this task's steps; default ``train.lr``. Every parameter group (encoder layers, this
    head) is scaled by ``lr / train.lr`` on the steps that train this task, so LLRD and ``head_lr`` keep their
    ratios and warm-up and decay still follow the one shared schedule."""
    sampling_weight: float = 1.0
    """Multiplier of this task's probability under the sampler (``p ∝ sampling_weight × n`` for proportional);
    with ``round_robin`` the task's exact share of the steps is ``sampling_weight / sum``. Setting it to the epochs
    a single-task run would train reproduces that run's step budget (proportional)."""
    metric: str | None = None
    """Metric of this task in the average that selects the best model; default ``f1`` (token) / ``accuracy``."""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ConfigError(f"tasks: name {self.name!r} must be letters, digits, '_' or '-'")
        for name in ("loss_weight", "lr", "sampling_weight"):
            value = getattr(self, name)
            check_value(f"tasks.{self.name}.{name}", value, Range(low=0, low_open=True, optional=True))
        if self.task == "token-classification" and self.data.text_pair_column is not None:
            raise ConfigError(f"tasks.{self.name}: data.text_pair_column is for sequence-classification")

    def primary_metric(self) -> str:
        return self.metric or ("f1" if self.task == "token-classification" else "accuracy")


@dataclass
class SamplerConfig:
    """Which task each step trains (see ``hftransfer/multitask/sampling.py``)."""

    name: Literal["proportional", "temperature", "uniform", "round_robin"] = "proportional"
    """``proportional`` (p ∝ n), ``temperature`` (p ∝ n^(1/T)), ``uniform``, ``round_robin``; each task's
    ``sampling_weight`` multiplies its probability (round-robin: its exact share of the steps)."""
    temperature: float = 2.0
    """T of the temperature sampler."""
    steps_per_epoch: int | None = None
    """Steps in an epoch; default: the batches of all tasks together (one pass over all data on average)."""

    def __post_init__(self) -> None:
        check_value("sampler.temperature", self.temperature, POSITIVE)
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"sampler.steps_per_epoch must be >= 1, got {self.steps_per_epoch}")


@dataclass
class MultitaskConfig:
    """A multitask run: one shared encoder, one head per task."""

    tasks: list[TaskSpec] = field(default_factory=list)
    """The tasks (at least one), each with its own data, head and metric."""
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=default_strategy)
    """What trains in the shared encoder: ``{name: <strategy>, <its fields>}``."""
    objectives: list[ObjectiveConfig] = field(default_factory=default_objectives)
    """What the loss is: ``[{name: task}, ...]``; the task term of each step is its task's loss (times
    ``tasks[i].loss_weight``), regularisers act on the shared encoder."""
    plugins: list[str] = field(default_factory=list)
    """Modules (or ``.py`` files) imported first: strategies and objectives registered outside hftransfer."""
    optimizer_state: Literal["shared", "per_task"] = "shared"
    """``shared``: one AdamW over everything; ``per_task``: each task keeps its own AdamW moments for the shared
    encoder, so a task's steps are the steps its single-task run would take (``hftransfer/multitask/optim.py``).
    Needs single-task optimizer steps (``train.grad_accum_steps: 1``) and no fp16 gradient scaler."""
    output_dir: str | None = None
    """Run directory. Default: ``runs/multitask-<timestamp>``."""
    overwrite_output_dir: bool = False
    """Allow starting a new run in a directory that already holds one."""
    push_to_hub: bool = False
    """Publish every task as its own Hub repository ``<hub_model_id>-<task>`` when the run ends."""
    hub_model_id: str | None = None
    """Hub repository prefix ``user/name``; task ``ner`` goes to ``user/name-ner``."""
    hub_private: bool = False
    """Create the Hub repositories as private."""
    hub_license: str = "apache-2.0"
    """License in the model cards."""

    def __post_init__(self) -> None:
        check_hub_fields(self)
        resolve_plugins(self)
        if not self.tasks:
            raise ConfigError(
                "tasks: a multitask run needs at least one task (tasks: [{name, task, data}, ...])"
            )
        for task in self.tasks:
            refuse_problem_type(task.data, f"tasks.{task.name}.data.problem_type", "a multitask run")
        if self.model.head != "linear":
            raise ConfigError(
                f"model.head={self.model.head} is for single-task token classification runs; a multitask run "
                "trains each task's own transformers head (model.head=linear)"
            )
        names = [task.name for task in self.tasks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"tasks: two tasks are named {duplicates[0]!r}; task names must be unique")
        if self.optimizer_state == "per_task" and self.train.grad_accum_steps != 1:
            raise ConfigError(
                "optimizer_state=per_task needs train.grad_accum_steps=1: an accumulated step could mix tasks, "
                "and there is no single task whose optimizer state it should use"
            )
        if self.train.metric_for_best not in (None, "average"):
            raise ConfigError(
                "train.metric_for_best: a multitask run selects by 'average' (the mean of each task's metric, "
                "set per task with tasks[i].metric)"
            )

    # The training loop reads these two like RunConfig's.
    def metric_for_best(self) -> str:
        return "average"

    def greater_is_better(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_multitask_config(
    argv: Sequence[str] | None = None, default_config: str | Path | None = None
) -> MultitaskConfig:
    """Parse a multitask config from a preset, ``--config`` files and ``key=value`` overrides.

    A ``tasks`` list given in a ``--config`` file or an override replaces the preset's tasks as a whole
    (``tasks+=...`` appends to them).

    Raises:
        ConfigError: an unknown key, a wrong value or a failed check; the message names it.
    """
    return parse_config(argv, default_config, schema=MultitaskConfig)

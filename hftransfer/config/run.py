"""A run's config: the core sections plus the plug-in ones (strategy, objectives) and the cross-checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from hftransfer.config.label_shift import LabelShiftConfig
from hftransfer.config.plugins import (
    ObjectiveConfig,
    StrategyConfig,
    default_objectives,
    default_strategy,
    load_plugins,
    objective_configs,
    strategy_config,
)
from hftransfer.config.problem import LOWER_IS_BETTER, SINGLE_LABEL, check_problem_type, default_metric
from hftransfer.config.schema import DataConfig, ModelConfig, TaskType
from hftransfer.config.selection import SelectionConfig
from hftransfer.config.sources import ReportSetConfig, SourceConfig, check_sources
from hftransfer.config.train import TrainConfig
from hftransfer.config.transfer import TransferConfig
from hftransfer.errors import ConfigError


@dataclass
class RunConfig:
    """One fine-tuning run: task, model, data, training and where the run directory goes."""

    task: TaskType = "token-classification"
    """What is predicted: a tag per word (NER) or a label per text / text pair."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="wnut16"))
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=default_strategy)
    """What trains: ``{name: <strategy>, <its fields>}`` (see ``--help`` for each strategy's fields)."""
    objectives: list[ObjectiveConfig] = field(default_factory=default_objectives)
    """What the loss is: ``[{name: task}, {name: <objective>, weight: ..., <its fields>}, ...]``."""
    sources: list[SourceConfig] = field(default_factory=list)
    """Named sources of extra training batches for the objectives that read them (``[{name: target, data:
    <file or builtin>}]``): at every step, each such objective gets a batch of its source besides the task's."""
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    """How the best checkpoint is chosen: by the validation split's own metric, or (domain adaptation, with an
    unlabelled target source) weighted towards the target without its labels (``iwv``, ``dev``)."""
    label_shift: LabelShiftConfig = field(default_factory=LabelShiftConfig)
    """Domain adaptation to other class frequencies: after training, shift the classifier's boundary to the
    target's, estimated from the unlabelled ``label_shift.source`` (``method: em``)."""
    report: list[ReportSetConfig] = field(default_factory=list)
    """Labelled sets scored only in the final report (``[{name: target, data: {dataset: drug_reviews}}]``): read
    after training, so neither training nor model selection sees their labels; scores under ``report.<name>``."""
    transfer: TransferConfig = field(default_factory=TransferConfig)
    """Sequential transfer: the source task's data, re-scored after training to report forgetting."""
    plugins: list[str] = field(default_factory=list)
    """Modules (or ``.py`` files) imported before the strategy and objectives are resolved: where strategies and
    objectives registered outside hftransfer live."""
    output_dir: str | None = None
    """Run directory. Default: ``runs/<task>-<timestamp>``. Reuse it with ``train.resume_from_checkpoint``."""
    overwrite_output_dir: bool = False
    """Allow starting a new run in a directory that already holds one (its checkpoints are removed)."""
    push_to_hub: bool = False
    """Publish the result (with a model card) to the Hugging Face Hub when the run ends. A failed push keeps the
    run's results; retry with ``hftransfer push <run_dir> --repo-id ...``."""
    hub_model_id: str | None = None
    """Hub repository ``user/name`` (or ``name`` under your account) that ``push_to_hub`` creates or updates."""
    hub_private: bool = False
    """Create the Hub repository as private."""
    hub_license: str = "apache-2.0"
    """License in the model card (the default encoders are Apache-2.0; check your data's terms too)."""
    export_onnx: list[Literal["onnx", "onnx-int8"]] = field(default_factory=list)
    """When the run ends, also export ``model/`` for ONNX Runtime on CPU into ``<output_dir>/onnx/``: ``[onnx]``
    (fp32), ``[onnx-int8]`` or both, checked against PyTorch as ``hftransfer export`` does (docs/onnx.md). Needs
    ``pip install "hftransfer[onnx]"``."""

    def __post_init__(self) -> None:
        check_hub_fields(self)
        if self.export_onnx:
            from hftransfer.export.onnx_layout import check_formats, require_onnx

            self.export_onnx = check_formats(self.export_onnx, "export_onnx")
            require_onnx(field="export_onnx")  # before training, not after it
        resolve_plugins(self)
        check_sources(self.sources)
        check_sources(self.report, "report")
        if self.selection.method != "source":
            if self.task != "sequence-classification":
                raise ConfigError(f"selection.method={self.selection.method} is for sequence classification")
            if self.selection.source not in [source.name for source in self.sources]:
                raise ConfigError(
                    f"selection.method={self.selection.method} weighs validation examples against the unlabelled "
                    f"source {self.selection.source!r}; list it: sources=[{{name: {self.selection.source}, data: ...}}]"
                )
        check_label_shift(self)
        if self.task != "token-classification" and self.model.decoding != "argmax":
            raise ConfigError(
                f"model.decoding={self.model.decoding} is for token classification (IOB2 tag sequences)"
            )
        check_crf_head(self)
        if self.task == "token-classification" and self.data.text_pair_column is not None:
            raise ConfigError(
                "data.text_pair_column is for sequence-classification; NER takes one token list"
            )
        check_problem_type(self)
        # Pooling belongs to strategies that classify pooled features themselves (a frozen encoder's head).
        if hasattr(self.strategy, "pooling"):
            if self.task == "token-classification" and self.strategy.pooling is not None:
                raise ConfigError(
                    "strategy.pooling is for sequence tasks; NER classifies every word's own features"
                )
            if self.task == "sequence-classification" and self.strategy.pooling is None:
                self.strategy.pooling = "mean"

    def metric_for_best(self) -> str:
        if self.selection.metric() is not None:
            return self.selection.metric()
        if self.train.metric_for_best:
            return self.train.metric_for_best
        return default_metric(self.task, self.data.problem_type)

    def greater_is_better(self) -> bool:
        if self.train.greater_is_better is not None:
            return self.train.greater_is_better
        return self.metric_for_best() not in LOWER_IS_BETTER

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_hub_fields(config: Any) -> None:
    """``push_to_hub`` needs a valid ``hub_model_id``; checked before training, not after it."""
    if config.push_to_hub and not config.hub_model_id:
        raise ConfigError("push_to_hub=true needs hub_model_id=<user>/<name>")
    if config.hub_model_id is not None:
        parts = config.hub_model_id.split("/")
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        if len(parts) > 2 or not all(part and set(part) <= allowed for part in parts):
            raise ConfigError(
                f"hub_model_id={config.hub_model_id!r} is not a Hub repository id (<user>/<name>: letters, digits, "
                "'-', '_', '.')"
            )


def resolve_plugins(config: Any) -> None:
    """Import ``config.plugins``, type ``strategy`` and ``objectives`` by their registered classes, and check that
    they go together: each objective's requirement on the strategy, no objective twice, and at least one objective
    that teaches something besides holding training back."""
    from hftransfer.registry import get_objective, get_strategy

    load_plugins(config.plugins)
    config.strategy = strategy_config(config.strategy)
    config.objectives = objective_configs(config.objectives)
    strategy = get_strategy(config.strategy.name)
    names = [objective.name for objective in config.objectives]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"objectives: {name} is listed twice; list each objective once")
        entry = get_objective(name)
        reason = entry.requires(strategy) if entry.requires is not None else None
        if reason:
            raise ConfigError(f"objectives: {name} with strategy.name={strategy.name}: {reason}")
    if all(get_objective(name).regulariser for name in names):
        raise ConfigError(
            f"objectives: {names or '[]'} only regularise, nothing would be learned; include the task's loss "
            f"(objectives: [{{name: {ObjectiveConfig.name}}}, ...])"
        )


def check_label_shift(config: RunConfig) -> None:
    """``label_shift``: single-label sequence classification, one prediction per text, a listed source of target
    text (the validation split to calibrate on is checked once the data is loaded).

    Raises:
        ConfigError: naming the field that stands in the way.
    """
    shift = config.label_shift
    if not shift.enabled:
        return
    where = f"label_shift.method={shift.method}"
    if config.task != "sequence-classification" or config.data.problem_type != SINGLE_LABEL:
        raise ConfigError(
            f"{where} shifts the class frequencies of a single-label sequence classifier (this run: "
            f"task={config.task}, data.problem_type={config.data.problem_type})"
        )
    if config.data.long_texts != "truncate":
        raise ConfigError(f"{where} counts one prediction per text; use data.long_texts=truncate")
    if shift.source not in [source.name for source in config.sources]:
        raise ConfigError(
            f"{where} estimates the target's class frequencies from the unlabelled source {shift.source!r}; list "
            f"it: sources=[{{name: {shift.source}, data: ...}}]"
        )


def check_crf_head(config: RunConfig) -> None:
    """``model.head=crf``: token classification, trained by the ``task`` objective, decoded by the CRF.

    Raises:
        ConfigError: naming the field that rules it out.
    """
    if config.model.head != "crf":
        return
    if config.task != "token-classification":
        raise ConfigError(
            f"model.head=crf is for token classification (a CRF scores tag sequences); task={config.task} "
            "takes model.head=linear"
        )
    if config.model.decoding != "argmax":
        raise ConfigError(
            f"model.decoding={config.model.decoding} with model.head=crf: the CRF decodes with its own Viterbi, "
            "which keeps to IOB2 already; leave model.decoding at argmax"
        )
    if "task" not in [objective.name for objective in config.objectives]:
        raise ConfigError(
            "model.head=crf trains the CRF with the task objective: objectives must include task"
        )

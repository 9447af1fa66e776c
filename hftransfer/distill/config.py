"""Configuration of a distillation run: a fine-tuning run of the student plus the teacher (``distill``).

What the student learns from is the objectives list: ``task`` (the gold labels), ``distill_soft`` (the teacher's
soft labels), ``distill_hidden`` (hidden states), ``distill_attention`` (attention maps), ``distill_relation``
(distances and angles between the batch's representations), and any regulariser. The default is the classic recipe
(Hinton et al., 2015): ``[{name: task, weight: 0.5}, {name: distill_soft, weight: 0.5}]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hftransfer.config import ModelConfig, ObjectiveConfig, RunConfig, objective_config
from hftransfer.config.problem import refuse_problem_type
from hftransfer.errors import ConfigError
from hftransfer.registry import get_objective, get_strategy


@dataclass
class DistillConfig:
    """Teacher, student, how their layers line up, and the data the teacher labels. The loss terms are objectives
    (``objectives: [{name: task, weight: 0.5}, {name: distill_soft, weight: 0.5}]``)."""

    teacher: str | None = None
    """Fine-tuned teacher: a run directory of ours (its ``model/``: full model, merged or adapter-only LoRA), a
    model directory or a Hub id. Its labels must be the task's labels (in any order)."""
    teacher_revision: str | None = None
    """Hub revision of the teacher; ignored for local directories."""
    student: Literal["pretrained", "teacher_layers"] = "pretrained"
    """``pretrained``: the encoder in ``model.name_or_path`` with a new head (its own tokenizer is fine: token
    tasks are distilled word by word). ``teacher_layers``: a copy of the teacher with only ``student_layers``
    (DistilBERT-style); ``model.*`` is then not used."""
    student_layers: list[int] | None = None
    """``student=teacher_layers``: the teacher's encoder layers (0-based, increasing) the student keeps. Default:
    every other layer (0, 2, 4, ...)."""
    layer_map: list[list[int]] | None = None
    """Student -> teacher layer pairs ``[[s, t], ...]`` that the ``distill_hidden`` and ``distill_attention``
    objectives compare (1-based layer numbers, 0 = embeddings for hidden states; attention skips pairs with 0).
    Default: uniform, student layer i <-> teacher layer round(i * T / S). Kept here rather than in each objective:
    it describes how the two models line up, which both objectives share."""
    cache_teacher: bool = True
    """Keep the teacher's predictions on the training (and transfer) data on disk, keyed by teacher weights and
    tokenised data, so later runs skip the teacher pass."""
    cache_dir: str | None = None
    """Where cached teacher predictions live. Default ``$HFTRANSFER_CACHE/teacher`` or
    ``~/.cache/hftransfer/teacher``."""
    transfer_data: str | None = None
    """Unlabelled text the teacher labels for the student besides the training set: ``rotten_tomatoes_plot``
    (the film synopses shipped with Rotten Tomatoes) or a file (one text per line, JSONL, CSV, CoNLL, ...)."""
    max_transfer_samples: int | None = None
    """Keep only the first N transfer examples."""

    def __post_init__(self) -> None:
        if self.student_layers is not None and self.student != "teacher_layers":
            raise ConfigError("distill.student_layers needs distill.student=teacher_layers")
        if self.layer_map is not None and (
            not self.layer_map or any(len(pair) != 2 or min(pair) < 0 for pair in self.layer_map)
        ):
            raise ConfigError(
                f"distill.layer_map must be [[student, teacher], ...] pairs of layer numbers >= 0, got {self.layer_map}"
            )
        if self.transfer_data is None and self.max_transfer_samples is not None:
            raise ConfigError("distill.max_transfer_samples needs distill.transfer_data")


def default_distill_objectives() -> list[ObjectiveConfig]:
    """Gold labels and the teacher's soft labels, half each, at temperature 2 (the recipe's classic default)."""
    return [
        objective_config({"name": ObjectiveConfig.name, "weight": 0.5}),
        objective_config({"name": "distill_soft", "weight": 0.5, "temperature": 2.0}),
    ]


def teacher_readers(config: RunConfig, *outputs: str) -> list[str]:
    """The listed objectives that read any of ``outputs`` from the teacher (``logits``, ``hidden_states``, ...)."""
    return [o.name for o in config.objectives if set(get_objective(o.name).teacher_outputs) & set(outputs)]


def check_teacher_objectives(config: RunConfig) -> None:
    """What the listed objectives need of the ``distill`` section: the transfer set teaches only through the
    teacher's logits, and a layer map is only read by objectives that compare layers."""
    distill = config.distill
    if distill.transfer_data is not None and not teacher_readers(config, "logits"):
        raise ConfigError(
            "distill.transfer_data has no gold labels, so it only teaches through the teacher's soft labels; add "
            "objectives+=[{name: distill_soft, weight: 0.5}]"
        )
    if distill.layer_map is not None and not teacher_readers(config, "hidden_states", "attentions"):
        raise ConfigError(
            "distill.layer_map is set but no objective compares layers; add objectives+=[{name: distill_hidden}] "
            "or objectives+=[{name: distill_attention}], or drop distill.layer_map"
        )


@dataclass
class DistillRunConfig(RunConfig):
    """A distillation run: the student's fine-tuning run (task, model, data, train, strategy) plus ``distill``."""

    distill: DistillConfig = field(default_factory=DistillConfig)
    objectives: list[ObjectiveConfig] = field(default_factory=default_distill_objectives)
    """What the student learns from: ``[{name: task, weight: 0.5}, {name: distill_soft, weight: 0.5}]`` by
    default; add ``distill_hidden`` / ``distill_attention`` (same tokenizer as the teacher), ``distill_relation``
    (any tokenizer) or regularisers."""

    def __post_init__(self) -> None:
        super().__post_init__()
        refuse_problem_type(self.data, "data.problem_type", "distillation (soft labels of a softmax teacher)")
        if not self.distill.teacher:  # checked here: the parser builds a default DistillConfig without one
            raise ConfigError(
                "distill.teacher is required: a run directory of ours, a model directory or a Hub id"
            )
        check_teacher_objectives(self)
        if self.distill.student == "teacher_layers" and self.model.name_or_path != ModelConfig.name_or_path:
            raise ConfigError(
                f"model.name_or_path={self.model.name_or_path!r} is not used with distill.student=teacher_layers "
                "(the student is a copy of the teacher's layers); set distill.student=pretrained to distil into it"
            )
        if self.distill.student == "teacher_layers" and self.model.head_bias_init != "default":
            raise ConfigError(
                f"model.head_bias_init={self.model.head_bias_init} with distill.student=teacher_layers: the student "
                "keeps the teacher's trained head; the prior start is for a new head (distill.student=pretrained)"
            )
        strategy = get_strategy(self.strategy.name)
        if (
            self.distill.student == "teacher_layers"
            and strategy.trains_encoder
            and not strategy.updates_pretrained_weights
        ):  # an adapter strategy (LoRA, ...): what trains sits beside the pretrained weights it refers to
            raise ConfigError(
                f"strategy.name={strategy.name} with distill.student=teacher_layers: the layer-dropped student has no "
                "pretrained checkpoint for an adapter to refer to; train it in full (or freeze layers)"
            )

"""Configuration of a distillation run: a fine-tuning run of the student plus the teacher and the loss terms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hftransfer.config import ModelConfig, ObjectiveConfig, RunConfig
from hftransfer.errors import ConfigError
from hftransfer.registry import get_objective, get_strategy


@dataclass
class DistillConfig:
    """Teacher, student and the weights of the loss terms (each term is logged on its own: ``loss`` is the
    weighted hard-label loss, ``loss_soft``, ``loss_hidden`` and ``loss_attention`` the weighted others)."""

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
    hard_weight: float = 0.5
    """Weight of the cross-entropy on the gold labels."""
    soft_weight: float = 0.5
    """Weight of ``T² · KL(teacher || student)`` on temperature-softened outputs."""
    temperature: float = 2.0
    """Softmax temperature T of the soft term."""
    hidden_weight: float = 0.0
    """Weight of the hidden-state MSE between mapped layers (a learned projection bridges different widths).
    Needs the teacher's tokenizer (positions are compared token by token)."""
    attention_weight: float = 0.0
    """Weight of the attention-map MSE between mapped layers. Needs the teacher's tokenizer and head count."""
    layer_map: list[list[int]] | None = None
    """Student -> teacher layer pairs ``[[s, t], ...]`` (1-based layer numbers, 0 = embeddings for hidden
    states). Default: uniform, student layer i <-> teacher layer round(i * T / S)."""
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
        for name in ("hard_weight", "soft_weight", "hidden_weight", "attention_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"distill.{name} must be >= 0, got {getattr(self, name)}")
        if not (self.hard_weight or self.soft_weight or self.hidden_weight or self.attention_weight):
            raise ConfigError("distill: every loss weight is 0; nothing would be learned")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature must be > 0, got {self.temperature}")
        if self.student_layers is not None and self.student != "teacher_layers":
            raise ConfigError("distill.student_layers needs distill.student=teacher_layers")
        if self.layer_map is not None:
            if not (self.hidden_weight or self.attention_weight):
                raise ConfigError(
                    "distill.layer_map is set but distill.hidden_weight and attention_weight are 0"
                )
            if not self.layer_map or any(len(pair) != 2 or min(pair) < 0 for pair in self.layer_map):
                raise ConfigError(
                    f"distill.layer_map must be [[student, teacher], ...] pairs of layer numbers >= 0, "
                    f"got {self.layer_map}"
                )
        if self.transfer_data is None and self.max_transfer_samples is not None:
            raise ConfigError("distill.max_transfer_samples needs distill.transfer_data")
        if self.transfer_data is not None and self.soft_weight == 0:
            raise ConfigError(
                "distill.transfer_data has no gold labels, so it only teaches through the soft term; set "
                "distill.soft_weight > 0"
            )


@dataclass
class DistillRunConfig(RunConfig):
    """A distillation run: the student's fine-tuning run (task, model, data, train, strategy) plus ``distill``."""

    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.distill.teacher:  # checked here: the parser builds a default DistillConfig without one
            raise ConfigError(
                "distill.teacher is required: a run directory of ours, a model directory or a Hub id"
            )
        if not get_strategy(self.strategy.name).trains_encoder:
            raise ConfigError(
                f"strategy.name={self.strategy.name} with distillation: a fixed encoder cannot match the teacher; "
                "use a strategy that trains the encoder"
            )
        losses = [o for o in self.objectives if not get_objective(o.name).regulariser]
        if [(o.name, o.weight) for o in losses] != [(ObjectiveConfig.name, 1.0)]:
            raise ConfigError(
                "objectives: a distillation run weights the task's loss with distill.hard_weight and adds the "
                f"teacher's terms itself; besides {{name: {ObjectiveConfig.name}}} (weight 1) list only regularisers"
            )
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

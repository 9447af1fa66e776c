"""The config of a continued pre-training run (``recipes/pretrain_mlm.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hftransfer.config import DataConfig, ModelConfig, TaskType, TrainConfig
from hftransfer.errors import ConfigError
from hftransfer.pretrain.masking import MaskingConfig


@dataclass
class PretrainConfig:
    """A continued pre-training run: the encoder, its text, the masking and the training loop."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="rotten_tomatoes_plot"))
    """The text: a builtin unlabelled set (``rotten_tomatoes_plot``), a labelled builtin (``rotten_tomatoes``,
    ``wnut16``: TAPT on its train split's texts), a Hub dataset, or a file (one text per line, JSONL, CSV, CoNLL)."""
    task: TaskType | None = None
    """How files are read: ``token-classification`` for CoNLL / word-list files (words joined by spaces). Default:
    a builtin's own task, else ``sequence-classification`` (a ``text`` column, or one text per line)."""
    mlm: MaskingConfig = field(default_factory=MaskingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str | None = None
    """Run directory. Default: ``runs/pretrain_mlm-<timestamp>``. Reuse it with ``train.resume_from_checkpoint``."""
    overwrite_output_dir: bool = False
    """Allow starting a new run in a directory that already holds one (its checkpoints are removed)."""
    # The Hub model card describes a fine-tuning run; push <run>/model yourself (huggingface-cli upload).
    push_to_hub: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.model.head_bias_init != "default":
            raise ConfigError("model.head_bias_init is for a new classification head; a masked LM has none")
        if self.metric_for_best() not in ("loss", "perplexity"):
            raise ConfigError(f"train.metric_for_best={self.metric_for_best()!r}: use loss or perplexity")

    def metric_for_best(self) -> str:
        return self.train.metric_for_best or "loss"

    def greater_is_better(self) -> bool:
        return bool(self.train.greater_is_better)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

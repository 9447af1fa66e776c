"""How the best checkpoint is chosen when the validation data is not the data the model is for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hftransfer.errors import ConfigError


@dataclass
class SelectionConfig:
    """Model selection without target labels (domain adaptation): the labelled validation split comes from the
    source domain, so its plain score can favour checkpoints that fit the source best. ``iwv`` and ``dev`` weight
    each validation example by how target-like it is (a density ratio from a domain classifier on the pretrained
    encoder's features of the validation texts against the unlabelled ``source``)."""

    method: Literal["source", "iwv", "dev"] = "source"
    """``source``: the validation split's own metric (``train.metric_for_best``); ``iwv``: importance-weighted
    validation accuracy (Sugiyama et al. 2007), logged as ``iw_accuracy`` (and ``iw_loss``, ``iw_ess``); ``dev``:
    deep embedded validation (You et al. 2019), the weighted loss with a control variate, logged as ``dev_risk``
    (lower is better). Sequence classification only."""
    source: str = "target"
    """The named source (``sources: [{name: ..., data: ...}]``) of unlabelled target text the weights compare with."""
    clip: list[float] = field(default_factory=lambda: [0.1, 10.0])
    """``[low, high]`` bounds of the density ratios (a few huge weights would make the estimate noisy)."""
    folds: int = 5
    """Cross-fitting folds of the domain classifier (no example is scored by a classifier that saw it)."""

    def __post_init__(self) -> None:
        if self.method not in ("source", "iwv", "dev"):
            raise ConfigError(f"selection.method must be source, iwv or dev, got {self.method!r}")
        if len(self.clip) != 2 or not 0 < self.clip[0] < self.clip[1]:
            raise ConfigError(f"selection.clip must be [low, high] with 0 < low < high, got {self.clip}")
        if self.folds < 2:
            raise ConfigError(f"selection.folds must be >= 2, got {self.folds}")

    def metric(self) -> str | None:
        """The validation metric this method selects by (None: the run's own)."""
        return {"iwv": "iw_accuracy", "dev": "dev_risk"}.get(self.method)

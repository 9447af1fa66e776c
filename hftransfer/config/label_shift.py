"""The ``label_shift`` section: move a classifier's decision boundary to the target domain's class frequencies,
estimated from unlabelled target text (``hftransfer/adaptation/label_shift.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hftransfer.errors import ConfigError


@dataclass
class LabelShiftConfig:
    """After training, estimate how often each class occurs in the target domain from the model's calibrated
    predictions on the unlabelled ``source`` (EM, Saerens et al. 2002) and shift the output layer's bias by
    ``log(target frequency / source frequency)``. Single-label sequence classification; the exported model carries
    the shift. Validation and test (source domain) are scored before it, report sets after it."""

    method: Literal["none", "em"] = "none"
    """``em`` to adapt; ``none`` leaves the model as trained."""
    source: str = "target"
    """The named source (``sources: [{name: ..., data: ...}]``) of unlabelled target text."""
    calibration: Literal["bcts", "temperature", "none"] = "bcts"
    """How the posteriors are calibrated on the source validation split before EM trusts them: a temperature and
    a bias per class (``bcts``), the temperature alone, or not at all."""
    max_iter: int = 200
    """EM iterations at most."""
    tol: float = 1e-6
    """EM stops once no class frequency moves by more than this."""

    def __post_init__(self) -> None:
        if self.method not in ("none", "em"):
            raise ConfigError(f"label_shift.method must be none or em, got {self.method!r}")
        if self.calibration not in ("bcts", "temperature", "none"):
            raise ConfigError(
                f"label_shift.calibration must be bcts, temperature or none, got {self.calibration!r}"
            )
        if self.max_iter < 1 or not self.tol > 0:
            raise ConfigError("label_shift.max_iter must be >= 1 and label_shift.tol > 0")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

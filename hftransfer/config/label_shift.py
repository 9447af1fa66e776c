"""The ``label_shift`` section: move a classifier's decision boundary to the target domain's class frequencies,
estimated from unlabelled target text (``hftransfer/adaptation/label_shift.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hftransfer.errors import ConfigError

METHODS = ("none", "em", "zeroshot")


@dataclass
class LabelShiftConfig:
    """After training, estimate how often each class occurs in the target domain from the unlabelled ``source``
    and shift the output layer's bias by ``log(target frequency / source frequency)``. Single-label sequence
    classification; the exported model carries the shift. Validation and test (source domain) are scored before
    it, report sets after it."""

    method: Literal["none", "em", "zeroshot"] = "none"
    """How the target's class frequencies are estimated: ``em`` from the trained model's calibrated predictions on
    the target texts (Saerens et al. 2002), ``zeroshot`` from the share of each label among a zero-shot
    classifier's predictions on them (``zeroshot_model``, the labels described by ``template`` /
    ``descriptions``: a classifier that never saw the source domain, so not biased by it); ``none`` leaves the
    model as trained."""
    source: str = "target"
    """The named source (``sources: [{name: ..., data: ...}]``) of unlabelled target text."""
    calibration: Literal["bcts", "temperature", "none"] = "bcts"
    """How the posteriors are calibrated on the source validation split before EM trusts them: a temperature and
    a bias per class (``bcts``), the temperature alone, or not at all."""
    max_iter: int = 200
    """EM iterations at most."""
    tol: float = 1e-6
    """EM stops once no class frequency moves by more than this."""
    zeroshot_model: str | None = None
    """``method: zeroshot``: the sentence encoder (or NLI model) that labels the target texts; default: the run's
    ``model.name_or_path`` as it was before training."""
    template: str = "This text is {label}."
    """``method: zeroshot``: how a label is described from its name (e.g. ``This review is {label}.``)."""
    descriptions: dict[str, str | list[str]] | None = None
    """``method: zeroshot``: each label's own description(s), instead of the template (every label needs one)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"label_shift.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.calibration not in ("bcts", "temperature", "none"):
            raise ConfigError(
                f"label_shift.calibration must be bcts, temperature or none, got {self.calibration!r}"
            )
        if self.max_iter < 1 or not self.tol > 0:
            raise ConfigError("label_shift.max_iter must be >= 1 and label_shift.tol > 0")
        if "{label}" not in str(self.template):
            raise ConfigError(f"label_shift.template={self.template!r} has no {{label}} for the label's name")
        if self.descriptions is not None and not isinstance(self.descriptions, dict):
            raise ConfigError(
                "label_shift.descriptions must map each label name to a description (or a list of them), got "
                f"{type(self.descriptions).__name__}"
            )

    @property
    def enabled(self) -> bool:
        return self.method != "none"

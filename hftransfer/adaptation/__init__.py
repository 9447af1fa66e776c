"""Domain adaptation from data: density ratios between a target domain and the labelled data, sample matching,
and the model-selection estimates that use them (importance-weighted validation, DEV).

Everything here is numpy and scikit-learn. The feature vectors they compare come from ``encode.py`` (a pretrained
encoder's pooled features; it imports torch, so it is not imported here); the objective that trains with the
weights is ``objectives/importance_weighting.py``.
"""

from hftransfer.adaptation.density_ratio import (
    DEFAULT_CLIP,
    clip_and_normalise,
    domain_auc,
    domain_classifier_ratios,
    domain_log_odds,
    effective_sample_size,
    nearest_to_target,
    ratios_from_log_odds,
    weight_summary,
)
from hftransfer.adaptation.selection import (
    dev_risk,
    importance_weighted_validation,
    validation_ratios,
    weighted_mean,
)

__all__ = [
    "DEFAULT_CLIP",
    "clip_and_normalise",
    "dev_risk",
    "domain_auc",
    "domain_classifier_ratios",
    "domain_log_odds",
    "effective_sample_size",
    "importance_weighted_validation",
    "nearest_to_target",
    "ratios_from_log_odds",
    "validation_ratios",
    "weight_summary",
    "weighted_mean",
]

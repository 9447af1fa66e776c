"""Model selection without target labels (``config.selection``): the validation examples weighted by how
target-like they are, so the best checkpoint is the one expected to do best on the target domain.

The weights are density ratios ``p_target(x) / p_source(x)`` of the validation texts, from a cross-fitted domain
classifier on the *pretrained* encoder's mean-pooled features of the validation split against the unlabelled
source (``hftransfer/adaptation``). They are computed once, before training, from texts alone; the validation
records then carry ``iw_accuracy``, ``iw_loss``, ``iw_ess`` (and ``dev_risk`` with ``method: dev``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from datasets import Dataset

from hftransfer.errors import ConfigError

logger = logging.getLogger("hftransfer")


def label_free_selection(
    config: Any,
    encode: Callable[[Dataset], tuple[np.ndarray, np.ndarray]],
    features: dict[str, Dataset],
    sources: dict[str, Dataset],
    label_names: list[str],
    report: dict[str, Any],
) -> Callable[[Any, Dataset], dict[str, float]] | None:
    """``metrics(inference_output, validation_examples) -> {iw_accuracy, iw_loss, iw_ess[, dev_risk]}`` for the
    run's validation evaluations, or None when the run selects by the validation split's own metric.

    Args:
        encode: the pretrained encoder's pooled features of tokenised examples
            (:class:`~hftransfer.adaptation.encode.PooledFeatures`, shared with the objectives that encode).
    """
    from hftransfer.adaptation.density_ratio import weight_summary
    from hftransfer.adaptation.selection import dev_risk, importance_weighted_validation, validation_ratios

    selection = getattr(config, "selection", None)
    if selection is None or selection.method == "source":
        return None
    if "validation" not in features:
        raise ConfigError(
            f"selection.method={selection.method} weighs the validation split; the run has none"
        )
    validation = features["validation"]
    validation_x, validation_ids = encode(validation)
    target_x, _ = encode(sources[selection.source])
    ratios = validation_ratios(
        validation_x, target_x, clip=tuple(selection.clip), folds=selection.folds, seed=config.train.seed
    )
    # The validation split is fixed: its weights in example-id order (ids are its row numbers), once.
    weights = np.empty(len(ratios))
    weights[validation_ids] = ratios
    summary = weight_summary(ratios)
    report["selection"] = {
        "method": selection.method,
        "source": selection.source,
        "metric": config.metric_for_best(),
        "validation_examples": len(ratios),
        "target_examples": len(target_x),
        "weight_min": summary["min"],
        "weight_max": summary["max"],
        "effective_sample_size": summary["ess"],
    }
    logger.info(
        "Selection %s: validation examples weighted towards source %s (weights %.3g..%.3g, effective sample size "
        "%.0f of %d)",
        selection.method,
        selection.source,
        summary["min"],
        summary["max"],
        summary["ess"],
        len(ratios),
    )
    label2id = {label: index for index, label in enumerate(label_names)}
    truth: np.ndarray | None = None

    def metrics(output: Any, examples: Dataset) -> dict[str, float]:
        nonlocal truth
        if truth is None:
            truth = np.array([label2id[label] for label in examples["label"]])
        ids = range(len(examples))
        predicted = np.array([output.example_predictions[i][0] for i in ids])
        losses = np.array([output.example_losses[i] for i in ids], dtype=np.float64)
        correct = (predicted == truth).astype(np.float64)
        result = importance_weighted_validation(losses, correct, weights)
        if selection.method == "dev":
            result["dev_risk"] = dev_risk(losses, weights)
        return result

    return metrics

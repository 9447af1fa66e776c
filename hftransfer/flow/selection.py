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
import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.errors import ConfigError

logger = logging.getLogger("hftransfer")


def label_free_selection(
    config: Any,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: dict[str, Dataset],
    sources: dict[str, Dataset],
    label_names: list[str],
    accelerator: Accelerator,
    report: dict[str, Any],
) -> Callable[[Any, Dataset], dict[str, float]] | None:
    """``metrics(inference_output, validation_examples) -> {iw_accuracy, iw_loss, iw_ess[, dev_risk]}`` for the
    run's validation evaluations, or None when the run selects by the validation split's own metric. Call it
    before the strategy changes ``model`` (the weights use the pretrained encoder)."""
    from hftransfer.adaptation.encode import pooled_example_features
    from hftransfer.adaptation.selection import dev_risk, importance_weighted_validation, validation_ratios

    selection = getattr(config, "selection", None)
    if selection is None or selection.method == "source":
        return None
    if "validation" not in features:
        raise ConfigError(
            f"selection.method={selection.method} weighs the validation split; the run has none"
        )
    validation_x, validation_ids = pooled_example_features(
        model, tokenizer, features["validation"], device=accelerator.device
    )
    target_x, _ = pooled_example_features(
        model, tokenizer, sources[selection.source], device=accelerator.device
    )
    ratios = validation_ratios(
        validation_x, target_x, clip=tuple(selection.clip), folds=selection.folds, seed=config.train.seed
    )
    weights = dict(zip(validation_ids.tolist(), ratios.tolist()))
    label2id = {label: index for index, label in enumerate(label_names)}
    ess = float(ratios.sum() ** 2 / (ratios**2).sum())
    report["selection"] = {
        "method": selection.method,
        "source": selection.source,
        "metric": config.metric_for_best(),
        "validation_examples": len(ratios),
        "target_examples": len(target_x),
        "weight_min": float(ratios.min()),
        "weight_max": float(ratios.max()),
        "effective_sample_size": ess,
    }
    logger.info(
        "Selection %s: validation examples weighted towards source %s (weights %.3g..%.3g, effective sample size "
        "%.0f of %d)",
        selection.method,
        selection.source,
        ratios.min(),
        ratios.max(),
        ess,
        len(ratios),
    )

    def metrics(output: Any, examples: Dataset) -> dict[str, float]:
        ids = range(len(examples))
        truth = [label2id[label] for label in examples["label"]]
        correct = np.array(
            [output.example_predictions[i][0] == t for i, t in zip(ids, truth)], dtype=np.float64
        )
        losses = np.array([output.example_losses[i] for i in ids], dtype=np.float64)
        w = np.array([weights[i] for i in ids], dtype=np.float64)
        result = importance_weighted_validation(losses, correct, w)
        if selection.method == "dev":
            result["dev_risk"] = dev_risk(losses, w)
        return result

    return metrics

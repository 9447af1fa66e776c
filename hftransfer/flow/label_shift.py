"""The run's side of ``label_shift``: what it needs of the plan (checked before training) and the adaptation
itself, after the best model is restored and the source splits are scored, before the report sets and the export
(``hftransfer/adaptation/label_shift.py`` has the method)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.errors import ConfigError
from hftransfer.evaluation.inference import model_inputs
from hftransfer.export.peft_adapter import is_peft_model
from hftransfer.modeling.head_init import output_layer


def check_label_shift_run(config: Any, plan: Any, eval_loaders: dict[str, DataLoader]) -> None:
    """Before training: the strategy trains a plain transformers classifier whose output layer can take the shift,
    and a validation split exists to calibrate on.

    Raises:
        ConfigError: naming the strategy or the missing split.
    """
    where = f"label_shift.method={config.label_shift.method}"
    model = plan.model
    if plan.train_loader is not None or is_peft_model(model):
        raise ConfigError(
            f"{where} folds the shift into a transformers classifier's output layer; strategy.name="
            f"{config.strategy.name} exports another kind of model (use full, freeze, gradual, bitfit, ...)"
        )
    try:
        output_layer(model)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if config.label_shift.calibration != "none" and "validation" not in eval_loaders:
        raise ConfigError(
            f"{where} calibrates on the validation split and the run has none; give one, or set "
            "label_shift.calibration=none"
        )


def apply_label_shift(run: Any) -> dict[str, Any]:
    """Estimate the target's class frequencies from the unlabelled texts and fold calibration and shift into the
    (restored best) model's output layer; saves it as the best model again when no export step follows."""
    from hftransfer.adaptation.label_shift import adapt_to_label_shift

    config, accelerator = run.config, run.accelerator
    labels = list(run.label_names)
    model = accelerator.unwrap_model(run.loop.model)
    if "validation" in run.eval_loaders:
        validation = _logits(run.loop.model, run.eval_loaders["validation"], accelerator)
    else:  # calibration: none (checked before training)
        validation = (np.zeros((1, len(labels))), np.zeros(1, dtype=np.int64))
    loader = accelerator.prepare(
        build_eval_dataloader(
            run.extras["label_shift_texts"],
            FeatureCollator.for_device(run.tokenizer, accelerator.device),
            batch_size=config.train.eval_batch_size,
            num_workers=config.train.num_workers,
        )
    )
    target_logits, _ = _logits(run.loop.model, loader, accelerator)
    # The training split's frequencies serve only uncalibrated posteriors (calibrated ones bring their own).
    prior = source_prior(run.data, labels) if config.label_shift.calibration == "none" else None
    report = adapt_to_label_shift(
        output_layer(model), validation, target_logits, prior, labels, config.label_shift
    )
    if run.plan.export is None:  # the saved best model is what the run exports: it takes the shift too
        run.plan.save_best(accelerator, run.loop.model)
    return report


def source_prior(data: Any, labels: list[str]) -> np.ndarray:
    """The labelled training split's class frequencies, in label-id order (add-one smoothed)."""
    counts = Counter(data.splits["train"]["label"])
    values = np.array([counts.get(label, 0) + 1 for label in labels], dtype=np.float64)
    return values / values.sum()


@torch.no_grad()
def _logits(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator
) -> tuple[np.ndarray, np.ndarray]:
    """Every row's logits (and labels, ``-1`` where the loader has none), gathered across processes."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in loader:
        output = model(**model_inputs(batch)).logits.float()
        gold = batch.get("labels", torch.full(output.shape[:1], -1, device=output.device))
        output, gold = accelerator.gather_for_metrics((output, gold))
        logits.append(output.cpu().numpy())
        labels.append(gold.cpu().numpy())
    model.train(was_training)
    return np.concatenate(logits), np.concatenate(labels)

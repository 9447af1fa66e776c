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
    if config.label_shift.method == "zeroshot":
        _check_zero_shot(config, [model.config.id2label[i] for i in range(len(model.config.id2label))])
    if config.label_shift.calibration != "none" and "validation" not in eval_loaders:
        raise ConfigError(
            f"{where} calibrates on the validation split and the run has none; give one, or set "
            "label_shift.calibration=none"
        )


def _check_zero_shot(config: Any, labels: list[str]) -> None:
    """Before training, so that a typo costs no training run: the descriptions name exactly the task's labels, and
    a zero-shot model named in the config is there (its config loads)."""
    from transformers import AutoConfig

    from hftransfer.assets import resolve_model_name

    settings = config.label_shift
    if settings.descriptions is not None:
        unknown = sorted(set(settings.descriptions) - set(labels))
        missing = [name for name in labels if name not in settings.descriptions]
        if unknown or missing:
            raise ConfigError(
                f"label_shift.descriptions must describe exactly the task's labels {labels} (unknown: {unknown}, "
                f"missing: {missing})"
            )
    if settings.zeroshot_model is not None:
        try:
            AutoConfig.from_pretrained(resolve_model_name(settings.zeroshot_model))
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"label_shift.zeroshot_model={settings.zeroshot_model!r} cannot be loaded: {error}"
            ) from None


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
    target_prior, zero_shot = None, None
    if config.label_shift.method == "zeroshot":
        target_prior, zero_shot = zero_shot_target_prior(config, run.data, labels)
    report = adapt_to_label_shift(
        output_layer(model), validation, target_logits, prior, labels, config.label_shift, target_prior
    )
    if zero_shot is not None:
        report["zeroshot"] = zero_shot
    if run.plan.export is None:  # the saved best model is what the run exports: it takes the shift too
        run.plan.save_best(accelerator, run.loop.model)
    return report


def source_prior(data: Any, labels: list[str]) -> np.ndarray:
    """The labelled training split's class frequencies, in label-id order (add-one smoothed)."""
    counts = Counter(data.splits["train"]["label"])
    values = np.array([counts.get(label, 0) + 1 for label in labels], dtype=np.float64)
    return values / values.sum()


def zero_shot_target_prior(config: Any, data: Any, labels: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The target's class frequencies as the (smoothed) shares of a zero-shot classifier's answers on the
    unlabelled target texts, and what ``metrics.json`` records of it. Every process computes the same (the texts
    are the source's, read again: the run kept only their tokens)."""
    from hftransfer.adaptation.label_shift import predicted_shares
    from hftransfer.data.sources import unlabelled_examples
    from hftransfer.zeroshot import ZeroShotClassifier

    settings = config.label_shift
    described: list[str] | dict[str, Any] = labels
    if settings.descriptions is not None:  # checked against the labels before training
        described = {name: settings.descriptions[name] for name in labels}
    source = next(s for s in config.sources if s.name == settings.source)
    texts = unlabelled_examples(source.data, config.task, config.data, data, source.max_samples)["text"]
    model = settings.zeroshot_model or config.model.name_or_path
    classifier = ZeroShotClassifier(
        model,
        template=settings.template,
        batch_size=config.train.eval_batch_size,
        max_length=config.data.max_length,
    )
    answers = [labels.index(row["label"]) for row in classifier.predict(texts, described)]
    shares = predicted_shares(np.array(answers), len(labels))
    return shares, {"model": model, "template": settings.template, "texts": len(texts)}


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

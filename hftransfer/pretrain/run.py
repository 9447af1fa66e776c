"""Continued pre-training with masked language modelling (DAPT / TAPT, Gururangan et al., 2020)::

    run = setup(config)     # start -> texts -> windows -> masked LM -> loop (resumed when asked)
    train(run)              # hftransfer.flow: the repository's TrainingLoop
    evaluate_best(run)
    finish(run)

*Domain*-adaptive pre-training (DAPT) continues MLM on unlabelled text of the target domain; *task*-adaptive
pre-training (TAPT) on the task's own training texts, labels ignored. Labelled data (a builtin task, a Hub dataset,
a file with labels) is split exactly as a fine-tuning run with the same ``data`` section splits it, and only its
train split's texts are trained on (its validation texts select the best model, its test texts are never seen);
unlabelled text loses a held-out ``data.validation_size`` slice for validation. Texts longer than
``data.max_length`` tokens become several windows. The validation windows are masked once (the same masks at every
evaluation, so losses compare); training batches are masked anew each epoch (:mod:`hftransfer.pretrain.masking`).

The exported ``model/`` is the masked LM with its tokenizer (``AutoModelForMaskedLM``); any fine-tuning recipe
starts from it with ``model.name_or_path=<run>/model``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from datasets import Dataset, DatasetDict

from hftransfer.assets import resolve_model_name
from hftransfer.data.batching import FeatureCollator, build_eval_dataloader, build_train_dataloader
from hftransfer.data.mixing import LoaderBatches
from hftransfer.data.sources import (
    TaskData,
)
from hftransfer.errors import ConfigError
from hftransfer.export.save import load_saved_weights, save_pretrained_atomic
from hftransfer.flow.core import Run, start_loop
from hftransfer.modeling.build import load_tokenizer, model_max_length
from hftransfer.pretrain.config import PretrainConfig
from hftransfer.pretrain.masking import (
    MaskedBatches,
    WholeWordMasker,
    WordIdsCollator,
    premask,
    tokenize_windows,
)
from hftransfer.pretrain.mlm_head import (
    MaskedTokenPredictor,
    build_masked_lm,
    carried_weights,
    masked_lm_loss,
    mlm_evaluator,
)
from hftransfer.pretrain.texts import load_texts
from hftransfer.runs import start_run
from hftransfer.strategies import StrategyPlan
from hftransfer.strategies.layers import count_parameters
from hftransfer.training.distributed_checks import check_distributed_setup

logger = logging.getLogger("hftransfer")


def _exporter(tokenizer: Any, directory: Path, carried: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    """``save(accelerator, trained)`` and ``restore(accelerator, trained)`` of the masked LM in ``directory``."""

    def save(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        masked_lm = accelerator.unwrap_model(trained).masked_lm
        if accelerator.is_main_process:
            state = {**masked_lm.state_dict(), **carried}
            save_pretrained_atomic(masked_lm, tokenizer, directory, state_dict=state)
        accelerator.wait_for_everyone()

    def restore(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        masked_lm = accelerator.unwrap_model(trained).masked_lm
        load_saved_weights(accelerator, masked_lm, directory, ignore=carried)

    return save, restore


def setup(config: PretrainConfig, recipe: str = "pretrain_mlm") -> Run:
    """Start the run, read and split the texts, build the masked LM, tokenise and mask, and start the loop (resumed
    when asked): the :class:`~hftransfer.flow.core.Run` that ``train``, ``evaluate_best`` and ``finish`` take.

    Raises:
        ConfigError / DataError: bad config or data, before any training starts.
    """
    accelerator, run_dir, trackers, resume_from = start_run(config, recipe)
    with accelerator.main_process_first():
        texts, data_report = load_texts(config)
    tokenizer = load_tokenizer(config.model)
    masker = WholeWordMasker.for_tokenizer(tokenizer, **dataclasses.asdict(config.mlm))
    model, head_report = build_masked_lm(config.model)
    limit = model_max_length(tokenizer, model)
    if config.data.max_length > limit:
        raise ConfigError(
            f"data.max_length={config.data.max_length} exceeds what this model accepts ({limit})"
        )
    with accelerator.main_process_first():
        features = {
            split: tokenize_windows(t, tokenizer, config.data.max_length) for split, t in texts.items()
        }
    if "validation" in features:
        features["validation"] = premask(features["validation"], masker, config.train.seed)
    loader = build_train_dataloader(
        features["train"],
        WordIdsCollator.for_device(tokenizer, accelerator.device),
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        group_by_length=config.train.group_by_length,
        num_workers=config.train.num_workers,
    )
    batches = MaskedBatches(
        LoaderBatches(accelerator.prepare(loader), accelerator),
        masker,
        config.train.seed,
        accelerator.process_index,
    )
    eval_loader = None
    if "validation" in features:
        eval_loader = build_eval_dataloader(
            features["validation"],
            FeatureCollator.for_device(tokenizer, accelerator.device),
            batch_size=config.train.eval_batch_size,
            num_workers=config.train.num_workers,
        )
    carried = carried_weights(resolve_model_name(config.model.name_or_path), model)
    save, restore = _exporter(tokenizer, run_dir / "model", carried)
    evaluate = mlm_evaluator(accelerator)
    predictor = MaskedTokenPredictor(model)
    check_distributed_setup(accelerator, predictor, strategy="full")  # before prepare, as flow/setup.py does
    loop = start_loop(
        config,
        accelerator,
        run_dir,
        trackers=trackers,
        resume_from=resume_from,
        model=predictor,
        train_loader=batches,
        eval_loader=eval_loader,
        evaluate=evaluate,
        save_model=lambda trained: save(accelerator, trained),
        loss_fn=masked_lm_loss,
    )
    report = {
        "data": data_report,
        "features": {split: len(windows) for split, windows in features.items()},
        "mlm_head": {**head_report, "carried": sorted(carried)},
        "masking": dataclasses.asdict(config.mlm),
        "parameters": count_parameters(predictor),
    }
    plan = StrategyPlan(predictor, [], save_best=save, restore_best=restore, report={"name": "full"})
    splits = DatasetDict({split: Dataset.from_dict({"text": t}) for split, t in texts.items()})
    final_loaders = {"validation": loop.eval_loader} if loop.eval_loader is not None else {}
    run = Run(
        config,
        accelerator,
        run_dir,
        TaskData(splits, [], data_report),
        tokenizer,
        loop,
        evaluate,
        plan,
        final_loaders,
        report,
    )
    logger.info("Run directory: %s", run_dir)
    logger.info(
        "Texts %s (%s, %s) -> windows %s; model %s (%.1fM parameters), MLM head %s",
        data_report["texts"],
        data_report["source"],
        data_report["kind"],
        report["features"],
        config.model.name_or_path,
        report["parameters"]["total"] / 1e6,
        head_report["head"],
    )
    return run

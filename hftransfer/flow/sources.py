"""The named sources of a run (``config.sources``) as loaders, and the checks that tie them to the objectives.

A source is unlabelled text (target-domain text for domain adaptation, ...) tokenised like the task's inputs. An
objective reads one by listing its name in ``Objective.sources``; at every training step it then finds a batch of
it under ``batch["sources"][name]`` and the model's outputs on that batch under ``outputs["sources"][name]`` (the
same forward call as the task batch's, so DDP sees one forward per step: ``objectives/owned.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from accelerate import Accelerator
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.data.batching import FeatureCollator, build_train_dataloader
from hftransfer.data.features import tokenize, tokenize_options
from hftransfer.data.mixing import LoaderBatches, WithSourceBatches
from hftransfer.data.sources import TaskData, unlabelled_examples
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import unlisted_source

logger = logging.getLogger("hftransfer")


def check_source_readers(config: Any, objectives: Any, plan: Any) -> None:
    """Every source an objective reads is listed in ``sources``, every listed source is read by one, and the
    strategy runs the encoder on token batches.

    Raises:
        ConfigError: naming the objective or source; sources in a run whose strategy trains on data of its own
            (cached encoder features).
    """
    listed = [source.name for source in getattr(config, "sources", [])]
    read: set[str] = set()
    for objective in objectives.objectives:
        for name in (*objective.sources, *objective.reads_at_build):
            if name not in listed:
                raise ConfigError(unlisted_source(objective.name, name, listed))
            read.add(name)
    selection = getattr(config, "selection", None)
    if selection is not None and selection.method != "source":
        read.add(selection.source)  # its texts weigh the validation examples
    label_shift = getattr(config, "label_shift", None)
    if label_shift is not None and label_shift.enabled:
        read.add(label_shift.source)  # its texts give the target's class frequencies, after training
    if objectives.sources and plan.train_loader is not None:
        raise ConfigError(
            f"sources: strategy.name={config.strategy.name} trains a head on cached encoder features, and the "
            "objectives that read sources need the encoder's forward pass on their batches; use a strategy that runs "
            "it (freeze, lora, full, ...)"
        )
    unread = [name for name in listed if name not in read]
    if unread:
        raise ConfigError(
            f"sources: {unread[0]!r} is read by no objective (nor by selection or label_shift); remove it, or "
            "add an objective that reads it"
        )


def tokenize_sources(
    config: Any, data: TaskData, tokenizer: PreTrainedTokenizerBase, report: dict[str, Any]
) -> dict[str, Dataset]:
    """Every named source's examples (without the texts of ``data``'s validation and test splits), tokenised like
    the task's inputs with no labels."""
    sources = {}
    for source in getattr(config, "sources", []):
        examples = unlabelled_examples(source.data, config.task, config.data, data, source.max_samples)
        features, _ = tokenize(examples, tokenizer, config.task, None, **tokenize_options(config.data))
        sources[source.name] = features.remove_columns(
            [c for c in ("labels", "word_index") if c in features.column_names]
        )
        report.setdefault("sources", {})[source.name] = {
            "data": source.data,
            "examples": len(examples),
            "features": len(features),
        }
        logger.info("Source %s: %d unlabelled examples from %s", source.name, len(examples), source.data)
    return sources


def with_sources(
    config: Any,
    batches: Any,
    sources: dict[str, Dataset],
    tokenizer: PreTrainedTokenizerBase,
    accelerator: Accelerator,
    report: dict[str, Any],
    per_step: list[str] | None = None,
) -> Any:
    """``batches`` (the task's training loader) with a batch of each named source in ``per_step`` (default: every
    source) attached to each; ``batches`` unchanged when there is none (sources read only before or after
    training, by selection or label_shift, need no batches)."""
    listed = getattr(config, "sources", [])  # a multitask config has none
    wanted = [s for s in listed if s.name in sources and (per_step is None or s.name in per_step)]
    if not wanted:
        return batches
    collator = FeatureCollator.for_device(tokenizer, accelerator.device)
    loaders = {}
    for source in wanted:
        loader = build_train_dataloader(
            sources[source.name],
            collator,
            batch_size=source.batch_size or config.train.batch_size,
            seed=config.train.seed,
            group_by_length=False,
            num_workers=config.train.num_workers,
        )
        loaders[source.name] = accelerator.prepare(loader)
        report["sources"][source.name]["batches"] = len(loaders[source.name])
    return WithSourceBatches(LoaderBatches(accelerator.prepare(batches), accelerator), loaders, accelerator)

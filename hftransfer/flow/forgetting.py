"""The forgetting report of a sequential-transfer run (``transfer.source_eval``): the source task scored by the
source model before this run, and again after it, by the source model's own head on this run's encoder.

The source model is the run's starting point (``model.name_or_path``, or ``strategy.columns`` for a progressive
run) and must be a fine-tuned task model. "After" is assembled from what the run exported, so it measures what a
user would deploy: the exported encoder (a LoRA adapter merged into it) under the source head, kept aside; a
progressive export's own column for the source task; and for a strategy that never changes the encoder (a frozen
feature extractor) the source model itself. Both scores come from :class:`~hftransfer.predict.Predictor`, the
same code that ``hftransfer predict`` scores a labelled file with. The "before" score is taken when the run starts,
so a bad ``source_eval`` fails before any training.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from hftransfer.config import DataConfig
from hftransfer.errors import ConfigError, DataError

logger = logging.getLogger("hftransfer")


@dataclass
class SourceEval:
    """The source task's model, data and score before the run."""

    model_dir: Path
    task: str
    examples: Dataset
    metric: str
    before: dict[str, Any]
    where: str  # what source_eval named, for the report


def source_model_dir(config: Any) -> Path:
    """The fine-tuned source model: ``strategy.columns``'s last column, or ``model.name_or_path``.

    Raises:
        ConfigError: it is not a local fine-tuned token- or sequence-classification model.
    """
    from hftransfer.modeling.source_model import model_directory
    from hftransfer.progressive.export import column_directory, column_task, network_directory

    named = getattr(config.strategy, "columns", None) or config.model.name_or_path
    network = network_directory(named)
    if network is not None:
        return column_directory(network)
    directory = Path(model_directory(named))
    try:
        column_task(directory)
    except ConfigError:
        field = "strategy.columns" if getattr(config.strategy, "columns", None) else "model.name_or_path"
        raise ConfigError(
            f"transfer.source_eval re-scores the source task with the source model's own head, but {field}="
            f"{named} is not a local fine-tuned task model (name the source run's directory)"
        ) from None
    return directory


def read_source_examples(where: str, split: str, task: str) -> tuple[Dataset, str | None]:
    """The labelled source examples named by ``transfer.source_eval``, and the source run's metric if it says."""
    from hftransfer.config.parse import load_config_file
    from hftransfer.data.sources import load_task_data

    path = Path(where)
    metric = None
    if path.is_dir() and (path / "config.yaml").is_file():  # the source run: its own carving of its data
        source = load_config_file(path / "config.yaml")
        data, task, metric = source.data, source.task, source.metric_for_best()
    elif path.is_file():
        data = DataConfig(train_file=str(path), validation_size=0.0, test_size=0.0)
        split = "train"  # a file is the whole set
    elif path.exists():
        raise ConfigError(f"transfer.source_eval={where}: a directory without a run's config.yaml")
    else:
        data = DataConfig(dataset=where)
    loaded = load_task_data(data, task)
    if split not in loaded.splits:
        raise DataError(
            f"transfer.source_eval={where} has no {split!r} split (it has {sorted(loaded.splits)})"
        )
    return loaded.splits[split], metric


def prepare_source_eval(config: Any) -> SourceEval | None:
    """Resolve ``transfer.source_eval`` and score the source model on it (every process: prediction is shared)."""
    transfer = getattr(config, "transfer", None)
    if transfer is None or not transfer.source_eval:
        return None
    from hftransfer.config.problem import SINGLE_LABEL, default_metric
    from hftransfer.progressive.export import column_task

    model_dir = source_model_dir(config)
    task, _ = column_task(model_dir)
    examples, metric = read_source_examples(transfer.source_eval, transfer.source_split, task)
    before = score(model_dir, examples)
    metric = metric or default_metric(task, SINGLE_LABEL)
    if metric not in before:
        raise ConfigError(f"transfer.source_eval: the source task has no {metric!r} score ({sorted(before)})")
    logger.info(
        "Source task before training: %s = %.4f (%s, %d examples)",
        metric,
        before[metric],
        model_dir,
        len(examples),
    )
    return SourceEval(model_dir, task, examples, metric, before, transfer.source_eval)


def score(model_dir: Path | str, examples: Dataset) -> dict[str, Any]:
    """The headline scores (per-type breakdowns left out) of ``model_dir`` on labelled ``examples``."""
    from hftransfer.predict import Predictor

    metrics = Predictor(str(model_dir)).predict(examples).metrics
    if metrics is None:
        raise DataError(
            "transfer.source_eval: its labels are not the source model's; nothing could be scored"
        )
    return {key: value for key, value in metrics.items() if "/" not in key}


def forgetting_report(run: Any, source: SourceEval) -> dict[str, Any]:
    """Score the source task again with this run's exported encoder; ``metrics.json``'s ``transfer``."""
    accelerator = run.accelerator
    scratch = run.run_dir / ".source-after"
    try:
        after_dir, how = source_model_after(run, source, scratch)
        after = score(after_dir, source.examples)
    finally:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(scratch, ignore_errors=True)
    change = after[source.metric] - source.before[source.metric]
    logger.info(
        "Source task after training: %s = %.4f (%+.4f; %s)", source.metric, after[source.metric], change, how
    )
    return {
        "source_eval": source.where,
        "source_model": str(source.model_dir),
        "examples": len(source.examples),
        "metric": source.metric,
        "before": source.before,
        "after": after,
        "change": change,
        "after_from": how,
    }


def source_model_after(run: Any, source: SourceEval, scratch: Path) -> tuple[Path, str]:
    """The source model after this run, as a directory to score (assembled into ``scratch`` when needed)."""
    from hftransfer.progressive.export import column_directory, network_directory
    from hftransfer.registry import get_strategy

    export = run.run_dir / "model"
    network = network_directory(export)
    if network is not None:  # the source task is the last of the columns the run started from
        return column_directory(
            network, from_last=1
        ), "the progressive export's own column for the source task"
    if not get_strategy(run.config.strategy.name).trains_encoder:
        return source.model_dir, "the source model itself: this strategy never changes the encoder"
    if run.accelerator.is_main_process:
        assemble_source_model(export, source, scratch)
    run.accelerator.wait_for_everyone()
    return scratch, "the source head on the exported encoder"


def assemble_source_model(export: Path, source: SourceEval, directory: Path) -> None:
    """Write the source model with the encoder of ``export`` (a LoRA adapter merged into it) to ``directory``."""
    from transformers import AutoTokenizer

    from hftransfer.export.peft_adapter import is_peft_model, merge_adapter
    from hftransfer.export.save import save_pretrained_atomic
    from hftransfer.loading import load_for_prediction
    from hftransfer.progressive.export import column_task

    trained, _ = load_for_prediction(str(export))
    if is_peft_model(trained):
        trained = merge_adapter(trained)
    _, auto = column_task(source.model_dir)
    model = auto.from_pretrained(source.model_dir)
    missing, unexpected = model.base_model.load_state_dict(trained.base_model.state_dict(), strict=False)
    # A sequence model's pooler belongs with its head here: one side of a token <-> sequence pair has none.
    missing = [key for key in missing if not key.startswith("pooler.")]
    unexpected = [key for key in unexpected if not key.startswith("pooler.")]
    if missing or unexpected:
        raise RuntimeError(
            f"the exported encoder does not fit the source model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    tokenizer = AutoTokenizer.from_pretrained(source.model_dir)
    save_pretrained_atomic(model, tokenizer, directory, what="the source model after training")

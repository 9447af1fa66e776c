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
from dataclasses import dataclass, field
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
    earlier: list[SourceEval] = field(default_factory=list)  # transfer.earlier_runs, oldest first


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
    earlier = [prepare_earlier_run(run, transfer.source_split) for run in transfer.earlier_runs]
    check_columns_for_earlier_runs(config, len(earlier))
    return SourceEval(model_dir, task, examples, metric, before, transfer.source_eval, earlier)


def run_model_dir(run_dir: Path) -> Path:
    """The model a finished run exported for its own task: ``model/``, or a progressive export's last column.

    Raises:
        ConfigError: ``run_dir`` is no finished run of a token- or sequence-classification task.
    """
    from hftransfer.progressive.export import column_directory, network_directory

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"transfer.earlier_runs: {run_dir} is not a run directory (it has no config.yaml)")
    network = network_directory(run_dir)
    return column_directory(network) if network is not None else run_dir / "model"


def prepare_earlier_run(run_dir: str, split: str) -> SourceEval:
    """An earlier task of the chain, scored before this run by its own run's model."""
    from hftransfer.progressive.export import column_task

    model_dir = run_model_dir(Path(run_dir))
    task, _ = column_task(model_dir)
    examples, metric = read_source_examples(run_dir, split, task)
    before = score(model_dir, examples)
    logger.info("Earlier task before training: %s = %.4f (%s)", metric, before[metric], model_dir)
    return SourceEval(model_dir, task, examples, metric, before, run_dir)


def check_columns_for_earlier_runs(config: Any, earlier: int) -> None:
    """A progressive run needs a column for the source task and for each earlier run.

    Raises:
        ConfigError: ``strategy.columns`` holds fewer columns than that.
    """
    from hftransfer.progressive.export import column_count, network_directory

    columns = getattr(config.strategy, "columns", None)
    if not earlier or not columns:
        return
    network = network_directory(columns)
    have = column_count(network) if network else 1
    if have < earlier + 1:
        raise ConfigError(
            f"transfer.earlier_runs names {earlier} run(s) before the source task, but strategy.columns={columns} "
            f"has {have} column(s): it needs one for the source task and one for each earlier run"
        )


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
    """Score the source task (and ``transfer.earlier_runs``) again with this run's exported encoder;
    ``metrics.json``'s ``transfer``."""
    accelerator = run.accelerator
    scratch = run.run_dir / ".source-after"
    try:
        report = rescore(run, source, source, scratch / "source", from_last=1)
        if source.earlier:
            count = len(source.earlier)
            report["earlier"] = [
                rescore(run, task, source, scratch / f"earlier-{index}", from_last=count + 1 - index)
                for index, task in enumerate(source.earlier)
            ]
    finally:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(scratch, ignore_errors=True)
    return report


def rescore(run: Any, task: SourceEval, source: SourceEval, scratch: Path, from_last: int) -> dict[str, Any]:
    """``task`` (the source task, or an earlier one) scored after this run: its report entry."""
    after_dir, how = source_model_after(run, task, scratch, from_last=from_last, source=source)
    after = score(after_dir, task.examples)
    change = after[task.metric] - task.before[task.metric]
    what = "Source task" if task is source else f"Earlier task {task.where}"
    logger.info(
        "%s after training: %s = %.4f (%+.4f; %s)", what, task.metric, after[task.metric], change, how
    )
    return {
        "source_eval": task.where,
        "source_model": str(task.model_dir),
        "examples": len(task.examples),
        "metric": task.metric,
        "before": task.before,
        "after": after,
        "change": change,
        "after_from": how,
    }


def source_model_after(
    run: Any, task: SourceEval, scratch: Path, from_last: int = 1, source: SourceEval | None = None
) -> tuple[Path, str]:
    """``task``'s model after this run, as a directory to score (assembled into ``scratch`` when needed).

    ``task`` is the source task (``from_last=1``, ``source`` None or ``task``) or an earlier task of the chain,
    ``from_last`` columns before this run's own in a progressive export.
    """
    from hftransfer.progressive.export import column_directory, network_directory
    from hftransfer.registry import get_strategy

    source = source or task
    export = run.run_dir / "model"
    network = network_directory(export)
    which = "the source" if task is source else "its run's"
    if network is not None:  # each earlier task has its own column, frozen since that task's run
        whose = "the source task" if task is source else "that task"
        return column_directory(
            network, from_last=from_last
        ), f"the progressive export's own column for {whose}"
    encoder, how = export, f"{which} head on the exported encoder"
    if not get_strategy(run.config.strategy.name).trains_encoder:
        if task is source:
            return source.model_dir, "the source model itself: this strategy never changes the encoder"
        encoder, how = (
            source.model_dir,
            f"{which} head on the source model's encoder (this strategy keeps it)",
        )
    if run.accelerator.is_main_process:
        assemble_source_model(encoder, task, scratch)
    run.accelerator.wait_for_everyone()
    return scratch, how


def assemble_source_model(export: Path, source: SourceEval, directory: Path) -> None:
    """Write ``source``'s model (its head) with the encoder of ``export`` (a LoRA adapter merged into it) to
    ``directory``."""
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

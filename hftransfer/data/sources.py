"""Load a task's splits from files, a builtin offline dataset or the Hub, and carve the splits that are missing.

Columns: ``tokens``/``tags`` (IOB2 strings) for token classification; ``text``, ``label`` (a string) and, with
``data.text_pair_column``, ``text_pair`` for sequence classification. Carving is deterministic (``data.split_seed``):
the test split (``test_size`` of all examples of the source) first, then validation (``validation_size`` of all of
them) from the rest, stratified by label for classification.

This module gathers the given splits, checks the labels and assembles the report. The parts live next to it: the
builtin offline datasets in :mod:`hftransfer.data.builtin_datasets`, the label order and checks in
:mod:`hftransfer.data.task_labels`, the carving in :mod:`hftransfer.data.carving`. Their public names are
importable from here too, where callers have always found them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Sequence, Value

from hftransfer.config import DataConfig
from hftransfer.config.problem import REGRESSION, SINGLE_LABEL
from hftransfer.data.builtin_datasets import (
    BUILTIN_TASKS,
    BUILTIN_UNLABELLED,
    ROTTEN_TOMATOES_LABELS,
    read_builtin,
    read_builtin_unlabelled,
)
from hftransfer.data.carving import carve_missing_splits
from hftransfer.data.formats import format_for_extension
from hftransfer.data.hub import read_hub
from hftransfer.data.label_kinds import label_feature
from hftransfer.data.readers import (
    SEQUENCE_TASK,
    TASKS,
    TOKEN_TASK,
    ReadResult,
    read_file,
    strip_compression,
)
from hftransfer.data.task_labels import check_known_labels, derive_label_names, relabel
from hftransfer.errors import ConfigError, DataError

__all__ = [
    "BUILTIN_TASKS",
    "BUILTIN_UNLABELLED",
    "EVAL_SPLITS",
    "ROTTEN_TOMATOES_LABELS",
    "TaskData",
    "load_task_data",
    "read_transfer_set",
    "read_unlabelled",
]

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "test")


@dataclass
class TaskData:
    """The splits of one task, its label order and a JSON-serialisable report of how they were made."""

    splits: DatasetDict
    label_names: list[str]
    report: dict[str, Any] = field(default_factory=dict)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def _read_given(
    config: DataConfig, task: str, report: dict[str, Any]
) -> tuple[dict[str, ReadResult], list | None]:
    """Every split the config gives (train always) and the Hub's ClassLabel names, if any."""
    declared = None
    dataset = config.dataset
    if config.train_file is not None:
        # Documented precedence: data.train_file=... on the command line replaces a preset's dataset.
        if dataset is not None:
            logger.info("data.train_file is set, so data.dataset=%s is not used", dataset)
        results = {"train": read_file(config.train_file, task, config)}
    elif dataset in BUILTIN_TASKS:
        results = read_builtin(config, task)  # train, and test where the dataset ships one
    elif Path(dataset).is_file():
        results = {"train": read_file(dataset, task, config)}
    elif format_for_extension(Path(strip_compression(Path(dataset))).suffix) is not None:
        raise DataError(f"data.dataset={dataset!r}: file not found")
    else:
        results, declared = read_hub(config, task, report)
    for split in EVAL_SPLITS:
        path = getattr(config, f"{split}_file")
        if path is not None:  # a given file replaces the source's own split of that name
            results[split] = read_file(path, task, config)
    return results, declared


def _features(task: str, pair: bool, labels: bool = True, problem_type: str = SINGLE_LABEL) -> Features:
    if task == TOKEN_TASK:
        columns = {"tokens": Sequence(Value("string")), "tags": Sequence(Value("string"))}
    else:
        columns = {
            "text": Value("string"),
            "text_pair": Value("string"),
            "label": label_feature(problem_type),
        }
        if not pair:
            del columns["text_pair"]
    if not labels:
        columns.pop("tags" if task == TOKEN_TASK else "label")
    return Features(columns)


def _to_dataset(rows: list[dict[str, Any]], features: Features) -> Dataset:
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def load_task_data(config: DataConfig, task: str) -> TaskData:
    """Load, validate and split a task's data.

    Args:
        config: the data section of the run config.
        task: ``token-classification`` or ``sequence-classification``.

    Returns:
        ``TaskData`` with the ``train``, ``validation`` (unless ``validation_size=0`` and none is given) and
        ``test`` (unless ``test_size=0`` and none is given) splits, the label order and a report: ``task``,
        ``splits`` (per split ``examples``, ``source``, and ``carved`` / ``limited_from`` where they apply),
        ``sources`` (per file or Hub split: ``examples``, ``iob_repairs``, ``dropped`` rows by reason),
        ``num_labels``, ``carving`` (seed, sizes, stratified) when a split was carved, and ``label_changes``
        (``label_map``, ``drop_labels``, ``dropped`` rows per given split) when labels were renamed or dropped.

    Raises:
        DataError: unreadable or malformed data, labels of evaluation data unknown to the training data, a split
            left empty by ``data.drop_labels``, or splits that cannot be carved.
        ConfigError: an unknown task, a builtin dataset used for the other task, or ``data.label_map`` /
            ``data.drop_labels`` naming a label the data lacks.
    """
    _check_task(task)
    report: dict[str, Any] = {"task": task}
    results, declared = _read_given(config, task, report)
    if config.label_map or config.drop_labels:  # before the label order: the head gets the new names
        declared, dropped = relabel(results, task, config, declared)
        report["label_changes"] = {
            "label_map": config.label_map,
            "drop_labels": config.drop_labels,
            "dropped": dropped,
        }
        if dropped:
            logger.info("data.drop_labels=%s left out %s rows per split", config.drop_labels, dropped)
    train = results["train"]
    regression = task == SEQUENCE_TASK and config.problem_type == REGRESSION
    # A regression head has one output, named after the column it predicts.
    label_names = [config.label_column] if regression else derive_label_names(task, train, declared)
    for split in EVAL_SPLITS:
        if split in results and not regression:
            check_known_labels(results[split], label_names, task, train.source)
    report["sources"] = {}
    for result in results.values():
        if result.iob_repairs:
            logger.warning(
                "%s: repaired %d IOB1-style tags to IOB2 (an I- tag that starts an entity became B-)",
                result.source,
                result.iob_repairs,
            )
        report["sources"][result.source] = {
            "examples": len(result.rows),
            "iob_repairs": result.iob_repairs,
            "dropped": dict(result.dropped),
        }

    if task == SEQUENCE_TASK and config.problem_type != SINGLE_LABEL:
        report["problem_type"] = config.problem_type
    features = _features(
        task, bool(config.text_pair_column) and task == SEQUENCE_TASK, True, config.problem_type
    )
    splits = {split: _to_dataset(result.rows, features) for split, result in results.items()}
    carved = carve_missing_splits(splits, task, config, train.source)
    if carved:
        report["carving"] = {
            "seed": config.split_seed,
            "test_size": config.test_size,
            "validation_size": config.validation_size,
            "stratified": task == SEQUENCE_TASK and config.problem_type == SINGLE_LABEL,
        }
    report["splits"] = {}
    for split in [name for name in ("train", *EVAL_SPLITS) if name in splits]:
        entry: dict[str, Any] = {"source": results[split].source if split in results else train.source}
        if split in carved:
            entry["carved"] = True
        if split == "train" and config.train_per_class is not None:
            from hftransfer.data.per_class import sample_per_class

            entry["sampled_from"] = len(splits[split])
            splits[split], report["per_class"] = sample_per_class(
                splits[split], task, config.train_per_class, config.sample_seed, train.source
            )
        if split == "train" and (config.label_descriptions or config.label_template):
            from hftransfer.data.label_descriptions import add_label_descriptions

            splits[split], report["label_descriptions"] = add_label_descriptions(
                splits[split], label_names, config.label_descriptions, config.label_template, train.source
            )
        limit = config.max_train_samples if split == "train" else config.max_eval_samples
        if limit is not None and len(splits[split]) > limit:
            entry["limited_from"] = len(splits[split])
            splits[split] = splits[split].select(range(limit))
        report["splits"][split] = {"examples": len(splits[split]), **entry}
    report["num_labels"] = len(label_names)
    ordered = DatasetDict({split: splits[split] for split in report["splits"]})
    return TaskData(ordered, label_names, report)


def read_unlabelled(path: str, task: str, config: DataConfig) -> Dataset:
    """Examples to predict from a file of any supported format, or plain text.

    Args:
        path: CoNLL, JSON/JSONL, CSV/TSV (optionally .bz2/.gz), or a ``.txt`` with one text (token task: one
            sentence, split on whitespace) per line when it is not CoNLL.
        task: ``token-classification`` or ``sequence-classification``.
        config: column names and format, as for training.

    Returns:
        ``tokens`` (token task) or ``text`` [+ ``text_pair``] rows, with ``tags`` / ``label`` when the file has
        them, so that the caller can score the predictions.

    Raises:
        DataError: the file is missing, empty or malformed (the message names file and line).
    """
    _check_task(task)
    result = read_file(path, task, config, require_labels=False, plain_text=True)
    if result.iob_repairs:
        logger.warning("%s: repaired %d IOB1-style tags to IOB2", result.source, result.iob_repairs)
    pair = task == SEQUENCE_TASK and "text_pair" in result.rows[0]
    return _to_dataset(result.rows, _features(task, pair, result.has_labels, config.problem_type))


def read_transfer_set(source: str, task: str, config: DataConfig, exclude: set[str] = frozenset()) -> Dataset:
    """Unlabelled examples for a teacher to label: a builtin name (a key of ``BUILTIN_UNLABELLED``:
    ``rotten_tomatoes_plot``, ``drug_reviews``, ``guardian_headlines``) or a file of any format
    :func:`read_unlabelled` accepts. Labels in a file are dropped (the teacher's are used); texts in
    ``exclude`` (e.g. the evaluation splits') and repeated texts are dropped, so nothing leaks into evaluation.

    Raises:
        ConfigError / DataError: an unknown builtin, a builtin of another task, or a bad file.
    """
    _check_task(task)
    if source in BUILTIN_UNLABELLED:
        rows = read_builtin_unlabelled(source, task)
        dataset = _to_dataset(rows, _features(task, pair=False, labels=False))
    else:
        # A mistyped builtin name would otherwise read as a file of unknown format.
        if not Path(source).exists():
            raise DataError(
                f"{source!r} is neither a builtin unlabelled set ({', '.join(BUILTIN_UNLABELLED)}) nor an "
                "existing file"
            )
        dataset = read_unlabelled(source, task, config)
        dataset = dataset.remove_columns([c for c in ("tags", "label") if c in dataset.column_names])
    key = "tokens" if task == TOKEN_TASK else "text"
    seen = set(exclude)
    keep = []
    for index, value in enumerate(dataset[key]):
        text = " ".join(value) if task == TOKEN_TASK else value
        if text not in seen:
            seen.add(text)
            keep.append(index)
    if not keep:
        raise DataError(f"transfer set {source!r} has no examples that are not already in the data")
    return dataset.select(keep)


def unlabelled_examples(
    source: str, task: str, config: DataConfig, data: TaskData, max_samples: int | None = None
) -> Dataset:
    """The examples of an unlabelled source (see :func:`read_transfer_set`) without the texts of ``data``'s
    validation and test splits, the first ``max_samples`` of them."""
    key = "tokens" if task == TOKEN_TASK else "text"
    held_out = {
        " ".join(value) if isinstance(value, list) else value
        for split in ("validation", "test")
        if split in data.splits
        for value in data.splits[split][key]
    }
    examples = read_transfer_set(source, task, config, exclude=held_out)
    if max_samples is not None:
        examples = examples.select(range(min(max_samples, len(examples))))
    return examples

"""Load a task's splits from files, a builtin offline dataset or the Hub, and carve the missing splits.

Output columns: ``tokens``/``tags`` (IOB2 strings) for token classification; ``text``, optional ``text_pair`` and
``label`` (string) for sequence classification. Carving is deterministic (``data.split_seed``) and stratified by
label for classification.
"""

from __future__ import annotations

import bz2
import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict

from hftransfer import assets
from hftransfer.config import DataConfig
from hftransfer.data.readers import EXTENSION_FORMATS, TOKEN_TASK, ReadResult, read_file
from hftransfer.data.tags import entity_label_names, normalize_tags
from hftransfer.errors import DataError

logger = logging.getLogger(__name__)

BUILTIN_TASKS = {"wnut16": TOKEN_TASK, "rotten_tomatoes": "sequence-classification"}
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}


@dataclass
class TaskData:
    """The splits of one task, its label order and a JSON-serialisable report of how they were made."""

    splits: DatasetDict
    label_names: list[str]
    report: dict[str, Any] = field(default_factory=dict)


def _label_key(task: str) -> str:
    return "tags" if task == TOKEN_TASK else "label"


def _labels_of(row: dict[str, Any], task: str) -> set[str]:
    if task == TOKEN_TASK:
        return {tag[2:] for tag in row["tags"] if tag != "O"}
    return {row["label"]}


def _sequence_label_names(labels: set[str]) -> list[str]:
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _check_eval_labels(train: ReadResult, other: ReadResult, task: str, path: str) -> None:
    known = set().union(*(_labels_of(row, task) for row in train.rows))
    for row, where in zip(other.rows, other.locations):
        unknown = _labels_of(row, task) - known
        if unknown:
            what = "entity types" if task == TOKEN_TASK else "labels"
            raise DataError(
                f"{where}: {what} {sorted(unknown)} do not occur in the training data, so the model cannot learn "
                f"them; fix {path} or add examples to the training file"
            )


def _read_rotten_tomatoes(report: dict[str, Any]) -> ReadResult:
    """fresh -> positive, rotten -> negative; plot summaries and duplicate texts dropped."""
    path = assets.locate("rotten_tomatoes")
    text = bz2.decompress(path.read_bytes()).decode("utf-8")
    rows, locations, seen = [], [], set()
    dropped = {"plot": 0, "duplicate_text": 0}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        label = {"fresh": "positive", "rotten": "negative"}.get(row["category"])
        if label is None:
            dropped["plot"] += 1
            continue
        # Exact duplicates would leak between carved splits.
        if row["text"] in seen:
            dropped["duplicate_text"] += 1
            continue
        seen.add(row["text"])
        rows.append({"text": row["text"], "label": label})
        locations.append(f"{path}:{reader.line_num}")
    report["dropped_rows"] = dropped
    return ReadResult(rows, locations)


def _hub_split(
    dataset: Dataset, name: str, task: str, config: DataConfig, where: str
) -> tuple[list[dict], int]:
    columns = dataset.column_names
    features = dataset.features
    repairs = 0

    def require(column: str, fallback: str | None = None) -> str:
        if column in columns:
            return column
        if fallback and fallback in columns:
            return fallback
        raise DataError(f"{where}: no column {column!r}; available columns: {columns}; set data.*_column")

    rows = []
    if task == TOKEN_TASK:
        tokens_column = require(config.tokens_column)
        tags_column = require(config.tags_column, "ner_tags")
        names = getattr(getattr(features[tags_column], "feature", None), "names", None)
        for index, item in enumerate(dataset):
            tags = [names[t] for t in item[tags_column]] if names else [str(t) for t in item[tags_column]]
            tags, count = normalize_tags(tags, lambda i, index=index: f"{where} row {index} (tag {i})")
            repairs += count
            rows.append({"tokens": list(item[tokens_column]), "tags": tags})
    else:
        text_column = require(config.text_column, "sentence")
        label_column = require(config.label_column, "labels")
        pair_column = require(config.text_pair_column) if config.text_pair_column else None
        names = getattr(features[label_column], "names", None)
        for item in dataset:
            row = {
                "text": item[text_column],
                "label": names[item[label_column]] if names else str(item[label_column]),
            }
            if pair_column:
                row["text_pair"] = item[pair_column]
            rows.append(row)
    return rows, repairs


def _load_hub(
    config: DataConfig, task: str, report: dict[str, Any]
) -> tuple[dict[str, list[dict]], list[str] | None]:
    from datasets import load_dataset

    name = config.dataset
    try:
        loaded = load_dataset(name, config.hub_config)
    except (
        Exception
    ) as err:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError, ...)
        raise DataError(
            f"data.dataset={name!r} is not a builtin ({', '.join(BUILTIN_TASKS)}), not an existing file, and could "
            f"not be loaded from the Hub: {' '.join(str(err).split())[:300]}"
        ) from None
    splits: dict[str, list[dict]] = {}
    label_names = None
    for split, aliases in SPLIT_ALIASES.items():
        found = next((alias for alias in aliases if alias in loaded), None)
        if found is None:
            continue
        rows, repairs = _hub_split(loaded[found], found, task, config, f"{name}[{found}]")
        splits[split] = rows
        report.setdefault("iob_repairs", {})[f"{name}[{found}]"] = repairs
        if task != TOKEN_TASK:
            column = config.label_column if config.label_column in loaded[found].column_names else "labels"
            label_names = getattr(loaded[found].features.get(column), "names", None) or label_names
    if "train" not in splits:
        raise DataError(f"data.dataset={name!r} has no train split (splits: {list(loaded)})")
    return splits, label_names


def _read_sources(
    config: DataConfig, task: str, report: dict[str, Any]
) -> tuple[dict[str, list[dict]], list[str] | None]:
    """Rows per given split (train always; validation/test when given) and, for Hub data, the label names."""
    if config.train_file is not None:
        if config.dataset is not None:
            logger.info("data.train_file is set, so data.dataset=%s is not used", config.dataset)
        files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
    elif config.dataset in BUILTIN_TASKS:
        if BUILTIN_TASKS[config.dataset] != task:
            raise DataError(
                f"data.dataset={config.dataset!r} is a {BUILTIN_TASKS[config.dataset]} dataset, not {task}"
            )
        if config.dataset == "rotten_tomatoes":
            result = _read_rotten_tomatoes(report)
            report["sources"] = {"train": "rotten_tomatoes"}
            return {"train": result.rows}, ["negative", "positive"]
        files = {"train": str(assets.locate("wnut16")), "validation": None, "test": None}
    elif Path(config.dataset).exists():
        files = {"train": config.dataset, "validation": config.validation_file, "test": config.test_file}
    elif Path(config.dataset).suffix.lower() in {*EXTENSION_FORMATS, ".bz2", ".gz"}:
        raise DataError(f"data.dataset={config.dataset!r}: file not found")
    else:
        report["sources"] = {"train": f"hub:{config.dataset}"}
        return _load_hub(config, task, report)

    results: dict[str, ReadResult] = {}
    for split, path in files.items():
        if path is None:
            continue
        results[split] = read_file(path, task, config)
        repairs = results[split].iob_repairs
        report.setdefault("iob_repairs", {})[path] = repairs
        if repairs:
            logger.warning(
                "%s: %d I- tags that began an entity were repaired to B- (IOB1 -> IOB2)", path, repairs
            )
    for split in ("validation", "test"):
        if split in results:
            _check_eval_labels(results["train"], results[split], task, files[split])
    report["sources"] = {split: files[split] for split in results}
    return {split: result.rows for split, result in results.items()}, None


def _carve(dataset: Dataset, size: int, seed: int, stratify: bool, what: str) -> tuple[Dataset, Dataset]:
    if size < 1 or size >= len(dataset):
        raise DataError(f"cannot carve {size} {what} examples out of {len(dataset)}; adjust data.{what}_size")
    if not stratify:
        parts = dataset.train_test_split(test_size=size, seed=seed, shuffle=True)
        return parts["train"], parts["test"]
    names = sorted(set(dataset["label"]))
    encoded = dataset.add_column("_stratum", [names.index(label) for label in dataset["label"]])
    encoded = encoded.cast_column("_stratum", ClassLabel(names=names))
    try:
        parts = encoded.train_test_split(test_size=size, seed=seed, stratify_by_column="_stratum")
    except ValueError as err:
        raise DataError(
            f"cannot carve a stratified {what} split: {err} (a label has too few examples)"
        ) from None
    return parts["train"].remove_columns("_stratum"), parts["test"].remove_columns("_stratum")


def load_task_data(config: DataConfig, task: str) -> TaskData:
    """Load, validate and split a task's data.

    Args:
        config: the data section of the run config.
        task: ``token-classification`` or ``sequence-classification``.

    Returns:
        ``TaskData`` with ``train``, ``validation`` (unless ``validation_size=0`` and none given) and ``test``
        (unless ``test_size=0`` and none given) splits, the label order and a report.

    Raises:
        DataError: unreadable or malformed data, unknown labels in eval files, impossible splits.
    """
    report: dict[str, Any] = {}
    rows, hub_label_names = _read_sources(config, task, report)
    splits = {split: Dataset.from_list(split_rows) for split, split_rows in rows.items()}
    total = sum(len(ds) for ds in splits.values())
    stratify = task != TOKEN_TASK
    carved = []
    if "test" not in splits and config.test_size > 0:
        splits["train"], splits["test"] = _carve(
            splits["train"], round(config.test_size * total), config.split_seed, stratify, "test"
        )
        carved.append("test")
    if "validation" not in splits and config.validation_size > 0:
        splits["train"], splits["validation"] = _carve(
            splits["train"], round(config.validation_size * total), config.split_seed, stratify, "validation"
        )
        carved.append("validation")

    key = _label_key(task)
    all_labels = {
        label
        for ds in splits.values()
        for row_labels in ds[key]
        for label in (row_labels if task == TOKEN_TASK else [row_labels])
    }
    if task == TOKEN_TASK:
        label_names = entity_label_names(sorted(all_labels))
    else:
        label_names = hub_label_names or _sequence_label_names(all_labels)

    if config.max_train_samples is not None:
        splits["train"] = splits["train"].select(range(min(config.max_train_samples, len(splits["train"]))))
    if config.max_eval_samples is not None:
        for split in ("validation", "test"):
            if split in splits:
                splits[split] = splits[split].select(range(min(config.max_eval_samples, len(splits[split]))))
    ordered = DatasetDict({s: splits[s] for s in ("train", "validation", "test") if s in splits})
    report["carved"] = carved
    report["split_seed"] = config.split_seed
    report["examples"] = {split: len(ds) for split, ds in ordered.items()}
    return TaskData(ordered, label_names, report)


def read_unlabelled(path: str, task: str, config: DataConfig) -> Dataset:
    """Rows to predict from any supported file (plain .txt too); gold labels are kept when the file has them."""
    result = read_file(path, task, config, require_labels=False)
    return Dataset.from_list(result.rows)

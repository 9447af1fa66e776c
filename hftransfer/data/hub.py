"""Task data from a Hub dataset (``datasets.load_dataset``): split names, ClassLabel columns and column checks."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import datasets
from datasets import ClassLabel, Dataset

from hftransfer import assets
from hftransfer.config import DataConfig
from hftransfer.data.readers import TOKEN_TASK, ReadResult, sequence_row, token_row
from hftransfer.data.rows import read_row
from hftransfer.data.tags import normalize_tags
from hftransfer.errors import DataError
from hftransfer.text_excerpt import excerpt, excerpt_names

logger = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}


def column_values(ds: Dataset, name: str) -> list:
    # ds[name] is a lazy Column in recent datasets versions, read row by row; this converts it in one batch.
    return ds.select_columns([name]).to_dict()[name]


def _hub_split(
    ds: Dataset, source: str, task: str, config: DataConfig
) -> tuple[ReadResult | None, list | None]:
    """Validated rows of one Hub split (None when it has no labels) and its ClassLabel names, if any."""
    available = ds.column_names

    def column(name: str, setting: str, fallback: str | None = None) -> str:
        for candidate in (name, fallback):
            if candidate is not None and candidate in available:
                return candidate
        raise DataError(
            f"{source}: no column {excerpt(name)}; available columns: {excerpt_names(available)}; set data.{setting}"
        )

    # Setting -> the column used (the label column second); row validation then reads these names.
    if task == TOKEN_TASK:
        used = {"tokens_column": column(config.tokens_column, "tokens_column")}
        used["tags_column"] = column(config.tags_column, "tags_column", "ner_tags")
        feature = getattr(ds.features[used["tags_column"]], "feature", None)
    else:
        used = {"text_column": column(config.text_column, "text_column")}
        used["label_column"] = column(config.label_column, "label_column")
        if config.text_pair_column:
            used["text_pair_column"] = column(config.text_pair_column, "text_pair_column")
        feature = ds.features[used["label_column"]]
    names = list(used.values())
    declared = feature.names if isinstance(feature, ClassLabel) else None
    # Hub test splits are often unlabelled (all -1 / None, e.g. GLUE): the caller carves one instead.
    if task != TOKEN_TASK and all(v is None or (declared and v == -1) for v in column_values(ds, names[1])):
        return None, declared
    view = dataclasses.replace(config, **used)
    result = ReadResult(source, [], [], by_line=False)
    for index, values in enumerate(zip(*(column_values(ds, name) for name in names))):
        where = f"{source}: row {index}"
        obj = dict(zip(names, values))
        if declared is not None:
            ids = obj[names[1]] if task == TOKEN_TASK else [obj[names[1]]]
            bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < len(declared)]
            if bad:
                raise DataError(
                    f"{where}: label id {excerpt(bad[0])} is not a class of {excerpt_names(declared)} (-1 means no label)"
                )
            labels = [declared[i] for i in ids]
            obj[names[1]] = labels if task == TOKEN_TASK else labels[0]

        def make_row(where: str, obj: dict[str, Any] = obj) -> dict[str, Any]:
            if task != TOKEN_TASK:
                return sequence_row(obj, where, view, labels=True)
            row = token_row(obj, where, view, labels=True)
            row["tags"], repairs = normalize_tags(row["tags"], where=lambda tag, w=where: f"{w}: tag {tag}")
            result.iob_repairs += repairs
            return row

        read_row(result, index, view, make_row)
    result.log_skipped()
    return result, declared


def read_hub(
    config: DataConfig, task: str, report: dict[str, Any]
) -> tuple[dict[str, ReadResult], list | None]:
    name = config.dataset
    try:
        loaded = datasets.load_dataset(name, config.hub_config)
    except Exception as err:  # ConnectionError, FileNotFoundError, ValueError, ... depending on the cause
        reason = " ".join(str(err).split())[:300]
        raise DataError(
            f"data.dataset={name!r} is neither a builtin ({', '.join(assets.DATASETS)}), nor an existing file, nor a "
            f"reachable Hub dataset ({type(err).__name__}: {reason})"
        ) from None
    prefix = f"{name}:{config.hub_config}" if config.hub_config else name
    results: dict[str, ReadResult] = {}
    declared = None
    for split, aliases in SPLIT_ALIASES.items():
        found = next((alias for alias in aliases if alias in loaded), None)
        if found is None:
            continue
        result, names = _hub_split(loaded[found], f"{prefix}[{found}]", task, config)
        if result is None:
            if split == "train":
                raise DataError(f"{prefix}[{found}]: the train split has no labels")
            report.setdefault("unlabelled_hub_splits", []).append(found)
            logger.info("%s[%s] has no labels; a %s split is carved from train instead", prefix, found, split)
            continue
        results[split] = result
        declared = names if split == "train" else declared
    if "train" not in results:
        raise DataError(f"data.dataset={name!r} has no train split (splits: {list(loaded)})")
    return results, declared

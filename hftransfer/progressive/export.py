"""A progressive network on disk, and loading it back to add a column or to predict with any column's task.

The export is a directory of ordinary Hugging Face model directories plus the laterals that join them::

    model/
      progressive.json        format, version, each column's lateral rank, output lateral (v2) and task
      laterals.safetensors    the lateral adapters of columns 1..k (``ProgressiveModel.laterals`` state dict)
      column_0/ ... column_k/ one Hugging Face task model each, with the shared tokenizer and
                              ``progressive_column.json`` naming its index
      tokenizer files         the directory itself predicts with the last column

Column 0 never reads a lateral: ``column_0/`` is a plain model that ``AutoModelFor*`` and ``pipeline`` load as they
are. A later column only makes sense on top of the columns before it, so ``column_<k>/`` (k > 0) is loaded through
hftransfer (:func:`load_column`, ``Predictor``, ``hftransfer predict``), which reads the whole network; loaded
alone by transformers it is the column without its laterals, and predicts something else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedTokenizerBase,
)

from hftransfer.errors import ConfigError
from hftransfer.modeling.source_model import model_directory
from hftransfer.progressive.model import ProgressiveModel
from hftransfer.utils import atomic_directory, atomic_write_json, recover_directory

NETWORK_META, COLUMN_META, LATERALS_FILE = (
    "progressive.json",
    "progressive_column.json",
    "laterals.safetensors",
)
# Version 2 records each column's output lateral; version 1 exports (none) still load.
FORMAT, VERSION = "hftransfer-progressive", 2
READABLE_VERSIONS = (1, 2)
TASK_CLASSES = {
    "ForTokenClassification": ("token-classification", AutoModelForTokenClassification),
    "ForSequenceClassification": ("sequence-classification", AutoModelForSequenceClassification),
}


def column_task(directory: Path) -> tuple[str, type]:
    """The task and ``AutoModelFor*`` class of a fine-tuned task model directory.

    Raises:
        ConfigError: the directory holds no token- or sequence-classification model.
    """
    config_file = Path(directory) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{directory} holds no config.json: not a fine-tuned task model")
    architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    for architecture in architectures:
        for suffix, found in TASK_CLASSES.items():
            if architecture.endswith(suffix):
                return found
    raise ConfigError(
        f"{directory} is a {architectures or 'bare'} model; a progressive column is a fine-tuned token- or "
        "sequence-classification model (a run of finetune_ner.py / finetune_classifier.py)"
    )


def network_directory(path: str | Path) -> Path | None:
    """The progressive export that ``path`` (a run directory, its ``model/``, or one of its columns) belongs to."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / NETWORK_META).is_file():
            return candidate
    if (path / COLUMN_META).is_file():
        return path.parent
    return None


def column_count(network_dir: Path) -> int:
    """How many columns a progressive export holds."""
    return json.loads((Path(network_dir) / NETWORK_META).read_text(encoding="utf-8"))["columns"]


def column_directory(network_dir: Path, from_last: int = 0) -> Path:
    """``column_<k>/`` of a progressive export: the last column, or the one ``from_last`` before it."""
    return network_dir / f"column_{column_count(network_dir) - 1 - from_last}"


def save_progressive(network: ProgressiveModel, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Write ``network`` to ``directory`` (format above), replacing it only once complete. Call from one process."""
    tasks = [column_task_name(column) for column in network.columns]
    with atomic_directory(Path(directory), what="the progressive network") as tmp:
        for index, column in enumerate(network.columns):
            column_dir = tmp / f"column_{index}"
            column.save_pretrained(column_dir, safe_serialization=True)
            tokenizer.save_pretrained(column_dir)
            atomic_write_json(
                column_dir / COLUMN_META, {"format": FORMAT, "column": index, "task": tasks[index]}
            )
        tokenizer.save_pretrained(tmp)
        state = {
            key: value.detach().contiguous().cpu() for key, value in network.laterals.state_dict().items()
        }
        save_file(state, str(tmp / LATERALS_FILE))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "columns": network.num_columns,
            "ranks": list(network.column_ranks),
            "output_laterals": list(network.output_laterals),
            "tasks": tasks,
        }
        atomic_write_json(tmp / NETWORK_META, meta)


def column_task_name(column: nn.Module) -> str:
    name = type(column).__name__
    return next((task for suffix, (task, _) in TASK_CLASSES.items() if name.endswith(suffix)), name)


def load_progressive(directory: str | Path) -> ProgressiveModel:
    """The network saved in ``directory``, every column frozen and in eval mode.

    Raises:
        ConfigError: ``directory`` is not a progressive export, or one of another format version.
    """
    directory = Path(directory)
    recover_directory(directory)
    meta_file = directory / NETWORK_META
    if not meta_file.is_file():
        raise ConfigError(f"{directory} holds no {NETWORK_META}: not a progressive network export")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") not in READABLE_VERSIONS:
        raise ConfigError(
            f"{meta_file}: format {meta.get('format')!r} version {meta.get('version')!r}, "
            f"this hftransfer reads {FORMAT!r} versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    network = ProgressiveModel()
    output_laterals = meta.get("output_laterals") or [False] * len(meta["ranks"])
    for index, rank in enumerate(meta["ranks"]):
        column_dir = directory / f"column_{index}"
        _, auto = column_task(column_dir)
        network.add_column(auto.from_pretrained(column_dir), rank=rank, output_lateral=output_laterals[index])
    network.laterals.load_state_dict(load_file(str(directory / LATERALS_FILE)), strict=True)
    network.requires_grad_(False)
    return network.eval()


def load_source_columns(source: str) -> ProgressiveModel:
    """The earlier columns a new column reads (``strategy.columns``): all columns of a progressive run, or a plain
    fine-tuned run (or model directory) as column 0.

    Raises:
        ConfigError: ``source`` is neither (a base encoder without a task head, a multitask run, an adapter).
    """
    network_dir = network_directory(source)
    if network_dir is not None:
        return load_progressive(network_dir)
    directory = model_directory(source)
    if not Path(directory).is_dir():
        raise ConfigError(
            f"strategy.columns={source}: no such run or model directory (name the run of the earlier task)"
        )
    _, auto = column_task(Path(directory))
    network = ProgressiveModel()
    network.add_column(auto.from_pretrained(directory))
    network.requires_grad_(False)
    return network.eval()


class ProgressiveColumn(nn.Module):
    """One column's task as an ordinary classifier for prediction: ``forward`` runs the columns before it first.

    ``config`` is the column's own (labels, limits), so code written for a Hugging Face model reads it as one.
    """

    def __init__(self, network: ProgressiveModel, column: int) -> None:
        super().__init__()
        self.network = network
        self.column = range(network.num_columns)[column]
        self.config = network.columns[self.column].config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> Any:
        return self.network(input_ids, attention_mask, token_type_ids, labels=labels, column=self.column)


def load_column(path: str | Path) -> tuple[ProgressiveColumn, str]:
    """The classifier of a progressive export (its last column) or of one of its ``column_<k>/``, and its task."""
    path = Path(path)
    network_dir = network_directory(path)
    if network_dir is None:
        raise ConfigError(f"{path} is not part of a progressive network export")
    column = -1
    if (path / COLUMN_META).is_file():
        column = json.loads((path / COLUMN_META).read_text(encoding="utf-8"))["column"]
    network = load_progressive(network_dir)
    chosen = ProgressiveColumn(network, column)
    task, _ = column_task(network_dir / f"column_{chosen.column}")
    return chosen, task

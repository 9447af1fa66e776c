"""Label new data with an exported model (a run's ``model/`` directory, any HF checkpoint, or a Hub id).

Prediction uses the same word-aligned windows as training, so sentences longer than the model's maximum length are
predicted in full (``transformers.pipeline`` would truncate them), and ``torch.inference_mode`` with length-sorted
batches keeps it fast.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import (
    AutoTokenizer,
)

from hftransfer.assets import resolve_model_name
from hftransfer.config import DataConfig
from hftransfer.config.problem import MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL
from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.data.features import tokenize
from hftransfer.data.tags import entity_spans
from hftransfer.errors import ConfigError, DataError
from hftransfer.evaluation.inference import run_inference
from hftransfer.evaluation.metrics import (
    multilabel_classification_metrics,
    regression_metrics,
    sequence_classification_metrics,
    token_classification_metrics,
)
from hftransfer.evaluation.multilabel import model_threshold, multi_hot
from hftransfer.export.long_texts import TRUNCATE, WINDOW_FIELDS, prediction_long_texts
from hftransfer.export.onnx_layout import BACKENDS, default_backend
from hftransfer.loading import load_for_prediction, run_model_directory
from hftransfer.modeling.crf import CRF, CRF_FILE
from hftransfer.training.threads import configure_cpu_threads, local_process_count
from hftransfer.utils import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    rows: list[dict[str, Any]]
    metrics: dict[str, Any] | None = field(default=None)


class Predictor:
    """Batched prediction with a saved model.

    Args:
        model: a model directory, a run directory (its ``model/``), an offline alias or a Hub id; for the ONNX
            backends a run directory or a run's ``model/`` (whose ``onnx/`` is used). A progressive network's
            export predicts with its last column, its ``column_<k>/`` with column k (earlier columns included).
        batch_size: examples per forward pass.
        max_length: tokens per window (default: the training run's for a model trained on windows, else the
            model's limit, at most 512).
        cpu: force CPU even when a GPU is present.
        backend: ``torch``, ``onnx`` (fp32) or ``onnx-int8`` (ONNX Runtime on the CPU, from ``hftransfer export``),
            or ``auto``: ONNX for an export directory, else PyTorch. Every backend returns the same rows.
        long_texts: sequence models, texts longer than ``max_length``: ``truncate`` or ``window`` (overlapping
            windows whose logits are combined into one row per text), as ``data.long_texts`` in training; default
            the training run's (saved in the model's config as ``hftransfer_long_texts``), else ``truncate``.
        window_context: tokens shared by consecutive windows (``data.window_context``; default as ``long_texts``).
        window_aggregation: ``mean`` or ``max`` of a text's window logits (``data.window_aggregation``; default as
            ``long_texts``).
        loaded: ``(model, task)`` already in memory, whose ``config`` gives the labels; ``model`` then names the
            directory its tokenizer is read from.
        decoding: token models: ``argmax`` per word, ``iob2`` (the best valid IOB2 sequence) or ``crf`` (Viterbi
            with the ``crf.safetensors`` a ``model.head=crf`` run saves beside the model; a word's score is then its
            marginal probability of its tag); default what the run that trained the model used (saved in its
            config as ``hftransfer_decoding``), else ``argmax``.

    Raises:
        ConfigError: an unknown backend, or an ONNX backend without ONNX Runtime or without an export; ``crf``
            decoding without the model's ``crf.safetensors``.
    """

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 64,
        max_length: int | None = None,
        cpu: bool = False,
        backend: str = "auto",
        long_texts: str | None = None,
        window_context: int | None = None,
        window_aggregation: str | None = None,
        loaded: tuple[torch.nn.Module, str] | None = None,
        decoding: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
        self.model_dir = resolve_model_name(model)
        self.backend = default_backend(self.model_dir) if backend == "auto" else backend
        self.accelerator = Accelerator(cpu=cpu)
        # The runs' rule: all cores, also under accelerate launch (which defaults to one thread). Set before an
        # ONNX session is made: it takes torch's thread count.
        self.threads = configure_cpu_threads(
            None,
            num_local_processes=local_process_count(self.accelerator.num_processes),
            device_type=self.accelerator.device.type,
        )
        if loaded is not None:  # a model already in memory (hftransfer.adapter_set): PyTorch, nothing to load
            self.backend = "torch"
            loaded, self.task = loaded
            self.model = self.accelerator.prepare_model(loaded, evaluation_mode=True)
        elif self.backend == "torch":
            self.model_dir = run_model_directory(self.model_dir)
            loaded, self.task = load_for_prediction(self.model_dir)
            self.model = self.accelerator.prepare_model(loaded, evaluation_mode=True)
        else:
            from hftransfer.onnx_predict import load_onnx_model

            loaded, self.task, export_dir = load_onnx_model(self.model_dir, self.backend)
            self.model_dir = str(export_dir)
            self.model = loaded  # ONNX Runtime runs on the CPU: nothing for accelerate to place
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        id2label = {int(i): label for i, label in loaded.config.id2label.items()}
        self.label_names = [id2label[i] for i in range(len(id2label))]
        # What a sequence model predicts: a class, labels above its threshold (multi-label), or a number.
        problem_type = getattr(loaded.config, "problem_type", None)
        self.problem_type = problem_type if problem_type in PROBLEM_TYPES else SINGLE_LABEL
        self.threshold = model_threshold(loaded.config) if self.problem_type == MULTI_LABEL else None
        limit = min(
            getattr(self.model.config, "max_position_embeddings", 512), 512, self.tokenizer.model_max_length
        )
        windows = prediction_long_texts(
            loaded.config,
            long_texts=long_texts,
            max_length=max_length,
            window_context=window_context,
            window_aggregation=window_aggregation,
        )
        self.max_length = windows["max_length"] or limit
        self.batch_size = batch_size
        self.long_texts, self.window_context = windows["long_texts"], windows["window_context"]
        self.window_aggregation = windows["window_aggregation"]
        self.decoding = decoding or getattr(loaded.config, "hftransfer_decoding", None) or "argmax"
        if self.decoding not in ("argmax", "iob2", "crf"):
            raise ConfigError(f"decoding={self.decoding!r}: use argmax, iob2 or crf")
        self.crf = None
        if self.decoding == "crf" and self.task == "token-classification":
            self.crf = CRF.from_file(Path(self.model_dir) / CRF_FILE, self.label_names).scores()

    def predict(self, examples: Dataset) -> Predictions:
        """Predict ``tokens`` rows (token task) or ``text`` [+ ``text_pair``] rows; scores them if labels are present.

        A sequence row gets ``label`` and ``score`` (its probability); multi-label: ``labels`` (those whose
        probability reaches the model's ``multilabel_threshold``, maybe none) and ``scores`` (every label's);
        regression: ``value``. Gold labels come back as ``gold_label`` / ``gold_labels`` / ``gold_value``.
        """
        labelled = ("tags" if self.task == "token-classification" else "label") in examples.column_names
        features, _ = tokenize(
            examples,
            self.tokenizer,
            self.task,
            None,
            max_length=self.max_length,
            window_context=self.window_context,
            long_texts=self.long_texts,
            split="input",
        )
        loader = build_eval_dataloader(features, FeatureCollator(self.tokenizer), batch_size=self.batch_size)
        with torch.inference_mode():
            output = run_inference(
                self.model,
                self.accelerator.prepare_data_loader(loader),
                self.accelerator,
                self.task,
                desc="Predicting",
                problem_type=self.problem_type,
                window_aggregation=self.window_aggregation,
                decoding=self.decoding,
                label_names=self.label_names,
                crf=self.crf,
            )
        rows = []
        if self.task == "token-classification":
            for example_id, example in enumerate(examples):
                words = output.word_predictions.get(example_id, {})
                tags = [self.label_names[words[i][0]] for i in range(len(example["tokens"]))]
                row = {
                    "tokens": example["tokens"],
                    "tags": tags,
                    "scores": [round(words[i][1], 4) for i in range(len(tags))],
                    "entities": entity_spans(example["tokens"], tags),
                }
                if labelled:
                    row["gold_tags"] = example["tags"]
                rows.append(row)
        elif self.problem_type != SINGLE_LABEL:
            scores = output.example_scores
            rows = [self._scored_row(example, scores[i], labelled) for i, example in enumerate(examples)]
        else:
            for example_id, example in enumerate(examples):
                label_id, score = output.example_predictions[example_id]
                row = {key: example[key] for key in ("text", "text_pair") if key in example}
                row.update(label=self.label_names[label_id], score=round(score, 4))
                if labelled:
                    row["gold_label"] = example["label"]
                rows.append(row)
        return Predictions(rows, self._score(rows) if labelled else None)

    def _scored_row(self, example: dict[str, Any], score: Any, labelled: bool) -> dict[str, Any]:
        """A multi-label or regression example's row (see :meth:`predict`)."""
        row = {key: example[key] for key in ("text", "text_pair") if key in example}
        if self.problem_type == REGRESSION:
            row["value"] = float(score)  # unrounded: the metrics of a labelled file are computed from it
            if labelled:
                row["gold_value"] = example["label"]
            return row
        row["labels"] = [name for name, p in zip(self.label_names, score) if p >= self.threshold]
        row["scores"] = {name: round(float(p), 4) for name, p in zip(self.label_names, score)}
        if labelled:
            row["gold_labels"] = example["label"]
        return row

    def _score(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.task == "token-classification":
            return token_classification_metrics([r["gold_tags"] for r in rows], [r["tags"] for r in rows])
        if self.problem_type == REGRESSION:
            return regression_metrics([r["gold_value"] for r in rows], [r["value"] for r in rows])
        if self.problem_type == MULTI_LABEL:  # the rows' own decisions, at the model's threshold
            gold, predicted = ([r[key] for r in rows] for key in ("gold_labels", "labels"))
            unknown = sorted({name for names in gold for name in names} - set(self.label_names))
            if unknown:
                logger.warning(
                    "gold labels %s are not labels of the model; predictions are not scored", unknown
                )
                return None
            return multilabel_classification_metrics(
                multi_hot(gold, self.label_names), multi_hot(predicted, self.label_names), self.label_names
            )
        known = {name: i for i, name in enumerate(self.label_names)}
        unknown = sorted({r["gold_label"] for r in rows} - set(known))
        if unknown:
            logger.warning("gold labels %s are not labels of the model; predictions are not scored", unknown)
            return None
        return sequence_classification_metrics(
            [known[r["gold_label"]] for r in rows], [known[r["label"]] for r in rows], self.label_names
        )


def write_predictions(predictions: Predictions, path: str | Path) -> None:
    """JSONL (one object per example), or CoNLL ``word<TAB>tag`` lines when ``path`` ends in .conll/.txt/.iob."""
    path = Path(path)
    if path.suffix in {".conll", ".txt", ".iob"}:
        if not predictions.rows or "tokens" not in predictions.rows[0]:
            raise DataError(f"{path}: CoNLL output is for token classification; use a .jsonl output")
        blocks = ["\n".join(f"{t}\t{g}" for t, g in zip(r["tokens"], r["tags"])) for r in predictions.rows]
        atomic_write_text(path, "\n\n".join(blocks) + "\n")
    else:
        atomic_write_text(
            path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions.rows)
        )
    if predictions.metrics is not None:
        atomic_write_json(path.with_name(path.name + ".metrics.json"), predictions.metrics)


def predict_file(
    model: str, input_path: str, output_path: str, data: DataConfig | None = None, **kwargs: Any
) -> Predictions:
    """Read ``input_path`` (text, CoNLL, JSON/JSONL, CSV/TSV), predict, and write ``output_path``.

    ``data``'s ``long_texts``, ``window_context`` and ``window_aggregation`` go to the :class:`Predictor` where they
    differ from DataConfig's defaults (else the model's saved settings apply); pass one as a keyword to force it.
    """
    from hftransfer.data.sources import read_unlabelled

    data = data or DataConfig(train_file=input_path)
    for name in WINDOW_FIELDS:
        if (
            getattr(data, name) != TRUNCATE[name]
        ):  # DataConfig's default: leave it to the model's saved setting
            kwargs.setdefault(name, getattr(data, name))
    predictor = Predictor(model, **kwargs)
    # Gold labels in the file are read as the model's problem type says (a list, a number). The config is checked
    # again under that problem type (window_aggregation=max refuses a regression model).
    data = dataclasses.replace(data, problem_type=predictor.problem_type)
    examples = read_unlabelled(input_path, predictor.task, data)
    predictions = predictor.predict(examples)
    write_predictions(predictions, output_path)
    return predictions

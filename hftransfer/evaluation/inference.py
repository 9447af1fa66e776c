"""Run a model over a feature loader and turn its outputs back into per-example predictions.

Only what the metrics need leaves the device: the argmax id and its probability per word (token tasks) or per
example (sequence tasks), plus per-feature loss sums; full logits are never accumulated. In multi-process runs every
tensor is padded across processes and gathered with ``gather_for_metrics``, which drops the samples that
Accelerate repeated to even out the last batch, so results cover exactly the loader's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftransfer.config.problem import MULTI_LABEL, SINGLE_LABEL
from hftransfer.data.batching import TOKEN_EXTRAS
from hftransfer.evaluation.decoding import crf_words, valid_iob2_words
from hftransfer.evaluation.windows import aggregate_windows

IGNORE_INDEX = -100


@dataclass
class InferenceOutput:
    """Gathered predictions.

    Token tasks: ``word_predictions[example_id][word_index] = (label_id, probability)``.
    Sequence tasks: ``example_predictions[example_id] = (label_id, probability)``; multi-label and regression
    tasks: ``example_scores[example_id]`` = each label's sigmoid probability, or the predicted number.
    """

    word_predictions: dict[int, dict[int, tuple[int, float]]] = field(default_factory=dict)
    example_predictions: dict[int, tuple[int, float]] = field(default_factory=dict)
    loss_sum: float = 0.0
    loss_count: int = 0
    example_scores: dict[int, list[float] | float] = field(default_factory=dict)
    example_losses: dict[int, float] = field(default_factory=dict)
    """Sequence tasks: each example's cross-entropy (when labels were present), for weighted validation."""
    rows: int = 0  # feature rows gathered from all processes

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.loss_count if self.loss_count else None


NOT_INPUTS = frozenset({"example_id", "sources"})


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without the columns that are not model inputs (labels, word_index, example_id, and the batches of
    named sources that objectives read)."""
    return {key: value for key, value in batch.items() if key not in TOKEN_EXTRAS and key not in NOT_INPUTS}


def float_label_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-item losses of float labels, as the HF model's own loss of the problem type computes them (before its
    mean): binary cross-entropy per label of multi-hot rows, squared error of regression targets.

    Args:
        logits: ``[batch, num_labels]`` (``[batch, 1]`` for regression).
        labels: multi-hot ``[batch, num_labels]`` or targets ``[batch]``.

    Returns:
        ``[batch, num_labels]`` or ``[batch]`` (the shape of ``labels``).
    """
    if labels.dim() == logits.dim():
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return (logits.float().squeeze(-1) - labels.float()) ** 2


def per_row_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (float labels: :func:`float_label_losses`) and the number of labelled items per row.

    Args:
        logits: ``[batch, seq, num_labels]`` or ``[batch, num_labels]``.
        labels: ``[batch, seq]`` or ``[batch]`` with ``-100`` for ignored positions; float ``[batch, num_labels]``
            (multi-hot) or ``[batch]`` (regression), every entry labelled.
    """
    if labels.is_floating_point():
        losses = float_label_losses(logits, labels)
        if losses.dim() == 1:
            return losses, torch.ones_like(losses, dtype=torch.long)
        return losses.sum(dim=1), torch.full_like(losses[:, 0], losses.shape[1], dtype=torch.long)
    losses = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).reshape(labels.shape)
    if labels.dim() == 1:
        return losses, (labels != IGNORE_INDEX).long()
    return losses.sum(dim=1), (labels != IGNORE_INDEX).sum(dim=1)


@torch.inference_mode()
def run_inference(
    model: torch.nn.Module,
    loader: DataLoader,
    accelerator: Accelerator,
    task: str,
    *,
    desc: str = "Evaluating",
    problem_type: str = SINGLE_LABEL,
    window_aggregation: str = "mean",
    decoding: str = "argmax",
    label_names: Sequence[str] | None = None,
    crf: Any = None,
) -> InferenceOutput:
    """Predict every row of ``loader`` (prepared by ``accelerator``) and gather the results on every process;
    ``problem_type`` (sequence tasks) says what a prediction is: a class, per-label probabilities or a number.
    Sequence features that share an ``example_id`` (windows of a long text) become one prediction per text, their
    logits combined by ``window_aggregation`` (``mean`` or ``max``: :mod:`hftransfer.evaluation.windows`); the
    loss is then each text's, and ``rows`` still counts features. Token tasks: ``decoding="iob2"`` chooses each
    sentence's tags as the most probable valid IOB2 sequence over ``label_names`` (:mod:`.decoding`);
    ``decoding="crf"`` is Viterbi over the logits (emissions) and ``crf``'s scores
    (:class:`~hftransfer.modeling.crf.CRFScores`), each word's score its marginal probability of its tag, and the
    loss the CRF's negative log-likelihood per word."""
    constrained = task == "token-classification" and decoding in ("iob2", "crf")
    if task == "token-classification" and decoding == "iob2" and label_names is None:
        raise ValueError("decoding='iob2' needs the label names")
    if task == "token-classification" and decoding == "crf" and crf is None:
        raise ValueError("decoding='crf' needs the CRF's scores")
    word_probabilities: dict[int, dict[int, np.ndarray]] = {}  # iob2: probabilities; crf: emissions
    word_gold: dict[int, dict[int, int]] = {}
    was_training = model.training
    model.eval()
    output = InferenceOutput()
    sequence_batches: list[list[np.ndarray]] = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        logits = model(**model_inputs(batch)).logits
        probabilities = logits.float().softmax(dim=-1)  # [batch, (seq,) labels]
        probs, preds = probabilities.max(dim=-1)  # [batch, seq] or [batch]
        has_labels = "labels" in batch and bool((batch["labels"] != IGNORE_INDEX).any())
        if has_labels:
            row_loss, row_count = per_row_loss(logits, batch["labels"])
        else:
            row_loss = torch.zeros(preds.shape[0], device=preds.device)
            row_count = torch.zeros(preds.shape[0], dtype=torch.long, device=preds.device)
        if task == "token-classification":
            # Sequence lengths differ between processes: pad to a common length before gathering.
            preds = accelerator.pad_across_processes(preds, dim=1, pad_index=0)
            probs = accelerator.pad_across_processes(probs, dim=1, pad_index=0.0)
            word_index = accelerator.pad_across_processes(batch["word_index"], dim=1, pad_index=-1)
            # Constrained decoding needs every tag's probability (CRF: logit), not only the best one's:
            # [batch, seq, labels]; the CRF's loss needs the gold tags too.
            extra = ()
            if constrained:
                per_tag = logits.float() if decoding == "crf" else probabilities
                extra = (accelerator.pad_across_processes(per_tag, dim=1, pad_index=0.0),)
            if decoding == "crf" and "labels" in batch:
                extra += (accelerator.pad_across_processes(batch["labels"], dim=1, pad_index=IGNORE_INDEX),)
            gathered = accelerator.gather_for_metrics(
                (preds, probs, word_index, batch["example_id"], row_loss, row_count, *extra)
            )
            preds, probs, word_index, example_ids, row_loss, row_count, *full = (
                t.cpu().numpy() for t in gathered
            )
            rows, cols = np.nonzero(word_index >= 0)
            for row, col in zip(rows.tolist(), cols.tolist()):
                words = output.word_predictions.setdefault(int(example_ids[row]), {})
                words[int(word_index[row, col])] = (int(preds[row, col]), float(probs[row, col]))
                if constrained:
                    word_probabilities.setdefault(int(example_ids[row]), {})[int(word_index[row, col])] = (
                        full[0][row, col]
                    )
                if len(full) > 1:
                    word_gold.setdefault(int(example_ids[row]), {})[int(word_index[row, col])] = int(
                        full[1][row, col]
                    )
        else:
            # [batch, num_labels] logits travel too: windows of one text are combined after the gather.
            parts = (logits.float(), preds, probs, batch["example_id"], row_loss, row_count)
            labels = (batch["labels"],) if has_labels else ()
            sequence_batches.append([t.cpu().numpy() for t in accelerator.gather_for_metrics(parts + labels)])
            row_loss = sequence_batches[-1][4]
        output.rows += len(row_loss)
        if task == "token-classification":
            output.loss_sum += float(row_loss.sum())
            output.loss_count += int(row_count.sum())
    model.train(was_training)
    if decoding == "crf" and task == "token-classification":
        decoded, loss = crf_words(word_probabilities, word_gold, crf, IGNORE_INDEX)
        output.word_predictions.update(decoded)
        if loss is not None:  # every word had a gold tag: the CRF's negative log-likelihood per word
            output.loss_sum, output.loss_count = loss
    elif constrained:
        output.word_predictions.update(valid_iob2_words(word_probabilities, label_names))
    if sequence_batches:
        ids = np.concatenate([parts[3] for parts in sequence_batches])
        if len(np.unique(ids)) < len(ids):  # windows of long texts (data.long_texts=window)
            _combine_windows(output, sequence_batches, problem_type, window_aggregation)
        else:
            _collect_examples(output, sequence_batches, problem_type)
    expected = len(loader.dataset)
    if output.rows != expected:
        # gather_for_metrics must drop the samples repeated to even out the last batch; anything else is a bug.
        raise RuntimeError(f"gathered {output.rows} predictions for {expected} rows")
    return output


def _collect_examples(output: InferenceOutput, batches: list[list[np.ndarray]], problem_type: str) -> None:
    """One feature per example: each row's prediction and loss as computed on the device."""
    for logits, preds, probs, example_ids, row_loss, row_count, *_ in batches:
        scores = _scores(logits, problem_type) if problem_type != SINGLE_LABEL else None
        for row, example_id in enumerate(example_ids.tolist()):
            if scores is None:
                output.example_predictions[example_id] = (int(preds[row]), float(probs[row]))
            else:
                output.example_scores[example_id] = scores[row]
            output.example_losses[example_id] = float(row_loss[row])
        output.loss_sum += float(row_loss.sum())
        output.loss_count += int(row_count.sum())


def _scores(logits: np.ndarray, problem_type: str) -> list:
    """Multi-label: each label's sigmoid probability; regression: the number (``[rows, 1]`` logits)."""
    if problem_type == MULTI_LABEL:
        return torch.from_numpy(logits).float().sigmoid().tolist()
    return logits[:, 0].astype(float).tolist()


def _combine_windows(
    output: InferenceOutput, batches: list[list[np.ndarray]], problem_type: str, how: str
) -> None:
    """Several features per example: combine each example's window logits, then predict and score the example."""
    logits, example_ids = (np.concatenate([parts[i] for parts in batches]) for i in (0, 3))
    ids, combined, first = aggregate_windows(logits, example_ids, how)
    combined_logits = torch.from_numpy(combined)  # [texts, num_labels]
    if all(len(parts) > 6 for parts in batches):  # labels were gathered: every window carries its text's
        labels = torch.from_numpy(np.concatenate([parts[6] for parts in batches])[first])
        losses, counts = per_row_loss(combined_logits, labels)
        output.loss_sum += float(losses.sum())
        output.loss_count += int(counts.sum())
    else:
        losses = torch.zeros(len(ids))
    if problem_type == SINGLE_LABEL:
        probs, preds = combined_logits.softmax(dim=-1).max(dim=-1)  # [texts]
        for example_id, pred, prob in zip(ids.tolist(), preds.tolist(), probs.tolist()):
            output.example_predictions[example_id] = (int(pred), float(prob))
    else:
        for example_id, score in zip(ids.tolist(), _scores(combined, problem_type)):
            output.example_scores[example_id] = score
    for example_id, loss in zip(ids.tolist(), losses.tolist()):
        output.example_losses[example_id] = float(loss)


def word_label_ids(output: InferenceOutput, word_counts: list[int]) -> list[list[int]]:
    """Predicted label id of every word of every example, in order.

    Raises:
        RuntimeError: a word received no prediction (a windowing bug; never expected).
    """
    result = []
    for example_id, count in enumerate(word_counts):
        words = output.word_predictions.get(example_id, {})
        if len(words) != count:
            missing = sorted(set(range(count)) - set(words))[:5]
            raise RuntimeError(
                f"example {example_id}: {count - len(words)} words got no prediction, e.g. {missing}"
            )
        result.append([words[index][0] for index in range(count)])
    return result

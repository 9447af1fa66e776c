"""Tokenise sequence-classification examples: a text or a text pair per example, truncated or split into windows.

A text longer than ``max_length`` tokens is either truncated (``data.long_texts=truncate``, the default: every
example is one feature, as transformers' ``pipeline`` reads it) or split into overlapping windows by the tokenizer's
own overflow machinery (``return_overflowing_tokens`` with ``stride``, ``overflow_to_sample_mapping``), each window
a feature that carries its text's ``example_id`` and label. Evaluation and prediction aggregate a text's windows
(:mod:`hftransfer.evaluation.windows`), so their metrics and rows count texts.

Pairs are windowed over the first text only (``truncation="only_first"``); the second, typically a short question
or hypothesis, is repeated whole in every window, so every window still holds both parts of the pair.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.data.label_kinds import encode_label
from hftransfer.errors import DataError
from hftransfer.text_excerpt import excerpt, excerpt_names

logger = logging.getLogger(__name__)

LONG_TEXTS = ("truncate", "window")


def _label_ids(batch: dict[str, list], label2id: dict[str, int], indices: list[int]) -> list[Any]:
    """Each row's label as the model reads it: a class id, a multi-hot row of floats, or a number."""
    labels = []
    for row, label in enumerate(batch["label"]):
        if not isinstance(label, str):  # several labels, or a number
            labels.append(encode_label(label, label2id, indices[row]))
            continue
        if label not in label2id:
            raise DataError(
                f"example {indices[row]}: label {excerpt(label)} is not one of the model's labels "
                f"{excerpt_names(sorted(label2id))}"
            )
        labels.append(label2id[label])
    return labels


def _window_stride(tokenizer: PreTrainedTokenizerBase, max_length: int, window_context: int) -> int:
    """Tokens shared by consecutive windows: ``window_context``, at most half of what a window holds of the text."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    return min(window_context, budget // 2)


def _check_pair_room(
    tokenizer: PreTrainedTokenizerBase, pairs: list[str], indices: list[int], max_length: int, stride: int
) -> None:
    """A pair's second text is repeated in every window; it must leave the first text more than ``stride`` tokens
    (the tokenizer panics otherwise)."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer(pairs, add_special_tokens=False)["input_ids"]]
    for row, length in enumerate(lengths):
        room = max_length - specials - length
        if room <= stride:
            raise DataError(
                f"example {indices[row]}: its second text (data.text_pair_column) takes {length} of "
                f"data.max_length={max_length} tokens; data.long_texts=window splits only the first text and "
                f"repeats the second in every window, which needs room for more than {stride} tokens of the first "
                "(data.window_context); raise data.max_length or use data.long_texts=truncate"
            )


def tokenize_sequence_task(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    label2id: dict[str, int] | None,
    *,
    max_length: int,
    long_texts: str = "truncate",
    window_context: int = 16,
    split: str | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Tokenise ``text`` (and ``text_pair`` when present) examples; ``labels`` from ``label`` via ``label2id``: a
    class id, a multi-hot row of floats (a list of labels) or the float itself (a regression target).

    Args:
        dataset: rows with ``text`` [+ ``text_pair``] [+ ``label``].
        tokenizer: the model's tokenizer (windows need a fast one).
        label2id: label -> id; None for prediction (no ``labels`` column).
        max_length: tokens per feature including special tokens.
        long_texts: ``truncate`` or ``window`` (see the module docstring).
        window_context: tokens shared by consecutive windows (capped at half a window).
        split: names the texts in the truncation warning (``training``, ``validation``, ...).

    Returns:
        The features (``input_ids``, ``attention_mask``, [``token_type_ids``], [``labels``], ``example_id``) and a
        report: ``truncated`` (texts cut at ``max_length``), or with windows ``windows`` (features) and
        ``split_texts`` (texts of more than one window).

    Raises:
        DataError: a label is not in ``label2id``; with windows, a slow tokenizer or a pair whose second text
            leaves no room for windows of the first.
    """
    if long_texts not in LONG_TEXTS:
        raise DataError(f"long_texts={long_texts!r}: use one of {', '.join(LONG_TEXTS)}")
    window = long_texts == "window"
    if window and not tokenizer.is_fast:
        raise DataError(
            f"data.long_texts=window needs a fast tokenizer (overflowing tokens); got {type(tokenizer).__name__}"
        )
    has_pair = "text_pair" in dataset.column_names
    stride = _window_stride(tokenizer, max_length, window_context)
    counts = {"windows": 0, "split_texts": 0} if window else {"truncated": 0}

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, Any]:
        pairs = batch["text_pair"] if has_pair else None
        labels = _label_ids(batch, label2id, indices) if label2id is not None else None
        if not window:
            full = tokenizer(batch["text"], pairs, truncation=False)
            counts["truncated"] += sum(len(ids) > max_length for ids in full["input_ids"])
            out: dict[str, Any] = dict(
                tokenizer(batch["text"], pairs, truncation=True, max_length=max_length)
            )
            out["example_id"] = list(indices)
            if labels is not None:
                out["labels"] = labels
            return out
        if pairs is not None:
            _check_pair_room(tokenizer, pairs, indices, max_length, stride)
        encoding = tokenizer(
            batch["text"],
            pairs,
            truncation="only_first" if pairs is not None else True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
        )
        out = dict(encoding)
        rows = out.pop("overflow_to_sample_mapping")  # the batch row each window comes from
        counts["windows"] += len(rows)
        counts["split_texts"] += sum(count > 1 for count in Counter(rows).values())
        out["example_id"] = [indices[row] for row in rows]
        if labels is not None:
            out["labels"] = [labels[row] for row in rows]
        return out

    features = dataset.map(
        encode,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        # The counts above are filled while mapping, so a cached result would leave them empty.
        load_from_cache_file=False,
        desc="Tokenising (windows)" if window else "Tokenising",
    )
    if counts.get("truncated"):
        what = f"{split} texts" if split else "texts"
        logger.warning(
            "%.0f%% of %s %s (%s) were longer than data.max_length=%d tokens and were truncated; set "
            "data.long_texts=window to read them whole",
            100 * counts["truncated"] / len(dataset),
            f"{len(dataset):,}",
            what,
            f"{counts['truncated']:,}",
            max_length,
        )
    return features, counts

"""Tokenise task examples into model features.

Token classification aligns word tags to subwords (first subword carries the label, the rest get -100 unless
``label_all_subwords``) and splits sentences longer than ``max_length`` into windows, so that **every word is
predicted exactly once**: each window *owns* a contiguous run of words and may repeat a few tokens of left context
that it does not own. The ``word_index`` column marks, per token, the word whose first subword it is (``-1``
elsewhere, including context tokens), which lets evaluation and prediction map features back to words.

Sequence classification (:mod:`hftransfer.data.sequence_features`) tokenises a text or a text pair and truncates
it at ``max_length`` or splits it into overlapping windows (``data.long_texts``).
"""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.data.sequence_features import tokenize_sequence_task
from hftransfer.errors import DataError
from hftransfer.text_excerpt import excerpt, excerpt_names

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def _plan_windows(word_lengths: list[int], budget: int, context: int) -> list[tuple[int, int, int]]:
    """Split words into windows of at most ``budget`` subword tokens.

    Returns a list of ``(context_start, owned_start, owned_end)``: the window holds words
    ``[context_start, owned_end)`` and owns (labels / predicts) words ``[owned_start, owned_end)``.
    Continuation windows reserve ``context`` tokens for left context, so owned spans never need truncating,
    except a single word longer than the whole budget, whose tail subwords the tokenizer truncates.
    """
    # A single word can never take more than the whole window.
    lengths = [min(length, budget) for length in word_lengths]
    windows = []
    start, n = 0, len(lengths)
    while start < n:
        room = budget - (context if start > 0 else 0)
        end, used = start, 0
        while end < n and (end == start or used + lengths[end] <= room):
            used += lengths[end]
            end += 1
        context_start, context_used = start, 0
        while (
            context_start > 0
            and context_used + lengths[context_start - 1] <= context
            and used + context_used + lengths[context_start - 1] <= budget
        ):
            context_start -= 1
            context_used += lengths[context_start]
        windows.append((context_start, start, end))
        start = end
    return windows


def _to_inside(tag: str) -> str:
    return "I-" + tag[2:] if tag.startswith("B-") else tag


def tokenize_token_task(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    label2id: dict[str, int] | None,
    *,
    max_length: int,
    label_all_subwords: bool = False,
    window_context: int = 16,
) -> tuple[Dataset, dict[str, int]]:
    """Tokenise ``tokens``/``tags`` examples into windowed features.

    Args:
        dataset: rows with ``tokens`` (list of words) and, when ``label2id`` is given, ``tags``.
        tokenizer: a fast tokenizer (``word_ids()`` is needed).
        label2id: tag -> id; None for prediction (``labels`` are then all -100, ``word_index`` still set).
        max_length: tokens per feature including special tokens.
        label_all_subwords: label continuation subwords too (``B-X`` becomes ``I-X`` on them).
        window_context: tokens of left context repeated in continuation windows.

    Returns:
        The features (``input_ids``, ``attention_mask``, [``token_type_ids``], ``labels``, ``word_index``,
        ``example_id``) and a report with ``windows``, ``split_sentences`` and ``words_replaced_by_unk`` counts.

    Raises:
        DataError: a tag is not in ``label2id``, or the tokenizer is not a fast tokenizer.
    """
    if not tokenizer.is_fast:
        raise DataError(
            f"token classification needs a fast tokenizer (word_ids); got {type(tokenizer).__name__}"
        )
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise DataError(f"data.max_length={max_length} leaves no room for words after special tokens")
    context = min(window_context, budget // 2)
    counts = {"windows": 0, "split_sentences": 0, "words_replaced_by_unk": 0}

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        words_batch = [list(words) for words in batch["tokens"]]
        lengths_encoding = tokenizer(words_batch, is_split_into_words=True, add_special_tokens=False)
        window_words, window_meta = [], []
        for row, words in enumerate(words_batch):
            lengths = [0] * len(words)
            for word_id in lengths_encoding.word_ids(row):
                if word_id is not None:
                    lengths[word_id] += 1
            # Words the tokenizer maps to nothing (zero-width characters, control bytes) would vanish from the
            # input and their tags would be lost: stand in the unknown token for them instead.
            for i, length in enumerate(lengths):
                if length == 0:
                    words[i] = tokenizer.unk_token
                    lengths[i] = 1
                    counts["words_replaced_by_unk"] += 1
            windows = _plan_windows(lengths, budget, context)
            counts["windows"] += len(windows)
            counts["split_sentences"] += len(windows) > 1
            for context_start, owned_start, owned_end in windows:
                window_words.append(words[context_start:owned_end])
                window_meta.append((row, context_start, owned_start, owned_end))

        encoding = tokenizer(window_words, is_split_into_words=True, truncation=True, max_length=max_length)
        out: dict[str, list] = {key: list(values) for key, values in encoding.items()}
        out["labels"], out["word_index"], out["example_id"] = [], [], []
        for feature, (row, context_start, owned_start, owned_end) in enumerate(window_meta):
            tags = batch["tags"][row] if label2id is not None else None
            labels, word_index, previous = [], [], None
            for local in encoding.word_ids(feature):
                word = None if local is None else context_start + local
                owned = word is not None and owned_start <= word < owned_end
                first = word is not None and word != previous
                previous = word
                word_index.append(word if owned and first else -1)
                if tags is None or not owned or not (first or label_all_subwords):
                    labels.append(IGNORE_INDEX)
                    continue
                tag = tags[word] if first else _to_inside(tags[word])
                if tag not in label2id:
                    raise DataError(
                        f"example {indices[row]}, word {word} ({excerpt(words_batch[row][word])}): tag "
                        f"{excerpt(tag)} is not one of the model's labels {excerpt_names(sorted(label2id))}"
                    )
                labels.append(label2id[tag])
            out["labels"].append(labels)
            out["word_index"].append(word_index)
            out["example_id"].append(indices[row])
        return out

    features = dataset.map(
        encode,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        # The counts above are filled while mapping, so a cached result would leave them empty.
        load_from_cache_file=False,
        desc="Tokenising (word-aligned windows)",
    )
    if counts["words_replaced_by_unk"]:
        logger.warning(
            "%d words produce no subword tokens (e.g. zero-width characters); they were replaced by %s so that "
            "they keep a prediction",
            counts["words_replaced_by_unk"],
            tokenizer.unk_token,
        )
    return features, counts


def tokenize(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    label2id: dict[str, int] | None,
    *,
    max_length: int,
    label_all_subwords: bool = False,
    window_context: int = 16,
    long_texts: str = "truncate",
    split: str | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Dispatch to :func:`tokenize_token_task` or :func:`tokenize_sequence_task` by ``task``; ``long_texts`` and
    ``split`` (named in the truncation warning) concern sequence tasks only."""
    if task == "token-classification":
        return tokenize_token_task(
            dataset,
            tokenizer,
            label2id,
            max_length=max_length,
            label_all_subwords=label_all_subwords,
            window_context=window_context,
        )
    return tokenize_sequence_task(
        dataset,
        tokenizer,
        label2id,
        max_length=max_length,
        long_texts=long_texts,
        window_context=window_context,
        split=split,
    )


def tokenize_options(data: Any) -> dict[str, Any]:
    """The tokenisation settings of a ``DataConfig`` as keyword arguments of :func:`tokenize`."""
    return {
        "max_length": data.max_length,
        "label_all_subwords": data.label_all_subwords,
        "window_context": data.window_context,
        "long_texts": data.long_texts,
    }

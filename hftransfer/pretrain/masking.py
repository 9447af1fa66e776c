"""The inputs of masked-language-model training: text windows with their word ids, and whole-word masking (BERT's
recipe, whole words as in its later releases).

A fraction of the *words* of each sequence is chosen (``mask_probability``, 15% by default) and every piece of a
chosen word is predicted; of the predicted tokens 80% become ``[MASK]``, 10% a random token and 10% stay as they
are. Labels are the original ids on predicted tokens and ``-100`` everywhere else (special tokens, padding).

Why not transformers' ``DataCollatorForLanguageModeling(whole_word_mask=True)``: in transformers 5 it replaces every
chosen token with ``[MASK]`` (no 80/10/10 with whole words), finds words from character offsets rather than the
tokenizer's ``word_ids()`` (so ``paris.`` is one word to it and two to the tokenizer), and draws from one generator
seeded once, so a resumed run would mask differently. Here every draw comes from a generator made from the run seed
and the batch's position (:func:`mask_generator`): the same batch is masked the same way in a resumed run, on any
device.

Words come from the fast tokenizer's ``word_ids()`` when the text is tokenised here (the pretraining run), or from the
vocabulary's continuation marks (WordPiece's ``##``) for batches tokenised elsewhere (:func:`continuation_table`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.data.batching import FeatureCollator
from hftransfer.data.mixing import WrappedBatches
from hftransfer.errors import ConfigError

IGNORE_INDEX = -100
NO_WORD = -1  # the word id of special tokens and padding


def mask_generator(seed: int, *position: Any) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and a position (``"train", process, batch number``): a stable hash, so the
    same position gets the same draws in every process and every run."""
    key = "/".join(str(part) for part in (seed, *position)).encode()
    return torch.Generator().manual_seed(
        int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    )


@dataclass
class MaskingConfig:
    """Which tokens the masked LM predicts."""

    mask_probability: float = 0.15
    """Fraction of words predicted (transformers' ``mlm_probability``); every piece of a chosen word is predicted."""
    mask_replace_prob: float = 0.8
    """Fraction of the predicted tokens replaced by ``[MASK]``."""
    random_replace_prob: float = 0.1
    """Fraction of the predicted tokens replaced by a random token (the rest keep their own id)."""
    whole_word_mask: bool = True
    """Predict whole words (all their pieces); False predicts single tokens."""

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_probability < 1.0:
            raise ConfigError(f"mlm.mask_probability must be in (0, 1), got {self.mask_probability}")
        for name in ("mask_replace_prob", "random_replace_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"mlm.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ConfigError("mlm.mask_replace_prob + mlm.random_replace_prob must be at most 1")


@dataclass
class WholeWordMasker:
    """Masks batches of token ids whose word ids are known.

    Args:
        mask_token_id, vocab_size: the tokenizer's ``[MASK]`` id and its vocabulary size (random replacements).
        mask_probability: fraction of words predicted; mask_replace_prob / random_replace_prob: of the predicted
            tokens, the fractions replaced by ``[MASK]`` / by a random token (the rest keep their id).
        whole_word_mask: False predicts single tokens (every token its own word).
    """

    mask_token_id: int
    vocab_size: int
    mask_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_mask: bool = True

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, **options: Any) -> WholeWordMasker:
        """Raises ConfigError when the tokenizer has no mask token (an encoder not made for MLM)."""
        if tokenizer.mask_token_id is None:
            raise ConfigError(
                f"{tokenizer.name_or_path}: the tokenizer has no mask token, so it cannot do MLM"
            )
        return cls(tokenizer.mask_token_id, len(tokenizer), **options)

    def __call__(
        self, input_ids: torch.Tensor, word_ids: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked input ids, labels)`` of ``input_ids`` ``[batch, seq]``; ``word_ids`` ``[batch, seq]`` numbers
        each token's word (``-1``: special token or padding, never predicted). A word's tokens are contiguous."""
        shape, device = input_ids.shape, input_ids.device
        # Drawn on the CPU generator whatever the device, so a batch is masked the same way on CPU and GPU.
        draw_word, draw_kind = torch.rand((2, *shape), generator=generator).to(device)
        random_ids = torch.randint(self.vocab_size, shape, generator=generator).to(device)
        valid = word_ids != NO_WORD
        if self.whole_word_mask:
            previous = F.pad(word_ids[:, :-1], (1, 0), value=NO_WORD)
            starts = valid & (word_ids != previous)
        else:
            starts = valid
        # Each word is chosen by the draw at its first token; its other tokens follow that token.
        positions = torch.arange(shape[1], device=device).expand(shape)
        start_of = torch.where(starts, positions, 0).cummax(dim=1).values
        chosen = starts & (draw_word < self.mask_probability)
        predicted = valid & chosen.gather(1, start_of)
        labels = input_ids.masked_fill(~predicted, IGNORE_INDEX)
        to_mask = predicted & (draw_kind < self.mask_replace_prob)
        to_random = predicted & ~to_mask & (draw_kind < self.mask_replace_prob + self.random_replace_prob)
        masked = input_ids.masked_fill(to_mask, self.mask_token_id)
        masked = torch.where(to_random, random_ids, masked)
        return masked, labels


def continuation_table(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor | None:
    """``[vocab]`` booleans, True for tokens that continue the word before them (WordPiece's ``##`` pieces), or
    None when the tokenizer's model marks no continuations (byte-level BPE, unigram): words are then single tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    prefix = getattr(getattr(backend, "model", None), "continuing_subword_prefix", None)
    if not prefix:
        return None
    table = torch.zeros(len(tokenizer), dtype=torch.bool)
    for token, index in tokenizer.get_vocab().items():
        if token.startswith(prefix) and index < len(table):
            table[index] = True
    return table


def word_ids_from_vocab(
    input_ids: torch.Tensor, not_words: torch.Tensor, continues: torch.Tensor | None
) -> torch.Tensor:
    """Word ids ``[batch, seq]`` of a batch tokenised elsewhere: a new word starts at every token that does not
    continue one (``continues``: :func:`continuation_table`); ``not_words`` marks special tokens and padding."""
    starts = ~not_words if continues is None else ~not_words & ~continues.to(input_ids.device)[input_ids]
    word_ids = starts.long().cumsum(dim=1) - 1
    # A continuation piece right after a special token (a window cut inside a word) has no word start: -1.
    return word_ids.masked_fill(not_words | (word_ids < 0), NO_WORD)


class WordIdsCollator(FeatureCollator):
    """:class:`~hftransfer.data.batching.FeatureCollator` that pads ``word_ids`` with ``-1`` (it pads unknown
    token columns with 0, which would make padding a word)."""

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        if "word_ids" in batch:
            batch["word_ids"] = batch["word_ids"].masked_fill(batch["attention_mask"] == 0, NO_WORD)
        return batch


def tokenize_windows(texts: list[str], tokenizer: Any, max_length: int) -> Dataset:
    """Model inputs of ``texts`` with each token's ``word_ids`` (-1: special token); a text longer than
    ``max_length`` tokens is cut into several windows rather than truncated."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch["text"], truncation=True, max_length=max_length, return_overflowing_tokens=True
        )
        word_ids = [
            [NO_WORD if word is None else word for word in encoded.word_ids(index)]
            for index in range(len(encoded["input_ids"]))
        ]
        encoded.pop("overflow_to_sample_mapping", None)
        return {**encoded, "word_ids": word_ids}

    return Dataset.from_dict({"text": texts}).map(encode, batched=True, remove_columns=["text"])


def premask(features: Dataset, masker: WholeWordMasker, seed: int) -> Dataset:
    """Mask every window once, each from its own generator (the same masks at every evaluation and process count)."""

    def mask_one(example: dict[str, list], index: int) -> dict[str, list]:
        ids, words = torch.tensor([example["input_ids"]]), torch.tensor([example["word_ids"]])
        masked, labels = masker(ids, words, mask_generator(seed, "validation", index))
        return {"input_ids": masked[0].tolist(), "labels": labels[0].tolist()}

    return features.map(mask_one, with_indices=True, remove_columns=["word_ids"])


class MaskedBatches(WrappedBatches):
    """Training batches (:class:`~hftransfer.data.mixing.LoaderBatches`) masked as the loop draws them, each from a
    generator seeded by (seed, process, batch number): new masks every epoch (dynamic masking, as RoBERTa), and the
    same masks for the same batch in a resumed run. Each batch gets ``labels``; ``word_ids`` is dropped."""

    def __init__(self, batches: Any, masker: WholeWordMasker, seed: int, process_index: int = 0) -> None:
        super().__init__(batches)
        self.masker, self.seed, self.process_index = masker, seed, process_index

    def iterate(self, start: int = 0) -> Iterator[dict]:
        """The current epoch's masked batches from batch ``start`` on."""
        for offset, batch in enumerate(self.batches.iterate(start)):
            number = self.epoch * len(self.batches) + start + offset
            generator = mask_generator(self.seed, "train", self.process_index, number)
            batch = dict(batch)
            batch["input_ids"], batch["labels"] = self.masker(
                batch["input_ids"], batch.pop("word_ids"), generator
            )
            yield batch

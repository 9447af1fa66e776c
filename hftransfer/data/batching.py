"""Batching: a collator with dynamic padding, and samplers that group similar lengths.

Real sentences are much shorter than ``max_length``, so padding each batch only to its longest member (and batching
similar lengths together) is the largest single speed-up on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

# Token-level columns that are not model inputs, with their padding values.
TOKEN_EXTRAS = {"labels": -100, "word_index": -1}


class FeatureCollator:
    """Pad model inputs with the tokenizer, token-level ``labels``/``word_index`` by hand; stack the rest (float
    labels, a multi-hot row or a regression target per example, as float32).

    Args:
        tokenizer: pads ``input_ids`` / ``attention_mask`` / ``token_type_ids`` on its own padding side.
        pad_to_multiple_of: round the padded length up (8 helps tensor cores on GPU; leave None on CPU).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    @classmethod
    def for_device(cls, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> FeatureCollator:
        """The collator for batches bound for ``device``: lengths rounded up to multiples of 8 on CUDA (tensor
        cores), exact on CPU (every padded token is wasted work there)."""
        return cls(tokenizer, pad_to_multiple_of=8 if device.type == "cuda" else None)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_names = [name for name in self.tokenizer.model_input_names if name in features[0]]
        batch = self.tokenizer.pad(
            [{name: feature[name] for name in input_names} for feature in features],
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
        )
        length = batch["input_ids"].shape[1]
        left = self.tokenizer.padding_side == "left"
        for name, value in features[0].items():
            if name in input_names:
                continue
            if _is_float(value):  # multi-hot rows [batch, num_labels] or regression targets [batch]
                batch[name] = torch.tensor([feature[name] for feature in features], dtype=torch.float32)
            elif isinstance(value, list):  # token-level column: pad to the batch length
                pad_value = TOKEN_EXTRAS.get(name, 0)
                rows = []
                for feature in features:
                    padding = [pad_value] * (length - len(feature[name]))
                    rows.append(padding + list(feature[name]) if left else list(feature[name]) + padding)
                batch[name] = torch.tensor(rows, dtype=torch.long)
            else:
                batch[name] = torch.tensor([feature[name] for feature in features], dtype=torch.long)
        return dict(batch)


def _is_float(value: Any) -> bool:
    return isinstance(value, float) or (
        isinstance(value, list) and bool(value) and isinstance(value[0], float)
    )


class LengthGroupedSampler(Sampler[int]):
    """Random order in which consecutive ``batch_size`` indices have similar lengths.

    The data is shuffled, cut into mega-batches of ``batch_size * mega_batch_factor`` and each mega-batch is sorted by
    length (longest first), as in ``transformers``' sampler of the same name. The mega-batch holding the longest
    sequence goes first, so the first step meets the largest padded batch: a batch size that does not fit in
    memory fails at once, not an hour into the epoch. The order depends only on
    ``seed + epoch`` (never on the global RNG), so a resumed run sees the same batches as an uninterrupted one, and
    every process of a multi-process run computes the same order before Accelerate shards it.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        *,
        group_by_length: bool = True,
        mega_batch_factor: int = 50,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega_batch_size = batch_size * mega_batch_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        if not self.group_by_length:
            return iter(order)
        megas = [
            sorted(order[start : start + self.mega_batch_size], key=lambda index: -self.lengths[index])
            for start in range(0, len(order), self.mega_batch_size)
        ]
        if megas:  # swap whole mega-batches: every one stays sorted, so batches keep similar lengths
            longest = max(range(len(megas)), key=lambda m: self.lengths[megas[m][0]])
            megas[0], megas[longest] = megas[longest], megas[0]
        return iter([index for mega in megas for index in mega])


class LengthSortedSampler(Sampler[int]):
    """Deterministic longest-first order for evaluation and prediction (results are re-ordered by example id)."""

    def __init__(self, lengths: Sequence[int]) -> None:
        self.order = sorted(range(len(lengths)), key=lambda index: -lengths[index])

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)


def feature_lengths(features: Any) -> list[int]:
    """Token count of each feature (from ``input_ids``)."""
    return [len(ids) for ids in features["input_ids"]]


def build_train_dataloader(
    features: Any,
    collator: FeatureCollator,
    *,
    batch_size: int,
    seed: int,
    group_by_length: bool,
    num_workers: int = 0,
) -> DataLoader:
    """Shuffling (optionally length-grouped) training loader; call ``set_epoch`` on it before each epoch."""
    sampler = LengthGroupedSampler(
        feature_lengths(features), batch_size, seed, group_by_length=group_by_length
    )
    # A private generator keeps the DataLoader from drawing its worker base seed from the global RNG; otherwise
    # creating the iterator at a different moment (e.g. after resuming) would shift every later dropout mask.
    return DataLoader(
        features,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def build_eval_dataloader(
    features: Any, collator: FeatureCollator, *, batch_size: int, num_workers: int = 0
) -> DataLoader:
    """Longest-first evaluation loader (similar lengths share a batch, so padding is minimal)."""
    return DataLoader(
        features,
        batch_size=batch_size,
        sampler=LengthSortedSampler(feature_lengths(features)),
        collate_fn=collator,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )


def batch_tokens(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | int, int]:
    """Real (unpadded, as a device tensor: counting must not wait for the device) and padded tokens of a batch;
    batches of cached encoder features (a frozen encoder's head trains on them) hold no tokens."""
    mask = batch.get("attention_mask")
    if mask is None:
        return 0, 0
    return mask.sum(), mask.numel()


def count_items(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labelled items in a batch: tokens with a label for token tasks, examples for sequence tasks; every entry of
    float labels (multi-label: examples x labels, as ``BCEWithLogitsLoss`` averages; regression: examples)."""
    labels = batch["labels"]
    if labels.is_floating_point():  # a regression target may be -100.0; nothing is ignored there
        return torch.tensor(labels.numel(), device=labels.device)
    return (labels != -100).sum()

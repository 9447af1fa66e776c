"""Batches of cached features: a dataset over a :class:`FeatureStore`, a padding collator and the loaders.

Batches look like tokenised ones to the rest of the library (``labels``, ``word_index``, ``example_id``, an
``attention_mask`` over positions), so the training loop, ``run_inference`` and the metrics work unchanged.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from hftransfer.data.batching import LengthGroupedSampler, LengthSortedSampler
from hftransfer.strategies.feature_cache import IGNORE_INDEX, FeatureStore


class FeatureDataset(torch.utils.data.Dataset):
    """Rows of a :class:`FeatureStore`; ``lengths`` (positions per row) feeds the length-aware samplers."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.token_task = store.task == "token-classification"
        self.lengths = store.lengths if self.token_task else [1] * store.rows

    def __len__(self) -> int:
        return self.store.rows

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.store
        if not self.token_task:
            return {
                "features": s.vectors[index],
                "labels": s.labels[index],
                "example_id": s.example_id[index],
            }
        start, end = int(s.offsets[index]), int(s.offsets[index + 1])
        return {
            "features": s.vectors[start:end],  # [positions, hidden]
            "labels": s.labels[start:end],
            "word_index": s.word_index[start:end],
            "example_id": s.example_id[index],
        }


class FeatureStoreCollator:
    """Pad token rows to the batch's most positions (features 0, labels -100, word_index -1); stack sequences."""

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        example_id = torch.stack([item["example_id"] for item in items])
        if "word_index" not in items[0]:
            features = torch.stack([item["features"] for item in items])  # [batch, hidden]
            return {
                "features": features,
                "labels": torch.stack([i["labels"] for i in items]),
                "example_id": example_id,
            }
        width = max(1, max(len(item["features"]) for item in items))  # at least one column, even if all empty
        batch, hidden = len(items), items[0]["features"].shape[-1]
        features = torch.zeros(batch, width, hidden, dtype=items[0]["features"].dtype)
        mask = torch.zeros(batch, width, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        word_index = torch.full((batch, width), -1, dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["features"])
            features[row, :n], mask[row, :n] = item["features"], 1
            labels[row, :n], word_index[row, :n] = item["labels"], item["word_index"]
        return {
            "features": features,  # [batch, positions, hidden]
            "attention_mask": mask,
            "labels": labels,
            "word_index": word_index,
            "example_id": example_id,
        }


def build_feature_loaders(
    train_store: FeatureStore | None,
    eval_stores: dict[str, FeatureStore],
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    group_by_length: bool = True,
) -> tuple[DataLoader | None, dict[str, DataLoader]]:
    """A shuffled (length-grouped) train loader and longest-first eval loaders over cached features."""
    collator = FeatureStoreCollator()
    train = None
    if train_store is not None:
        dataset = FeatureDataset(train_store)
        sampler = LengthGroupedSampler(dataset.lengths, batch_size, seed, group_by_length=group_by_length)
        # As in batching.py: a private generator so the loader never draws from the global RNG.
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(dataset, batch_size, sampler=sampler, collate_fn=collator, generator=generator)
    evals = {}
    for name, store in eval_stores.items():
        dataset = FeatureDataset(store)
        sampler = LengthSortedSampler(dataset.lengths)
        evals[name] = DataLoader(dataset, eval_batch_size, sampler=sampler, collate_fn=collator)
    return train, evals

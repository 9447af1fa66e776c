"""Collator padding and the length-grouped / length-sorted samplers."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from hftransfer.data.batching import FeatureCollator, LengthGroupedSampler, LengthSortedSampler


def test_collator_pads_dynamically_with_the_right_values(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    features = [
        {
            "input_ids": [2, 5, 3],
            "attention_mask": [1, 1, 1],
            "labels": [-100, 1, -100],
            "word_index": [-1, 0, -1],
            "example_id": 7,
        },
        {
            "input_ids": [2, 5, 6, 9, 3],
            "attention_mask": [1] * 5,
            "labels": [-100, 1, -100, 0, -100],
            "word_index": [-1, 0, -1, 1, -1],
            "example_id": 8,
        },
    ]
    batch = FeatureCollator(tokenizer)(features)
    assert batch["input_ids"].shape == (2, 5)  # padded to the longest in the batch, not max_length
    assert batch["input_ids"][0].tolist() == [2, 5, 3, tokenizer.pad_token_id, tokenizer.pad_token_id]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["labels"][0].tolist() == [-100, 1, -100, -100, -100]
    assert batch["word_index"][0].tolist() == [-1, 0, -1, -1, -1]
    assert batch["example_id"].tolist() == [7, 8]
    padded = FeatureCollator(tokenizer, pad_to_multiple_of=8)(features)
    assert padded["input_ids"].shape == (2, 8) and padded["labels"].shape == (2, 8)


def test_collator_sequence_labels_are_stacked(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = FeatureCollator(tokenizer)(
        [
            {"input_ids": [2, 5, 3], "labels": 1, "example_id": 0},
            {"input_ids": [2, 3], "labels": 0, "example_id": 1},
        ]
    )
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long


def test_length_grouped_sampler_is_a_seeded_permutation_grouping_lengths():
    lengths = [(i * 37) % 101 + 1 for i in range(400)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, mega_batch_factor=5)
    first = list(sampler)
    assert sorted(first) == list(range(400))
    assert list(sampler) == first  # same epoch -> same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(400))
    # within a mega-batch the order is longest first, so batches hold similar lengths
    mega = first[:40]
    assert [lengths[i] for i in mega] == sorted((lengths[i] for i in mega), reverse=True)
    spread_grouped = sum(
        max(lengths[i] for i in first[s : s + 8]) - min(lengths[i] for i in first[s : s + 8])
        for s in range(0, 400, 8)
    )
    plain = list(LengthGroupedSampler(lengths, batch_size=8, seed=3, group_by_length=False))
    spread_plain = sum(
        max(lengths[i] for i in plain[s : s + 8]) - min(lengths[i] for i in plain[s : s + 8])
        for s in range(0, 400, 8)
    )
    assert spread_grouped < spread_plain / 3


def test_length_grouped_sampler_starts_with_the_longest_sequence():
    # Whichever mega-batch the shuffle puts the longest sequence in, it opens the epoch, and every mega-batch stays
    # sorted (grouping intact).
    lengths = [(i * 37) % 101 + 1 for i in range(400)]
    lengths[393] = 500
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, mega_batch_factor=5)
    shuffled = LengthGroupedSampler(lengths, batch_size=8, seed=3, mega_batch_factor=5, group_by_length=False)
    later_mega_batch = 0  # epochs where the shuffle alone left it outside the first mega-batch
    for epoch in range(6):
        sampler.set_epoch(epoch)
        shuffled.set_epoch(epoch)
        order = list(sampler)
        assert order[0] == 393 and sorted(order) == list(range(400))
        for start in range(0, 400, 40):
            mega = [lengths[i] for i in order[start : start + 40]]
            assert mega == sorted(mega, reverse=True)
        later_mega_batch += list(shuffled).index(393) >= 40
    assert later_mega_batch > 0  # the check above covered a moved mega-batch
    assert list(LengthGroupedSampler([], batch_size=8, seed=1)) == []


def test_sampler_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    list(LengthGroupedSampler([3, 1, 2], batch_size=2, seed=1))
    assert torch.rand(1) == expected


def test_length_sorted_sampler_longest_first():
    assert list(LengthSortedSampler([2, 9, 5])) == [1, 2, 0]

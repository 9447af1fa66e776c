"""Pair sampling for contrastive few-shot training: class-balanced blocks of examples, every pair inside a block.

SetFit (Tunstall et al., 2022, "Efficient few-shot learning without prompts") trains the encoder on sentence pairs
labelled same-class / different-class, encoding both sentences of every pair. Here an epoch deals the examples into
blocks instead, each example in exactly one block, and every unordered pair inside a block is a training pair: a
block of ``b`` examples is encoded once (``b`` forward passes) and gives ``b(b-1)/2`` pairs, where encoding the
pairs one by one costs two forward passes each. The pairs are never listed (the loss reads them off the block's
label-equality matrix, :func:`pair_masks`), so building an epoch is linear in the examples whatever the number of
labels. No pair repeats within an epoch; a new seed per epoch deals new blocks, so over epochs the pairs cover the
data set.

Blocks are dealt round-robin over the classes (each class's examples shuffled, the class order shuffled per round),
so every block holds as even a mix of classes as the data allows and has both positive and negative pairs; the loss
weighs the two kinds equally whatever their counts (:func:`pair_masks` gives both).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch


def class_balanced_blocks(labels: Sequence[int], block_size: int, *, seed: int) -> list[list[int]]:
    """One epoch of blocks: the indices of ``labels``, each once, in blocks of ``block_size`` (the last may be
    smaller), classes dealt in turn so that each block mixes them as evenly as the data allows.

    Raises:
        ValueError: ``block_size`` < 2 (a block of one has no pair).
    """
    if block_size < 2:
        raise ValueError(f"a block needs at least two examples to pair, got block_size={block_size}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    queues = []
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        queues.append(members)
    order: list[int] = []
    while queues:
        rng.shuffle(queues)  # which class leads each round, so no class always fills a block's first places
        order.extend(queue.pop() for queue in queues)
        queues = [queue for queue in queues if queue]
    blocks = [order[start : start + block_size] for start in range(0, len(order), block_size)]
    if len(blocks) > 1 and len(blocks[-1]) < 2:  # a lone last example has no pair: it joins the block before
        blocks[-2].extend(blocks.pop())
    return blocks


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` boolean ``[n, n]`` masks of a block's unordered pairs (``i < j``): same label, and
    different labels."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    upper = torch.ones_like(same).triu(diagonal=1)
    return same & upper, ~same & upper


def epoch_pair_counts(blocks: Sequence[Sequence[int]], labels: Sequence[int]) -> tuple[int, int]:
    """``(positive, negative)`` pairs an epoch of ``blocks`` trains on (for reports)."""
    positive = negative = 0
    for block in blocks:
        counts: dict[int, int] = {}
        for index in block:
            counts[int(labels[index])] = counts.get(int(labels[index]), 0) + 1
        same = sum(c * (c - 1) // 2 for c in counts.values())
        positive += same
        negative += len(block) * (len(block) - 1) // 2 - same
    return positive, negative

"""Few-shot training sets: K labelled examples of each class, drawn with a seed (``data.train_per_class``).

Sequence classification keeps K texts of each label. NER keeps sentences until every entity type occurs in K of
them (a sentence is kept when it holds a type still short of K, the greedy scheme of Few-NERD, Ding et al., 2021),
so a type can end up in a few more than K sentences when it shares them with others; sentences without entities
are left out. Several seeds give several samplings of the same size: few-shot scores vary a lot between samplings,
so compare methods on the same ones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset

from hftransfer.errors import ConfigError


def sample_per_class(
    train: Dataset, task: str, per_class: int, seed: int, source: str
) -> tuple[Dataset, dict]:
    """``per_class`` examples of each class of ``train`` (K texts per label; NER: K sentences per entity type), in
    the drawn order, and the report of what was kept.

    Raises:
        ConfigError: a class with fewer than ``per_class`` examples (naming it and ``source``).
    """
    rng = random.Random(seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    if task == "token-classification":
        kept, counts = _greedy_sentences(train["tags"], order, per_class)
    else:
        kept, counts = _per_label(train["label"], order, per_class)
    short = {name: count for name, count in counts.items() if count < per_class}
    if short:
        raise ConfigError(
            f"data.train_per_class={per_class}: {source} has fewer examples of {sorted(short)} "
            f"({', '.join(f'{n}: {c}' for n, c in sorted(short.items()))}); lower it"
        )
    return train.select(kept), {"per_class": per_class, "seed": seed, "counts": counts, "examples": len(kept)}


def _per_label(labels: Sequence, order: list[int], per_class: int) -> tuple[list[int], dict[str, int]]:
    counts: dict[str, int] = {str(label): 0 for label in labels}
    kept = []
    for index in order:
        label = str(labels[index])
        if counts[label] < per_class:
            counts[label] += 1
            kept.append(index)
    return kept, counts


def _greedy_sentences(
    tags: Sequence[Sequence[str]], order: list[int], per_class: int
) -> tuple[list[int], dict]:
    types_of = [{tag[2:] for tag in sentence if tag[:2] in ("B-", "I-")} for sentence in tags]
    counts: dict[str, int] = {name: 0 for types in types_of for name in types}
    kept = []
    for index in order:
        if any(counts[name] < per_class for name in types_of[index]):
            kept.append(index)
            for name in types_of[index]:
                counts[name] += 1
    return kept, counts

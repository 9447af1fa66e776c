"""Episodes for prototypical networks (Snell et al., 2017, "Prototypical networks for few-shot learning"): each is
an N-way K-shot task drawn from the training classes, K support and Q query texts of each of N classes.

Training on such tasks (meta-learning) teaches the encoder to place a new class's texts near the mean of a few of
its examples, which is how the model is then used: a class is its prototype, the mean embedding of its examples,
including classes that were never trained on (``hftransfer zero-shot`` with examples as label descriptions).

An episode is one list of indices: the N*K support texts first (class by class), then the N*Q queries, so that
the loss needs only the support count (:func:`episode_support`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hftransfer.errors import ConfigError


def sample_episodes(
    labels: Sequence[int], *, n_way: int, k_shot: int, queries: int, episodes: int, seed: int
) -> list[list[int]]:
    """``episodes`` episodes of ``n_way`` classes drawn among those with at least ``k_shot + queries`` texts; within
    an episode no text appears twice.

    Raises:
        ConfigError: fewer than ``n_way`` (and 2) classes have ``k_shot + queries`` texts.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    need = k_shot + queries
    eligible = sorted(label for label, members in by_class.items() if len(members) >= need)
    if len(eligible) < max(n_way, 2):
        sizes = {label: len(members) for label, members in sorted(by_class.items())}
        raise ConfigError(
            f"strategy.n_way={n_way} with k_shot={k_shot} and queries={queries} needs {max(n_way, 2)} classes of at "
            f"least {need} training texts; the classes have {sizes} (lower k_shot, queries or n_way)"
        )
    rng = random.Random(seed)
    dealt = []
    for _ in range(episodes):
        classes = rng.sample(eligible, n_way)
        drawn = {label: rng.sample(by_class[label], need) for label in classes}
        support = [index for label in classes for index in drawn[label][:k_shot]]
        query = [index for label in classes for index in drawn[label][k_shot:]]
        dealt.append(support + query)
    return dealt


def episode_support(n_way: int, k_shot: int) -> int:
    """How many of an episode's texts are support texts (they come first)."""
    return n_way * k_shot

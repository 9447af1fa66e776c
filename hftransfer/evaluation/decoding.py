"""IOB2-constrained decoding: the most probable tag sequence of a sentence among those that are valid IOB2.

Taking the most probable tag of each word on its own can produce sequences that name no entity cleanly, e.g.
``B-facility I-other I-facility`` for "Empire State Building": an ``I-X`` may only follow ``B-X`` or ``I-X``, and a
sentence may not start with ``I-X``. :func:`viterbi` finds the sequence that maximises the sum of the words' log
probabilities subject to those rules (the per-word probabilities stay the model's; only the choice changes), which
is the exact answer because the constraint only links neighbouring words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def iob2_constraints(label_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(start, transition)``: which tags may begin a sentence (``[L]``), and which tag may follow which
    (``[L, L]``, ``transition[previous, next]``). Tags that are not ``B-``/``I-`` (``O``, or a scheme without
    prefixes) are unconstrained."""
    kinds = [_split(label) for label in label_names]
    size = len(label_names)
    start = np.array([prefix != "I" for prefix, _ in kinds])
    transition = np.ones((size, size), dtype=bool)
    for following, (prefix, entity) in enumerate(kinds):
        if prefix != "I":
            continue
        for previous, (previous_prefix, previous_entity) in enumerate(kinds):
            transition[previous, following] = previous_prefix in ("B", "I") and previous_entity == entity
    return start, transition


def _split(label: str) -> tuple[str, str]:
    """``("B", "person")`` for ``B-person``; ``("", label)`` for a tag without an IOB prefix."""
    if len(label) > 2 and label[1] == "-" and label[0] in "BI":
        return label[0], label[2:]
    return "", label


def viterbi(log_probs: np.ndarray, start: np.ndarray, transition: np.ndarray) -> list[int]:
    """The valid tag sequence with the highest total log probability.

    Args:
        log_probs: ``[words, tags]`` each word's log probability of each tag.
        start / transition: from :func:`iob2_constraints`.

    Returns:
        One tag id per word (empty for no words).

    Raises:
        ValueError: no valid sequence exists (every tag forbidden at the start).
    """
    words = log_probs.shape[0]
    if words == 0:
        return []
    if not start.any():
        raise ValueError("no tag may start a sentence under these constraints")
    blocked = np.where(transition, 0.0, -np.inf)  # [previous, next]
    score = np.where(start, log_probs[0], -np.inf)  # best score of a valid path ending in each tag
    back = np.zeros((words, log_probs.shape[1]), dtype=np.int64)
    for word in range(1, words):
        candidates = score[:, None] + blocked  # [previous, next]
        back[word] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_probs[word]
    path = [int(score.argmax())]
    for word in range(words - 1, 0, -1):
        path.append(int(back[word, path[-1]]))
    return path[::-1]


def constrained_tags(probabilities: np.ndarray, label_names: Sequence[str]) -> list[int]:
    """:func:`viterbi` over a sentence's ``[words, tags]`` probabilities under IOB2 rules for ``label_names``."""
    start, transition = iob2_constraints(label_names)
    # A floor instead of log(0) = -inf: a word whose only probable tag is forbidden still gets a valid one.
    return viterbi(np.log(np.clip(probabilities, 1e-30, None)), start, transition)

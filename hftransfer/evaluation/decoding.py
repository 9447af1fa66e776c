"""IOB2-constrained decoding: the most probable tag sequence of a sentence among those that are valid IOB2.

Taking the most probable tag of each word on its own can produce sequences that name no entity cleanly, e.g.
``B-facility I-other I-facility`` for "Empire State Building": an ``I-X`` may only follow ``B-X`` or ``I-X``, and a
sentence may not start with ``I-X``. :func:`viterbi` finds the sequence that maximises the sum of the words' log
probabilities subject to those rules (the per-word probabilities stay the model's; only the choice changes), which
is the exact answer because the constraint only links neighbouring words.

A CRF head (``model.head=crf``, :mod:`hftransfer.modeling.crf`) decodes the same way with learned scores instead of
0 / -inf: :func:`best_path` over its start, transition and end scores, and :func:`crf_marginals` gives each word's
probability of its chosen tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# {example id: {word index: (tag id, probability)}}, what evaluation and prediction read per sentence
WordPredictions = dict[int, dict[int, tuple[int, float]]]


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
    if log_probs.shape[0] and not start.any():
        raise ValueError("no tag may start a sentence under these constraints")
    end = np.zeros(log_probs.shape[1])
    return best_path(log_probs, np.where(start, 0.0, -np.inf), np.where(transition, 0.0, -np.inf), end)


def best_path(emissions: np.ndarray, start: np.ndarray, transition: np.ndarray, end: np.ndarray) -> list[int]:
    """The tag sequence maximising ``start[t0] + sum emissions[w, tw] + sum transition[tw-1, tw] + end[tlast]``
    (Viterbi; ``-inf`` scores forbid a move).

    Args:
        emissions: ``[words, tags]``; start / end: ``[tags]``; transition: ``[previous, next]``.

    Returns:
        One tag id per word (empty for no words).
    """
    words = emissions.shape[0]
    if words == 0:
        return []
    score = start + emissions[0]  # best score of a path ending in each tag
    back = np.zeros((words, emissions.shape[1]), dtype=np.int64)
    for word in range(1, words):
        candidates = score[:, None] + transition  # [previous, next]
        back[word] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + emissions[word]
    path = [int((score + end).argmax())]
    for word in range(words - 1, 0, -1):
        path.append(int(back[word, path[-1]]))
    return path[::-1]


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def crf_log_partition(
    emissions: np.ndarray, start: np.ndarray, transition: np.ndarray, end: np.ndarray
) -> tuple[float, np.ndarray]:
    """``(log Z, marginals)``: the log of the summed exponentiated scores of every tag sequence (as in
    :func:`best_path`), and each word's probability of each tag, ``[words, tags]`` (forward-backward)."""
    words, tags = emissions.shape
    alpha = np.zeros((words, tags))
    beta = np.zeros((words, tags))  # log score of every way to finish the sentence from each word's tag
    alpha[0] = start + emissions[0]
    for word in range(1, words):
        alpha[word] = _logsumexp(alpha[word - 1][:, None] + transition, axis=0) + emissions[word]
    beta[-1] = end
    for word in range(words - 2, -1, -1):
        beta[word] = _logsumexp(transition + (emissions[word + 1] + beta[word + 1])[None, :], axis=1)
    log_z = float(_logsumexp(alpha[-1] + end, axis=0))
    return log_z, np.exp(alpha + beta - log_z)


def crf_path_score(
    emissions: np.ndarray, tags: list[int], start: np.ndarray, transition: np.ndarray, end: np.ndarray
) -> float:
    """The score :func:`best_path` maximises, of one tag sequence."""
    score = start[tags[0]] + end[tags[-1]] + emissions[np.arange(len(tags)), tags].sum()
    return float(score + sum(transition[a, b] for a, b in zip(tags, tags[1:])))


def constrained_tags(probabilities: np.ndarray, label_names: Sequence[str]) -> list[int]:
    """:func:`viterbi` over a sentence's ``[words, tags]`` probabilities under IOB2 rules for ``label_names``."""
    start, transition = iob2_constraints(label_names)
    # A floor instead of log(0) = -inf: a word whose only probable tag is forbidden still gets a valid one.
    return viterbi(np.log(np.clip(probabilities, 1e-30, None)), start, transition)


def valid_iob2_words(
    word_probabilities: dict[int, dict[int, np.ndarray]], label_names: Sequence[str]
) -> WordPredictions:
    """Each sentence's most probable valid IOB2 sequence, from its words' probabilities over the labels, with each
    word's probability of its chosen tag."""
    out: WordPredictions = {}
    for example_id, words in word_probabilities.items():
        order = sorted(words)
        tags = constrained_tags(np.stack([words[w] for w in order]), label_names)
        out[example_id] = {word: (tag, float(words[word][tag])) for word, tag in zip(order, tags)}
    return out


def crf_words(
    emissions: dict[int, dict[int, np.ndarray]], gold: dict[int, dict[int, int]], crf: Any, ignore_index: int
) -> tuple[WordPredictions, tuple[float, int] | None]:
    """Each sentence's tags by Viterbi over its words' emissions and the CRF's scores (``crf``: its ``start``,
    ``transition`` and ``end`` arrays), with each word's marginal probability of its tag; and ``(loss sum, words)``
    of the CRF's negative log-likelihood over the sentences whose every word has a gold tag, None if none has (the
    emissions' cross-entropy says little about a model trained through a CRF)."""
    out: WordPredictions = {}
    loss_sum, loss_count = 0.0, 0
    for example_id, words in emissions.items():
        order = sorted(words)
        scores = np.stack([words[w] for w in order]).astype(np.float64)  # [words, labels]
        tags = best_path(scores, crf.start, crf.transition, crf.end)
        log_z, marginals = crf_log_partition(scores, crf.start, crf.transition, crf.end)
        out[example_id] = {
            word: (tag, float(marginals[i, tag])) for i, (word, tag) in enumerate(zip(order, tags))
        }
        gold_tags = [gold.get(example_id, {}).get(w, ignore_index) for w in order]
        if all(tag != ignore_index for tag in gold_tags):
            loss_sum += log_z - crf_path_score(scores, gold_tags, crf.start, crf.transition, crf.end)
            loss_count += len(order)
    return out, ((loss_sum, loss_count) if loss_count else None)

"""One prediction per text from the predictions of its windows (``data.long_texts=window``).

A sequence-classification text longer than ``max_length`` becomes several features that share its ``example_id``
(:mod:`hftransfer.data.sequence_features`). Their logits are combined here, after the cross-process gather, so a
text whose windows were scored on different processes is still counted once: ``mean`` averages each logit over the
windows (a regression head's value too), ``max`` keeps each label's largest logit (a label present anywhere in a
long text is predicted for it). The probabilities, the predicted class and the loss are then computed from the
combined logits, as for a text of one window.
"""

from __future__ import annotations

import numpy as np

AGGREGATIONS = ("mean", "max")


def aggregate_windows(
    logits: np.ndarray, example_ids: np.ndarray, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine the logits of each text's windows.

    Args:
        logits: ``[windows, num_labels]``, in any order.
        example_ids: ``[windows]``, the text each window comes from.
        how: ``mean`` or ``max`` over a text's windows, per label.

    Returns:
        The texts' ids ``[texts]`` (ascending), their logits ``[texts, num_labels]`` and, per text, the row of its
        first window ``[texts]`` (to read what all windows share, such as the label).

    Raises:
        ValueError: an unknown ``how``.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"window aggregation {how!r}: use one of {', '.join(AGGREGATIONS)}")
    ids, first, inverse = np.unique(example_ids, return_index=True, return_inverse=True)
    logits = np.asarray(logits, dtype=np.float64)
    if how == "mean":
        combined = np.zeros((len(ids), logits.shape[1]))
        np.add.at(combined, inverse, logits)
        combined /= np.bincount(inverse, minlength=len(ids))[:, None]
    else:
        combined = np.full((len(ids), logits.shape[1]), -np.inf)
        np.maximum.at(combined, inverse, logits)
    return ids, combined.astype(np.float32), first

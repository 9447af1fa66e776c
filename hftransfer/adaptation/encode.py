"""One feature vector per example from a pretrained encoder: what the density ratios and sample matching compare.

The vectors are the last hidden layer mean-pooled over real tokens, by the frozen encoder (no gradients, batches
padded by the repository's collator: :func:`~hftransfer.strategies.feature_encoding.encode_features`). A token
task's long example is split into windows (several rows of one ``example_id``); its vector is the mean of its
windows', so each example gets exactly one vector and one weight.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.strategies.feature_encoding import base_encoder, encode_features

_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "example_id")


def pooled_example_features(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean-pooled last-layer vectors of ``features``' examples, by ``model``'s encoder (its head is not used).

    Args:
        model: a Hugging Face model (task head or bare encoder); left in the mode it was in.
        tokenizer: pads the batches.
        features: tokenised rows with ``input_ids``, ``attention_mask`` and ``example_id`` (labels, word indices
            and other columns are ignored).
        device: where to run the encoder (moved there for the encoding, then back); None: where it is.
        batch_size: rows per forward pass.

    Returns:
        ``(vectors [examples, hidden] float32, example_ids [examples] int64)``, examples in order of first row.
    """
    inputs = features.select_columns([c for c in _INPUTS if c in features.column_names])
    encoder = base_encoder(model)
    home = next(encoder.parameters()).device
    # A sequence task's pooling: one vector per row, whatever the task the rows were tokenised for.
    store = encode_features(
        model,
        tokenizer,
        inputs,
        layer=-1,
        pooling="mean",
        task="sequence-classification",
        batch_size=batch_size,
        device=device,
    )
    # Back where it was: the run's later steps (the strategy, other objectives) expect the model as it was built.
    encoder.to(home)
    vectors = store.vectors.numpy()  # [rows, hidden]
    rows_ids = store.example_id.numpy()
    example_ids, first, inverse = np.unique(rows_ids, return_index=True, return_inverse=True)
    sums = np.zeros((len(example_ids), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, vectors)
    pooled = (sums / np.bincount(inverse)[:, None]).astype(np.float32)
    order = np.argsort(first, kind="stable")
    return pooled[order], example_ids[order].astype(np.int64)


class PooledFeatures:
    """:func:`pooled_example_features` of one (pretrained) model, computed once per dataset: the importance weights
    and the label-free selection both compare the target source's texts, which need encoding only once."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device | None = None,
    ) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self._done: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, features: Dataset) -> tuple[np.ndarray, np.ndarray]:
        key = features._fingerprint  # datasets' content hash of the rows and their processing
        if key not in self._done:
            self._done[key] = pooled_example_features(
                self.model, self.tokenizer, features, device=self.device
            )
        return self._done[key]

"""Which hidden states to score: single layers and layer averages, as arrays the estimators read.

An encoder with ``L`` layers offers ``L + 1`` hidden states (0 = the embeddings). The candidates are every single one
plus two averages that feature-based transfer commonly uses: all encoder layers, and the top four. Every choice maps
onto the frozen strategy's own options (``feature_layer``, ``feature_layers``), so what the advisor ranks is exactly
what ``strategy.name=frozen`` then trains on. Averages are computed from the single layers' cached vectors (the mean
of hidden states commutes with mean pooling and with picking word positions), so one encoding serves every choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hftransfer.strategies.feature_encoding import IGNORE_INDEX, FeatureStore

TOP_AVERAGE = 4  # the top-four average (Devlin et al. 2019's feature-based NER used the top four layers)


@dataclass(frozen=True)
class LayerChoice:
    """The mean of hidden states ``layer - num_layers + 1 .. layer`` (absolute indices, 0 = embeddings)."""

    layer: int
    num_layers: int = 1

    @property
    def name(self) -> str:
        if self.num_layers == 1:
            return "emb" if self.layer == 0 else f"layer {self.layer}"
        return f"mean {self.layer - self.num_layers + 1}-{self.layer}"

    @property
    def members(self) -> range:
        return range(self.layer - self.num_layers + 1, self.layer + 1)

    def as_strategy(self) -> dict[str, int]:
        """The frozen strategy's options that select these features."""
        return {"feature_layer": self.layer, "feature_layers": self.num_layers}


def layer_choices(num_hidden_layers: int, *, averages: bool = True) -> list[LayerChoice]:
    """Every single hidden state (embeddings first), then the mean of all layers and of the top four."""
    choices = [LayerChoice(index) for index in range(num_hidden_layers + 1)]
    if averages and num_hidden_layers > 1:
        choices.append(LayerChoice(num_hidden_layers, num_hidden_layers))
        if num_hidden_layers > TOP_AVERAGE:
            choices.append(LayerChoice(num_hidden_layers, TOP_AVERAGE))
    return choices


@dataclass
class LabelledVectors:
    """The labelled vectors of one split at every single hidden state: ``vectors[layer]`` is ``[items, hidden]``.

    Items are labelled word positions (token tasks) or rows (sequence tasks); ``labels`` are class ids.
    """

    vectors: dict[int, np.ndarray]
    labels: np.ndarray

    def of(self, choice: LayerChoice) -> np.ndarray:
        """The vectors of ``choice``: one layer's, or the mean of its members'."""
        if choice.num_layers == 1:
            return self.vectors[choice.layer]
        return np.mean([self.vectors[index] for index in choice.members], axis=0, dtype=np.float32)


def labelled_vectors(
    stores: dict[int, FeatureStore], *, max_items: int | None = None, seed: int = 0
) -> LabelledVectors:
    """The labelled items of per-layer stores of one split (same rows, same positions), at most ``max_items`` of
    them drawn with ``seed`` (the same items at every layer).

    Raises:
        ValueError: the stores disagree on their items, or hold float labels (multi-label, regression), which the
            class-based estimators cannot score.
    """
    first = next(iter(stores.values()))
    if first.labels.is_floating_point():
        raise ValueError(
            "the transfer advisor scores single-label classification (a class per word or per text); "
            "multi-label and regression data are not supported"
        )
    labels = first.labels.numpy()
    keep = np.flatnonzero(labels != IGNORE_INDEX)
    if max_items is not None and len(keep) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(keep, size=max_items, replace=False))
    vectors = {}
    for index, store in stores.items():
        if not np.array_equal(store.labels.numpy(), labels):
            raise ValueError(f"the stores of hidden state {index} and {first.info.get('layer')} differ")
        vectors[index] = store.vectors.numpy()[keep]
    return LabelledVectors(vectors, labels[keep].astype(np.int64))

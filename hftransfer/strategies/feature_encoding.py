"""Run a frozen encoder over a tokenised dataset and keep only the vectors a head needs.

Token tasks keep the positions that are labelled or predicted (first subwords), sequence tasks one pooled vector
per row; the result is a :class:`FeatureStore`. :func:`encoder_features` is also what the frozen strategy's probe
model runs live (``strategies/frozen.py``), so a head trained on cached vectors gets the same inputs at
prediction time. Keying and caching the stores on disk is :mod:`hftransfer.strategies.feature_cache`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from hftransfer.data.batching import FeatureCollator, LengthSortedSampler, feature_lengths

IGNORE_INDEX = -100  # the label value that the loss skips, as in the tokenised data


@dataclass
class FeatureStore:
    """Encoded features of one split; row ``i`` owns ``vectors[offsets[i]:offsets[i + 1]]``.

    Token tasks keep one vector per labelled or predicted position, with its ``labels`` and ``word_index``;
    sequence tasks keep one pooled vector per row (``offsets`` is then ``0..rows``) and a label per row.
    """

    task: str
    vectors: torch.Tensor  # [positions, hidden] float32
    offsets: torch.Tensor  # [rows + 1] int64
    labels: (
        torch.Tensor
    )  # [positions] (token) or [rows] (sequence), -100 = no label; float [rows(, num_labels)]
    example_id: torch.Tensor  # [rows]
    word_index: torch.Tensor | None = None  # [positions], token tasks only
    key: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # layer, num_layers, pooling

    @property
    def rows(self) -> int:
        return len(self.example_id)

    @property
    def lengths(self) -> list[int]:
        return (self.offsets[1:] - self.offsets[:-1]).tolist()


def _label_tensor(parts: list[torch.Tensor]) -> torch.Tensor:
    """The rows' labels in one tensor: class ids as int64; float labels (multi-hot rows ``[rows, num_labels]``,
    regression targets ``[rows]``) stay float."""
    if not parts:
        return torch.zeros(0, dtype=torch.long)
    labels = torch.cat(parts)
    return labels.float() if labels.is_floating_point() else labels.long()


def base_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder of a (possibly task-headed) Hugging Face model."""
    return getattr(model, "base_model", model)


def resolve_layer(layer: int, num_hidden_layers: int, num_layers: int = 1) -> int:
    """Absolute hidden-state index (0 = embeddings, L = last layer) of ``layer``; negative counts from the top.

    Raises:
        ValueError: the index, or the ``num_layers`` averaged below it, falls outside ``0..L``.
    """
    index = layer if layer >= 0 else num_hidden_layers + 1 + layer
    if not 0 <= index <= num_hidden_layers or index - num_layers + 1 < 0:
        raise ValueError(
            f"feature_layer={layer} with feature_layers={num_layers} needs hidden states outside 0..{num_hidden_layers}"
        )
    return index


def encoder_features(
    encoder: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    layer: int,
    num_layers: int,
    pooling: str | None,
    task: str,
) -> torch.Tensor:
    """Run ``encoder`` and return ``[batch, seq, hidden]`` (token task) or pooled ``[batch, hidden]`` features."""
    encoder = base_encoder(encoder)
    hidden_states = all_hidden_states(encoder, inputs)
    index = resolve_layer(layer, encoder.config.num_hidden_layers, num_layers)
    return select_features(hidden_states, inputs["attention_mask"], index, num_layers, pooling, task)


def all_hidden_states(encoder: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The embeddings' output and every layer's (``L + 1`` tensors ``[batch, seq, hidden]``) of one forward pass."""
    kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    # DistilBERT-style encoders have no segment embeddings and reject the argument.
    if "token_type_ids" in inputs and "token_type_ids" in inspect.signature(encoder.forward).parameters:
        kwargs["token_type_ids"] = inputs["token_type_ids"]
    out = encoder(**kwargs, output_hidden_states=True, return_dict=True)
    # transformers 5 collects hidden states from its layers: an encoder without layers (an export truncated to the
    # embeddings, feature_layer=0) returns none, and its last hidden state is the embeddings' output.
    return out.hidden_states or (out.last_hidden_state,)


def select_features(
    hidden_states: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    index: int,
    num_layers: int,
    pooling: str | None,
    task: str,
) -> torch.Tensor:
    """The mean of hidden states ``index - num_layers + 1 .. index``, pooled per row for sequence tasks."""
    chosen = hidden_states[index - num_layers + 1 : index + 1]
    hidden = chosen[0].float() if num_layers == 1 else torch.stack(chosen).float().mean(dim=0)
    if task == "token-classification":
        return hidden  # [batch, seq, hidden]
    if pooling == "cls":
        # First attended position: index 0 with right padding, still the [CLS] token with left padding.
        first = mask.long().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def encode_features(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    *,
    layer: int,
    num_layers: int = 1,
    pooling: str | None = "mean",
    task: str,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> FeatureStore:
    """Encode every row of ``features`` (longest first, so batches pad little) into a :class:`FeatureStore`.

    ``device``: where to run (the encoder is moved there); None keeps the encoder where it is.
    """
    stores = encode_layer_features(
        encoder,
        tokenizer,
        features,
        choices=[(layer, num_layers)],
        pooling=pooling,
        task=task,
        batch_size=batch_size,
        device=device,
    )
    return stores[0]


def encode_layer_features(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    *,
    choices: list[tuple[int, int]],
    pooling: str | None = "mean",
    task: str,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> list[FeatureStore]:
    """One :class:`FeatureStore` per ``(layer, num_layers)`` choice, all from one forward pass per batch.

    Probing every layer of an encoder costs one encoding of the data, not one per layer.
    """
    encoder = base_encoder(encoder)
    if device is not None:
        encoder.to(device)
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    collator = FeatureCollator(tokenizer)
    order = list(LengthSortedSampler(feature_lengths(features)))
    token_task = task == "token-classification"
    total = encoder.config.num_hidden_layers
    indices_of = [(resolve_layer(layer, total, n), n) for layer, n in choices]
    rows: list[dict[int, tuple[torch.Tensor, ...]]] = [{} for _ in choices]
    chunks = range(0, len(order), batch_size)
    what = f"hidden state {indices_of[0][0]}" if len(choices) == 1 else f"{len(choices)} layer choices"
    for start in tqdm(chunks, desc=f"Encoding features ({what}, frozen encoder)", leave=False):
        indices = order[start : start + batch_size]
        batch = features[indices]
        batch = collator([dict(zip(batch, values)) for values in zip(*batch.values())])
        inputs = {
            k: v.to(device)
            for k, v in batch.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        labels = batch.get("labels")
        if labels is None:  # prediction data without labels
            labels = torch.full(batch["input_ids"].shape[: 2 if token_task else 1], IGNORE_INDEX)
        keep = None
        if token_task:
            keep = (batch["word_index"] >= 0) | (labels != IGNORE_INDEX)
        with torch.inference_mode():
            hidden_states = all_hidden_states(encoder, inputs)
            for choice, (index, n) in enumerate(indices_of):
                out = select_features(hidden_states, inputs["attention_mask"], index, n, pooling, task).cpu()
                for i, row in enumerate(indices):
                    if token_task:
                        rows[choice][row] = (
                            out[i][keep[i]],
                            labels[i][keep[i]],
                            batch["word_index"][i][keep[i]],
                        )
                    else:
                        rows[choice][row] = (out[i : i + 1], labels[i : i + 1])
    encoder.train(was_training)
    example_id = torch.tensor(features["example_id"][:], dtype=torch.long)
    return [
        _assemble(
            rows[choice], len(features), encoder.config.hidden_size, task, example_id, index, n, pooling
        )
        for choice, (index, n) in enumerate(indices_of)
    ]


def _assemble(
    rows: dict[int, tuple[torch.Tensor, ...]],
    count: int,
    hidden: int,
    task: str,
    example_id: torch.Tensor,
    index: int,
    num_layers: int,
    pooling: str | None,
) -> FeatureStore:
    # Assembled outside inference mode (torch.cat makes ordinary tensors), so a head can train on them.
    token_task = task == "token-classification"
    parts = [rows[row] for row in range(count)]
    counts = torch.tensor([0] + [len(part[0]) for part in parts], dtype=torch.long)
    return FeatureStore(
        task=task,
        vectors=torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, hidden),
        offsets=counts.cumsum(0),
        labels=_label_tensor([p[1] for p in parts]),
        word_index=torch.cat([p[2] for p in parts]).long() if token_task and parts else None,
        example_id=example_id,
        info={"layer": index, "num_layers": num_layers, "pooling": None if token_task else pooling},
    )

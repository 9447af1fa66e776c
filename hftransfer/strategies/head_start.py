"""Where a frozen-encoder head starts (``strategy.head_init``): at random, at the training features' class
prototypes (``prototypes``, weight imprinting: ``frozen.imprint_prototypes``), or as the zero-shot classifier of
the labels' descriptions (``descriptions``, this module).

With a handful of examples per class, a sentence encoder's zero-shot answer (the label whose description, "This
review is positive.", is nearest) is often better than any head trained from a random start on those examples
(docs/results.md, few-shot learning curves). The zero-shot classifier *is* a linear head on the encoder's pooled
features: ``argmax_c cos(x, d_c) = argmax_c (d_c / |d_c|) . x``, since ``|x|`` is the same for every class. So the
head starts with ``W_c = s * d_c / |d_c|`` and no bias, predicting exactly as zero-shot does, and training on the
examples moves it from there instead of from noise. ``s`` makes the starting logits ``cos / 0.05`` for a feature
vector of the training set's mean length: the similarity scale sentence-transformers trains these encoders with
(20), so the start is as confident as the encoder's own similarities, neither flat nor saturated.

The descriptions are the run's ``data.label_descriptions`` / ``data.label_template`` (which also add them to the
training examples: the two uses are one description of the labels).
"""

from __future__ import annotations

from typing import Any

import torch

from hftransfer.data.label_descriptions import label_description_texts
from hftransfer.errors import ConfigError
from hftransfer.strategies.feature_encoding import encoder_features
from hftransfer.strategies.frozen import imprint_prototypes

SIMILARITY_SCALE = 20.0


def start_head(context: Any, head: Any, encoder: torch.nn.Module, train_store: Any) -> dict[str, Any] | None:
    """Set ``head``'s starting weights as ``strategy.head_init`` asks; returns what ``metrics.json`` records of it
    (None: a random start).

    Raises:
        ConfigError: prototypes without class labels; descriptions for a task without one label per text, or
            without descriptions.
    """
    config, head_init = context.config, context.strategy.head_init
    if head_init == "prototypes":
        if train_store.labels.is_floating_point():
            raise ConfigError(
                "strategy.head_init=prototypes needs class labels (one label per text or token)"
            )
        return imprint_prototypes(head, train_store.vectors, train_store.labels)
    if head_init == "descriptions":
        if config.task != "sequence-classification":
            raise ConfigError(
                f"strategy.head_init=descriptions describes one label per text; task={config.task} has none"
            )
        id2label = context.model.config.id2label
        label_vectors = description_vectors(context, encoder, [id2label[i] for i in range(len(id2label))])
        return imprint_descriptions(head, label_vectors, train_store.vectors)
    return None


def description_vectors(context: Any, encoder: torch.nn.Module, label_names: list[str]) -> torch.Tensor:
    """``[labels, hidden]``: each label's descriptions encoded as the strategy encodes a text (same layer(s) and
    pooling), averaged.

    Raises:
        ConfigError: no ``data.label_descriptions`` / ``data.label_template`` to describe the labels with.
    """
    data, strategy = context.config.data, context.strategy
    if data.label_descriptions is None and data.label_template is None:
        raise ConfigError(
            "strategy.head_init=descriptions starts the head from the labels' descriptions; set "
            "data.label_template (e.g. 'This review is {label}.') or data.label_descriptions"
        )
    described = label_description_texts(
        label_names, data.label_descriptions, data.label_template, "the training split"
    )
    texts = [text for name in label_names for text in described[name]]
    batch = context.tokenizer(
        texts, padding=True, truncation=True, max_length=data.max_length, return_tensors="pt"
    ).to(next(encoder.parameters()).device)
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    was_training = encoder.training
    encoder.eval()
    with torch.inference_mode():
        features = encoder_features(
            encoder,
            inputs,
            layer=strategy.feature_layer,
            num_layers=strategy.feature_layers,
            pooling=strategy.pooling,
            task=context.config.task,
        )
    encoder.train(was_training)
    # Each label's rows are consecutive in ``texts``: average them into the label's vector.
    rows = torch.split(features.float().cpu(), [len(described[name]) for name in label_names])
    return torch.stack([part.mean(dim=0) for part in rows])


def imprint_descriptions(
    head: Any, label_vectors: torch.Tensor, train_vectors: torch.Tensor
) -> dict[str, Any]:
    """Set a linear head to the zero-shot classifier of ``label_vectors`` (rows in class-id order); returns the
    report (the scale used).

    Raises:
        ValueError: a head other than linear.
    """
    if head.kind != "linear":
        raise ValueError("label descriptions initialise a linear head")
    mean_length = float(train_vectors.float().norm(dim=-1).mean().clamp_min(1e-6))
    scale = SIMILARITY_SCALE / mean_length
    directions = torch.nn.functional.normalize(label_vectors.float(), dim=-1)
    with torch.no_grad():
        head.classifier.weight.copy_(scale * directions)
        head.classifier.bias.zero_()
    return {"from": "descriptions", "scale": round(scale, 5)}

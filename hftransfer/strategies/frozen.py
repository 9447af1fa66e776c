"""Frozen encoder, trained head: the head and the encoder+head model (:class:`ProbeModel`).

The head sees what :func:`~hftransfer.strategies.feature_cache.encoder_features` produces: one hidden state (or the
mean of a few) of every token, or a pooled vector per sequence. Where an ordinary Hugging Face model computes exactly
the same logits (a linear token head, or a one-hidden-layer CLS head with the architecture's own activation), the
export (``frozen_export.py``) *is* that model, so ``pipeline`` and any HF tooling load it; every other combination
is exported as the encoder plus the head.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn
from transformers import (
    PretrainedConfig,
)
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from hftransfer.strategies.feature_cache import base_encoder, encoder_features

logger = logging.getLogger(__name__)

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}
# AutoModelForSequenceClassification's own head per model type: (first Linear, second Linear, activation).
# ELECTRA's head uses (exact) GELU, not tanh: its authors departed from BERT there.
_ROBERTA_LIKE = ("classifier.dense", "classifier.out_proj", "tanh")
NATIVE_SEQUENCE_HEADS = {
    "bert": ("bert.pooler.dense", "classifier", "tanh"),
    "roberta": _ROBERTA_LIKE,
    "xlm-roberta": _ROBERTA_LIKE,
    "camembert": _ROBERTA_LIKE,
    "mpnet": _ROBERTA_LIKE,
    "electra": ("classifier.dense", "classifier.out_proj", "gelu"),
    "distilbert": ("pre_classifier", "classifier", "relu"),
}
HEAD_FILE, HEAD_CONFIG_FILE = "head.safetensors", "head_config.json"


def native_activation(model_type: str) -> str:
    """The activation of the architecture's native classification head (tanh when it has none we know)."""
    return NATIVE_SEQUENCE_HEADS.get(model_type, (None, None, "tanh"))[2]


class FeatureHead(nn.Module):
    """``linear``: dropout -> Linear. ``mlp``: Linear -> activation -> dropout -> Linear.

    Works on ``[batch, positions, hidden]`` (token tasks) or ``[batch, hidden]`` (sequence tasks).
    """

    def __init__(
        self,
        hidden_size: int,
        num_labels: int,
        *,
        kind: str = "linear",
        head_hidden_size: int | None = None,
        activation: str = "tanh",
        dropout: float = 0.1,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"head kind must be 'linear' or 'mlp', got {kind!r}")
        self.kind, self.hidden_size, self.num_labels = kind, hidden_size, num_labels
        self.head_hidden_size = (head_hidden_size or hidden_size) if kind == "mlp" else None
        self.activation_name, self.dropout_p = activation, dropout
        width = hidden_size
        if kind == "mlp":
            self.dense = nn.Linear(hidden_size, self.head_hidden_size)
            self.activation = ACTIVATIONS[activation]()
            width = self.head_hidden_size
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_labels)
        for module in self.modules():  # as Hugging Face initialises new heads
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=initializer_range)
                nn.init.zeros_(module.bias)

    def forward(
        self, features: torch.Tensor, attention_mask: torch.Tensor | None = None, **ignored: Any
    ) -> TokenClassifierOutput | SequenceClassifierOutput:
        # Padded positions get logits too; their labels are -100 and word_index -1, so nothing reads them.
        x = self.activation(self.dense(features)) if self.kind == "mlp" else features
        logits = self.classifier(self.dropout(x))  # [batch, (positions,) num_labels]
        output = TokenClassifierOutput if logits.dim() == 3 else SequenceClassifierOutput
        return output(logits=logits)

    def head_config(self) -> dict[str, Any]:
        return {
            "head": self.kind,
            "hidden_size": self.hidden_size,
            "head_hidden_size": self.head_hidden_size,
            "num_labels": self.num_labels,
            "activation": self.activation_name,
            "dropout": self.dropout_p,
        }


def build_feature_head(
    config: PretrainedConfig, num_labels: int, *, kind: str = "linear", head_hidden_size: int | None = None
) -> FeatureHead:
    """A new head for an encoder with ``config``: its native activation, classifier dropout and init std."""
    names = ("classifier_dropout", "seq_classif_dropout", "hidden_dropout_prob", "dropout")
    dropout = next((getattr(config, n) for n in names if getattr(config, n, None) is not None), 0.1)
    return FeatureHead(
        config.hidden_size,
        num_labels,
        kind=kind,
        head_hidden_size=head_hidden_size,
        activation=native_activation(config.model_type),
        dropout=dropout,
        initializer_range=getattr(config, "initializer_range", 0.02),
    )


class ProbeModel(nn.Module):
    """Frozen encoder + head; ``forward(input_ids, attention_mask, token_type_ids)`` returns ``.logits`` like an HF
    classification model (``[batch, seq, num_labels]`` or ``[batch, num_labels]``)."""

    def __init__(
        self,
        encoder: nn.Module,
        head: FeatureHead,
        *,
        layer: int,
        num_layers: int = 1,
        pooling: str | None = None,
        task: str,
        id2label: dict[int, str] | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.head = base_encoder(encoder), head
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.options = {"layer": layer, "num_layers": num_layers, "pooling": pooling, "task": task}
        self.config = copy.deepcopy(self.encoder.config)
        if id2label is not None:
            self.config.id2label = {int(i): label for i, label in id2label.items()}
            self.config.label2id = {label: i for i, label in self.config.id2label.items()}

    def train(self, mode: bool = True) -> ProbeModel:
        super().train(mode)
        self.encoder.eval()  # the features were cached without dropout; training must see the same ones
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **ignored: Any,
    ) -> TokenClassifierOutput | SequenceClassifierOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if attention_mask is None:
            inputs["attention_mask"] = torch.ones_like(input_ids)
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        with torch.no_grad():  # the encoder is never part of the autograd graph
            features = encoder_features(self.encoder, inputs, **self.options)
        return self.head(features, inputs["attention_mask"])


def imprint_prototypes(head: FeatureHead, vectors: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Set a linear head to the nearest-prototype classifier of ``vectors`` (``[rows, hidden]``) and their class
    ids (``labels``, -100 = none): class c's prototype is the mean of its vectors, and
    ``-||x - mu_c||^2 = 2 mu_c . x - ||mu_c||^2 - ||x||^2`` is linear in ``x`` once the last term, the same for
    every class, is dropped; so ``W_c = 2 mu_c``, ``b_c = -||mu_c||^2`` classify exactly as the prototypes do
    (weight imprinting, Qi et al., 2018). Classes without a vector keep their random initialisation.

    Returns:
        The report: vectors per class (by class id).
    """
    if head.kind != "linear":
        raise ValueError("prototypes initialise a linear head")
    counts = {}
    with torch.no_grad():
        for label in range(head.num_labels):
            members = vectors[labels == label]
            counts[label] = len(members)
            if len(members):
                prototype = members.float().mean(dim=0)
                head.classifier.weight[label] = 2.0 * prototype
                head.classifier.bias[label] = -prototype.pow(2).sum()
    return {"vectors_per_class": counts}

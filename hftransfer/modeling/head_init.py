"""Start a new classification head at the training labels' frequencies (``model.head_bias_init=prior``).

A new head starts with zero bias, so its first predictions are close to uniform over the labels, while in NER data
almost every word is ``O`` (95% in the WNUT-16 training split used here). The quickest way for the first steps to
reduce the loss is then to learn that prior, and with the whole encoder trainable, moving the encoder is far quicker
than moving the bias: AdamW moves each of the head's biases by about one learning rate per step, while a shift common
to every token's hidden state, produced by millions of encoder weights, reaches the same logits at once. An encoder
whose token vectors are already nearly parallel (sentence-embedding checkpoints such as all-mpnet-base-v2) can
collapse this way: every token gets the same vector and the model predicts ``O`` everywhere (MPNet-base on WNUT-16
did; measured: docs/results.md). Starting the bias at the log label frequencies (the bias initialisation that
Lin et al. (2017) give focal-loss detectors for rare classes) makes the prior free from the first step: the loss
starts near the labels' entropy and the gradient is about telling tokens apart. On the same data the token vectors
then stayed apart and entity words were told from the rest (measured: docs/results.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from hftransfer.errors import ConfigError


def label_counts(labels: Iterable[int | Sequence[int]], num_labels: int) -> torch.Tensor:
    """How often each label id occurs: ``labels`` holds one id per example, or one list per example (token
    tasks, where ``-100`` marks sub-word pieces and special tokens that carry no label)."""
    counts = torch.zeros(num_labels, dtype=torch.float64)
    for item in labels:
        ids = torch.as_tensor(item, dtype=torch.long).reshape(-1)
        ids = ids[ids >= 0]
        counts += torch.bincount(ids, minlength=num_labels)[:num_labels].to(torch.float64)
    return counts


def prior_bias(counts: torch.Tensor) -> torch.Tensor:
    """Log label frequencies, add-one smoothed (a label absent from training keeps a finite bias) and centred
    (softmax ignores a common shift, and centred values keep the bias small)."""
    log_prior = torch.log((counts + 1) / (counts + 1).sum())
    return log_prior - log_prior.mean()


def output_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The head's last linear layer: the one producing the logits (``classifier`` in BERT, ``classifier.out_proj``
    in RoBERTa and MPNet sequence classifiers)."""
    num_labels = model.config.num_labels
    prefix = getattr(model, "base_model_prefix", "")
    layers = [
        module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and module.out_features == num_labels
        and module.bias is not None
        and not (prefix and name.startswith(f"{prefix}."))
    ]
    if not layers:
        raise ConfigError(
            f"model.head_bias_init=prior: no output layer with {num_labels} outputs and a bias found outside the "
            f"encoder of {type(model).__name__}; use model.head_bias_init=default"
        )
    return layers[-1]


def init_head_bias_to_prior(
    model: torch.nn.Module, labels: Iterable[int | Sequence[int]]
) -> dict[str, float]:
    """Set the head's output bias to the log frequencies of ``labels`` (the training split's label ids).

    Returns:
        Each label's training frequency (``id2label`` names), for the run's log.
    """
    counts = label_counts(labels, model.config.num_labels)
    layer = output_layer(model)
    with torch.no_grad():
        layer.bias.copy_(prior_bias(counts).to(layer.bias.dtype))
    total = float(counts.sum()) or 1.0
    return {model.config.id2label[index]: float(count) / total for index, count in enumerate(counts)}

"""``strategy.feature_layer=auto``: the frozen strategy's layer chosen by a linear probe on validation.

The top layer of a sentence encoder is shaped by its pre-training objective; what a new task needs often sits lower
(on WNUT-16, MiniLM-L6's middle layer probes far better than its last). Every single hidden state and the layer
averages are encoded once (cached as the frozen strategy's own features), a logistic-regression probe trained on the
training split is scored on the validation split (macro-F1; NER leaves the ``O`` tag out of the average, as entity
F1 does), and the best choice becomes the run's ``feature_layer`` / ``feature_layers``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.advisor.layers import LayerChoice, labelled_vectors, layer_choices
from hftransfer.advisor.probes import linear_probe_score
from hftransfer.advisor.ranking import outside_label
from hftransfer.strategies.feature_cache import (
    FeatureStore,
    cached_layer_features,
    default_cache_dir,
    feature_cache_key,
    save_store,
)

logger = logging.getLogger("hftransfer")

PROBE_METRIC = "linear probe macro-F1 on validation"
MAX_ITEMS = (
    20000  # labelled words or texts per split the probe sees; enough to separate layers, seconds to fit
)


def choose_feature_layer(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train: Dataset,
    validation: Dataset,
    *,
    task: str,
    label_names: list[str],
    pooling: str | None,
    cache_dir: str | None = None,
    use_cache: bool = True,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> tuple[LayerChoice, dict[str, Any]]:
    """The layer choice whose probe scores best on ``validation``, and a report of every choice's score.

    Returns:
        ``(choice, report)``; the report has ``scores`` (choice name -> probe score), ``chosen``, ``metric``.
    """
    total = encoder.config.num_hidden_layers
    singles = [(index, 1) for index in range(total + 1)]
    options = {"cache_dir": cache_dir, "pooling": pooling, "task": task, "batch_size": batch_size}
    stores = {}
    for split, features in (("train", train), ("validation", validation)):
        found, _ = cached_layer_features(
            encoder, tokenizer, features, singles, device=device, use_cache=use_cache, **options
        )
        stores[split] = dict(zip(range(total + 1), found))
    vectors = {
        split: labelled_vectors(by_layer, max_items=MAX_ITEMS, seed=seed)
        for split, by_layer in stores.items()
    }
    ignore = outside_label(task, label_names)
    scores = {}
    for choice in layer_choices(total):
        scores[choice] = linear_probe_score(
            vectors["train"].of(choice),
            vectors["train"].labels,
            vectors["validation"].of(choice),
            vectors["validation"].labels,
            seed=seed,
            ignore_label=ignore,
        )
    # Ties go to the higher (later-listed) choice: the top layer is what a user would have had anyway.
    best = max(reversed(list(scores)), key=scores.get)
    if best.num_layers > 1 and use_cache:
        for split, features in (("train", train), ("validation", validation)):
            _cache_average(encoder, tokenizer, features, stores[split], best, pooling, task, cache_dir)
    report = {
        "metric": PROBE_METRIC,
        "chosen": best.name,
        "scores": {choice.name: round(score, 4) for choice, score in scores.items()},
    }
    logger.info(
        "feature_layer=auto: %s (%s %.4f; the top layer: %.4f)",
        best.name,
        PROBE_METRIC,
        scores[best],
        scores[LayerChoice(total)],
    )
    return best, report


def _cache_average(
    encoder: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Dataset,
    by_layer: dict[int, FeatureStore],
    choice: LayerChoice,
    pooling: str | None,
    task: str,
    cache_dir: str | None,
) -> None:
    """Store the average of the chosen layers' cached vectors under the average's own key: the mean of hidden
    states commutes with pooling and with picking positions, so this equals encoding it, without another pass."""
    members = [by_layer[index] for index in choice.members]
    first = members[0]
    key = feature_cache_key(
        encoder,
        tokenizer,
        features,
        layer=choice.layer,
        num_layers=choice.num_layers,
        pooling=pooling,
        task=task,
    )
    averaged = FeatureStore(
        task=first.task,
        vectors=torch.stack([store.vectors for store in members]).mean(dim=0),
        offsets=first.offsets,
        labels=first.labels,
        example_id=first.example_id,
        word_index=first.word_index,
        key=key,
        info={**first.info, "layer": choice.layer, "num_layers": choice.num_layers},
    )
    save_store(averaged, Path(cache_dir or default_cache_dir()) / f"{key}.safetensors")

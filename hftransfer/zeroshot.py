"""Zero-shot text classification with a sentence encoder: no training, any label set per call.

Texts and label descriptions are embedded by the same encoder (mean of the last layer over real tokens, L2
normalised: how all-MiniLM-L6-v2 and all-mpnet-base-v2 were trained to be compared), and each text gets the label
whose description is most similar (cosine). A label is described by its name in a template (``"This review is
{label}."``), by a description of its own, or by several descriptions, whose embeddings are averaged into one
prototype. All labels' descriptions are embedded in one batch per call, and each text is encoded once however many
labels there are (an NLI zero-shot pipeline runs the model once per text and label).

An NLI classifier (``entailment`` / ``contradiction`` labels) works through the same interface: it reads each text
with each label's description, and a label's score is the entailment probability (``zeroshot_nli.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from hftransfer.errors import ConfigError
from hftransfer.zeroshot_nli import entailment_scores, nli_indices

DEFAULT_TEMPLATE = "This text is about {label}."
NONE_LABEL = "none"  # what a text of no named class is labelled, with a calibrated threshold
Labels = Sequence[str] | Mapping[str, str | Sequence[str]]


class ZeroShotClassifier:
    """Classify texts among labels named per call, by similarity to the labels' descriptions.

    Args:
        model: an offline alias (``minilm-l6``, ``mpnet-base``), a local directory or a Hub id of a sentence encoder,
            or of an NLI classifier (labels ``entailment`` / ``contradiction``, e.g. ``facebook/bart-large-mnli``):
            each text is then read with each label's description and scored by the entailment probability.
        template: how a label name becomes a description (must contain ``{label}``), for labels given by name.
        batch_size: texts per forward pass.
        max_length: tokens per text (longer texts are truncated).
        cpu: run on CPU even when a GPU is present.
    """

    def __init__(
        self,
        model: str = "minilm-l6",
        *,
        template: str = DEFAULT_TEMPLATE,
        batch_size: int = 64,
        max_length: int = 256,
        cpu: bool = False,
    ) -> None:
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        from hftransfer.assets import resolve_model_name

        check_template(template)
        self.template, self.batch_size, self.max_length = template, batch_size, max_length
        path = resolve_model_name(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.nli = nli_indices(AutoConfig.from_pretrained(path))
        """``(entailment, contradiction)`` indices when ``model`` is an NLI classifier (scores are then entailment
        probabilities), None for a sentence encoder (cosine similarities)."""
        loader = AutoModelForSequenceClassification if self.nli else AutoModel
        self.encoder = loader.from_pretrained(path).eval()
        self.device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
        self.encoder.to(self.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``[texts, hidden]`` unit vectors (mean-pooled last layer), longest texts batched together."""
        from hftransfer.adaptation.encode import pooled_example_features

        if self.nli:
            raise ConfigError(
                "an NLI model scores (text, description) pairs; it has no embeddings of its own"
            )

        if not texts:
            return np.zeros((0, self.encoder.config.hidden_size), dtype=np.float32)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        features = Dataset.from_dict({**encoded, "example_id": list(range(len(texts)))})
        vectors, _ = pooled_example_features(
            self.encoder, self.tokenizer, features, device=self.device, batch_size=self.batch_size
        )
        return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)

    def label_prototypes(self, labels: Labels, template: str | None = None) -> tuple[list[str], np.ndarray]:
        """The label names and one unit vector per label: its description(s) embedded (and averaged)."""
        described = describe(labels, template or self.template)
        names = list(described)
        flat = [text for name in names for text in described[name]]
        vectors = self.embed(flat)
        prototypes, start = [], 0
        for name in names:
            count = len(described[name])
            mean = vectors[start : start + count].mean(axis=0)
            prototypes.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            start += count
        return names, np.stack(prototypes)

    def predict(
        self,
        texts: Sequence[str],
        labels: Labels,
        *,
        template: str | None = None,
        none_below: float | None = None,
        none_label: str = NONE_LABEL,
    ) -> list[dict[str, Any]]:
        """One row per text: ``label`` (the most similar), ``score`` (its cosine similarity, or entailment
        probability with an NLI model) and ``scores`` (every label's).

        Args:
            labels: label names (put into the template), or ``{name: description or [descriptions]}``.
            template: this call's template (default: the classifier's).
            none_below: a text whose best similarity is below this gets ``none_label`` instead ("none of these":
                a class the labels do not name); choose it with :meth:`calibrate` on examples of known classes.
        """
        names, similarities = self.scores(texts, labels, template)
        rows = []
        for text, row in zip(texts, similarities):
            best = int(row.argmax())
            unseen = none_below is not None and float(row[best]) < none_below
            rows.append(
                {
                    "text": text,
                    "label": none_label if unseen else names[best],
                    "score": round(float(row[best]), 4),
                    "scores": {name: round(float(value), 4) for name, value in zip(names, row)},
                }
            )
        return rows

    def calibrate(
        self, texts: Sequence[str], labels: Labels, *, keep: float = 0.95, template: str | None = None
    ) -> float:
        """The ``none_below`` threshold that keeps ``keep`` of these texts, all of classes among ``labels``: the
        ``1 - keep`` quantile of their best similarity. Chosen on known classes only, so no example of an unseen
        class is needed; a text of an unseen class is then "none" when it is less similar to every label than all
        but ``1 - keep`` of the known ones."""
        if not 0.0 < keep <= 1.0:
            raise ConfigError(f"keep={keep}: the share of known-class texts to keep, in (0, 1]")
        if not texts:
            raise ConfigError("calibrate needs texts of the known classes")
        best = self.scores(texts, labels, template)[1].max(axis=1)
        return float(np.quantile(best, 1.0 - keep))

    def scores(
        self, texts: Sequence[str], labels: Labels, template: str | None = None
    ) -> tuple[list[str], np.ndarray]:
        """The label names and ``[texts, labels]`` scores: cosine similarity to each label's prototype (a sentence
        encoder), or the entailment probability averaged over each label's descriptions (an NLI model)."""
        if not self.nli:
            names, prototypes = self.label_prototypes(labels, template)
            return names, self.embed(texts) @ prototypes.T
        described = describe(labels, template or self.template)
        names = list(described)
        hypotheses = [text for name in names for text in described[name]]
        pair_scores = entailment_scores(
            self.encoder,
            self.tokenizer,
            list(texts),
            hypotheses,
            indices=self.nli,
            batch_size=self.batch_size,
            max_length=self.max_length,
            device=self.device,
        )
        columns, start = [], 0
        for name in names:
            count = len(described[name])
            columns.append(pair_scores[:, start : start + count].mean(axis=1))
            start += count
        return names, np.stack(columns, axis=1) if len(texts) else np.zeros((0, len(names)), dtype=np.float32)


def check_template(template: str) -> None:
    if "{label}" not in template:
        raise ConfigError(f"template {template!r} has no {{label}} to put the label name into")


def describe(labels: Labels, template: str) -> dict[str, list[str]]:
    """``{name: [descriptions]}`` from label names (through ``template``) or a mapping of descriptions.

    Raises:
        ConfigError: fewer than two labels, a repeated name, or a label without a description.
    """
    check_template(template)
    if isinstance(labels, Mapping):
        described = {
            str(name): [text] if isinstance(text, str) else [str(t) for t in text]
            for name, text in labels.items()
        }
    else:
        names = [str(name) for name in labels]
        if len(set(names)) != len(names):
            raise ConfigError(f"labels {names}: each label once")
        described = {name: [template.format(label=name)] for name in names}
    if len(described) < 2:
        raise ConfigError(f"zero-shot classification needs at least two labels, got {list(described)}")
    empty = [name for name, texts in described.items() if not texts or not all(t.strip() for t in texts)]
    if empty:
        raise ConfigError(f"labels {empty} have no description")
    return described

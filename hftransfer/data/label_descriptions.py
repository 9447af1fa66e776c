"""Label descriptions as training examples (``data.label_descriptions`` / ``data.label_template``).

With a handful of examples per class, what a label *means* is worth as much as its examples: a sentence encoder
places "This review is positive." near positive reviews before any training (zero-shot classification). Adding
each label's descriptions to the training data, labelled with their label, lets every strategy use that. A label's
descriptions together weigh as much as the label's own examples (each is repeated): they steer the classifier
most when examples are few and matter less as the classes grow.

Sequence classification with one label per text; sentence pairs have no description of their own.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from datasets import Dataset, concatenate_datasets

from hftransfer.config.problem import SINGLE_LABEL
from hftransfer.errors import ConfigError
from hftransfer.text_excerpt import excerpt


def check_description_fields(data: Any) -> None:
    """``label_descriptions`` maps label names to a text or a list of texts; ``label_template`` holds ``{label}``;
    both need one label per text. Normalises the descriptions to ``{name: [texts]}``.

    Raises:
        ConfigError: naming the field.
    """
    if data.label_descriptions is None and data.label_template is None:
        return
    field = "data.label_descriptions" if data.label_descriptions is not None else "data.label_template"
    if data.problem_type != SINGLE_LABEL or data.text_pair_column:
        raise ConfigError(
            f"{field} adds a text per label as a training example: it needs one class label per single text "
            f"(data.problem_type={data.problem_type}{', sentence pairs' if data.text_pair_column else ''})"
        )
    if data.label_template is not None and "{label}" not in str(data.label_template):
        raise ConfigError(
            f"data.label_template={data.label_template!r} has no {{label}} for the label's name"
        )
    if data.label_descriptions is not None:
        if not isinstance(data.label_descriptions, dict) or not data.label_descriptions:
            raise ConfigError(
                "data.label_descriptions must map label names to a description or a list of them, got "
                f"{excerpt(data.label_descriptions)}"
            )
        normalised = {}
        for name, texts in data.label_descriptions.items():
            listed = [texts] if isinstance(texts, str) else texts
            if (
                not isinstance(listed, list)
                or not listed
                or not all(isinstance(t, str) and t.strip() for t in listed)
            ):
                raise ConfigError(
                    f"data.label_descriptions.{name} must be a text or a list of texts, got {excerpt(texts)}"
                )
            normalised[str(name).strip()] = [t.strip() for t in listed]
        data.label_descriptions = normalised


def label_description_texts(
    label_names: list[str], descriptions: dict[str, list[str]] | None, template: str | None, source: str
) -> dict[str, list[str]]:
    """Every label's description texts: its own (``data.label_descriptions``, normalised by
    :func:`check_description_fields`), else its name in ``template``.

    Raises:
        ConfigError: a description for a label ``source`` lacks, or (without a template) a label without one.
    """
    descriptions = dict(descriptions or {})
    unknown = sorted(set(descriptions) - set(label_names))
    if unknown:
        raise ConfigError(
            f"data.label_descriptions names {unknown}, which {source} has no examples of ({label_names})"
        )
    missing = [name for name in label_names if name not in descriptions]
    if missing and template is None:
        raise ConfigError(
            f"data.label_descriptions has none for {missing}; describe every label, or set data.label_template to "
            "describe the rest by name"
        )
    return {name: descriptions.get(name) or [template.format(label=name)] for name in label_names}


def add_label_descriptions(
    train: Dataset,
    label_names: list[str],
    descriptions: dict[str, list[str]] | None,
    template: str | None,
    source: str,
) -> tuple[Dataset, dict[str, Any]]:
    """``train`` with every label's descriptions appended, repeated so that a label's descriptions together count
    as many times as the label has training examples; and the report of what was added.

    Raises:
        ConfigError: a description for a label the training data lacks, or (without a template) a label without
            a description.
    """
    descriptions = label_description_texts(label_names, descriptions, template, source)
    counts = Counter(train["label"])
    texts, labels = [], []
    repeats = {}
    for name in label_names:
        repeats[name] = max(1, math.ceil(counts[name] / len(descriptions[name])))
        for text in descriptions[name]:
            texts += [text] * repeats[name]
            labels += [name] * repeats[name]
    added = Dataset.from_dict({"text": texts, "label": labels}, features=train.features)
    report = {"descriptions": descriptions, "repeats": repeats, "examples": len(texts)}
    return concatenate_datasets([train, added]), report

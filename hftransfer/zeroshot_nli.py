"""Zero-shot classification with an NLI model (Yin et al., 2019): each text is the premise, each label's
description the hypothesis, and a label's score is how probable the model finds "entailment" against
"contradiction" for that pair (the neutral class is left out, as in transformers' zero-shot pipeline with
``multi_label=True``), so every label's score is a probability on its own and a "none of these" threshold means
the same for any label set.

An NLI model has to read each text with each description, so its cost grows with the number of labels; the pairs of
all texts and labels of a call are batched together, longest first, rather than one text's labels at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def nli_indices(config: object) -> tuple[int, int] | None:
    """``(entailment, contradiction)`` class indices of an NLI model's config, or None for any other model."""
    names = {
        str(label).lower(): int(index) for index, label in (getattr(config, "id2label", None) or {}).items()
    }
    entail = next((i for name, i in names.items() if name.startswith("entail")), None)
    contradict = next((i for name, i in names.items() if name.startswith("contradict")), None)
    if entail is None or contradict is None or not getattr(config, "architectures", None):
        return None
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures):
        return None
    return entail, contradict


@torch.no_grad()
def entailment_scores(
    model: torch.nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    hypotheses: Sequence[str],
    *,
    indices: tuple[int, int],
    batch_size: int,
    max_length: int,
    device: torch.device,
) -> np.ndarray:
    """``[texts, hypotheses]``: P(entailment) of each (text, hypothesis) pair against contradiction."""
    pairs = [(t, h) for t in range(len(texts)) for h in range(len(hypotheses))]
    lengths = [len(texts[t]) + len(hypotheses[h]) for t, h in pairs]
    order = sorted(
        range(len(pairs)), key=lambda i: -lengths[i]
    )  # similar lengths share a batch: less padding
    scores = np.zeros((len(texts), len(hypotheses)), dtype=np.float32)
    entail, contradict = indices
    for start in range(0, len(order), batch_size):
        chosen = [pairs[i] for i in order[start : start + batch_size]]
        encoded = tokenizer(
            [texts[t] for t, _ in chosen],
            [hypotheses[h] for _, h in chosen],
            truncation="only_first",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        ).to(device)
        logits = model(**encoded).logits.float()
        probability = logits[:, [contradict, entail]].softmax(dim=-1)[:, 1]
        for (t, h), value in zip(chosen, probability.tolist()):
            scores[t, h] = value
    return scores

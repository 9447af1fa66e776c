"""Toy assets: a tiny BERT and toy NER / sentiment data, written offline and deterministically in about a second.

They exist so that the notebooks, the documentation examples and smoke runs work with no network and finish in
seconds. The model is a randomly initialised 2-layer BERT (hidden size 32) with a WordPiece vocabulary of the toy
words; the data are template sentences whose labels follow from the words, so even this model learns them.
Nothing here is meant to measure anything: use the real offline assets (``minilm-l6``, ``wnut16``) for that.

    from hftransfer.toy import make_toy_assets

    toy = make_toy_assets("toy")
    # accelerate launch recipes/finetune_ner.py model.name_or_path=toy/model data.train_file=toy/ner/train.conll ...
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ToyAssets", "make_classification_examples", "make_ner_examples", "make_toy_assets"]

PERSONS = ["alice", "bob", "carol", "dave", "erin"]
PLACES = ["paris", "london", "rome", "berlin", "oslo"]
FILLER = ["lives", "in", "works", "at", "visited", "the", "city", "of", "and", "with", "today", "near"]
POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
NEUTRAL = ["movie", "film", "plot", "was", "very", "really", "a", "this"]
PIECES = ["##s", "##ville", "un", "##known"]  # "parisville" -> paris ##ville, "alices" -> alice ##s
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + PERSONS + PLACES + FILLER + POSITIVE + NEGATIVE + NEUTRAL + PIECES + [".", ","]

SPLIT_SEEDS = {"train": 1, "validation": 2, "test": 3}


@dataclass
class ToyAssets:
    """Where :func:`make_toy_assets` wrote the model and the data."""

    model_dir: Path
    """A ``BertModel`` checkpoint and its tokenizer (``AutoModelFor*.from_pretrained`` adds a new head)."""
    ner_files: dict[str, Path]
    """``train`` / ``validation`` / ``test`` CoNLL files (``word<TAB>tag``, IOB2 tags, types ``per`` and ``loc``)."""
    sentiment_files: dict[str, Path]
    """``train`` / ``validation`` / ``test`` JSONL files of ``{"text", "label"}`` (``positive`` / ``negative``)."""


def make_ner_examples(n: int, seed: int = 0) -> list[dict]:
    """Sentences like ``alice lives in paris .`` with IOB2 tags (``per``, ``loc``; some two-word entities).

    Args:
        n: number of sentences.
        seed: seed of the generator (same seed, same sentences).

    Returns:
        ``[{"tokens": [...], "tags": [...]}, ...]``
    """
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        tokens, tags = [rng.choice(PERSONS)], ["B-per"]
        if rng.random() < 0.3:  # two-word person
            tokens.append(rng.choice(PERSONS) + "s")
            tags.append("I-per")
        tokens += [rng.choice(["lives", "works", "visited"]), rng.choice(["in", "near"])]
        tags += ["O", "O"]
        tokens.append(rng.choice(PLACES))
        tags.append("B-loc")
        if rng.random() < 0.3:
            tokens.append(rng.choice(PLACES) + "ville")
            tags.append("I-loc")
        if rng.random() < 0.5:
            tokens += ["with", rng.choice(PERSONS)]
            tags += ["O", "B-per"]
        tokens.append(".")
        tags.append("O")
        examples.append({"tokens": tokens, "tags": tags})
    return examples


def make_classification_examples(n: int, seed: int = 0, pair: bool = False) -> list[dict]:
    """Texts like ``this film was very good`` whose label (``positive`` / ``negative``) is decided by the last word;
    with ``pair``, ``premise``/``hypothesis`` rows labelled ``same``/``different`` by whether both halves agree.

    Args:
        n: number of texts.
        seed: seed of the generator.

    Returns:
        ``[{"text": ..., "label": ...}, ...]`` (or ``premise``/``hypothesis``/``label`` rows)
    """
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        label = rng.choice(["negative", "positive"])
        word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        text = " ".join(
            [rng.choice(["this", "a"]), rng.choice(["movie", "film", "plot"]), "was", "very", word]
        )
        if pair:
            other = rng.choice(["positive", "negative"])
            second = "really " + rng.choice(POSITIVE if other == "positive" else NEGATIVE)
            examples.append(
                {"premise": text, "hypothesis": second, "label": "same" if other == label else "different"}
            )
        else:
            examples.append({"text": text, "label": label})
    return examples


def write_conll(path: Path, examples: list[dict]) -> Path:
    lines = []
    for example in examples:
        lines += [f"{token}\t{tag}" for token, tag in zip(example["tokens"], example["tags"])]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_tiny_bert(
    directory: str | Path, seed: int = 0, vocab: list[str] | None = None, **config: int
) -> Path:
    """A randomly initialised tiny BERT encoder (2 layers, width 32 unless ``config`` says otherwise) and its
    WordPiece tokenizer over ``vocab`` (default :data:`VOCAB`), saved like a Hub checkpoint; the caller's RNG state
    is left alone."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = vocab or VOCAB
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, model_max_length=128)
    tokenizer.save_pretrained(directory)
    options = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 37,  # deliberately not a multiple of the hidden size: catches shape mix-ups
        "max_position_embeddings": 128,
        **config,
    }
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG state
        torch.manual_seed(seed)
        model = BertModel(BertConfig(vocab_size=len(vocab), **options))
    model.save_pretrained(directory)
    return directory


def make_toy_assets(
    directory: str | Path,
    *,
    ner_sizes: tuple[int, int, int] = (48, 16, 16),
    sentiment_sizes: tuple[int, int, int] = (64, 24, 24),
    seed: int = 0,
) -> ToyAssets:
    """Write a tiny BERT and toy NER and sentiment splits under ``directory`` (created if missing).

    Layout: ``model/``, ``ner/{train,validation,test}.conll``, ``sentiment/{train,validation,test}.jsonl``.
    The same arguments always write the same files (existing ones are overwritten).

    Args:
        directory: where to write.
        ner_sizes: sentences in the train, validation and test NER splits.
        sentiment_sizes: texts in the train, validation and test sentiment splits.
        seed: seed of the model weights; the data splits use fixed seeds of their own (1, 2, 3).

    Returns:
        The paths written.
    """
    root = Path(directory)
    write_tiny_bert(root / "model", seed)
    (root / "ner").mkdir(parents=True, exist_ok=True)
    (root / "sentiment").mkdir(parents=True, exist_ok=True)
    ner_files = {
        split: write_conll(root / "ner" / f"{split}.conll", make_ner_examples(size, seed=SPLIT_SEEDS[split]))
        for split, size in zip(SPLIT_SEEDS, ner_sizes)
    }
    sentiment_files = {
        split: write_jsonl(
            root / "sentiment" / f"{split}.jsonl",
            make_classification_examples(size, seed=SPLIT_SEEDS[split]),
        )
        for split, size in zip(SPLIT_SEEDS, sentiment_sizes)
    }
    return ToyAssets(model_dir=root / "model", ner_files=ner_files, sentiment_files=sentiment_files)

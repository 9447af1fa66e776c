"""Shared fixtures: a tiny BERT (2 layers, hidden 32) with a WordPiece vocab made here, and toy task data.

Nothing is downloaded: the model is built from a config and saved to a temporary directory.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PERSONS = ["alice", "bob", "carol", "dave", "erin"]
PLACES = ["paris", "london", "rome", "berlin", "oslo"]
FILLER = ["lives", "in", "works", "at", "visited", "the", "city", "of", "and", "with", "today", "near"]
POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
NEUTRAL = ["movie", "film", "plot", "was", "very", "really", "a", "this"]
PIECES = ["##s", "##ville", "un", "##known"]  # "parisville" -> paris ##ville, "alices" -> alice ##s
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + PERSONS + PLACES + FILLER + POSITIVE + NEGATIVE + NEUTRAL + PIECES + [".", ","]


def make_ner_examples(n: int, seed: int = 0) -> list[dict]:
    """Sentences like 'alice lives in paris .' with IOB2 tags (person, loc; some two-word entities)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        tokens, tags = [], []
        person = rng.choice(PERSONS)
        tokens.append(person)
        tags.append("B-per")
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
    """Texts whose label is decided by a sentiment word; pairs label whether both halves agree."""
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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT encoder and its WordPiece tokenizer, saved like a Hub checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(VOCAB)}, model_max_length=128)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture()
def ner_files(tmp_path) -> dict[str, Path]:
    return {
        "train": write_conll(tmp_path / "train.conll", make_ner_examples(48, seed=1)),
        "validation": write_conll(tmp_path / "dev.conll", make_ner_examples(16, seed=2)),
        "test": write_conll(tmp_path / "test.conll", make_ner_examples(16, seed=3)),
    }


@pytest.fixture()
def classification_files(tmp_path) -> dict[str, Path]:
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", make_classification_examples(64, seed=1)),
        "validation": write_jsonl(tmp_path / "dev.jsonl", make_classification_examples(24, seed=2)),
        "test": write_jsonl(tmp_path / "test.jsonl", make_classification_examples(24, seed=3)),
    }

"""Shared fixtures: a tiny BERT (2 layers, hidden 32) with a WordPiece vocab, and toy task data, both from
:mod:`hftransfer.toy` (which the notebooks' small mode uses too).

Nothing is downloaded: the model is built from a config and saved to a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hftransfer.toy import (  # noqa: E402 - the offline switches above come first
    NEGATIVE,
    PERSONS,
    PLACES,
    POSITIVE,
    SPECIAL,
    VOCAB,
    make_classification_examples,
    make_ner_examples,
    write_conll,
    write_jsonl,
    write_tiny_bert,
)

__all__ = [
    "NEGATIVE",
    "PERSONS",
    "PLACES",
    "POSITIVE",
    "SPECIAL",
    "VOCAB",
    "make_classification_examples",
    "make_ner_examples",
    "write_conll",
    "write_jsonl",
    "write_tiny_bert",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT encoder and its WordPiece tokenizer, saved like a Hub checkpoint."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


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

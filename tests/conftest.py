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
    "recipe_argv",
    "toy_classification_files",
    "toy_ner_files",
    "write_conll",
    "write_jsonl",
    "write_tiny_bert",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT encoder and its WordPiece tokenizer, saved like a Hub checkpoint."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


def toy_ner_files(root: Path) -> dict[str, Path]:
    """Toy NER train / validation / test CoNLL files (48 / 16 / 16 sentences) under ``root``."""
    return {
        "train": write_conll(root / "train.conll", make_ner_examples(48, seed=1)),
        "validation": write_conll(root / "dev.conll", make_ner_examples(16, seed=2)),
        "test": write_conll(root / "test.conll", make_ner_examples(16, seed=3)),
    }


def toy_classification_files(root: Path) -> dict[str, Path]:
    """Toy sentiment train / validation / test JSONL files (64 / 24 / 24 texts) under ``root``."""
    return {
        "train": write_jsonl(root / "train.jsonl", make_classification_examples(64, seed=1)),
        "validation": write_jsonl(root / "dev.jsonl", make_classification_examples(24, seed=2)),
        "test": write_jsonl(root / "test.jsonl", make_classification_examples(24, seed=3)),
    }


def recipe_argv(model_dir: Path, files: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    """A recipe's arguments for a quick run of ``model_dir`` on ``files`` into ``run_dir`` (``extra`` last)."""
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={run_dir}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['validation']}",
        f"data.test_file={files['test']}",
        "train.batch_size=8",
        "train.trackers=[]",
        "train.warmup_ratio=0",
        *extra,
    ]


@pytest.fixture()
def ner_files(tmp_path) -> dict[str, Path]:
    return toy_ner_files(tmp_path)


@pytest.fixture()
def classification_files(tmp_path) -> dict[str, Path]:
    return toy_classification_files(tmp_path)


@pytest.fixture
def quick_speed_report(monkeypatch):
    """A distillation recipe's teacher-vs-student timing, once and briefly: its five rounds of at least a second per
    model are what a report needs, not what recipe tests check (they only see that it ran)."""
    import functools

    from hftransfer.distill import report

    monkeypatch.setattr(
        report,
        "inference_throughput",
        functools.partial(report.inference_throughput, rounds=1, min_seconds=0.0),
    )

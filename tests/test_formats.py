"""Data formats are registered: a format added from a plugin file (fastText's ``__label__<label> <text>`` lines,
the worked example of docs/extending.md) reads through a recipe by ``data.format`` or by its extension, with
file:line errors; unknown formats fail naming ``data.format``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hftransfer.config import DataConfig
from hftransfer.data.formats import format_names, get_format, register_format
from hftransfer.data.readers import read_file
from hftransfer.errors import ConfigError, DataError
from hftransfer.toy import make_classification_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

FASTTEXT_PLUGIN = '''
from hftransfer.data.formats import register_format
from hftransfer.data.rows import SEQUENCE_TASK, ReadResult
from hftransfer.errors import DataError


def read_fasttext(path, text, task, config, require_labels):
    """One example per line: ``__label__<label> <text>`` (the label may be absent when none is required)."""
    result = ReadResult(str(path), [], [], has_labels=require_labels)
    for number, line in enumerate(text.split("\\n"), start=1):
        if not line.strip():
            continue
        label, _, words = line.partition(" ")
        if not label.startswith("__label__"):
            if require_labels:
                raise DataError(f"{path}:{number}: expected '__label__<label> <text>', got {line[:40]!r}")
            label, words = "", line
        if not words.strip():
            raise DataError(f"{path}:{number}: no text after the label")
        row = {"text": words.strip()}
        if require_labels:
            row["label"] = label.removeprefix("__label__")
        result.rows.append(row)
        result.anchors.append(number)
    return result


register_format("fasttext", read=read_fasttext, extensions=(".ft",), tasks=(SEQUENCE_TASK,), title="fastText")
'''


def _write_fasttext(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(f"__label__{e['label']} {e['text']}\n" for e in examples), encoding="utf-8")
    return path


def test_a_format_from_a_plugin_file_reads_through_the_recipe(tiny_model_dir, tmp_path):
    plugin = tmp_path / "fasttext_format.py"
    plugin.write_text(FASTTEXT_PLUGIN, encoding="utf-8")
    files = {
        split: _write_fasttext(tmp_path / f"{split}.ft", make_classification_examples(n, seed=seed))
        for split, n, seed in (("train", 48, 1), ("validation", 16, 2), ("test", 16, 3))
    }
    metrics = finetune_classifier.main(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={tmp_path / 'run'}",
            f"plugins=[{plugin}]",
            f"data.train_file={files['train']}",
            f"data.validation_file={files['validation']}",
            f"data.test_file={files['test']}",
            "train.max_steps=2",
            "train.trackers=[]",
        ]
    )
    assert sorted(metrics["label_names"]) == ["negative", "positive"]
    assert metrics["data"]["splits"]["train"]["examples"] == 48
    assert "fasttext" in format_names("sequence-classification")
    assert "fasttext" not in format_names("token-classification")
    # the format's own errors name the file and line
    bad = tmp_path / "bad.txt"
    bad.write_text("__label__positive fine\nno label here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:2: expected '__label__<label> <text>'"):
        read_file(bad, "sequence-classification", DataConfig(train_file="unused", format="fasttext"))
    # a token task refuses it, naming the formats that hold token data
    with pytest.raises(DataError, match=r"fastText files hold sequence-classification data; .* needs CoNLL"):
        read_file(files["train"], "token-classification", DataConfig(train_file="unused"))


def test_unknown_formats_and_taken_names_are_refused(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a", "label": "b"}\n', encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"data.format='xml' is not a registered format \(known: auto, conll"
    ):
        read_file(path, "sequence-classification", DataConfig(train_file="unused", format="xml"))
    with pytest.raises(ValueError, match="registered already"):
        register_format("jsonl", read=get_format("jsonl").read)
    with pytest.raises(ValueError, match=r"extension \.csv already selects 'csv'"):
        register_format("my_csv", read=get_format("csv").read, extensions=(".csv",))

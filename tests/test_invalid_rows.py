"""Rows without text or label (``data.invalid_rows``): ``error`` (the default) stops at the first with its
``file:line``; ``skip`` leaves them out, counts them in the data report and logs where the first few were. Other
damage (a row of the wrong shape, an unknown column) stays an error either way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hftransfer.config import DataConfig
from hftransfer.data.sources import load_task_data, read_unlabelled
from hftransfer.errors import DataError
from tests.conftest import make_classification_examples, write_jsonl

SEQ = "sequence-classification"


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f'"{text}",{label}\n' for text, label in rows), encoding="utf-8")
    return path


def mail(n: int) -> list[tuple[str, str]]:
    return [
        (f"{'good' if i % 2 else 'bad'} film number {i}", "positive" if i % 2 else "negative")
        for i in range(n)
    ]


@pytest.fixture()
def damaged(tmp_path) -> Path:
    """20 rows; lines 4 and 9 are whitespace only, line 13 has no label, line 15 an empty text."""
    rows = mail(20)
    rows[2] = ("   ", "positive")
    rows[7] = ("\t ", "negative")
    rows[11] = ("fine film", "")
    rows[13] = ("", "negative")
    return write_csv(tmp_path / "mail.csv", rows)


def test_error_is_the_default_and_names_file_and_line(damaged):
    assert DataConfig(train_file=str(damaged)).invalid_rows == "error"
    with pytest.raises(DataError, match=r"mail\.csv:4: empty text in column 'text'.*data\.invalid_rows=skip"):
        load_task_data(DataConfig(train_file=str(damaged)), SEQ)


def test_skip_drops_counts_and_logs_the_first_locations(damaged, caplog):
    config = DataConfig(train_file=str(damaged), invalid_rows="skip", validation_size=0.2, test_size=0.2)
    with caplog.at_level(logging.WARNING):
        data = load_task_data(config, SEQ)
    assert sum(len(split) for split in data.splits.values()) == 16
    assert data.report["sources"][str(damaged)]["dropped"] == {
        "empty text (data.invalid_rows=skip)": 3,
        "empty label (data.invalid_rows=skip)": 1,
    }
    assert data.report["sources"][str(damaged)]["examples"] == 16
    assert (
        f"left out 4 rows without text or label: {damaged}:4, {damaged}:9, {damaged}:13, {damaged}:15"
        in caplog.text
    )
    texts = {text for split in data.splits.values() for text in split["text"]}
    assert "fine film" not in texts and not any(not text.strip() for text in texts)


def test_skip_names_five_locations_then_counts(tmp_path, caplog):
    rows = mail(12)
    for i in range(7):
        rows[i] = (" ", rows[i][1])
    path = write_csv(tmp_path / "many.csv", rows)
    with caplog.at_level(logging.WARNING):
        read = read_unlabelled(str(path), SEQ, DataConfig(train_file=str(path), invalid_rows="skip"))
    assert len(read) == 5
    assert f"{path}:6 and 2 more" in caplog.text and f"{path}:7," not in caplog.text


def test_jsonl_null_text_and_label_and_shape_errors_stay(tmp_path):
    rows = make_classification_examples(24, seed=1)
    rows[1]["text"] = None
    rows[3]["label"] = None
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    config = DataConfig(train_file=str(path), invalid_rows="skip", validation_size=0.25, test_size=0.25)
    data = load_task_data(config, SEQ)
    assert data.report["sources"][str(path)]["dropped"] == {
        "null text (data.invalid_rows=skip)": 1,
        "null label (data.invalid_rows=skip)": 1,
    }
    with pytest.raises(DataError, match=r"train\.jsonl:2: the text is null"):
        load_task_data(DataConfig(train_file=str(path), validation_size=0.25, test_size=0.25), SEQ)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "good film", "label": "positive"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl:2: expected an object"):
        read_unlabelled(str(broken), SEQ, DataConfig(train_file=str(broken), invalid_rows="skip"))


def test_a_file_of_only_invalid_rows_says_so(tmp_path):
    path = write_csv(tmp_path / "blank.csv", [(" ", "positive"), ("", "negative")])
    with pytest.raises(DataError, match="every row was left out by data.invalid_rows=skip"):
        read_unlabelled(str(path), SEQ, DataConfig(train_file=str(path), invalid_rows="skip"))


def test_ner_rows_without_words(tmp_path):
    path = write_jsonl(
        tmp_path / "ner.jsonl", [{"tokens": ["alice"], "tags": ["B-PER"]}, {"tokens": [], "tags": []}]
    )
    with pytest.raises(DataError, match=r"ner\.jsonl:2: column 'tokens' holds no tokens"):
        read_unlabelled(str(path), "token-classification", DataConfig(train_file=str(path)))
    read = read_unlabelled(
        str(path), "token-classification", DataConfig(train_file=str(path), invalid_rows="skip")
    )
    assert read["tokens"] == [["alice"]]

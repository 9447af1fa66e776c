"""The builtin offline datasets: which task each serves and how its shipped file becomes rows.

``wnut16`` (token classification) is a CoNLL file read as any other; ``rotten_tomatoes`` (sequence
classification) is a CSV whose ``category`` column mixes reviews (fresh/rotten) with film synopses ("plot"), so
it gets its own reader: the synopses are dropped from the labelled data and are offered instead as unlabelled text
(``rotten_tomatoes_plot``) for a teacher to label. ``drug_reviews`` (Drugs.com patient reviews, a second
sentiment domain) is a zip of two TSV files, train and test, read with the standard library.
``political_speeches`` (party of a 2012 US convention speech's paragraph, a topic-like task) is a CSV of whole
speeches, split into paragraphs. The train texts of
both sentiment datasets are unlabelled sets too (a domain-adaptation target), as are ``guardian_headlines``
(news). ``general_inquirer`` (multi-label) and ``whissell_dal`` (regression) are word lexicons
(:mod:`hftransfer.data.lexicon_datasets`). The files come from :mod:`hftransfer.assets`.
"""

from __future__ import annotations

import dataclasses
import html
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hftransfer import assets
from hftransfer.config import DataConfig
from hftransfer.config.problem import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from hftransfer.data.lexicon_datasets import LEXICON_READERS
from hftransfer.data.readers import (
    SEQUENCE_TASK,
    TOKEN_TASK,
    ReadResult,
    csv_records,
    read_file,
    read_text,
    sequence_row,
)
from hftransfer.errors import ConfigError, DataError

BUILTIN_TASKS = {
    "wnut16": TOKEN_TASK,
    "rotten_tomatoes": SEQUENCE_TASK,
    "drug_reviews": SEQUENCE_TASK,
    "political_speeches": SEQUENCE_TASK,
    "general_inquirer": SEQUENCE_TASK,
    "whissell_dal": SEQUENCE_TASK,
}
BUILTIN_PROBLEM_TYPES = {"general_inquirer": MULTI_LABEL, "whissell_dal": REGRESSION}
"""The builtins whose labels are not one class per text (``data.problem_type`` must say so)."""
ROTTEN_TOMATOES_LABELS = {"fresh": "positive", "rotten": "negative"}
DRUG_REVIEW_FILES = {"train": "drugsComTrain.tsv", "test": "drugsComTest.tsv"}
DRUG_REVIEW_LABELS = ("positive", "negative", "neutral")
# Unlabelled text (all sequence classification): Rotten Tomatoes' film synopses, which are not reviews; the train
# texts of the two sentiment datasets without their labels (the target domain of a movie <-> drug sentiment pair,
# either way round); news headlines.
BUILTIN_UNLABELLED = {
    "rotten_tomatoes_plot": SEQUENCE_TASK,
    "rotten_tomatoes": SEQUENCE_TASK,
    "drug_reviews": SEQUENCE_TASK,
    "guardian_headlines": SEQUENCE_TASK,
}


def read_builtin(config: DataConfig, task: str) -> dict[str, ReadResult]:
    """The labelled splits (``train``, and ``test`` where the dataset has one) of builtin ``config.dataset``.

    Raises:
        ConfigError: the dataset serves the other task, or it holds single texts and a pair column is set.
        DataError: a malformed row (the message names the file and line).
    """
    name = config.dataset
    if BUILTIN_TASKS[name] != task:
        raise ConfigError(f"data.dataset={name!r} is a {BUILTIN_TASKS[name]} dataset, but the task is {task}")
    path = assets.locate(name)
    if name == "wnut16":
        wnut = dataclasses.replace(config, format="conll", conll_token_column=0, conll_tag_column=-1)
        return {"train": read_file(path, task, wnut)}
    if config.text_pair_column:
        raise ConfigError(f"data.text_pair_column is set, but {name} holds single texts")
    problem_type = BUILTIN_PROBLEM_TYPES.get(name, SINGLE_LABEL)
    if config.problem_type != problem_type:
        raise ConfigError(
            f"data.dataset={name} is a {problem_type} dataset: set data.problem_type={problem_type}"
        )
    if name in LEXICON_READERS:
        return {"train": LEXICON_READERS[name](path, config)}
    if name == "drug_reviews":
        return read_drug_reviews(path, with_test=config.test_file is None)
    if name == "political_speeches":
        return {"train": read_political_speeches(path)}
    return {"train": read_rotten_tomatoes(path, config)}


def read_rotten_tomatoes(path: Path, config: DataConfig) -> ReadResult:
    """The review rows: ``positive``/``negative``, or the file's ``fresh``/``rotten`` when ``data.label_map`` is
    set (it then renames the file's labels, like any dataset's); synopses and repeated texts are dropped."""
    # Read the records before validating rows: some plot rows, which are dropped anyway, have empty texts.
    csv_config = dataclasses.replace(config, text_column="text", label_column="category")
    records = csv_records(path, read_text(path), "csv", ["category", "text"])
    result, dropped, seen = ReadResult(str(path), [], []), Counter(), set()
    result.dropped = dropped
    for line, record in records:
        category = record["category"]
        if category not in ROTTEN_TOMATOES_LABELS:  # "plot" rows are film synopses, not reviews
            dropped[f"category {category!r} is not a review"] += 1
        elif record["text"] in seen:  # duplicates would leak between carved splits
            dropped["duplicate text (first kept)"] += 1
        else:
            seen.add(record["text"])
            label = category if config.label_map else ROTTEN_TOMATOES_LABELS[category]
            result.rows.append(
                {**sequence_row(record, f"{path}:{line}", csv_config, labels=False), "label": label}
            )
            result.anchors.append(line)
    return result


def review_text(raw: str) -> str:
    """A drug review as written: the file wraps each in quotes and escapes HTML (``I&#039;ve``)."""
    text = raw.strip()
    # The wrapper goes first: a quote the reviewer wrote is escaped (&quot;) and stays part of the text.
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return html.unescape(text).strip()


def drug_review_records(path: Path, member: str) -> tuple[Path, list[tuple[int, dict[str, str]]]]:
    """``(location, (line, record) pairs)`` of one TSV file in the drug reviews zip; the location
    (``<zip>/<member>``) prefixes error messages.

    Raises:
        DataError: the zip is unreadable or lacks the member, the member is not UTF-8, or its TSV is malformed.
    """
    where = path / member
    try:
        with zipfile.ZipFile(path) as zipped:
            data = zipped.read(member)
    except KeyError:
        raise DataError(f"{path}: no file {member!r} in the zip; reinstall the package") from None
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read the zip ({err}); reinstall the package") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not valid UTF-8 (byte offset {err.start})") from None
    # Reviews hold \r\r\n breaks; one newline convention keeps the line numbers of messages right.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return where, csv_records(where, text, "tsv", ["review", "rating"])


def read_drug_reviews(path: Path, with_test: bool = True) -> dict[str, ReadResult]:
    """The ``train`` and (``with_test``) ``test`` splits: the cleaned review and its rating as the label.

    A text is kept once: repeats within a file are dropped, and train rows whose text is also a test row (the same
    review posted for two drug names) are dropped from train, so no test text is trained on.
    """
    results: dict[str, ReadResult] = {}
    in_test: set[str] = set()
    for split in ("test", "train") if with_test else ("train",):  # test first: train leaves out its texts
        where, records = drug_review_records(path, DRUG_REVIEW_FILES[split])
        result, dropped, seen = ReadResult(str(where), [], []), Counter(), set()
        result.dropped = dropped
        for line, record in records:
            text, label = review_text(record["review"]), record["rating"].strip()
            if not text:
                raise DataError(f"{where}:{line}: empty review")
            if label not in DRUG_REVIEW_LABELS:
                raise DataError(
                    f"{where}:{line}: rating {label!r} is not one of {', '.join(DRUG_REVIEW_LABELS)}"
                )
            if text in seen:
                dropped["duplicate text (first kept)"] += 1
            elif text in in_test:
                dropped[f"text also in {DRUG_REVIEW_FILES['test']} (kept there)"] += 1
            else:
                seen.add(text)
                result.rows.append({"text": text, "label": label})
                result.anchors.append(line)
        if not result.rows:
            raise DataError(f"{where}: no examples found")
        results[split] = result
        in_test = seen if split == "test" else in_test
    return {split: results[split] for split in ("train", "test") if split in results}


def _plot_texts() -> list[str]:
    path = assets.locate("rotten_tomatoes")
    records = csv_records(path, read_text(path), "csv", ["category", "text"])
    return [r["text"] for _, r in records if r["category"] == "plot" and r["text"].strip()]


def _review_texts() -> list[str]:
    """The reviews of the train split that ``data.dataset=rotten_tomatoes`` carves by default (seed 0, validation
    and test 0.1 each): a target domain's text whose default evaluation splits stay unseen."""
    from hftransfer.data.sources import load_task_data  # sources.py imports this module

    return list(load_task_data(DataConfig(dataset="rotten_tomatoes"), SEQUENCE_TASK).splits["train"]["text"])


def _drug_review_texts() -> list[str]:
    # The train file's reviews as the labelled train split has them: none of them is a test review.
    return [row["text"] for row in read_drug_reviews(assets.locate("drug_reviews"))["train"].rows]


def _guardian_texts() -> list[str]:
    path = assets.locate("guardian_headlines")
    records = csv_records(path, read_text(path), "csv", ["Text"])
    return [r["Text"].strip() for _, r in records if r["Text"].strip()]


UNLABELLED_READERS: dict[str, Callable[[], list[str]]] = {
    "rotten_tomatoes_plot": _plot_texts,
    "rotten_tomatoes": _review_texts,
    "drug_reviews": _drug_review_texts,
    "guardian_headlines": _guardian_texts,
}


def read_builtin_unlabelled(source: str, task: str) -> list[dict[str, Any]]:
    """The ``text`` rows of builtin unlabelled set ``source`` (a key of ``BUILTIN_UNLABELLED``) for ``task``.

    Raises:
        ConfigError: the set holds text of the other task.
    """
    if BUILTIN_UNLABELLED[source] != task:
        raise ConfigError(
            f"transfer set {source!r} is {BUILTIN_UNLABELLED[source]} text, but the task is {task}"
        )
    return [{"text": text} for text in UNLABELLED_READERS[source]()]


MIN_PARAGRAPH_WORDS = 8  # shorter lines are applause and greetings ("Thank you. Thank you so much.")


def read_political_speeches(path: Path) -> ReadResult:
    """One row per paragraph of at least ``MIN_PARAGRAPH_WORDS`` words, labelled with its speaker's party; repeated
    paragraphs are dropped. Paragraphs of one speech may land in different carved splits (the split is by row)."""
    records = csv_records(path, read_text(path), "csv", ["party", "speaker", "text"])
    result, dropped, seen = ReadResult(str(path), [], []), Counter(), set()
    result.dropped = dropped
    for line, record in records:
        for paragraph in record["text"].splitlines():
            text = " ".join(paragraph.split())
            if len(text.split()) < MIN_PARAGRAPH_WORDS:
                dropped[f"paragraph under {MIN_PARAGRAPH_WORDS} words"] += 1
            elif text in seen:
                dropped["duplicate text (first kept)"] += 1
            else:
                seen.add(text)
                result.rows.append({"text": text, "label": record["party"].strip()})
                result.anchors.append(line)
    return result

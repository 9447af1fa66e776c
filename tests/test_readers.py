"""Readers: every format with good and bad files; errors must name file and line and never be raw exceptions."""

from __future__ import annotations

import bz2
import gzip
import json
import re
from pathlib import Path

import pytest

from hftransfer.config import DataConfig
from hftransfer.data.readers import read_file
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
        "EU NNP B-ORG\r\nrejects VBZ O\r\n\r\n\r\n\t\r\n"
        "Peter\tNNP\tB-PER\r\nBlackburn\tNNP\tI-PER\r\n"
        "-DOCSTART- -X- -X- O\r\n"  # a document marker also ends the sentence before it
        "Brussels NNP B-LOC"
    )
    result = read_file(write(tmp_path / "d.conll", text), NER, cfg())
    assert [row["tokens"] for row in result.rows] == [["EU", "rejects"], ["Peter", "Blackburn"], ["Brussels"]]
    assert [row["tags"] for row in result.rows] == [["B-ORG", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert [result.where(i) for i in range(3)] == [f"{tmp_path / 'd.conll'}:{n}" for n in (3, 8, 11)]
    assert result.where(1, token=1).endswith("d.conll:9")
    assert result.iob_repairs == 0


def test_conll_configured_columns(tmp_path):
    path = write(tmp_path / "d.iob", "1 EU B-ORG x\n2 rejects O x\n")
    result = read_file(path, NER, cfg(conll_token_column=1, conll_tag_column=2))
    assert result.rows == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}]
    with raises(
        f"{path}:1: the line has 4 columns, but data.conll_token_column=1 and data.conll_tag_column=7"
    ):
        read_file(path, NER, cfg(conll_token_column=1, conll_tag_column=7))


def test_conll_missing_tag_column_names_line(tmp_path):
    path = write(tmp_path / "d.conll", "a\tO\nb\tB-x\n\nc\tO\nlonely\n")
    with raises(f"{path}:5: missing tag column in 'lonely'"):
        read_file(path, NER, cfg())


def test_conll_malformed_tag_names_line(tmp_path):
    path = write(tmp_path / "d.bio", "a O\nb O\n\nc O\nd PER\n")
    with raises(f"{path}:5: malformed tag 'PER' (expected O, B-<type> or I-<type>)"):
        read_file(path, NER, cfg())


def test_conll_iob1_repairs_are_counted(tmp_path):
    path = write(tmp_path / "d.conll", "a I-per\nb I-per\nc O\nd I-loc\n\ne I-loc\n")
    result = read_file(path, NER, cfg())
    assert result.rows[0]["tags"] == ["B-per", "I-per", "O", "B-loc"]
    assert result.rows[1]["tags"] == ["B-loc"]
    assert result.iob_repairs == 3


def test_non_utf8_reports_line_and_column(tmp_path):
    path = write(tmp_path / "d.conll", b"a\tO\r\nb\tO\r\n\r\nca\xffe\tO\r\n")
    with raises(f"{path}:4: not valid UTF-8 (byte 0xff at column 3)"):
        read_file(path, NER, cfg())


def test_non_utf8_inside_compressed_file_reports_decompressed_line(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b'{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 0}\n')
    with raises(f"{path}:2: not valid UTF-8 (byte 0xe9 at column 14)"):
        read_file(path, SEQ, cfg())


@pytest.mark.parametrize("content", ["", "\n\n  \r\n", "-DOCSTART- -X- O\n\n"])
def test_files_without_examples(tmp_path, content):
    path = write(tmp_path / "d.conll", content)
    with raises(f"{path}: no examples found"):
        read_file(path, NER, cfg())


def test_conll_is_not_for_sequence_classification(tmp_path):
    path = write(tmp_path / "d.conll", "a O\n")
    with raises(f"{path}: CoNLL files hold word tags"):
        read_file(path, SEQ, cfg())


def test_missing_file_and_unknown_extension(tmp_path):
    with raises(f"{tmp_path / 'nope.conll'}: file not found"):
        read_file(tmp_path / "nope.conll", NER, cfg())
    path = write(tmp_path / "d.xml", "<a/>")
    with raises(f"{path}: cannot tell the format from the extension"):
        read_file(path, NER, cfg())


def test_utf8_bom_and_unicode_line_separators_inside_words(tmp_path):
    # U+2028 inside a token must not split the line (str.splitlines would).
    path = write(tmp_path / "d.conll", "\ufeffa\u2028b\tO\nc\tB-x\n")
    assert read_file(path, NER, cfg()).rows == [{"tokens": ["a\u2028b", "c"], "tags": ["O", "B-x"]}]


# --- JSON / JSONL ---------------------------------------------------------------------------------------------


def test_jsonl_token_rows_and_repairs(tmp_path):
    rows = [{"tokens": ["a", "b"], "tags": ["I-x", "O"]}, {"tokens": ["c"], "tags": ["B-y"]}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    result = read_file(path, NER, cfg())
    assert result.rows == [{"tokens": ["a", "b"], "tags": ["B-x", "O"]}, {"tokens": ["c"], "tags": ["B-y"]}]
    assert result.iob_repairs == 1


def test_jsonl_missing_key_names_line_and_keys(tmp_path):
    path = write(
        tmp_path / "d.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n\n{"words": ["b"], "tags": ["O"]}\n'
    )
    with raises(f"{path}:3: missing column 'tokens' (present: ['tags', 'words'])"):
        read_file(path, NER, cfg())


def test_jsonl_length_mismatch_and_bad_tag_name_line(tmp_path):
    path = write(
        tmp_path / "d.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n'
    )
    with raises(f"{path}:2: 2 tokens but 1 tags"):
        read_file(path, NER, cfg())
    path = write(tmp_path / "e.jsonl", '{"tokens": ["a", "b"], "tags": ["O", "PER"]}\n')
    with raises(f"{path}:1: tag 1: malformed tag 'PER'"):
        read_file(path, NER, cfg())


def test_jsonl_invalid_json_and_non_object(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with raises(f"{path}:2: invalid JSON"):
        read_file(path, SEQ, cfg())
    path = write(tmp_path / "e.jsonl", '{"text": "a", "label": "x"}\n["b", "x"]\n')
    with raises(f"{path}:2: expected an object with named fields, got list"):
        read_file(path, SEQ, cfg())


def test_json_array_and_data_wrapper_with_int_labels(tmp_path):
    rows = [{"sentence": "good", "y": 1}, {"sentence": "bad", "y": 0}]
    config = cfg(text_column="sentence", label_column="y")
    for name, payload in (("a.json", rows), ("b.json", {"data": rows})):
        result = read_file(write(tmp_path / name, json.dumps(payload, indent=2)), SEQ, config)
        assert result.rows == [{"text": "good", "label": "1"}, {"text": "bad", "label": "0"}]


def test_json_array_errors_name_the_row(tmp_path):
    path = write(tmp_path / "d.json", json.dumps([{"text": "a", "label": "x"}, {"txt": "b", "label": "y"}]))
    with raises(f"{path}: row 1: missing column 'text' (present: ['label', 'txt'])"):
        read_file(path, SEQ, cfg())
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


def test_empty_text_is_an_error_naming_the_row(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "  ", "label": "y"}\n')
    with raises(f"{path}:2: empty text in column 'text'"):
        read_file(path, SEQ, cfg())
    path = write(tmp_path / "e.jsonl", '{"tokens": [], "tags": []}\n')
    with raises(f"{path}:1: column 'tokens' holds no tokens"):
        read_file(path, NER, cfg())


# --- CSV / TSV ------------------------------------------------------------------------------------------------


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


def test_csv_missing_column_lists_header(tmp_path):
    path = write(tmp_path / "d.csv", "sentence,label\nhello,1\n")
    with raises(f"{path}:1: no column 'text' in the header ['sentence', 'label']"):
        read_file(path, SEQ, cfg())


def test_csv_wrong_field_count(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nhello,1\nhello, world,1\n")
    with raises(f"{path}:3: 3 fields, but the header has 2"):
        read_file(path, SEQ, cfg())


def test_tsv_and_csv_token_cells(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\nsome text\tpos\n")
    assert read_file(path, SEQ, cfg()).rows == [{"text": "some text", "label": "pos"}]
    path = write(tmp_path / "n.csv", "tokens,tags\nEU rejects,B-org O\nPeter,I-per\n")
    result = read_file(path, NER, cfg())
    assert result.rows == [
        {"tokens": ["EU", "rejects"], "tags": ["B-org", "O"]},
        {"tokens": ["Peter"], "tags": ["B-per"]},
    ]
    assert result.iob_repairs == 1
    path = write(tmp_path / "m.csv", "tokens,tags\nEU rejects,B-org\n")
    with raises(f"{path}:2: 2 tokens but 1 tags"):
        read_file(path, NER, cfg())


# --- compression ----------------------------------------------------------------------------------------------


def test_bz2_csv_and_gzip_conll(tmp_path):
    path = tmp_path / "d.csv.bz2"
    with bz2.open(path, "wt", encoding="utf-8") as handle:
        handle.write("text,label\nnice film,positive\ndull film,negative\n")
    assert [row["label"] for row in read_file(path, SEQ, cfg()).rows] == ["positive", "negative"]
    path = tmp_path / "d.conll.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("a\tB-x\nb\tI-x\n")
    assert read_file(path, NER, cfg()).rows == [{"tokens": ["a", "b"], "tags": ["B-x", "I-x"]}]


def test_corrupt_compressed_file(tmp_path):
    path = write(tmp_path / "d.csv.bz2", b"not bz2 data")
    with raises(f"{path}: cannot read the file"):
        read_file(path, SEQ, cfg())


# --- labels optional (prediction) -----------------------------------------------------------------------------


def test_labels_optional_are_kept_when_present(tmp_path):
    path = write(tmp_path / "a.conll", "a\nb\n\nc\n")
    result = read_file(path, NER, cfg(), require_labels=False)
    assert result.rows == [{"tokens": ["a", "b"]}, {"tokens": ["c"]}] and not result.has_labels
    path = write(tmp_path / "b.conll", "a O\nb B-x\n")
    assert read_file(path, NER, cfg(), require_labels=False).rows == [
        {"tokens": ["a", "b"], "tags": ["O", "B-x"]}
    ]
    path = write(tmp_path / "c.jsonl", '{"text": "a"}\n{"text": "b"}\n')
    assert read_file(path, SEQ, cfg(), require_labels=False).rows == [{"text": "a"}, {"text": "b"}]
    with raises(f"{path}:1: missing column 'label'"):
        read_file(path, SEQ, cfg())

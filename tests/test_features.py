"""Subword alignment, windowing of long sentences, and sequence / pair tokenisation."""

from __future__ import annotations

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from hftransfer.data.features import _plan_windows, tokenize_sequence_task, tokenize_token_task
from hftransfer.errors import DataError

LABELS = ["O", "B-loc", "I-loc", "B-per", "I-per"]
LABEL2ID = {label: index for index, label in enumerate(LABELS)}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_first_subword_carries_the_label(tokenizer):
    data = Dataset.from_list(
        [{"tokens": ["alices", "lives", "in", "parisville"], "tags": ["B-per", "O", "O", "B-loc"]}]
    )
    features, counts = tokenize_token_task(data, tokenizer, LABEL2ID, max_length=32)
    row = features[0]
    pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert pieces == ["[CLS]", "alice", "##s", "lives", "in", "paris", "##ville", "[SEP]"]
    assert row["labels"] == [-100, LABEL2ID["B-per"], -100, 0, 0, LABEL2ID["B-loc"], -100, -100]
    assert row["word_index"] == [-1, 0, -1, 1, 2, 3, -1, -1]
    assert counts["windows"] == 1 and counts["split_sentences"] == 0


def test_label_all_subwords_turns_b_into_i_on_continuations(tokenizer):
    data = Dataset.from_list([{"tokens": ["alices", "in", "parisville"], "tags": ["B-per", "O", "B-loc"]}])
    features, _ = tokenize_token_task(data, tokenizer, LABEL2ID, max_length=32, label_all_subwords=True)
    labels = features[0]["labels"]
    assert labels == [
        -100,
        LABEL2ID["B-per"],
        LABEL2ID["I-per"],
        0,
        LABEL2ID["B-loc"],
        LABEL2ID["I-loc"],
        -100,
    ]
    # word_index still marks only first subwords, so evaluation counts each word once
    assert features[0]["word_index"] == [-1, 0, -1, 1, 2, -1, -1]


def test_long_sentence_is_windowed_and_every_word_owned_once(tokenizer):
    words = ["alices", "lives", "in", "parisville", "with", "bob"] * 7  # 42 words, 56 subwords
    tags = ["B-per", "O", "O", "B-loc", "O", "B-per"] * 7
    data = Dataset.from_list([{"tokens": words, "tags": tags}, {"tokens": ["oslo"], "tags": ["B-loc"]}])
    features, counts = tokenize_token_task(data, tokenizer, LABEL2ID, max_length=16, window_context=4)
    assert counts["split_sentences"] == 1
    first = [f for f in features if f["example_id"] == 0]
    assert len(first) == counts["windows"] - 1 > 1
    owned = [index for feature in first for index in feature["word_index"] if index >= 0]
    assert sorted(owned) == list(range(len(words)))  # no word dropped, none duplicated
    for feature in first:
        assert len(feature["input_ids"]) <= 16
        for index, label in zip(feature["word_index"], feature["labels"]):
            if index >= 0:
                assert label == LABEL2ID[tags[index]]
    # continuation windows start with context tokens that carry no label
    assert first[1]["word_index"][1] == -1 and first[1]["labels"][1] == -100


def test_plan_windows_respects_budget_and_context():
    lengths = [3, 1, 2, 5, 1, 1, 4, 2]
    windows = _plan_windows(lengths, budget=8, context=3)
    owned = [i for _, start, end in windows for i in range(start, end)]
    assert owned == list(range(len(lengths)))
    for context_start, start, end in windows:
        assert sum(lengths[context_start:end]) <= 8
        assert sum(lengths[context_start:start]) <= 3


def test_word_longer_than_the_window_is_kept(tokenizer):
    data = Dataset.from_list(
        [{"tokens": ["in", "alice" + "s" * 1, "paris"], "tags": ["O", "B-per", "B-loc"]}]
    )
    features, _ = tokenize_token_task(data, tokenizer, LABEL2ID, max_length=3, window_context=0)
    owned = sorted(i for f in features for i in f["word_index"] if i >= 0)
    assert owned == [0, 1, 2]


def test_words_without_subwords_are_replaced_not_dropped(tokenizer):
    data = Dataset.from_list([{"tokens": ["alice", "\u200b", "paris"], "tags": ["B-per", "O", "B-loc"]}])
    features, counts = tokenize_token_task(data, tokenizer, LABEL2ID, max_length=16)
    assert counts["words_replaced_by_unk"] == 1
    assert [i for i in features[0]["word_index"] if i >= 0] == [0, 1, 2]


def test_unknown_tag_is_a_data_error(tokenizer):
    data = Dataset.from_list([{"tokens": ["alice"], "tags": ["B-org"]}])
    with pytest.raises(DataError, match="B-org"):
        tokenize_token_task(data, tokenizer, LABEL2ID, max_length=16)


def test_prediction_mode_without_tags(tokenizer):
    data = Dataset.from_list([{"tokens": ["alice", "lives"]}])
    features, _ = tokenize_token_task(data, tokenizer, None, max_length=16)
    assert set(features[0]["labels"]) == {-100}
    assert [i for i in features[0]["word_index"] if i >= 0] == [0, 1]


def test_sequence_and_pair_tokenisation(tokenizer):
    single = Dataset.from_list([{"text": "this movie was good", "label": "positive"}])
    features, counts = tokenize_sequence_task(
        single, tokenizer, {"negative": 0, "positive": 1}, max_length=16
    )
    assert features[0]["labels"] == 1 and features[0]["example_id"] == 0 and counts["truncated"] == 0
    pair = Dataset.from_list(
        [{"text": "this movie was good", "text_pair": "really bad", "label": "different"}]
    )
    features, _ = tokenize_sequence_task(pair, tokenizer, {"different": 0, "same": 1}, max_length=16)
    assert features[0]["token_type_ids"].count(1) == 3  # "really bad [SEP]"
    truncated, counts = tokenize_sequence_task(
        single, tokenizer, {"negative": 0, "positive": 1}, max_length=4
    )
    assert len(truncated[0]["input_ids"]) == 4 and counts["truncated"] == 1
    with pytest.raises(DataError, match="neutral"):
        tokenize_sequence_task(
            Dataset.from_list([{"text": "a", "label": "neutral"}]), tokenizer, {"positive": 0}, max_length=8
        )

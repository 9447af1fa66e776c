"""Distillation building blocks: loss terms against hand-computed values, layer-dropped students, and word-level
alignment of a teacher whose tokenizer differs from the student's."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertTokenizerFast,
)

from hftransfer.data.batching import FeatureCollator
from hftransfer.data.features import tokenize_token_task
from hftransfer.distill.losses import HiddenProjection, attention_mse, hidden_mse, soft_kl, uniform_layer_map
from hftransfer.distill.student import every_other_layer, layer_dropped_student
from hftransfer.distill.teacher import aligned_teacher_logits, collect_teacher_logits
from hftransfer.errors import ConfigError, DataError
from tests.conftest import SPECIAL, VOCAB, make_ner_examples


def test_soft_kl_matches_hand_computation_and_scales_by_t_squared():
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    t = 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]  # softmax(student/T), row 0
    pt = ps[::-1]  # softmax(teacher/T), row 0: mirrored
    kl_row0 = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    expected = (kl_row0 + 0.0) / 2 * t**2  # row 1: identical distributions, KL 0
    assert soft_kl(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    # masking keeps only row 0
    assert soft_kl(student, teacher, t, mask=torch.tensor([True, False])).item() == pytest.approx(
        kl_row0 * 4, rel=1e-6
    )
    # T = 1 is the plain KL
    assert soft_kl(student, teacher, 1.0, mask=torch.tensor([True, False])).item() == pytest.approx(
        sum(
            p * math.log(p / q)
            for p, q in zip(torch.softmax(teacher[0], 0).tolist(), torch.softmax(student[0], 0).tolist())
        ),
        rel=1e-6,
    )


def test_soft_kl_ignores_masked_token_positions():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    labels = torch.tensor([[0, -100, 1, 2, -100], [-100, -100, 0, 1, 2]])
    mask = labels != -100
    changed = student.clone()
    changed[~mask] += 100.0  # whatever happens at ignored positions must not matter
    assert soft_kl(changed, teacher, 3.0, mask).item() == pytest.approx(
        soft_kl(student, teacher, 3.0, mask).item()
    )
    manual = soft_kl(student[mask], teacher[mask], 3.0)
    assert soft_kl(student, teacher, 3.0, mask).item() == pytest.approx(manual.item())
    assert soft_kl(student, teacher, 3.0, torch.zeros_like(mask)).item() == 0.0


def test_layer_maps_and_hidden_and_attention_losses():
    assert uniform_layer_map(3, 12) == [(1, 4), (2, 8), (3, 12)]
    assert uniform_layer_map(6, 6) == [(i, i) for i in range(1, 7)]
    student = [torch.zeros(1, 3, 4), torch.ones(1, 3, 4)]
    teacher = [torch.zeros(1, 3, 4), torch.full((1, 3, 4), 3.0)]
    mask = torch.tensor([[True, True, False]])
    assert hidden_mse(student, teacher, [(1, 1)], mask).item() == pytest.approx(4.0)
    projection = HiddenProjection(4, 6, count=1)
    teacher_wide = [torch.zeros(1, 3, 6), torch.zeros(1, 3, 6)]
    assert hidden_mse(
        student, teacher_wide, [(1, 1)], mask, projection
    ).requires_grad  # the projection learns
    assert isinstance(HiddenProjection(4, 4, 1).maps[0], nn.Identity)
    attention = torch.full((1, 2, 3, 3), 1 / 3)
    other = attention.clone()
    other[0, :, 0, 0] += 0.3
    mask = torch.ones(1, 3, dtype=torch.long)
    assert attention_mse([attention], [other], [(1, 1)], mask).item() == pytest.approx(0.09 * 2 / 18)
    with pytest.raises(ValueError, match="same number of heads"):
        attention_mse([attention], [torch.zeros(1, 4, 3, 3)], [(1, 1)], mask)


def test_layer_dropped_student_starts_with_the_chosen_teacher_layers(tiny_model_dir):
    from transformers import BertConfig

    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=20, num_labels=3)  # fmt: skip
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(config)
    assert every_other_layer(4) == [0, 2]
    student = layer_dropped_student(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    for name, value in student_state.items():
        mapping = {".layer.0.": ".layer.1.", ".layer.1.": ".layer.3."}  # student layer -> teacher layer
        source = next((name.replace(s, t) for s, t in mapping.items() if s in name), name)
        assert torch.equal(value, teacher_state[source]), name
    full = layer_dropped_student(teacher, [0, 1, 2, 3]).eval()
    ids = torch.randint(5, len(VOCAB), (2, 6))
    assert torch.allclose(full(input_ids=ids).logits, teacher.eval()(input_ids=ids).logits)
    for bad in ([], [3, 1], [0, 0], [4]):
        with pytest.raises(ConfigError):
            layer_dropped_student(teacher, bad)


def _other_tokenizer(tmp_path) -> BertTokenizerFast:
    """A vocabulary in another order, without '##ville' and with an extra piece: other ids, other splits."""
    words = [t for t in VOCAB if t not in SPECIAL and t != "##ville"] + ["##vil", "##le"]
    vocab = SPECIAL + list(reversed(words))
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(path))


def test_teacher_with_another_tokenizer_aligns_at_the_word_level(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    teacher_tokenizer = _other_tokenizer(tmp_path)
    student_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = Dataset.from_list(make_ner_examples(12, seed=5))
    label2id = {t: i for i, t in enumerate(["O", "B-per", "I-per", "B-loc", "I-loc"])}
    assert teacher_tokenizer("parisville").input_ids != student_tokenizer("parisville").input_ids
    torch.manual_seed(0)
    from transformers import BertConfig

    teacher = AutoModelForTokenClassification.from_config(
        BertConfig(
            vocab_size=len(teacher_tokenizer),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=20,
            num_labels=5,
        )  # fmt: skip
    ).eval()
    # teacher windows of 64 tokens, student windows of 8: rows and positions differ, words do not
    teacher_features, _ = tokenize_token_task(examples, teacher_tokenizer, label2id, max_length=64)
    student_features, _ = tokenize_token_task(examples, student_tokenizer, label2id, max_length=8)
    assert len(student_features) > len(teacher_features)
    loader = DataLoader(teacher_features, batch_size=4, collate_fn=FeatureCollator(teacher_tokenizer))
    cached = collect_teacher_logits(teacher, loader, "token-classification", torch.device("cpu"))
    student_batch = FeatureCollator(student_tokenizer)(
        [student_features[i] for i in range(len(student_features))]
    )
    logits, mask = aligned_teacher_logits(cached, student_batch)
    assert torch.equal(mask, student_batch["word_index"] >= 0)
    # expected: the teacher on the whole sentence, at the first subword of every word
    for row in range(len(student_features)):
        example = int(student_batch["example_id"][row])
        words = examples[example]["tokens"]
        encoding = teacher_tokenizer(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            full = teacher(**encoding).logits[0]
        first = {}
        for position, word in enumerate(encoding.word_ids()):
            if word is not None and word not in first:
                first[word] = position
        for column in mask[row].nonzero().flatten().tolist():
            word = int(student_batch["word_index"][row, column])
            torch.testing.assert_close(logits[row, column], full[first[word]], atol=1e-5, rtol=1e-5)
    # a student batch whose example has more words than the teacher saw is refused, not silently misaligned
    cached.per_example[0] = cached.per_example[0][:2]
    with pytest.raises(DataError, match="same words"):
        aligned_teacher_logits(cached, student_batch)

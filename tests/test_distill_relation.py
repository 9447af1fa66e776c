"""Relational distillation (``distill_relation``): the distance and angle terms against hand computations on
triangles, their invariance to scaling, rotating and shifting the student's space (of another width), gradients
reaching the student only, the objective's term on tiny models, and recipes/distill.py runs with a student of
another tokenizer and width for a sequence task and a token task."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForTokenClassification,
)

from hftransfer.config import objective_config
from hftransfer.data.batching import FeatureCollator
from hftransfer.data.features import tokenize_token_task
from hftransfer.distill.losses import rkd_angle, rkd_distance, triplet_cosines
from hftransfer.distill.teacher import Teacher
from hftransfer.distill.teaching import TeacherContext
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import build_objectives
from tests.conftest import (
    SPECIAL,
    VOCAB,
    make_ner_examples,
    recipe_argv,
    toy_classification_files,
    toy_ner_files,
    write_tiny_bert,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import distill  # noqa: E402
import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

SQRT2 = math.sqrt(2.0)
EQUILATERAL = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3.0) / 2]])
RIGHT_ISOSCELES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def test_distance_term_by_hand_on_two_triangles():
    # Equilateral: every off-diagonal distance is the mean, 1 once normalised. Right isosceles: 1, 1 and sqrt 2,
    # over their mean (2 + sqrt 2) / 3; each appears twice in the 3 x 3 matrix, the diagonal is 0 in both.
    mean = (2 + SQRT2) / 3
    expected = (4 * _huber(1 / mean - 1) + 2 * _huber(SQRT2 / mean - 1)) / 9
    assert rkd_distance(RIGHT_ISOSCELES, EQUILATERAL).item() == pytest.approx(expected, rel=1e-5)
    assert expected > 0.009
    # The two triangles' own scales do not matter: each side is divided by its own mean distance.
    assert rkd_distance(10 * RIGHT_ISOSCELES, 0.1 * EQUILATERAL).item() == pytest.approx(expected, rel=1e-5)


def test_angle_term_by_hand_on_two_triangles():
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cosines = triplet_cosines(square)  # [j, i, k]: the angle at j between i and k
    assert cosines[0, 1, 2].item() == pytest.approx(0.0, abs=1e-6)  # a right angle
    assert cosines[0, 1, 3].item() == pytest.approx(1 / SQRT2, rel=1e-6)  # the diagonal: 45 degrees
    assert cosines[0, 0, 3].item() == 0.0 and cosines[2, 1, 1].item() == pytest.approx(1.0)
    # Per vertex of a triangle: 2 entries i == k (cos 1 in both) and the vertex angle twice. Equilateral: 60
    # degrees everywhere (0.5); right isosceles: 90 (0) once and 45 (1/sqrt 2) twice. 27 entries in all.
    expected = (2 * _huber(0.0 - 0.5) + 4 * _huber(1 / SQRT2 - 0.5)) / 27
    assert rkd_angle(RIGHT_ISOSCELES, EQUILATERAL).item() == pytest.approx(expected, rel=1e-5)
    assert rkd_angle(EQUILATERAL, EQUILATERAL).item() == 0.0


def test_both_terms_vanish_for_a_scaled_rotated_shifted_copy_of_another_width_and_not_otherwise():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 4, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(7, 4, generator=generator))  # [7, 4], orthonormal columns
    copy = 3.7 * teacher @ rotation.T + torch.randn(7, generator=generator)  # [6, 7]: width 7, same shape
    assert rkd_distance(copy, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_angle(copy, teacher).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(6, 7, generator=generator)
    assert rkd_distance(other, teacher).item() > 1e-3 and rkd_angle(other, teacher).item() > 1e-3
    # A stretch along one axis is not a similarity: both terms see it.
    stretched = teacher * torch.tensor([5.0, 1.0, 1.0, 1.0])
    assert rkd_distance(stretched, teacher).item() > 1e-3 and rkd_angle(stretched, teacher).item() > 1e-3


def test_gradients_reach_the_student_only_and_stay_finite_for_coinciding_items():
    teacher = torch.randn(5, 4, requires_grad=True)
    student = torch.randn(5, 3)
    student[4] = student[3]  # two items the student cannot yet tell apart: the sqrt and the norm at 0
    student.requires_grad_(True)
    (25 * rkd_distance(student, teacher) + 50 * rkd_angle(student, teacher)).backward()
    assert teacher.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


LABELS = ["O", "B-per", "I-per", "B-loc", "I-loc"]


def _tagger(tokenizer, hidden_size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=20, num_labels=len(LABELS),
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return BertForTokenClassification(config)


def test_objective_compares_first_subword_states_of_the_batchs_words(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    features, _ = tokenize_token_task(
        Dataset.from_list(make_ner_examples(6, seed=5)),
        tokenizer,
        {x: i for i, x in enumerate(LABELS)},
        max_length=16,
    )
    batch = FeatureCollator(tokenizer)([features[i] for i in range(len(features))])
    teacher = _tagger(tokenizer, 32, seed=0).eval().requires_grad_(False)
    student = _tagger(tokenizer, 24, seed=1)  # another width: nothing is projected
    context = TeacherContext(
        Teacher(teacher, tokenizer, list(range(len(LABELS))), "teacher"),
        shares_tokenizer=True,
        forward_outputs=frozenset({"example_states"}),
    )

    def objectives(**fields):
        spec = {"name": "distill_relation", "weight": 0.5, "teacher_layer": 1, **fields}
        config = types.SimpleNamespace(
            objectives=[objective_config({"name": "task"}), objective_config(spec)],
            task="token-classification",
            train=types.SimpleNamespace(seed=3),
        )
        return build_objectives(config, student, teacher=context)

    _, terms = objectives(max_items=1000)(student, batch)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    words = batch["word_index"] >= 0
    assert 20 < int(words.sum()) < 1000
    with torch.no_grad():
        s = student(**inputs, output_hidden_states=True).hidden_states[-1][words]
        t = teacher(**inputs, output_hidden_states=True).hidden_states[1][words]
        expected = 0.5 * (25 * rkd_distance(s, t) + 50 * rkd_angle(s, t))
    assert terms["loss_relation"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 0

    subsampled = objectives(max_items=8)
    state = types.SimpleNamespace(step=4)
    first = subsampled(student, batch, state)[1]["loss_relation"].item()
    assert subsampled(student, batch, state)[1]["loss_relation"].item() == first  # seeded by (seed, step)
    assert first != pytest.approx(terms["loss_relation"].item(), rel=1e-3)
    with pytest.raises(ConfigError, match="distill_relation.student_layer=5"):
        objectives(student_layer=5)
    with pytest.raises(ConfigError, match="distill_relation.max_items"):
        objectives(max_items=2)


pytestmark = pytest.mark.usefixtures("quick_speed_report")

COMMON = ["train.trackers=[]", "overwrite_output_dir=true", "train.log_every_steps=1"]


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    """A 1-layer BERT of width 24 with another vocabulary (other ids, other subword splits of the same words)."""
    words = [t for t in VOCAB if t not in SPECIAL and t != "##ville"] + ["##vil", "##le"]
    return write_tiny_bert(
        tmp_path_factory.mktemp("other-bert"), seed=1, vocab=SPECIAL + list(reversed(words)),
        hidden_size=24, num_hidden_layers=1, num_attention_heads=3, intermediate_size=30,
    )  # fmt: skip


def _relation_log(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss_relation"] for r in records if r["split"] == "train" and "loss_relation" in r]


def test_sequence_student_of_another_tokenizer_and_width_learns_the_relations(
    tiny_model_dir, other_model_dir, tmp_path
):
    files = toy_classification_files(tmp_path)
    finetune_classifier.main(
        recipe_argv(tiny_model_dir, files, tmp_path / "teacher", "train.epochs=1", *COMMON)
    )
    run_dir = tmp_path / "student"
    argv = [f"distill.teacher={tmp_path / 'teacher'}", "distill.student=pretrained", "task=sequence-classification",
            f"distill.cache_dir={tmp_path / 'cache'}", "objectives=[{name: task}, {name: distill_relation}]",
            "train.metric_for_best=accuracy", "train.batch_size=16", "train.epochs=3", "train.lr=5e-3", *COMMON]  # fmt: skip
    metrics = distill.main([*recipe_argv(other_model_dir, files, run_dir), *argv])
    assert metrics["distill"]["same_tokenizer"] is False
    relation = _relation_log(run_dir)
    assert len(relation) == 12 and all(math.isfinite(value) for value in relation)  # 4 steps x 3 epochs
    assert sum(relation[-4:]) < 0.8 * sum(relation[:4])  # the student's batches take the teacher's shape
    exported = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert exported.config.hidden_size == 24 and exported.config.num_hidden_layers == 1  # a plain student
    with pytest.raises(ConfigError, match="distill_relation with strategy.name=frozen"):
        distill.main([*recipe_argv(other_model_dir, files, tmp_path / "x"), *argv, "strategy.name=frozen"])


def test_token_student_of_another_tokenizer_is_compared_word_by_word(
    tiny_model_dir, other_model_dir, tmp_path
):
    files = toy_ner_files(tmp_path)
    finetune_ner.main(recipe_argv(tiny_model_dir, files, tmp_path / "teacher", "train.epochs=1", *COMMON))
    run_dir = tmp_path / "student"
    metrics = distill.main(
        [*recipe_argv(other_model_dir, files, run_dir), f"distill.teacher={tmp_path / 'teacher'}",
         "distill.student=pretrained", f"distill.cache_dir={tmp_path / 'cache'}", "train.max_steps=4",
         "objectives=[{name: task}, {name: distill_relation, max_items: 32}]", *COMMON]
    )  # fmt: skip
    assert metrics["distill"]["same_tokenizer"] is False
    relation = _relation_log(run_dir)
    assert len(relation) == 4 and all(value > 0 for value in relation)

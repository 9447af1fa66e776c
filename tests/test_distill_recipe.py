"""recipes/distill.py on tiny models: every loss term in a run, students of both kinds, teachers of every kind
(full run, LoRA adapter run, another tokenizer), the teacher cache, the transfer set, and that distillation makes a
student agree with its teacher more than gold labels alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    pipeline,
)

from hftransfer.errors import ConfigError
from hftransfer.predict import Predictor
from tests.conftest import SPECIAL, VOCAB, make_classification_examples, write_jsonl, write_tiny_bert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import distill  # noqa: E402
import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

pytestmark = pytest.mark.usefixtures("quick_speed_report")

COMMON = ["train.batch_size=8", "train.trackers=[]", "train.warmup_ratio=0", "overwrite_output_dir=true"]


def _data(files: dict[str, Path]) -> list[str]:
    return [f"data.{split}_file={path}" for split, path in files.items()]


def _read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    """A 1-layer BERT of another width (24) and head count (3) with another vocabulary (other ids and splits)."""
    words = [t for t in VOCAB if t not in SPECIAL and t != "##ville"] + ["##vil", "##le"]
    return write_tiny_bert(
        tmp_path_factory.mktemp("other-bert"), seed=1, vocab=SPECIAL + list(reversed(words)),
        hidden_size=24, num_hidden_layers=1, num_attention_heads=3, intermediate_size=30,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ner_teacher(tiny_model_dir, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    from tests.conftest import make_ner_examples, write_conll

    root = tmp_path_factory.mktemp("ner-teacher")
    files = {
        "train": write_conll(root / "train.conll", make_ner_examples(48, seed=1)),
        "validation": write_conll(root / "dev.conll", make_ner_examples(16, seed=2)),
        "test": write_conll(root / "test.conll", make_ner_examples(16, seed=3)),
    }
    argv = [
        f"model.name_or_path={tiny_model_dir}",
        f"output_dir={root / 'run'}",
        "train.epochs=10",
        "train.lr=5e-3",
    ]
    finetune_ner.main([*argv, *_data(files), *COMMON])
    return root / "run", files


def test_layer_dropped_student_with_every_term_exports_a_plain_model(ner_teacher, tmp_path):
    teacher_run, files = ner_teacher
    run_dir = tmp_path / "student"
    metrics = distill.main(
        [
            f"distill.teacher={teacher_run}",
            f"distill.cache_dir={tmp_path / 'cache'}",
            "distill.student=teacher_layers",
            "distill.student_layers=[1]",
            "objectives+=[{name: distill_hidden, weight: 1.0}, {name: distill_attention, weight: 1.0}]",
            f"output_dir={run_dir}",
            "train.epochs=10",
            "train.lr=5e-3",
            *_data(files),
            *COMMON,
        ]
    )
    train_records = [r for r in _read_log(run_dir) if r["split"] == "train"]
    assert train_records and all(
        {"loss", "loss_soft", "loss_hidden", "loss_attention"} <= set(r) for r in train_records
    )
    assert metrics["distill"]["layer_map"] == [[1, 2]]  # 1 student layer <-> the teacher's top layer
    report = json.loads((run_dir / "metrics.json").read_text())["distill_report"]
    assert report["student"]["parameters"] < report["teacher"]["parameters"]
    assert report["student"]["samples_per_second"] > 0 and report["teacher"]["samples_per_second"] > 0
    assert report["student"]["metrics"]["f1"] == pytest.approx(metrics["test"]["f1"])
    assert metrics["test"]["f1"] > 0.8  # the toy task, learned through the teacher

    student = AutoModelForTokenClassification.from_pretrained(run_dir / "model")
    assert student.config.num_hidden_layers == 1
    assert (
        student.config.id2label
        == AutoModelForTokenClassification.from_pretrained(teacher_run / "model").config.id2label
    )
    tagger = pipeline("token-classification", model=str(run_dir / "model"), aggregation_strategy="simple")
    assert {e["entity_group"] for e in tagger("alice lives in paris")} <= {"per", "loc"}


def test_student_with_another_tokenizer_distils_ner_word_by_word_and_caches_the_teacher(
    ner_teacher, other_model_dir, tmp_path
):
    teacher_run, files = ner_teacher
    cache = tmp_path / "cache"
    argv = [
        f"distill.teacher={teacher_run}",
        f"distill.cache_dir={cache}",
        "distill.student=pretrained",
        f"model.name_or_path={other_model_dir}",
        "train.epochs=15",
        "train.lr=1e-2",
        *_data(files),
        *COMMON,
    ]
    first = distill.main([*argv, f"output_dir={tmp_path / 'a'}"])
    assert first["distill"]["same_tokenizer"] is False and first["distill"]["cache_hit"] is False
    assert len(list(cache.glob("*.safetensors"))) == 1
    second = distill.main([*argv, f"output_dir={tmp_path / 'b'}"])
    assert second["distill"]["cache_hit"] is True
    assert second["test"]["f1"] == pytest.approx(first["test"]["f1"])  # same targets, same run
    assert first["test"]["f1"] > 0.5
    # other data is another key: a miss
    third = distill.main([*argv, f"output_dir={tmp_path / 'c'}", "data.max_train_samples=40"])
    assert third["distill"]["cache_hit"] is False

    # hidden states cannot be compared token by token across tokenizers
    with pytest.raises(ConfigError, match="teacher's tokenizer"):
        distill.main([*argv, f"output_dir={tmp_path / 'd'}", "objectives+=[{name: distill_hidden}]"])


def test_lora_teacher_and_lora_student(tiny_model_dir, ner_teacher, tmp_path):
    _, files = ner_teacher
    teacher_dir = tmp_path / "lora-teacher"
    finetune_ner.main(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={teacher_dir}",
            "strategy.name=lora",
            "strategy.lora_export=adapter",
            "train.epochs=3",
            "train.lr=1e-2",
            *_data(files),
            *COMMON,
        ]
    )
    metrics = distill.main(
        [
            f"distill.teacher={teacher_dir}",  # model/ holds the adapter alone; the teacher is merged on load
            f"distill.cache_dir={tmp_path / 'cache'}",
            "distill.student=pretrained",
            f"model.name_or_path={tiny_model_dir}",
            "strategy.name=lora",
            "strategy.r=4",
            f"output_dir={tmp_path / 'student'}",
            "train.epochs=2",
            *_data(files),
            *COMMON,
        ]
    )
    assert metrics["strategy"]["name"] == "lora"
    assert metrics["parameters"]["trainable_fraction"] < 0.5
    assert (tmp_path / "student" / "adapter" / "adapter_config.json").is_file()
    AutoModelForTokenClassification.from_pretrained(tmp_path / "student" / "model")  # merged plain model


def test_bad_distillation_configs_fail_before_training(ner_teacher, other_model_dir, tmp_path):
    teacher_run, files = ner_teacher
    base = [*_data(files), *COMMON, f"output_dir={tmp_path / 'x'}"]
    with pytest.raises(ConfigError, match="distill.teacher is required"):
        distill.main([*base, "distill.teacher=null"])
    with pytest.raises(ConfigError, match="is not a directory"):
        distill.main([*base, f"distill.teacher={tmp_path / 'missing'}"])
    reviews = write_jsonl(tmp_path / "reviews.jsonl", make_classification_examples(30, seed=1))
    with pytest.raises(ConfigError, match="is a token-classification model, but the task is sequence"):
        distill.main(
            [*COMMON, f"output_dir={tmp_path / 'y'}", f"distill.teacher={teacher_run}", "task=sequence-classification",
             f"data.train_file={reviews}", "data.dataset=null"]
        )  # fmt: skip
    with pytest.raises(ConfigError, match="head counts"):
        # same tokenizer, so only the head count (2 vs 3) stands in the way
        other = other_model_dir.parent / "same-vocab-3-heads"
        write_tiny_bert(
            other, hidden_size=24, num_hidden_layers=1, num_attention_heads=3, intermediate_size=30
        )
        # the tokenizer as the teacher's run saved it (a freshly built one serialises differently)
        AutoTokenizer.from_pretrained(teacher_run / "model").save_pretrained(other)
        distill.main(
            [
                *base,
                f"distill.teacher={teacher_run}",
                f"model.name_or_path={other}",
                "objectives+=[{name: distill_attention}]",
                "distill.student=pretrained",
            ]
        )
    with pytest.raises(ConfigError, match="not used with distill.student=teacher_layers"):
        distill.main([*base, f"distill.teacher={teacher_run}", f"model.name_or_path={other_model_dir}"])
    with pytest.raises(ConfigError, match="lora"):
        distill.main(
            [*base, f"distill.teacher={teacher_run}", "distill.student=teacher_layers", "strategy.name=lora"]
        )
    with pytest.raises(ConfigError, match="keeps the teacher's trained head"):
        distill.main(
            [
                *base,
                f"distill.teacher={teacher_run}",
                "distill.student=teacher_layers",
                "model.head_bias_init=prior",
            ]
        )
    with pytest.raises(ConfigError, match="layer_map"):
        distill.main(
            [*base, f"distill.teacher={teacher_run}", "distill.student=teacher_layers", "distill.student_layers=[0]",
             "objectives+=[{name: distill_hidden}]", "distill.layer_map=[[2,2]]"]
        )  # fmt: skip


def _agreement(student_dir: Path, teacher_dir: Path, texts: list[str]) -> float:
    student = Predictor(str(student_dir), cpu=True)
    teacher = Predictor(str(teacher_dir), cpu=True)
    rows = Dataset.from_dict({"text": texts})
    ours = [r["label"] for r in student.predict(rows).rows]
    theirs = [r["label"] for r in teacher.predict(rows).rows]
    return sum(a == b for a, b in zip(ours, theirs)) / len(texts)


@pytest.mark.slow  # a quality comparison of two full student runs, not a guard of behaviour: kept out of CI's time
def test_distilled_student_agrees_with_the_teacher_more_than_a_hard_label_student(
    tiny_model_dir, other_model_dir, tmp_path
):
    """The teacher learned from 200 reviews; both students get 6 labelled ones. The distilled student also sees the
    teacher's predictions on 200 unlabelled texts (the transfer set), through another tokenizer."""
    full = {
        "train": write_jsonl(tmp_path / "teacher_train.jsonl", make_classification_examples(200, seed=1)),
        "validation": write_jsonl(tmp_path / "dev.jsonl", make_classification_examples(24, seed=2)),
        "test": write_jsonl(tmp_path / "test.jsonl", make_classification_examples(48, seed=3)),
    }
    teacher_dir = tmp_path / "teacher"
    finetune_classifier.main(
        [f"model.name_or_path={tiny_model_dir}", f"output_dir={teacher_dir}", "train.epochs=5", "train.lr=5e-3",
         *_data(full), *COMMON]
    )  # fmt: skip
    few = {**full, "train": write_jsonl(tmp_path / "few.jsonl", make_classification_examples(6, seed=4))}
    transfer = write_jsonl(
        tmp_path / "transfer.jsonl", [{"text": r["text"]} for r in make_classification_examples(200, seed=5)]
    )
    common = ["distill.student=pretrained", f"model.name_or_path={other_model_dir}", "train.epochs=30", "train.lr=1e-2", "task=sequence-classification",
              "train.seed=0", "train.metric_for_best=accuracy", *_data(few), *COMMON]  # fmt: skip
    distill.main(
        [*common, f"distill.teacher={teacher_dir}", "objectives=[{name: task}]",
         f"output_dir={tmp_path / 'hard'}"]
    )  # fmt: skip
    distilled = distill.main(
        [*common, f"distill.teacher={teacher_dir}", f"distill.transfer_data={transfer}",
         f"distill.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'soft'}"]
    )  # fmt: skip
    assert distilled["distill"]["transfer_examples"] > 0
    texts = [r["text"] for r in make_classification_examples(100, seed=6)]
    hard_agreement = _agreement(tmp_path / "hard" / "model", teacher_dir / "model", texts)
    soft_agreement = _agreement(tmp_path / "soft" / "model", teacher_dir / "model", texts)
    assert soft_agreement > hard_agreement + 0.1, (soft_agreement, hard_agreement)
    assert soft_agreement > 0.9
    # the student is an ordinary sequence classifier with the teacher's labels
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "soft" / "model")
    assert set(model.config.id2label.values()) == {"negative", "positive"}


def test_hidden_states_of_another_width_are_matched_through_a_learned_projection(ner_teacher, tmp_path):
    """Same tokenizer, hidden size 24 vs the teacher's 32: a trained linear map per matched layer."""
    teacher_run, files = ner_teacher
    student_dir = write_tiny_bert(  # the teacher's vocabulary and tokenizer, another width
        tmp_path / "narrow", hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=30
    )
    AutoTokenizer.from_pretrained(teacher_run / "model").save_pretrained(
        student_dir
    )  # as the teacher saved it
    run_dir = tmp_path / "run"
    metrics = distill.main(
        [f"distill.teacher={teacher_run}", "distill.student=pretrained", f"model.name_or_path={student_dir}",
         "objectives+=[distill_hidden, distill_attention]", f"distill.cache_dir={tmp_path / 'cache'}",
         f"output_dir={run_dir}", "train.epochs=3", "train.lr=5e-3", "train.log_every_steps=2", *_data(files), *COMMON]
    )  # fmt: skip
    assert metrics["distill"]["layer_map"] == [[1, 2]]
    assert "distill_hidden" in metrics["strategy"]["lr_groups"]  # the projection, owned by the objective
    hidden = [r["loss_hidden"] for r in _read_log(run_dir) if r["split"] == "train"]
    assert hidden and hidden[-1] < hidden[0]  # the projected student states move towards the teacher's
    exported = AutoModelForTokenClassification.from_pretrained(run_dir / "model")
    assert exported.config.hidden_size == 24  # the projection is a training aid, not part of the student


def test_a_frozen_student_learns_its_head_from_the_teacher_with_the_encoder_fixed(
    ner_teacher, tiny_model_dir, tmp_path
):
    # distill_soft needs the token batch (the teacher's predictions are placed by example and word), so frozen
    # keeps the encoder fixed inside the token model instead of caching features; matching hidden states is
    # refused, naming the objective.
    teacher_run, files = ner_teacher
    common = [
        f"distill.teacher={teacher_run}",
        f"distill.cache_dir={tmp_path / 'cache'}",
        f"model.name_or_path={tiny_model_dir}",
        "distill.student=pretrained",
        "strategy.name=frozen",
        "train.max_steps=4",
        "train.log_every_steps=1",
        "train.lr=5e-3",
        *_data(files),
        *COMMON,
    ]
    metrics = distill.main([*common, f"output_dir={tmp_path / 'student'}"])
    assert {"loss", "loss_soft"} <= set(
        next(r for r in _read_log(tmp_path / "student") if r["split"] == "train")
    )
    assert "feature_cache" not in metrics["strategy"]
    assert 0 < metrics["parameters"]["trainable"] < metrics["parameters"]["total"] / 10  # the head alone
    with pytest.raises(
        ConfigError, match="distill_hidden with strategy.name=frozen: a fixed encoder's hidden"
    ):
        distill.main([*common, "objectives+=[{name: distill_hidden}]", f"output_dir={tmp_path / 'x'}"])

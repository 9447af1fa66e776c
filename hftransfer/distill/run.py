"""Distillation is a run with a teacher: the one setup (:func:`hftransfer.flow.setup.setup`) with
:class:`DistillTeacher`, whose hooks load the teacher, optionally make the student from its layers, check that the
two can be compared as the objectives ask, and label the training (and transfer) data. The objectives that read the
teacher (``distill_soft``, ``distill_hidden``, ``distill_attention``, ``distill_relation``) get what it provides
(``teaching.py``).

    run = setup_distill(config)
    train(run)                    # hftransfer.flow
    evaluate_best(run)            # writes metrics.json
    compare_with_teacher(run)     # teacher vs student: score, parameters, inference samples/s
    finish(run)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from accelerate import Accelerator
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from hftransfer.data.features import tokenize, tokenize_options
from hftransfer.data.sources import TaskData, unlabelled_examples
from hftransfer.distill.config import DistillRunConfig, teacher_readers
from hftransfer.distill.losses import uniform_layer_map
from hftransfer.distill.student import every_other_layer, layer_dropped_student
from hftransfer.distill.teacher import Teacher, cached_teacher_logits, load_teacher, same_tokenizer
from hftransfer.distill.teaching import TeacherContext
from hftransfer.errors import ConfigError
from hftransfer.flow.core import Run
from hftransfer.flow.setup import setup
from hftransfer.modeling.build import model_max_length
from hftransfer.registry import get_objective

logger = logging.getLogger("hftransfer")


def setup_distill(config: DistillRunConfig, recipe: str = "distill") -> Run:
    """The one run setup (:func:`hftransfer.flow.setup.setup`) with the teacher of ``config.distill``: loaded,
    checked against the student, and run over the training (and transfer) data before the objectives are built.

    Raises:
        ConfigError / DataError: bad config, data or teacher, before any training starts.
    """
    return setup(config, recipe, teacher=DistillTeacher())


class DistillTeacher:
    """The teacher of a distillation run, in the hooks of :class:`~hftransfer.flow.teacher.TeacherSetup`."""

    def __init__(self) -> None:
        self.teacher: Teacher | None = None
        self.report: dict[str, Any] = {}
        self.compared: set[str] = set()
        self.student_config: Any = None

    def load(self, config: DistillRunConfig, data: TaskData) -> None:
        distill = config.distill
        self.teacher = load_teacher(distill.teacher, config.task, data.label_names, distill.teacher_revision)

    def build_student(
        self, config: DistillRunConfig, data: TaskData
    ) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str] | None:
        """The teacher's own layers as the student (``distill.student=teacher_layers``); None: the run's model."""
        if config.distill.student == "pretrained":
            return None
        teacher = self.teacher
        if not teacher.is_transformers_model:
            raise ConfigError(
                "distill.student=teacher_layers needs a transformers teacher; this one is an encoder + custom head"
            )
        keep = config.distill.student_layers or every_other_layer(teacher.model.config.num_hidden_layers)
        student = layer_dropped_student(teacher.model, keep)
        student.requires_grad_(True).train()
        logger.info("Student: teacher layers %s of %d", keep, teacher.model.config.num_hidden_layers)
        return student, teacher.tokenizer, teacher.source

    def check(
        self, config: DistillRunConfig, student: torch.nn.Module, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        """Teacher and student can be compared as the objectives ask; the teacher accepts ``data.max_length``."""
        teacher = self.teacher
        # Before the teacher labels anything: attention matching switches both models to the eager kernel.
        self.compared = _check_compared_outputs(config, teacher, student, tokenizer)
        self.student_config = student.config
        if hasattr(teacher.model, "get_input_embeddings"):
            limit = model_max_length(teacher.tokenizer, teacher.model)
            if config.data.max_length > limit:
                raise ConfigError(
                    f"data.max_length={config.data.max_length} exceeds what the teacher accepts ({limit})"
                )

    def teach(
        self,
        config: DistillRunConfig,
        accelerator: Accelerator,
        data: TaskData,
        tokenizer: PreTrainedTokenizerBase,
        features: dict[str, Dataset],
        report: dict[str, Any],
    ) -> TeacherContext:
        """The training features plus the transfer set (labels -100), labelled by the teacher (cached on disk)."""
        distill, teacher = config.distill, self.teacher
        transfer = _transfer_examples(config, data)
        student_train = _training_features(config, data, tokenizer, transfer, features["train"])
        shared = same_tokenizer(tokenizer, teacher.tokenizer)
        teacher_train = (
            student_train if shared else _training_features(config, data, teacher.tokenizer, transfer, None)
        )
        device = accelerator.device
        with accelerator.main_process_first():
            started = time.perf_counter()
            teacher_logits, hit = cached_teacher_logits(
                teacher,
                teacher_train,
                config.task,
                device,
                batch_size=config.train.eval_batch_size,
                cache_dir=distill.cache_dir,
                use_cache=distill.cache_teacher,
            )
            label_seconds = round(time.perf_counter() - started, 2)
        teacher.model.to(device)
        compared = self.compared
        layer_map = (
            _layer_map(config, self.student_config, teacher.model.config, compared) if compared else []
        )
        self.report = {
            "layer_map": [list(pair) for pair in layer_map],
            "student": distill.student,
            "source": teacher.source,
            "same_tokenizer": shared,
            "cache_hit": hit,
            "label_seconds": label_seconds,
            "transfer_examples": 0 if transfer is None else len(transfer),
        }
        features["train"] = student_train
        # Objectives comparing whole examples or words run the teacher on its own features of them.
        per_example = {"example_states"} if teacher_readers(config, "example_states") else set()
        return TeacherContext(
            teacher,
            teacher_logits,
            shared,
            layer_map,
            frozenset(self.compared | per_example),
            features=teacher_train if per_example and not shared else None,
        )


def _check_compared_outputs(
    config: DistillRunConfig, teacher: Teacher, student: torch.nn.Module, tokenizer: PreTrainedTokenizerBase
) -> set[str]:
    """What the listed objectives compare position by position (``hidden_states``, ``attentions``), after checking
    that teacher and student can be compared so; switches both to the eager kernel for attention maps."""
    names = teacher_readers(config, "hidden_states", "attentions")
    declared = {output for o in config.objectives for output in get_objective(o.name).teacher_outputs}
    compared = declared & {"hidden_states", "attentions"}
    if not compared:
        return compared
    listed = ", ".join(names)
    if not teacher.is_transformers_model:
        raise ConfigError(
            f"objectives: {listed} need a transformers teacher (its hidden states); this one is an encoder + "
            "custom head"
        )
    if not same_tokenizer(tokenizer, teacher.tokenizer):
        raise ConfigError(
            f"objectives: {listed} compare teacher and student token by token, so the student needs the teacher's "
            "tokenizer; use distill.student=teacher_layers, a student with the same vocabulary, or the teacher's "
            f"logits alone (objectives without {listed})"
        )
    if "attentions" in compared:
        heads = (student.config.num_attention_heads, teacher.model.config.num_attention_heads)
        if heads[0] != heads[1]:
            raise ConfigError(
                f"objectives: {', '.join(teacher_readers(config, 'attentions'))} needs equal attention head counts; "
                f"student {heads[0]}, teacher {heads[1]}"
            )
        # Attention probabilities are only returned by the eager kernel.
        for model in (student, teacher.model):
            model.set_attn_implementation("eager")
    return compared


def _layer_map(
    config: DistillRunConfig, student_config: Any, teacher_config: Any, compared: set[str]
) -> list[tuple[int, int]]:
    student_layers, teacher_layers = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    if config.distill.layer_map is None:
        return uniform_layer_map(student_layers, teacher_layers)
    pairs = [(int(s), int(t)) for s, t in config.distill.layer_map]
    for s, t in pairs:
        if s > student_layers or t > teacher_layers:
            raise ConfigError(
                f"distill.layer_map pair [{s}, {t}]: the student has layers 1..{student_layers}, the teacher "
                f"1..{teacher_layers} (0 = embeddings)"
            )
        if "attentions" in compared and (s == 0 or t == 0):
            raise ConfigError(
                f"distill.layer_map pair [{s}, {t}]: attention maps exist for layers 1..L only "
                f"({', '.join(teacher_readers(config, 'attentions'))})"
            )
    return pairs


def _transfer_examples(config: DistillRunConfig, data: TaskData) -> Dataset | None:
    source = config.distill.transfer_data
    if source is None:
        return None
    examples = unlabelled_examples(
        source, config.task, config.data, data, config.distill.max_transfer_samples
    )
    logger.info("Transfer set: %d unlabelled examples from %s", len(examples), source)
    return examples


def _training_features(
    config: DistillRunConfig,
    data: TaskData,
    tokenizer: PreTrainedTokenizerBase,
    transfer: Dataset | None,
    train_features: Dataset | None,
) -> Dataset:
    """Training features of the labelled train split plus (labels -100) the transfer set, whose example ids
    follow the train split's so that teacher and student agree on every id."""
    label2id = {label: index for index, label in enumerate(data.label_names)}
    options = tokenize_options(config.data)
    if train_features is None:
        train_features, _ = tokenize(data.splits["train"], tokenizer, config.task, label2id, **options)
    if transfer is None:
        return train_features
    extra, _ = tokenize(transfer, tokenizer, config.task, None, **options)
    offset = len(data.splits["train"])
    extra = extra.map(
        lambda batch: {"example_id": [i + offset for i in batch["example_id"]]},
        batched=True,
        desc="Transfer ids",
    )
    if "labels" not in extra.column_names:
        extra = extra.add_column("labels", [-100] * len(extra))
    extra = extra.cast(train_features.features)
    return concatenate_datasets([train_features, extra])

"""Distillation, wired end to end on top of the fine-tuning flow: the student is fine-tuned like any model (same
loop, strategies, checkpoints and export); the objectives that read the teacher (``distill_soft``,
``distill_hidden``, ``distill_attention``) get what it provides (``teaching.py``) in their build context.

    run = setup_distill(config)
    train(run)                    # hftransfer.finetune
    evaluate_best(run)            # writes metrics.json
    compare_with_teacher(run)     # teacher vs student: score, parameters, inference samples/s
    finish(run)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from hftransfer.assets import resolve_model_name
from hftransfer.data.features import tokenize, tokenize_options
from hftransfer.data.sources import TaskData, load_task_data, read_transfer_set
from hftransfer.distill.config import DistillRunConfig, teacher_readers
from hftransfer.distill.losses import uniform_layer_map
from hftransfer.distill.student import every_other_layer, layer_dropped_student
from hftransfer.distill.teacher import Teacher, cached_teacher_logits, load_teacher, same_tokenizer
from hftransfer.distill.teaching import TeacherContext
from hftransfer.errors import ConfigError
from hftransfer.finetune import Run, assemble_run, token_loaders, tokenize_splits
from hftransfer.flow.core import plan_training
from hftransfer.modeling.build import build_model, load_tokenizer, model_max_length
from hftransfer.modeling.head_init import init_head_bias_to_prior
from hftransfer.registry import get_objective
from hftransfer.runs import start_run
from hftransfer.strategies import needs_unused_parameter_search

logger = logging.getLogger("hftransfer")


def setup_distill(config: DistillRunConfig, recipe: str = "distill") -> Run:
    """Load data and teacher, build the student, label the training (and transfer) data with the teacher, and
    assemble the training run.

    Raises:
        ConfigError / DataError: bad config, data or teacher, before any training starts.
    """
    distill = config.distill
    accelerator, run_dir, trackers, resume_from = start_run(
        config, recipe, find_unused_parameters=needs_unused_parameter_search(config)
    )
    with accelerator.main_process_first():
        data = load_task_data(config.data, config.task)
    teacher = load_teacher(distill.teacher, config.task, data.label_names, distill.teacher_revision)
    student, tokenizer, base_name = _build_student(config, teacher, data)
    # Before the teacher labels anything: attention matching switches both models to the eager kernel.
    compared = _check_compared_outputs(config, teacher, student, tokenizer)
    for name, model, tok in (("student", student, tokenizer), ("teacher", teacher.model, teacher.tokenizer)):
        limit = (
            model_max_length(tok, model) if hasattr(model, "get_input_embeddings") else config.data.max_length
        )
        if config.data.max_length > limit:
            raise ConfigError(
                f"data.max_length={config.data.max_length} exceeds what the {name} accepts ({limit})"
            )

    features, report = tokenize_splits(data, tokenizer, config)
    # A new head only: a teacher_layers student (the teacher's trained head) is refused at config validation.
    if config.model.head_bias_init == "prior":
        report["label_prior"] = init_head_bias_to_prior(student, features["train"]["labels"])
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
    report["teacher"] = {
        "source": teacher.source,
        "same_tokenizer": shared,
        "cache_hit": hit,
        "label_seconds": round(time.perf_counter() - started, 2),
        "transfer_examples": 0 if transfer is None else len(transfer),
    }
    teacher.model.to(device)

    layer_map = _layer_map(config, student.config, teacher.model.config, compared) if compared else []
    teaching = TeacherContext(teacher, teacher_logits, shared, layer_map, frozenset(compared))
    objectives, plan = plan_training(
        student,
        config,
        accelerator,
        teacher=teaching,
        tokenizer=tokenizer,
        run_dir=run_dir,
        base_model_name_or_path=base_name,
    )
    report["distill"] = {
        "layer_map": [list(pair) for pair in layer_map],
        "student": distill.student,
        **report.pop("teacher"),
    }

    features["train"] = student_train
    train_loader, eval_loaders = token_loaders(features, tokenizer, config, accelerator)
    run = assemble_run(
        config,
        accelerator,
        run_dir,
        trackers=trackers,
        resume_from=resume_from,
        data=data,
        tokenizer=tokenizer,
        plan=plan,
        objectives=objectives,
        train_loader=train_loader,
        eval_loaders=eval_loaders,
        report=report,
    )
    run.extras["teacher"] = teacher  # for compare_with_teacher
    return run


def _build_student(
    config: DistillRunConfig, teacher: Teacher, data: TaskData
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str]:
    """The student model, its tokenizer and the name its LoRA adapter (if any) refers to."""
    if config.distill.student == "pretrained":
        tokenizer = load_tokenizer(config.model)
        return (
            build_model(config.model, config.task, data.label_names),
            tokenizer,
            resolve_model_name(config.model.name_or_path),
        )
    if not teacher.is_transformers_model:
        raise ConfigError(
            "distill.student=teacher_layers needs a transformers teacher; this one is an encoder + custom head"
        )
    keep = config.distill.student_layers or every_other_layer(teacher.model.config.num_hidden_layers)
    student = layer_dropped_student(teacher.model, keep)
    student.requires_grad_(True).train()
    logger.info("Student: teacher layers %s of %d", keep, teacher.model.config.num_hidden_layers)
    return student, teacher.tokenizer, teacher.source


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
    key = "tokens" if config.task == "token-classification" else "text"
    held_out = {
        " ".join(value) if isinstance(value, list) else value
        for split in ("validation", "test")
        if split in data.splits
        for value in data.splits[split][key]
    }
    examples = read_transfer_set(source, config.task, config.data, exclude=held_out)
    if config.distill.max_transfer_samples is not None:
        examples = examples.select(range(min(config.distill.max_transfer_samples, len(examples))))
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

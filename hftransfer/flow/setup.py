"""The one setup of every run, whatever its tasks, strategy and objectives::

    run = setup(config, recipe)       # start -> data -> model -> features -> objectives + strategy -> batches -> loop
    train(run)
    evaluate_best(run)
    finish(run)

How many tasks the run has decides its *layout* (``layout.py``): one task trains the plain transformers model on
one loader; several share one encoder (:class:`~hftransfer.multitask.model.MultitaskModel`) and draw tagged batches
from every task (:class:`~hftransfer.data.mixing.MixedBatches`). A *teacher* (distillation, ``teacher.py``) adds
what the objectives that read one need: it may build the student, and it labels the training data before the
objectives are built. Named *sources* (``config.sources``: unlabelled text, ...) give the objectives that ask for
them a batch of their own at every step (``sources.py``). Nothing else differs between runs.
"""

from __future__ import annotations

import logging
from typing import Any

from hftransfer.adaptation.encode import PooledFeatures
from hftransfer.errors import ConfigError
from hftransfer.flow.core import Run, plan_training, start_loop
from hftransfer.flow.forgetting import prepare_source_eval
from hftransfer.flow.label_shift import check_label_shift_run
from hftransfer.flow.layout import task_layout
from hftransfer.flow.selection import label_free_selection
from hftransfer.flow.sources import tokenize_sources, with_sources
from hftransfer.flow.teacher import TeacherSetup
from hftransfer.modeling.build import model_max_length
from hftransfer.modeling.head_init import init_head_bias_to_prior
from hftransfer.runs import start_run
from hftransfer.training.distributed_checks import check_distributed_setup

logger = logging.getLogger("hftransfer")


def setup(config: Any, recipe: str, *, teacher: TeacherSetup | None = None) -> Run:
    """Create the accelerator and run directory, load every task's data, build the model, tokenise, build the
    objectives and the strategy plan, the batches and the training loop (resumed when asked).

    Args:
        teacher: what a distillation run adds (its teacher, optionally its student); None otherwise.

    Raises:
        ConfigError / DataError: bad config or data, before any training starts.
    """
    layout = task_layout(config)
    accelerator, run_dir, trackers, resume_from = start_run(
        config, recipe, find_unused_parameters=layout.find_unused_parameters()
    )
    with accelerator.main_process_first():
        data = layout.load_data()
    if teacher is not None:  # loaded before the student, which may be made from it
        teacher.load(config, layout.single(data))
    student = teacher.build_student(config, layout.single(data)) if teacher is not None else None
    model, tokenizer, base_name = student or layout.build_model(data)
    if teacher is not None:
        teacher.check(config, model, tokenizer)
    limit = model_max_length(tokenizer, layout.task_model(model, next(iter(layout.specs))))
    for where, spec in layout.specs.items():
        if spec.data.max_length > limit:
            raise ConfigError(
                f"{layout.field(where, 'data.max_length')}={spec.data.max_length} exceeds what this model "
                f"accepts ({limit})"
            )

    features, report = layout.tokenize(data, tokenizer)
    # The source task's score before training (transfer.source_eval): a bad source fails here, not after training.
    source_eval = prepare_source_eval(config)
    if config.model.head_bias_init == "prior":
        priors = {
            name: init_head_bias_to_prior(layout.task_model(model, name), task_features["train"]["labels"])
            for name, task_features in features.items()
            if "train" in task_features
        }
        if priors:
            report["label_prior"] = layout.single(priors)
    sources = tokenize_sources(config, layout.single(data), tokenizer, report)
    # The pretrained encoder's pooled features, once per dataset, for the selection weights and the objectives that
    # weigh examples; used before the strategy changes the model.
    encode = PooledFeatures(model, tokenizer, accelerator.device)
    selection = (
        label_free_selection(
            config, encode, layout.single(features), sources, layout.single(data).label_names, report
        )
        if sources
        else None
    )
    teaching = None
    if teacher is not None:  # labels the training data (and a transfer set) with the teacher
        teaching = teacher.teach(
            config, accelerator, layout.single(data), tokenizer, layout.single(features), report
        )

    objectives, plan = plan_training(
        model,
        config,
        accelerator,
        teacher=teaching,
        sources=sources,
        encode=encode,
        tokenizer=tokenizer,
        run_dir=run_dir,
        base_model_name_or_path=base_name,
        **layout.strategy_options(run_dir, tokenizer, data, features),
    )
    # Before prepare: stop where the requested sharding cannot work with what the strategy froze, and say so
    # once where it will not run at all (FSDP/DeepSpeed on CPU is DDP).
    check_distributed_setup(
        accelerator,
        plan.model,
        strategy=config.strategy.name,
        objectives=tuple(objective.name for objective in config.objectives),
    )
    batches, eval_loaders = layout.batches(plan, features, tokenizer, accelerator, report)
    batches = with_sources(
        config, batches, sources, tokenizer, accelerator, report, per_step=objectives.sources
    )
    label_shift = getattr(config, "label_shift", None)
    if label_shift is not None and label_shift.enabled:
        check_label_shift_run(config, plan, eval_loaders)
    report["strategy"] = plan.report
    objective_reports = {o.name: o.report for o in objectives.objectives if o.report}
    if objective_reports:
        report["objectives"] = objective_reports
    if teacher is not None:
        report["distill"] = teacher.report
    loop = start_loop(
        config,
        accelerator,
        run_dir,
        trackers=trackers,
        resume_from=resume_from,
        model=plan.model,
        train_loader=batches,
        eval_loader=eval_loaders.get("validation"),
        evaluate=layout.evaluator(data, accelerator, selection),
        save_model=lambda trained: plan.save_best(accelerator, trained),
        loss_fn=objectives,
        param_groups=plan.param_groups,
        on_step_start=plan.on_step_start,
        **layout.loop_options(plan, report, accelerator),
    )
    run = Run(
        config,
        accelerator,
        run_dir,
        layout.single(data),
        tokenizer,
        loop,
        loop.evaluate_fn,
        plan,
        layout.final_loaders(loop, eval_loaders, accelerator),
        report,
        extras=layout.extras(),
    )
    if teacher is not None:
        run.extras["teacher"] = teacher.teacher  # for compare_with_teacher
    if source_eval is not None:
        run.extras["source_eval"] = source_eval
    if label_shift is not None and label_shift.enabled:
        run.extras["label_shift_texts"] = sources[label_shift.source]
    layout.log_summary(run)
    return run

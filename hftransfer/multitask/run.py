"""A multitask run, wired end to end like single-task fine-tuning (``hftransfer.finetune``)::

    run = setup(config)
    train(run)
    evaluate_best(run)
    finish(run)

The run directory holds ``model/<task>/`` for every task (an ordinary transformers model: the shared encoder plus
that task's head, which ``pipeline`` loads) and ``model/tasks.json``, from which :func:`load_multitask` rebuilds the
multitask model with one shared encoder.
"""

from __future__ import annotations

import logging
from typing import Any

from hftransfer.assets import resolve_model_name
from hftransfer.data.mixing import MixedBatches
from hftransfer.data.sources import TaskData, load_task_data
from hftransfer.errors import ConfigError
from hftransfer.finetune import token_loaders, tokenize_task
from hftransfer.flow.core import Run, evaluate_best, finish, plan_training, start_loop, train
from hftransfer.modeling.build import build_model, load_tokenizer, model_max_length
from hftransfer.modeling.head_init import init_head_bias_to_prior
from hftransfer.multitask.config import MultitaskConfig
from hftransfer.multitask.evaluation import task_evaluator
from hftransfer.multitask.export import TASKS_FILE, load_multitask, load_multitask_weights, save_multitask
from hftransfer.multitask.model import MultitaskModel
from hftransfer.multitask.optim import PerTaskAdamW, groups_per_task, task_step
from hftransfer.multitask.sampling import TaskSchedule, default_steps_per_epoch
from hftransfer.objectives.owned import inner_model
from hftransfer.runs import start_run

__all__ = [
    "TASKS_FILE",
    "evaluate_best",
    "finish",
    "load_multitask",
    "load_multitask_weights",
    "save_multitask",
    "setup",
    "train",
]
logger = logging.getLogger("hftransfer")


def setup(config: MultitaskConfig, recipe: str = "multitask") -> Run:
    """Load every task's data, build one task model per task around one shared encoder, and the loop.

    Raises:
        ConfigError / DataError: bad config or data, before any training starts.
    """
    # Heads of the tasks not drawn in a step get no gradient: DDP must not wait for them.
    accelerator, run_dir, trackers, resume_from = start_run(config, recipe, find_unused_parameters=True)
    specs = {spec.name: spec for spec in config.tasks}
    data: dict[str, TaskData] = {}
    with accelerator.main_process_first():
        for name, spec in specs.items():
            data[name] = load_task_data(spec.data, spec.task)
    tokenizer = load_tokenizer(config.model)
    task_models = {
        name: build_model(config.model, spec.task, data[name].label_names) for name, spec in specs.items()
    }
    model = MultitaskModel(task_models)
    limit = model_max_length(tokenizer, next(iter(task_models.values())))
    model_dir = run_dir / "model"
    objectives, plan = plan_training(
        model,
        config,
        accelerator,
        tokenizer=tokenizer,
        run_dir=run_dir,
        base_model_name_or_path=resolve_model_name(config.model.name_or_path),
        shared_encoder=True,
        save_model=lambda acc, trained: save_multitask(acc, trained, tokenizer, model_dir, specs, data),
        restore_model=lambda acc, trained: load_multitask_weights(acc.unwrap_model(trained), model_dir),
    )
    if plan.train_loader is not None or inner_model(plan.model) is not model:
        raise ConfigError(
            f"strategy.name={config.strategy.name} replaces the model it trains, which a multitask run (one encoder "
            "shared by several task models) cannot do"
        )
    groups, strategy_report = plan.param_groups, plan.report

    train_loaders, eval_loaders = {}, {"validation": {}, "test": {}}
    report: dict[str, Any] = {"data": {}, "features": {}, "strategy": strategy_report}
    for name, spec in specs.items():
        if spec.data.max_length > limit:
            raise ConfigError(
                f"tasks.{name}.data.max_length={spec.data.max_length} exceeds the model's {limit}"
            )
        features, report["features"][name] = tokenize_task(data[name], tokenizer, spec.task, spec.data)
        if config.model.head_bias_init == "prior" and "train" in features:
            priors = report.setdefault("label_prior", {})
            priors[name] = init_head_bias_to_prior(task_models[name], features["train"]["labels"])
        train_loader, task_eval = token_loaders(features, tokenizer, config, accelerator)
        train_loaders[name] = accelerator.prepare(train_loader)
        for split, loader in task_eval.items():
            eval_loaders[split][name] = accelerator.prepare(loader)
        report["data"][name] = data[name].report

    sizes = [len(loader) for loader in train_loaders.values()]
    steps = config.sampler.steps_per_epoch or default_steps_per_epoch(sizes)
    weights = [spec.sampling_weight for spec in specs.values()]
    schedule = TaskSchedule(
        sizes, config.sampler.name, steps, config.train.seed, config.sampler.temperature, weights
    )
    batches = MixedBatches(train_loaders, schedule, accelerator, tag="task")
    lr_scales = {name: (spec.lr or config.train.lr) / config.train.lr for name, spec in specs.items()}
    report["sampler"] = {
        "name": config.sampler.name,
        "steps_per_epoch": steps,
        "batches_per_task": dict(zip(specs, sizes)),
        "sampling_weights": dict(zip(specs, weights)),
        "probabilities": dict(zip(specs, schedule.probabilities)),
        "lr_scales": lr_scales,
    }

    evaluate = task_evaluator(specs, data, accelerator)

    optimizer = None
    if config.optimizer_state == "per_task":
        if accelerator.mixed_precision == "fp16":
            raise ConfigError(
                "optimizer_state=per_task does not work with fp16 mixed precision (the gradient scaler would "
                "unscale the shared encoder's gradients once per task); set train.mixed_precision to bf16 or no"
            )
        optimizer = PerTaskAdamW(groups_per_task(groups, model.encoder, model.task_models), config.train)
    loop = start_loop(
        config,
        accelerator,
        run_dir,
        trackers=trackers,
        resume_from=resume_from,
        model=plan.model,
        train_loader=batches,
        eval_loader=eval_loaders["validation"] or None,
        evaluate=evaluate,
        save_model=lambda trained: plan.save_best(accelerator, trained),
        loss_fn=objectives,
        param_groups=groups,
        optimizer=optimizer,
        on_step_start=plan.on_step_start,
        before_update=task_step(lr_scales, optimizer),
    )
    run = Run(
        config,
        accelerator,
        run_dir,
        data,
        tokenizer,
        loop,
        evaluate,
        plan,
        {split: loaders for split, loaders in eval_loaders.items() if loaders},
        report,
        extras={
            "specs": specs,
            "metrics": {name: spec.primary_metric() for name, spec in specs.items()},
            "train_summary": _steps_per_task,
        },
    )
    parameters = strategy_report["parameters"]
    logger.info(
        "Multitask run %s: tasks %s; %.2fM of %.1fM parameters trainable; sampler %s, %d steps per epoch",
        run_dir,
        {n: {s: len(d) for s, d in data[n].splits.items()} for n in specs},
        parameters["trainable"] / 1e6,
        parameters["total"] / 1e6,
        config.sampler.name,
        steps,
    )
    return run


def _steps_per_task(run: Run) -> dict[str, Any]:
    state, schedule = run.loop.state, run.loop.train_loader.schedule
    drawn = schedule.consumed(state.epoch, state.batches_in_epoch)
    return {"steps_per_task": {name: drawn[i] for i, name in enumerate(run.extras["specs"])}}

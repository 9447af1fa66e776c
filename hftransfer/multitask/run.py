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

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedTokenizerBase,
)

from hftransfer.config import save_config
from hftransfer.data.features import tokenize, tokenize_options
from hftransfer.data.mixing import MixedBatches
from hftransfer.data.sources import TaskData, load_task_data
from hftransfer.errors import ConfigError
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import run_inference
from hftransfer.export.save import save_pretrained_atomic
from hftransfer.finetune import token_loaders
from hftransfer.modeling.build import build_model, load_tokenizer, model_max_length
from hftransfer.modeling.head_init import init_head_bias_to_prior
from hftransfer.multitask.config import MultitaskConfig, TaskSpec
from hftransfer.multitask.lora import (
    ADAPTER_FILE,
    add_shared_lora,
    has_lora,
    load_lora_state,
    lora_state,
    merged_encoder,
)
from hftransfer.multitask.model import MultitaskModel, TaskView
from hftransfer.multitask.optim import PerTaskAdamW, groups_per_task
from hftransfer.multitask.sampling import TaskSchedule, default_steps_per_epoch
from hftransfer.objectives.base import build_objectives
from hftransfer.runs import peak_memory_mb, publish_if_asked, start_run, tracker_config
from hftransfer.strategies import freeze_layers
from hftransfer.strategies.layers import count_parameters
from hftransfer.strategies.transfer import (
    param_groups,
)
from hftransfer.training.loop import FitResult, TrainingLoop
from hftransfer.training.threads import thread_report
from hftransfer.utils import atomic_directory, atomic_write_json, recover_directory

logger = logging.getLogger("hftransfer")
TASKS_FILE = "tasks.json"


@dataclass
class MultitaskRun:
    config: MultitaskConfig
    accelerator: Accelerator
    run_dir: Path
    specs: dict[str, TaskSpec]
    data: dict[str, TaskData]
    tokenizer: PreTrainedTokenizerBase
    loop: TrainingLoop
    eval_loaders: dict[str, dict[str, DataLoader]]
    report: dict[str, Any] = field(default_factory=dict)
    fit: FitResult | None = None
    final_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"


def task_step(
    scales: dict[str, float], optimizer: PerTaskAdamW | None
) -> Callable[[list[dict]], float] | None:
    """The loop's ``before_update``: selects the step's task in a per-task optimizer and returns the step's
    learning-rate factor (its task's; the mean when accumulation mixes tasks in one step). None when neither
    applies, so the loop does nothing extra per step."""
    if optimizer is None and all(scale == 1.0 for scale in scales.values()):
        return None

    def before_update(window: list[dict]) -> float:
        if optimizer is not None:  # per-task state needs single-task steps (grad_accum_steps=1, checked)
            optimizer.active = window[0]["task"]
        return sum(scales[batch["task"]] for batch in window) / len(window)

    return before_update


def _apply_strategy(
    model: MultitaskModel, config: MultitaskConfig, encoder_weight_decay: bool
) -> tuple[list[dict], Any, dict[str, Any]]:
    strategy = config.strategy
    report: dict[str, Any] = {"name": strategy.name}
    on_step_start = freeze_layers(model, strategy, report)
    if strategy.name == "frozen":
        model.encoder.requires_grad_(False)
    elif strategy.name == "lora":
        report["lora"] = add_shared_lora(model, strategy)
    groups = param_groups(
        model,
        config.train,
        strategy,
        include_frozen=strategy.name == "gradual",
        encoder_weight_decay=encoder_weight_decay,
    )
    report["lr_groups"] = {group["name"]: group["lr"] for group in groups}
    report["parameters"] = count_parameters(model)
    return groups, on_step_start, report


def setup(config: MultitaskConfig, recipe: str = "multitask") -> MultitaskRun:
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
    objectives = build_objectives(config, model, accelerator)  # before the strategy changes the encoder
    groups, on_step_start, strategy_report = _apply_strategy(
        model, config, encoder_weight_decay=not objectives.replaces_weight_decay
    )

    train_loaders, eval_loaders = {}, {"validation": {}, "test": {}}
    report: dict[str, Any] = {"data": {}, "features": {}, "strategy": strategy_report}
    for name, spec in specs.items():
        if spec.data.max_length > limit:
            raise ConfigError(
                f"tasks.{name}.data.max_length={spec.data.max_length} exceeds the model's {limit}"
            )
        label2id = {label: i for i, label in enumerate(data[name].label_names)}
        features, report["features"][name] = {}, {}
        for split, examples in data[name].splits.items():
            features[split], counts = tokenize(
                examples,
                tokenizer,
                spec.task,
                label2id,
                **tokenize_options(spec.data),
            )
            report["features"][name][split] = {
                "examples": len(examples),
                "features": len(features[split]),
                **counts,
            }
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

    def evaluate(trained: torch.nn.Module, loaders: dict[str, DataLoader], split: str = "validation") -> dict:
        metrics: dict[str, Any] = {"tasks": {}}
        for name, loader in loaders.items():
            spec = specs[name]
            output = run_inference(
                TaskView(trained, name), loader, accelerator, spec.task, desc=f"Evaluating {name}"
            )
            task_metrics = compute_metrics(
                output, data[name].splits[split], spec.task, data[name].label_names
            )
            metrics["tasks"][name] = task_metrics
            for key, value in task_metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[f"{name}.{key}"] = value
        metrics["average"] = sum(metrics["tasks"][n][specs[n].primary_metric()] for n in loaders) / len(
            loaders
        )
        return metrics

    optimizer = None
    if config.optimizer_state == "per_task":
        if accelerator.mixed_precision == "fp16":
            raise ConfigError(
                "optimizer_state=per_task does not work with fp16 mixed precision (the gradient scaler would "
                "unscale the shared encoder's gradients once per task); set train.mixed_precision to bf16 or no"
            )
        optimizer = PerTaskAdamW(groups_per_task(groups, model.encoder, model.task_models), config.train)
    model_dir = run_dir / "model"
    loop = TrainingLoop(
        accelerator,
        model,
        batches,
        eval_loaders["validation"] or None,
        evaluate=evaluate,
        save_model=lambda trained: save_multitask(accelerator, trained, tokenizer, model_dir, specs, data),
        config=config,
        run_dir=run_dir,
        loss_fn=objectives,
        param_groups=groups,
        optimizer=optimizer,
        on_step_start=on_step_start,
        before_update=task_step(lr_scales, optimizer),
    )
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    accelerator.wait_for_everyone()
    if trackers:
        accelerator.init_trackers(run_dir.name, config=tracker_config(config))
    if resume_from is not None:
        loop.resume(resume_from)
    run = MultitaskRun(
        config,
        accelerator,
        run_dir,
        specs,
        data,
        tokenizer,
        loop,
        {k: v for k, v in eval_loaders.items() if v},
        report,
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


def save_multitask(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
    specs: dict[str, TaskSpec],
    data: dict[str, TaskData],
) -> None:
    """Write ``directory/<task>/`` (ordinary HF models) and ``tasks.json`` atomically; call on every process."""
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped: MultitaskModel = accelerator.unwrap_model(model)
        lora = has_lora(unwrapped.encoder)
        with atomic_directory(Path(directory)) as tmp:
            if lora:
                # Each task is saved as a plain model: the shared adapter merged into a copy of the encoder.
                merged = merged_encoder(unwrapped.encoder).state_dict()
                save_file(lora_state(unwrapped.encoder), str(tmp / ADAPTER_FILE))
            for name in specs:
                task_model = unwrapped.task_models[name]
                prefix = f"task_models.{name}."
                task_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                if lora:
                    encoder_prefix = task_model.base_model_prefix + "."
                    task_state = {k: v for k, v in task_state.items() if not k.startswith(encoder_prefix)}
                    task_state.update({encoder_prefix + k: v for k, v in merged.items()})
                own = unwrapped.own_keys[name]
                task_state = {k: v.contiguous() for k, v in task_state.items() if k in own}
                save_pretrained_atomic(task_model, tokenizer, tmp / name, state_dict=task_state)
            tasks = [
                {"name": n, "task": s.task, "label_names": data[n].label_names, "metric": s.primary_metric()}
                for n, s in specs.items()
            ]
            (tmp / TASKS_FILE).write_text(json.dumps({"tasks": tasks}, indent=2) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()


def load_multitask_weights(model: MultitaskModel, directory: Path) -> None:
    """Load the weights written by :func:`save_multitask` into ``model`` (unwrapped)."""
    recover_directory(Path(directory))
    lora = has_lora(model.encoder)
    for name, task_model in model.task_models.items():
        state = load_file(str(Path(directory) / name / "model.safetensors"))
        if lora:  # the saved encoder is merged; the live one keeps base weights + adapter: load heads here
            encoder_prefix = task_model.base_model_prefix + "."
            state = {k: v for k, v in state.items() if not k.startswith(encoder_prefix)}
            own = {k for k in model.own_keys[name] if not k.startswith(encoder_prefix)}
        else:
            own = model.own_keys[name]
        missing, unexpected = task_model.load_state_dict(state, strict=False)
        missing = [key for key in missing if key in own]
        if missing or unexpected:
            raise RuntimeError(
                f"{directory}/{name} does not match task {name}: {missing[:3]} {unexpected[:3]}"
            )
    if lora:
        load_lora_state(model.encoder, Path(directory))


def load_multitask(directory: str | Path) -> MultitaskModel:
    """Rebuild a saved multitask model (one shared encoder) from a run's ``model/`` directory."""
    directory = Path(directory)
    tasks = json.loads((directory / TASKS_FILE).read_text(encoding="utf-8"))["tasks"]
    autos = {
        "token-classification": AutoModelForTokenClassification,
        "sequence-classification": AutoModelForSequenceClassification,
    }
    models = {t["name"]: autos[t["task"]].from_pretrained(directory / t["name"]) for t in tasks}
    return MultitaskModel(models).eval()


def train(run: MultitaskRun) -> FitResult:
    run.fit = run.loop.fit()
    return run.fit


def evaluate_best(run: MultitaskRun) -> dict[str, Any]:
    """Reload the best model, evaluate every task on validation and test; writes ``metrics.json``."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    load_multitask_weights(accelerator.unwrap_model(run.loop.model), run.model_dir)
    started = time.perf_counter()
    results = {}
    for split, loaders in run.eval_loaders.items():
        results[split] = run.loop.evaluate_fn(run.loop.model, loaders, split)
        run.loop.log.log(split, results[split], step=run.loop.state.step, epoch=run.loop.epoch_progress())
    state = run.loop.state
    schedule = run.loop.train_loader.schedule
    drawn = schedule.consumed(state.epoch, state.batches_in_epoch)
    run.final_metrics = {
        **results,
        "best_step": state.best_step,
        "best_validation_average": state.best_metric,
        "train": {
            **run.loop.summary(),
            "steps_per_task": {name: drawn[i] for i, name in enumerate(run.specs)},
        },
        "eval_seconds": round(time.perf_counter() - started, 2),
        "peak_memory_mb": peak_memory_mb(),
        "threads": thread_report(),
        "label_names": {name: run.data[name].label_names for name in run.specs},
        **run.report,
    }
    if accelerator.is_main_process:
        atomic_write_json(run.run_dir / "metrics.json", run.final_metrics)
    return run.final_metrics


def finish(run: MultitaskRun) -> None:
    run.accelerator.end_training()
    publish_if_asked(run.config, run.run_dir, run.accelerator, run.final_metrics)
    for split in ("validation", "test"):
        if split in run.final_metrics:
            scores = {
                n: round(m[run.specs[n].primary_metric()], 4)
                for n, m in run.final_metrics[split]["tasks"].items()
            }
            logger.info("%s: average %.4f %s", split, run.final_metrics[split]["average"], scores)
    logger.info("Models: %s/<task>  Metrics: %s", run.model_dir, run.run_dir / "metrics.json")

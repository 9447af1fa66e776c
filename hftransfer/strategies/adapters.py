"""Any peft method as a strategy: wrap the encoder (:func:`apply_peft`) and plan saving, restoring and exporting
the adapter (:func:`adapter_plan`). A method's own module adds its options, its peft config and its defaults
(LoRA: ``lora.py`` + ``lora_plan.py``).

The encoder's pretrained weights stay fixed and the method's weights train next to them, while the new, randomly
initialised head is trained in full and saved with the adapter (peft's ``modules_to_save``), because an adapter
without its head reloads as a model that predicts noise. Saving, reloading and merging are
``hftransfer.export.peft_adapter``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel

from hftransfer.errors import ConfigError
from hftransfer.export.peft_adapter import (
    TASK_TYPES,
    adapter_parameter_names,
    can_merge,
    merge_adapter,
    save_adapter,
    set_adapter_state,
)
from hftransfer.export.save import save_pretrained_atomic
from hftransfer.strategies.adapter_targets import ALL_LINEAR, check_targets, head_modules, module_regex
from hftransfer.strategies.base import StrategyContext, StrategyPlan, encoder_plan, finish_plan
from hftransfer.training.disk import write_on_main
from hftransfer.training.optim import without_decay

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel, TaskType

# peft is imported when an adapter is built, not here: importing it takes seconds, and every run imports this
# module (the registry loads every strategy) while only adapter runs use it.

EXPORTS = ("adapter", "merged", "both")

T = TypeVar("T")


def per_architecture(model: PreTrainedModel, table: Mapping[str, T], what: str, fix: str) -> T:
    """``table[model_type]``: a method's default for this architecture (e.g. the modules it adapts).

    Raises:
        ConfigError: the architecture has no default (``what``: what is missing; ``fix``: how to set it).
    """
    model_type = getattr(model.config, "model_type", None)
    if model_type not in table:
        raise ConfigError(
            f"no default {what} for model type {model_type!r} (known: {', '.join(table)}); {fix}"
        )
    return table[model_type]


def apply_peft(
    model: PreTrainedModel,
    task: str,
    make_config: Callable[..., PeftConfig],
    *,
    target_modules: list[str] | None,
    default_targets: Callable[[PreTrainedModel], list[str]] | None = None,
    train_pooler: bool = True,
) -> PeftModel:
    """Wrap ``model`` (changed in place) with a peft method; the head is trained in full and saved with it.

    Args:
        model: a transformers ``*ForTokenClassification`` / ``*ForSequenceClassification`` model.
        task: ``"token-classification"`` or ``"sequence-classification"``.
        make_config: ``make_config(task_type=, target_modules=, modules_to_save=, exclude_modules=)`` returns the
            method's peft config with its own options (e.g. ``functools.partial(peft.LoraConfig, r=8)``).
        target_modules: module names (suffixes, peft style) to adapt; ``["all-linear"]`` adapts every linear
            layer of the encoder; ``None`` uses ``default_targets(model)``.
        default_targets: the method's default target modules for the model's architecture (needed when
            ``target_modules`` is ``None``).
        train_pooler: sequence tasks: train the encoder's pooler in full with the head (default); ``False``
            treats it as an encoder layer (adapted if targeted, otherwise fixed).

    Returns:
        The peft model. Only the method's weights and the copies of the head (and, for sequence tasks, of the
        encoder's pooler) require gradients.

    Raises:
        ConfigError: unknown task, or target names that match no encoder module.
    """
    from peft import get_peft_model

    task_type = task_type_of(task)
    trained_in_full = head_modules(model, task, train_pooler=train_pooler)
    targets: str | list[str]
    if target_modules is None:
        if default_targets is None:
            raise ConfigError("strategy.target_modules: this method has no default for it; name the modules")
        targets = default_targets(model)
    elif ALL_LINEAR in target_modules:
        if len(target_modules) != 1:
            raise ConfigError(
                f"strategy.target_modules: {ALL_LINEAR} cannot be combined with names, got {target_modules}"
            )
        targets = ALL_LINEAR
    else:
        targets = list(target_modules)
    if isinstance(targets, list):
        check_targets(model, targets, trained_in_full)

    config = make_config(
        task_type=task_type,
        target_modules=targets,
        # The head is new and task-specific: train all of it rather than adapt random weights. peft adds
        # "classifier"/"score" itself; naming the real head modules also covers other head names.
        modules_to_save=list(trained_in_full),
        # Recent peft already skips modules_to_save when matching targets; older releases (and all-linear, which
        # expands to every nn.Linear including the head) need the explicit exclusion.
        exclude_modules=module_regex(trained_in_full),
    )
    peft_model = get_peft_model(model, config)
    # Guarantee the contract whatever peft's defaults: the method's weights and head copies train, nothing else.
    trained = adapter_parameter_names(peft_model)
    for name, param in peft_model.named_parameters():
        param.requires_grad_(name in trained)
    return peft_model


def adapt_encoder(
    context: StrategyContext,
    make_config: Callable[..., PeftConfig],
    *,
    target_modules: list[str] | None,
    default_targets: Callable[[PreTrainedModel], list[str]] | None = None,
    train_pooler: bool = True,
) -> tuple[torch.nn.Module, list[str]]:
    """Apply a peft method to the run's model: :func:`apply_peft` on a single task model, or one adapter in the
    encoder that a multitask model's tasks share (``shared_adapter.py``). Returns the model to train and the
    target modules (as configured, or the architecture's default)."""
    # Imported here: shared_adapter reuses this module's target-name helpers.
    from hftransfer.strategies.shared_adapter import inject_shared

    if context.shared_encoder:
        targets = inject_shared(
            context.model, make_config, target_modules=target_modules, default_targets=default_targets
        )
        return context.model, targets
    model = apply_peft(
        context.model,
        context.config.task,
        make_config,
        target_modules=target_modules,
        default_targets=default_targets,
        train_pooler=train_pooler,
    )
    # As configured: peft's own record expands all-linear, including modules it then excludes.
    return model, list(target_modules or default_targets(model.get_base_model()))


def adapter_plan(
    context: StrategyContext,
    model: torch.nn.Module,
    export: str,
    report: dict[str, Any],
    *,
    decay_adapters: bool = True,
) -> StrategyPlan:
    """The plan of a peft strategy: ``model`` (from :func:`adapt_encoder`) trains, the best adapter is snapshotted
    and restored as an adapter, and at the end ``model/`` holds what ``export`` says: the adapter (``adapter``),
    a plain merged model (``merged``), or the merged model plus the adapter in ``adapter/`` (``both``). A multitask
    model is saved the run's way (every task merged, the shared adapter beside them).

    Args:
        report: what the run reports about the strategy (``metrics.json``'s ``strategy``), e.g. ``{"lora": {...}}``.
        decay_adapters: ``False`` gives the method's own weights no weight decay (for weights that multiply
            activations and start at 1, which decay would pull towards 0); the head keeps its decay.

    Raises:
        ConfigError: a merged export of a method that cannot be merged.
    """
    if export not in EXPORTS:
        raise ConfigError(f"the export of an adapter must be one of {', '.join(EXPORTS)}, got {export!r}")
    if context.shared_encoder:
        if export == "adapter":
            raise ConfigError(
                "a multitask run exports every task as a merged model with the shared adapter beside them; an "
                "adapter-only export is for single-task runs (set the strategy's export to both)"
            )
        plan = encoder_plan(context)
        plan.model = model
    else:
        plan = _single_adapter_plan(context, model, export)
    plan.report.update(report)
    plan = finish_plan(plan, context)
    if not decay_adapters:
        plan.param_groups = without_decay(plan.param_groups, _adapter_ids(context, model))
        plan.report["lr_groups"] = {group["name"]: group["lr"] for group in plan.param_groups}
    return plan


def _single_adapter_plan(context: StrategyContext, model: PeftModel, export: str) -> StrategyPlan:
    if export != "adapter" and not can_merge(model):
        raise ConfigError(
            f"export={export}: this peft method cannot be merged into the encoder; export the adapter"
        )
    plan = encoder_plan(context)
    plan.model = model
    run_dir, tokenizer, base_name = context.run_dir, context.tokenizer, context.base_model_name_or_path
    # The best adapter is snapshotted where it is finally exported from; "adapter" export puts it in model/.
    adapter_dir = run_dir / ("model" if export == "adapter" else "adapter")

    def save_best(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        unwrapped = accelerator.unwrap_model(trained)
        save = lambda: save_adapter(unwrapped, adapter_dir, base_name, tokenizer)  # noqa: E731
        write_on_main(accelerator, "the best adapter", adapter_dir, save)

    def restore_best(accelerator: Accelerator, trained: torch.nn.Module) -> None:
        set_adapter_state(accelerator.unwrap_model(trained), adapter_dir)

    def export_model(accelerator: Accelerator, trained: torch.nn.Module) -> dict[str, Any]:
        produced = {"adapter": str(adapter_dir)}
        if export != "adapter":
            if accelerator.is_main_process:
                merged = merge_adapter(accelerator.unwrap_model(trained))
                save_pretrained_atomic(merged, tokenizer, run_dir / "model")
            produced["merged"] = str(run_dir / "model")
            if export == "merged" and accelerator.is_main_process:
                shutil.rmtree(adapter_dir, ignore_errors=True)
                produced.pop("adapter")
            accelerator.wait_for_everyone()
        return produced

    plan.save_best, plan.restore_best, plan.export = save_best, restore_best, export_model
    return plan


def _adapter_ids(context: StrategyContext, model: torch.nn.Module) -> set[int]:
    """The method's own weights (not the head copies), by identity."""
    from hftransfer.strategies.shared_adapter import adapter_parameter_names as shared_names

    if context.shared_encoder:
        own, named = shared_names(model.encoder), model.encoder.named_parameters()
    else:
        own, named = adapter_parameter_names(model, saved_modules=False), model.named_parameters()
    return {id(param) for name, param in named if name in own}


def task_type_of(task: str) -> TaskType:
    from peft import TaskType

    if task not in TASK_TYPES:
        raise ConfigError(f"task must be one of {sorted(TASK_TYPES)} for a peft adapter, got {task!r}")
    return TaskType(TASK_TYPES[task])

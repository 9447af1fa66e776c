"""A multitask run's model directory: ``<task>/`` for every task (an ordinary transformers model: the shared
encoder plus that task's head, which ``pipeline`` loads) and ``tasks.json``, from which :func:`load_multitask`
rebuilds the multitask model with one shared encoder. With a peft strategy each task holds the encoder with the
shared adapter merged in, and the adapter alone sits beside them for restoring the best weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedTokenizerBase,
)

from hftransfer.data.sources import TaskData
from hftransfer.export.save import save_pretrained_atomic
from hftransfer.multitask.config import TaskSpec
from hftransfer.multitask.model import MultitaskModel
from hftransfer.strategies.shared_adapter import (
    ADAPTER_FILE,
    adapter_state,
    has_adapter,
    load_adapter_state,
    merged_encoder,
)
from hftransfer.training.disk import write_on_main
from hftransfer.utils import atomic_directory, recover_directory

TASKS_FILE = "tasks.json"


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
    unwrapped: MultitaskModel = accelerator.unwrap_model(model)
    write_on_main(
        accelerator,
        "the exported model",
        directory,
        lambda: _write(unwrapped, state, tokenizer, directory, specs, data),
    )


def _write(
    unwrapped: MultitaskModel,
    state: dict[str, torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
    specs: dict[str, TaskSpec],
    data: dict[str, TaskData],
) -> None:
    adapter = has_adapter(unwrapped.encoder)
    with atomic_directory(Path(directory), what="the exported model") as tmp:
        if adapter:
            # Each task is saved as a plain model: the shared adapter merged into a copy of the encoder.
            merged = merged_encoder(unwrapped.encoder).state_dict()
            save_file(adapter_state(unwrapped.encoder), str(tmp / ADAPTER_FILE))
        for name in specs:
            task_model = unwrapped.task_models[name]
            prefix = f"task_models.{name}."
            task_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if adapter:
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


def load_multitask_weights(model: MultitaskModel, directory: Path) -> None:
    """Load the weights written by :func:`save_multitask` into ``model`` (unwrapped)."""
    recover_directory(Path(directory))
    adapter = has_adapter(model.encoder)
    for name, task_model in model.task_models.items():
        state = load_file(str(Path(directory) / name / "model.safetensors"))
        if adapter:  # the saved encoder is merged; the live one keeps base weights + adapter: load heads here
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
    if adapter:
        load_adapter_state(model.encoder, Path(directory))


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

"""Per-task adapters on one base: several tasks' peft adapters (each trained with ``strategy.name=lora`` or another
peft strategy on the same pretrained base) loaded into one model, the task chosen per call.

Training a new task never touches the base or another task's adapter, so no task forgets anything; at prediction
time one copy of the base weights serves every task of a task type (token or sequence classification: their
Hugging Face classes differ, so each type holds one base), and switching tasks only switches which adapter and
head are active. Each adapter keeps its own head, label set and problem type.

    adapters = AdapterSet({"ner": "runs/ner-lora", "sentiment": "runs/rt-lora", "drugs": "runs/drugs-lora"})
    adapters.predict("sentiment", Dataset.from_list([{"text": "a gripping film"}])).rows
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset
from torch import nn

from hftransfer.errors import ConfigError
from hftransfer.export.peft_adapter import ADAPTER_META, AUTO_CLASSES, base_model_kwargs
from hftransfer.predict import Predictions, Predictor

if TYPE_CHECKING:
    from peft import PeftModel

# peft is imported when adapters are loaded or merged: it takes seconds to import, and finding a run's adapter
# directory (adapter_directory) needs none of it.


def adapter_directory(path: str | Path) -> Path:
    """The adapter of a run (``model/`` for ``lora_export=adapter``, ``adapter/`` for ``both``) or an adapter dir.

    Raises:
        ConfigError: ``path`` holds no hftransfer adapter.
    """
    path = Path(path)
    for candidate in (path, path / "model", path / "adapter"):
        if (candidate / ADAPTER_META).is_file():
            return candidate
    raise ConfigError(
        f"{path} holds no adapter written by hftransfer ({ADAPTER_META}); train the task with a peft strategy "
        "(strategy.name=lora) and strategy.lora_export=adapter or both"
    )


class ActiveAdapter(nn.Module):
    """One task of a shared peft model, as a classifier for :class:`~hftransfer.predict.Predictor`: ``forward``
    activates the task's adapter first, and ``config`` carries the task's own labels and problem type."""

    def __init__(self, shared: PeftModel, name: str, meta: dict[str, Any]) -> None:
        super().__init__()
        self.shared, self.name = shared, name
        config = copy.deepcopy(shared.get_base_model().config)
        id2label = {int(index): label for index, label in meta["id2label"].items()}
        config.id2label, config.label2id = id2label, {label: index for index, label in id2label.items()}
        for key, value in meta.items():
            if key not in ("task", "base_model_name_or_path", "id2label"):
                setattr(config, key, value)  # problem type, multi-label threshold
        self.config = config

    def forward(self, **inputs: torch.Tensor) -> Any:
        if self.shared.active_adapter != self.name:
            self.shared.set_adapter(self.name)
        return self.shared(**inputs)


class AdapterSet:
    """Several tasks' adapters on one shared base model, one adapter (and head) per task.

    Args:
        adapters: ``{task name: run directory or adapter directory}``; every adapter must name the same base.
        predictor_options: passed to each task's :class:`~hftransfer.predict.Predictor` (``batch_size``,
            ``max_length``, ``cpu``, ...).

    Raises:
        ConfigError: no adapters, a directory without one, or adapters trained on different bases.
    """

    def __init__(self, adapters: Mapping[str, str | Path], **predictor_options: Any) -> None:
        from peft import PeftModel

        if not adapters:
            raise ConfigError("AdapterSet needs at least one adapter")
        self.directories = {name: adapter_directory(path) for name, path in adapters.items()}
        self.meta = {
            name: json.loads((directory / ADAPTER_META).read_text(encoding="utf-8"))
            for name, directory in self.directories.items()
        }
        bases = {name: meta["base_model_name_or_path"] for name, meta in self.meta.items()}
        if len(set(bases.values())) > 1:
            listed = ", ".join(f"{name}: {base}" for name, base in bases.items())
            raise ConfigError(
                f"the adapters were trained on different base models ({listed}); one base is shared"
            )
        self.base = next(iter(bases.values()))
        self.shared: dict[str, PeftModel] = {}  # task type -> the peft model holding that type's adapters
        for name, directory in self.directories.items():
            task = self.meta[name]["task"]
            if task not in self.shared:
                base = AUTO_CLASSES[task].from_pretrained(
                    self.base, **base_model_kwargs(directory), ignore_mismatched_sizes=True
                )
                self.shared[task] = PeftModel.from_pretrained(base, str(directory), adapter_name=name)
            else:
                with heads_sized(self.shared[task], len(self.meta[name]["id2label"])):
                    self.shared[task].load_adapter(str(directory), adapter_name=name)
        for model in self.shared.values():
            model.eval()
        self.options = predictor_options
        self._predictors: dict[str, Predictor] = {}

    @property
    def tasks(self) -> list[str]:
        return list(self.directories)

    def predictor(self, name: str) -> Predictor:
        """The :class:`~hftransfer.predict.Predictor` of task ``name`` (on the shared base)."""
        if name not in self.directories:
            raise KeyError(f"no adapter named {name!r}; this set has {', '.join(self.tasks)}")
        if name not in self._predictors:
            task = self.meta[name]["task"]
            active = ActiveAdapter(self.shared[task], name, self.meta[name])
            self._predictors[name] = Predictor(
                str(self.directories[name]), loaded=(active, task), **self.options
            )
        return self._predictors[name]

    def merge(
        self,
        names: list[str],
        weights: list[float],
        new_name: str,
        *,
        head_from: str,
        combination_type: str = "cat",
    ) -> None:
        """Add task ``new_name``: the weighted combination of the adapters ``names`` (peft's
        ``add_weighted_adapter``) with the head, labels and problem type of ``head_from``.

        Heads are not merged (a head belongs to one label set); only the encoder adapters are. ``combination_type``
        is peft's: ``cat`` (exact: the ranks are concatenated), ``svd``, ``linear`` (same rank only), ``ties``, ...

        Raises:
            ConfigError: unknown or mixed-type names, a taken ``new_name``, or a non-LoRA adapter.
        """
        unknown = [name for name in [*names, head_from] if name not in self.directories]
        if unknown or new_name in self.directories or len(names) != len(weights) or not names:
            raise ConfigError(
                f"merge: names {names} with weights {weights} into {new_name!r} (head from {head_from!r}): "
                + (f"unknown {unknown}" if unknown else "one weight per adapter, and a new name")
            )
        tasks = {self.meta[name]["task"] for name in [*names, head_from]}
        if len(tasks) > 1:
            raise ConfigError(
                f"merge: {names} and {head_from!r} are of different task types ({sorted(tasks)})"
            )
        from peft.utils import ModulesToSaveWrapper

        shared = self.shared[tasks.pop()]
        if not hasattr(shared.base_model, "add_weighted_adapter"):
            raise ConfigError("merge: weighted merging is for LoRA adapters (peft's add_weighted_adapter)")
        wrappers = [m for m in shared.modules() if isinstance(m, ModulesToSaveWrapper)]
        # peft refuses to merge adapters that each keep a copy of the same module (the heads): all but the first
        # adapter's copies are set aside while it merges, with the first adapter active (peft re-activates it).
        shared.set_adapter(names[0])
        aside = [{n: w.modules_to_save.pop(n) for n in names[1:] if n in w.modules_to_save} for w in wrappers]
        try:
            shared.add_weighted_adapter(names, weights, new_name, combination_type=combination_type)
        finally:
            for wrapper, kept in zip(wrappers, aside):
                wrapper.modules_to_save.update(kept)
        for wrapper in wrappers:
            if head_from in wrapper.modules_to_save:
                wrapper.modules_to_save[new_name] = copy.deepcopy(wrapper.modules_to_save[head_from])
        self.directories[new_name] = self.directories[head_from]
        self.meta[new_name] = self.meta[head_from]

    def predict(self, name: str, examples: Dataset) -> Predictions:
        """Predict ``examples`` for task ``name`` (rows as :meth:`Predictor.predict` takes and returns them)."""
        return self.predictor(name).predict(examples)


@contextmanager
def heads_sized(model: PeftModel, num_labels: int) -> Iterator[None]:
    """While loading another task's adapter: its head copies start from an output layer of ``num_labels`` classes.

    peft makes a new adapter's copy of each module saved in full by copying the base's module, whose output layer
    has the first task's number of classes; another task's saved head would not fit it.
    """
    from peft.utils import ModulesToSaveWrapper

    current = model.get_base_model().config.num_labels
    wrappers = [m for m in model.modules() if isinstance(m, ModulesToSaveWrapper)]
    originals = [wrapper.original_module for wrapper in wrappers]
    try:
        for wrapper, original in zip(wrappers, originals):
            wrapper.original_module = resized(original, current, num_labels)
        yield
    finally:
        for wrapper, original in zip(wrappers, originals):
            wrapper.original_module = original


def resized(module: nn.Module, current: int, num_labels: int) -> nn.Module:
    """A copy of ``module`` whose linear layers with ``current`` outputs have ``num_labels`` (the module itself when
    it has none: an encoder's pooler)."""
    if current == num_labels:
        return module
    targets = [
        name for name, m in module.named_modules() if isinstance(m, nn.Linear) and m.out_features == current
    ]
    if not targets:
        return module
    module = copy.deepcopy(module)
    for name in targets:
        old = module.get_submodule(name) if name else module
        new = nn.Linear(old.in_features, num_labels, bias=old.bias is not None)
        if not name:
            return new
        parent, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, leaf, new)
    return module

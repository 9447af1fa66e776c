"""Modules that objectives own (a hidden-state projection, a domain head): trained with the model, out of exports;
and the named sources' batches run in the same forward call.

An objective sets ``module`` and implements ``extend_outputs(outputs, module)``. The flow wraps the strategy's
model in :class:`WithObjectiveModules`, whose ``forward`` runs each owned module on the model's outputs when the
objectives ask for it (``objective_outputs=True``, the training forward; evaluation calls the model as it is).
Running them inside ``forward`` is what lets DDP see their parameters; keeping them in one module lets the
optimizer and checkpoints hold them with the model. Saving, restoring and exporting see the inner model alone.

The one exception is a module that decoding needs (a CRF's transition scores): its owner sets ``exported_file`` and
implements ``save_exported(path)`` / ``load_exported(path)``, and the file is written into the model's directory
whenever the best model is saved or exported, and read back with it. The model itself stays a plain Hugging Face
model; the file sits beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hftransfer.training.disk import write_on_main


class WithObjectiveModules(nn.Module):
    """The trained model plus ``owned``: each owning objective's module, under the objective's name."""

    def __init__(self, model: nn.Module, owners: list[Any]) -> None:
        super().__init__()
        self.model = model
        self.owned = nn.ModuleDict({owner.name: owner.module for owner in owners})
        self.owners = list(owners)

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(
        self,
        *,
        objective_outputs: bool = False,
        source_inputs: dict[str, dict[str, torch.Tensor]] | None = None,
        **inputs: Any,
    ) -> Any:
        outputs = _with_mask(self.model(**inputs), inputs)
        if source_inputs:
            # The named sources' batches in the same forward call: DDP expects one forward per backward.
            flags = {
                key: inputs[key] for key in ("output_hidden_states", "output_attentions") if key in inputs
            }
            outputs["sources"] = {
                name: _with_mask(self.model(**batch, **flags), batch) for name, batch in source_inputs.items()
            }
        if objective_outputs:
            for owner in self.owners:
                owner.extend_outputs(outputs, self.owned[owner.name])
        return outputs


def _with_mask(outputs: Any, inputs: dict[str, Any]) -> Any:
    """``outputs`` with the attention mask they were computed under: the owned modules see the outputs alone, and
    pooling or picking real tokens needs it."""
    if "attention_mask" in inputs:
        outputs["attention_mask"] = inputs["attention_mask"]
    return outputs


def inner_model(model: nn.Module) -> nn.Module:
    """The model objectives and exports look at: under DDP / torch.compile wrappers and :class:`WithObjectiveModules`."""
    while hasattr(model, "module"):
        model = model.module
    model = getattr(model, "_orig_mod", model)
    return model.model if isinstance(model, WithObjectiveModules) else model


def attach_owned_modules(
    plan: Any,
    owners: list[Any],
    config: Any,
    *,
    reads_sources: bool = False,
    model_dir: Path | None = None,
) -> Any:
    """Wrap ``plan.model`` with the modules ``owners`` own: each gets an AdamW group of its own (LR: the owner's
    ``module_lr`` if it sets one, else ``strategy.head_lr``, default ``train.lr``: like a head, it starts from
    scratch), and the plan's save, restore
    and export see the inner model alone; the files of owners with an ``exported_file`` go into ``model_dir``
    with the best model (see the module docstring). Returns ``plan`` (unchanged without owners, unless objectives
    read named sources: the wrapper runs their batches)."""
    owners = [owner for owner in owners if getattr(owner, "module", None) is not None]
    if not owners and not reads_sources:
        return plan
    save_best, restore_best, export = plan.save_best, plan.restore_best, plan.export
    plan.model = WithObjectiveModules(plan.model, owners)
    default_lr = config.strategy.head_lr or config.train.lr
    for owner in owners:
        lr = getattr(owner, "module_lr", None) or default_lr  # an objective's own choice (DANN's head_lr)
        trainable = [p for p in owner.module.parameters() if p.requires_grad]
        if trainable:  # an identity projection (equal widths) has nothing to train
            plan.param_groups.append(
                {"name": owner.name, "params": trainable, "lr": lr, "weight_decay": config.train.weight_decay}
            )
            plan.report.setdefault("lr_groups", {})[owner.name] = lr

    def inner(accelerator: Any, trained: torch.nn.Module) -> torch.nn.Module:
        return accelerator.unwrap_model(trained).model

    exported = [owner for owner in owners if getattr(owner, "exported_file", None)] if model_dir else []

    def save_files(accelerator: Any, directories: tuple[Path, ...] = ()) -> None:
        for directory in dict.fromkeys((Path(model_dir), *directories)):
            for owner in exported:
                path = directory / owner.exported_file
                write_on_main(
                    accelerator, owner.exported_file, path, lambda o=owner, p=path: o.save_exported(p)
                )

    def save(accelerator: Any, trained: torch.nn.Module) -> None:
        save_best(accelerator, inner(accelerator, trained))
        save_files(accelerator)  # after the model: saving it replaces the whole directory

    def restore(accelerator: Any, trained: torch.nn.Module) -> None:
        restore_best(accelerator, inner(accelerator, trained))
        for owner in exported:  # every process: each holds its copy of the module
            owner.load_exported(Path(model_dir) / owner.exported_file)

    def export_all(accelerator: Any, trained: torch.nn.Module) -> dict[str, Any]:
        produced = export(accelerator, inner(accelerator, trained))
        # An export may have rewritten the model's directory (a merged adapter); an adapter directory beside it
        # predicts on its own, so it gets the files too.
        adapter = produced.get("adapter") if isinstance(produced, dict) else None
        save_files(accelerator, (Path(adapter),) if adapter else ())
        return produced

    plan.save_best, plan.restore_best = save, restore
    if export is not None:
        plan.export = export_all
    return plan

"""The objective protocol: the named, weighted loss terms of a batch, and the set of them a run trains on.

An :class:`Objective` looks at the model, the batch, the model's outputs on it and the loop state (step, total
steps, epoch) and returns its terms, already weighted. A term is either

* **summed** over the batch's labelled items (``reduction = "sum"``, the task's cross-entropy): the loop divides
  the step's summed terms by the number of labelled items of the whole accumulated, global batch, so k
  micro-batches of b examples give the gradient of one batch of k*b; or
* **per step** (``reduction = "mean"``, a regulariser): its value counts once per optimizer step whatever the
  batch size or accumulation (each of a step's k micro-batches adds 1/k of it), and it is logged under its name.

Objectives are built from ``config.objectives`` before the strategy changes the model, so those that keep a
reference (L2-SP's pretrained weights, drift's original encoder) see the pretrained model. Objectives that read a
teacher (distillation's) get what the run's teacher provides as ``context.teacher``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from accelerate import Accelerator

from hftransfer.config import ObjectiveConfig
from hftransfer.errors import ConfigError
from hftransfer.evaluation.inference import model_inputs
from hftransfer.objectives.owned import inner_model


@dataclass
class ObjectiveContext:
    """What an objective's builder may use: the freshly built (pretrained) model, the run and its own config."""

    model: torch.nn.Module
    config: Any
    """The run config."""
    objective: ObjectiveConfig
    """This objective's own (typed) section of ``config.objectives``."""
    accelerator: Accelerator | None = None
    teacher: Any = None
    """What a distillation run's teacher provides (a :class:`~hftransfer.distill.teaching.TeacherContext`: the
    teacher, its cached predictions, its forward pass on a batch); None in runs without a teacher."""
    tokenizer: Any = None
    features: dict[str, Any] | None = None
    """The task's tokenised splits (``train``, ``validation``, ...; one-task runs), for objectives that compute
    something from the data before training (importance weights)."""
    sources: dict[str, Any] = field(default_factory=dict)
    """The named sources' tokenised examples (``config.sources``), by name."""
    encode: Any = None
    """``encode(features) -> (vectors, example_ids)``: the pretrained encoder's pooled features of tokenised
    examples, computed once per dataset for the whole run (:class:`~hftransfer.adaptation.encode.PooledFeatures`);
    None outside a run."""

    def source(self, name: str) -> Any:
        """The tokenised examples of named source ``name``.

        Raises:
            ConfigError: ``sources`` does not list it.
        """
        if name not in self.sources:
            raise ConfigError(unlisted_source(self.objective.name, name, list(self.sources)))
        return self.sources[name]


def unlisted_source(objective: str, name: str, listed: list[str]) -> str:
    """The message for an objective that reads a source ``sources`` does not list."""
    return (
        f"objectives: {objective} reads the source {name!r}, which sources does not list ({listed or 'none'}); "
        f"add sources=[{{name: {name}, data: <file or builtin>}}]"
    )


class Objective:
    """Base of the objectives: subclasses set ``name`` and implement :meth:`terms`."""

    name: str = ""
    reduction: Literal["sum", "mean"] = "mean"
    needs_hidden_states: bool = False
    """True when :meth:`terms` reads ``outputs.hidden_states`` (the forward pass then returns them)."""
    needs_attentions: bool = False
    """True when :meth:`terms` reads ``outputs.attentions`` (the forward pass then returns them)."""
    replaces_weight_decay: bool = False
    """True when the objective pulls encoder weights somewhere themselves (L2-SP towards the pretrained ones):
    AdamW's decay towards zero would fight it, so the encoder's groups get none."""
    module: torch.nn.Module | None = None
    """A trainable module the objective owns (a projection, a domain head): trained in its own parameter group,
    run inside the model's forward by :meth:`extend_outputs` so that DDP sees it, left out of exports
    (``owned.py``)."""
    exported_file: str | None = None
    """For a module that decoding needs (a CRF's scores): the file name it is saved under in the model's directory,
    with the best model (the objective then implements ``save_exported(path)`` and ``load_exported(path)``)."""

    reads_at_build: tuple[str, ...] = ()
    """Names of sources the objective reads once when it is built (from ``ObjectiveContext.sources``), with no
    batch of them at each step (importance weights)."""
    report: dict[str, Any] | None = None
    """What the run's ``metrics.json`` records about the objective under ``objectives.<name>`` (set when built)."""
    logged: tuple[str, ...] = ()
    """Names of values :meth:`terms` returns for the log only (a domain classifier's accuracy): detached, averaged
    over the log interval like the terms, never added to the loss."""
    sources: tuple[str, ...] = ()
    """Names of the run's sources (``config.sources``) this objective reads: at every training step the batch
    holds one batch of each under ``batch["sources"][name]`` and the outputs the model's outputs on it under
    ``outputs["sources"][name]`` (computed in the same forward call, with the same hidden-state and attention
    flags)."""

    def before_forward(self, batch: dict[str, Any], state: Any) -> None:
        """Called with every training batch and the loop state before the forward pass (e.g. to set a schedule's
        value that :meth:`extend_outputs` uses)."""

    def source_inputs(
        self, name: str, inputs: dict[str, torch.Tensor], state: Any
    ) -> dict[str, torch.Tensor]:
        """The model inputs of source ``name``'s batch as this objective wants them run (e.g. masked for MLM); the
        objectives reading a source apply this in list order."""
        return inputs

    def extend_outputs(self, outputs: Any, module: torch.nn.Module) -> None:
        """Add what ``module`` computes from the model's outputs to them (training forward passes only)."""

    def terms(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], outputs: Any, state: Any
    ) -> dict[str, torch.Tensor]:
        """``{term name: weighted value}`` of ``batch`` (``state``: the loop state, None outside the loop)."""
        raise NotImplementedError


class ObjectiveSet:
    """The run's objectives as the loop's loss function.

    ``objectives(model, batch, state) -> (summed terms, {name: per-step term})``: one forward pass (with hidden
    states or attention maps if an objective reads them), then every objective's terms. The loop adds the per-step
    terms in the order of ``objectives``. When an objective logs values besides its terms (``Objective.logged``),
    a third element ``{name: value}`` carries them to the log.
    """

    def __init__(self, objectives: list[Objective]) -> None:
        self.objectives = list(objectives)
        self.needs_hidden_states = any(o.needs_hidden_states for o in self.objectives)
        self.needs_attentions = any(o.needs_attentions for o in self.objectives)
        self.replaces_weight_decay = any(o.replaces_weight_decay for o in self.objectives)
        self.sources = list(dict.fromkeys(name for o in self.objectives for name in o.sources))
        self.logs = any(o.logged for o in self.objectives)

    @property
    def owners(self) -> list[Objective]:
        """The objectives that own a module. Read when the flow attaches the modules (after the strategy), so an
        objective may create its module then (distillation's projection: the seeded random initialisations then
        come in the same order as when the flow built it itself)."""
        return [o for o in self.objectives if o.module is not None]

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], state: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | tuple[torch.Tensor, dict, dict]:
        inputs = model_inputs(batch)
        if self.needs_hidden_states:
            inputs["output_hidden_states"] = True
        if self.needs_attentions:
            inputs["output_attentions"] = True
        if self.owners:  # the model is wrapped with their modules (owned.attach_owned_modules)
            inputs["objective_outputs"] = True
        for objective in self.objectives:
            objective.before_forward(batch, state)
        if self.sources and "sources" in batch:  # training batches (owned.WithObjectiveModules runs them)
            inputs["source_inputs"] = {name: self._source_inputs(name, batch, state) for name in self.sources}
        outputs = model(**inputs)
        return self.terms(model, batch, outputs, state)

    def _source_inputs(self, name: str, batch: dict[str, Any], state: Any) -> dict[str, torch.Tensor]:
        inputs = model_inputs(batch["sources"][name])
        for objective in self.objectives:
            if name in objective.sources:
                inputs = objective.source_inputs(name, inputs, state)
        return inputs

    def terms(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], outputs: Any, state: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | tuple[torch.Tensor, dict, dict]:
        """The terms of outputs computed elsewhere (a flow that runs its own forward pass). Objectives see the
        model under its wrappers (DDP, the owned modules), with the parameter names of the model they were built
        on."""
        model = inner_model(model)
        summed: torch.Tensor | None = None
        per_step: dict[str, torch.Tensor] = {}
        logged: dict[str, torch.Tensor] = {}
        for objective in self.objectives:
            for name, value in objective.terms(model, batch, outputs, state).items():
                if name in objective.logged:
                    logged[name] = value.detach()
                elif objective.reduction == "sum":
                    summed = value if summed is None else summed + value
                else:
                    per_step[name] = value
        if summed is None:  # regularisers alone are refused by the config; keep the loop's types regardless
            summed = torch.zeros((), device=batch["labels"].device)
        return (summed, per_step, logged) if self.logs else (summed, per_step)


def build_objectives(
    config: Any,
    model: torch.nn.Module,
    accelerator: Accelerator | None = None,
    teacher: Any = None,
    **data: Any,
) -> ObjectiveSet:
    """Build ``config.objectives`` on ``model``; call it before the strategy changes the model.

    Args:
        teacher: what the run's teacher provides (``ObjectiveContext.teacher``), for the objectives that read one.
        data: ``tokenizer``, ``features``, ``sources`` and ``encode`` for :class:`ObjectiveContext`.

    Returns:
        The set, teaching terms first and regularisers after them (each group in list order): the order in which
        the per-step terms add up, which fixes the last bits of the loss.

    Raises:
        ConfigError: an objective that reads a teacher in a run without one.
    """
    from hftransfer.registry import get_objective

    built, regularisers = [], []
    for objective_config in config.objectives:
        entry = get_objective(objective_config.name)
        if entry.needs_teacher and teacher is None:
            raise ConfigError(
                f"objectives: {entry.name} needs a teacher (its {', '.join(entry.teacher_outputs)}), and only a "
                "distillation run has one: run recipes/distill.py with distill.teacher=<a fine-tuned model>, or "
                f"remove {entry.name} from objectives"
            )
        context = ObjectiveContext(model, config, objective_config, accelerator, teacher, **data)
        objective = entry.build(context)
        (regularisers if entry.regulariser else built).append(objective)
    return ObjectiveSet(built + regularisers)

"""Domain-adversarial training (DANN; Ganin & Lempitsky, 2015, "Unsupervised domain adaptation by
backpropagation"; Ganin et al., 2016, JMLR): a domain head learns to tell the labelled text from a named source of
unlabelled target-domain text, and a gradient-reversal layer between the encoder and the head makes the encoder
work against it, so the features the task head reads stop telling the domains apart.

The head reads the run's representation (``representation.py``): one pooled row per text for sequence tasks, one
row per real token for token tasks. The objective owns the head (``owned.py``): it trains in its own AdamW group
and stays out of the export. The reversal's strength λ follows the paper's schedule ``2 / (1 + exp(-γ·p)) - 1``
over training progress p: near 0 at first, while the head is still guessing and its gradient is noise, then
towards 1.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hftransfer.errors import ConfigError
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.objectives.representation import (
    AlignmentConfig,
    Pooling,
    aligned_task,
    representation,
    requires_encoder_training,
)
from hftransfer.registry import register_objective

__all__ = ["Dann", "DannConfig", "ganin_lambda", "reverse_gradient"]


class _ReverseGradient(torch.autograd.Function):
    """Identity on the way forward; the gradient times ``-lambda_`` on the way back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)  # a new tensor object: autograd must see this node, not the input itself

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.lambda_, None


def reverse_gradient(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """The gradient-reversal layer: returns ``x`` unchanged, and multiplies the gradient flowing back through it
    by ``-lambda_``, so whatever is upstream climbs the loss that the layers downstream descend."""
    return _ReverseGradient.apply(x, float(lambda_))


def ganin_lambda(progress: float, gamma: float = 10.0) -> float:
    """λ at training progress ``progress`` (0 at the first step, 1 at the end): ``2 / (1 + exp(-gamma·p)) - 1``,
    0 at the start and rising towards 1; a larger ``gamma`` gets there sooner."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def training_progress(state: Any) -> float:
    """``state.step / state.total_steps`` clipped to [0, 1]; 1.0 without a state or a step budget (outside the
    loop the reversal is at full strength)."""
    if state is None or not getattr(state, "total_steps", 0):
        return 1.0
    return min(max(state.step / state.total_steps, 0.0), 1.0)


@dataclass
class DannConfig(AlignmentConfig):
    """Make the encoder's features of the labelled text and of a target source indistinguishable."""

    name: str = "dann"
    weight: float = 1.0
    """Multiplier of the domain loss (a per-step term, logged as ``domain``): the encoder receives ``-λ·weight``
    times the domain loss's gradient."""
    pooling: Pooling = "cls"
    """Sequence tasks: the head reads the first token's state (``cls``) or the mean over real tokens (``mean``).
    Token tasks always classify every real token's own state."""
    schedule: Literal["ganin", "constant"] = "ganin"
    """λ over training: ``ganin`` rises from 0 towards 1 as ``2 / (1 + exp(-gamma·step/total_steps)) - 1``;
    ``constant`` keeps it at 1 (``weight`` alone sets the strength)."""
    gamma: float = 10.0
    """Steepness of the ``ganin`` schedule (the paper's 10: λ is past 0.9 a third of the way in)."""
    head_hidden_size: int = 256
    """Width of the domain head's hidden layer (Linear → ReLU → Dropout → Linear); 0 for a linear head."""
    head_dropout: float = 0.1
    """Dropout in the domain head (after its ReLU; unused by a linear head)."""
    head_lr: float | None = None
    """Learning rate of the domain head; default ``strategy.head_lr``, else ``train.lr``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"objectives.{self.name}"
        if self.schedule not in ("ganin", "constant"):
            raise ConfigError(f"{where}.schedule must be 'ganin' or 'constant', got {self.schedule!r}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ConfigError(f"{where}.gamma must be > 0, got {self.gamma}")
        if self.head_hidden_size < 0:
            raise ConfigError(
                f"{where}.head_hidden_size must be >= 0 (0: a linear head), got {self.head_hidden_size}"
            )
        if self.head_lr is not None and not self.head_lr > 0:
            raise ConfigError(f"{where}.head_lr must be > 0, got {self.head_lr}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(f"{where}.head_dropout must be in [0, 1), got {self.head_dropout}")


def domain_head(width: int, hidden_size: int, dropout: float) -> nn.Module:
    """``[rows, width] -> [rows, 1]``: the domain logit (target = 1). An MLP, or a linear map when ``hidden_size``
    is 0 (a weak head: with it the encoder can fool the head by moving along one direction only)."""
    if hidden_size == 0:
        return nn.Linear(width, 1)
    return nn.Sequential(
        nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, 1)
    )


def domain_terms(labelled: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The balanced domain loss and accuracy of the domain logits of labelled rows (domain 0) and target rows
    (domain 1): each the mean over the two domains of that domain's mean, so a batch-size (or, for tokens, a
    length) mismatch between the domains does not bias them, and chance is 0.5 accuracy, ``log 2`` loss."""
    labelled, target = labelled.float(), target.float()
    loss = 0.5 * (
        F.binary_cross_entropy_with_logits(labelled, torch.zeros_like(labelled))
        + F.binary_cross_entropy_with_logits(target, torch.ones_like(target))
    )
    with torch.no_grad():
        accuracy = 0.5 * ((labelled < 0).float().mean() + (target > 0).float().mean())
    return loss, accuracy


class Dann(Objective):
    """``weight * balanced BCE(domain head(GRL_λ(features)), domain)`` over the labelled batch and the source's.

    The head's parameters get the plain gradient of that term (λ never reaches them: it learns from the first
    step, and AdamW's per-parameter scaling makes its updates nearly independent of ``weight``); the encoder
    gets ``-λ·weight`` times it through the reversal.
    """

    name = "dann"
    needs_hidden_states = True
    logged = ("domain_accuracy", "dann_lambda")

    def __init__(self, context: ObjectiveContext) -> None:
        config = context.objective
        task = aligned_task(context)  # a one-task run, and a layer the model has
        if task == "token-classification" and config.pooling != "cls":
            raise ConfigError(
                f"objectives.{self.name}.pooling is for sequence tasks; token tasks classify every token's state"
            )
        self.task = task
        self.weight = config.weight
        self.schedule = config.schedule
        self.gamma = config.gamma
        self.pooling = config.pooling
        self.layer = config.layer
        self.sources = (config.source,)
        self.head_shape = (context.model.config.hidden_size, config.head_hidden_size, config.head_dropout)
        self.module_lr = config.head_lr  # its AdamW group's LR (owned.attach_owned_modules)
        self.lambda_ = self.strength(None)

    @functools.cached_property
    def module(self) -> nn.Module:  # type: ignore[override]
        # Created when the flow attaches the owned modules (after the strategy): the strategy's random draws
        # (LoRA's) come out as in a run without DANN.
        return domain_head(*self.head_shape)

    def strength(self, state: Any) -> float:
        """λ at the loop state ``state`` (the schedule's end value when None)."""
        if self.schedule == "constant":
            return 1.0
        return ganin_lambda(training_progress(state), self.gamma)

    def before_forward(self, batch: dict[str, Any], state: Any) -> None:
        self.lambda_ = self.strength(state)

    def extend_outputs(self, outputs: Any, module: nn.Module) -> None:
        sources = outputs.get("sources") if hasattr(outputs, "get") else None
        if not sources or self.sources[0] not in sources:
            return  # a forward without the source's batch: no domain term

        def domain_logits(model_outputs: Any) -> torch.Tensor:
            # The wrapper (owned.py) leaves each forward's attention mask on its outputs.
            rows = representation(model_outputs, model_outputs, self.task, self.pooling, self.layer)
            return module(reverse_gradient(rows, self.lambda_)).squeeze(-1)  # [rows]

        outputs["domain_logits"] = (domain_logits(outputs), domain_logits(sources[self.sources[0]]))

    def terms(self, model: nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        logits = outputs.get("domain_logits") if hasattr(outputs, "get") else None
        if logits is None:
            return {}
        loss, accuracy = domain_terms(*logits)
        return {
            "domain": self.weight * loss,
            "domain_accuracy": accuracy,
            "dann_lambda": torch.tensor(self.lambda_, device=loss.device),
        }


def describe_dann(config: dict[str, Any]) -> str:
    schedule = config.get("schedule", "ganin")
    strength = (
        f"Ganin schedule, gamma {config.get('gamma')}" if schedule == "ganin" else "constant lambda = 1"
    )
    return (
        f"domain-adversarial training (DANN) against the unlabelled source {config.get('source')!r} "
        f"(weight {config.get('weight')}, {strength})"
    )


register_objective(
    "dann",
    config=DannConfig,
    build=Dann,
    regulariser=True,
    requires=requires_encoder_training,
    describe=describe_dann,
)

"""The representations that domain-adaptation objectives compare, and the checks they share: a pooled vector per text for sequence tasks, a
vector per real token for token tasks, from the model's hidden states (``needs_hidden_states = True``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from hftransfer.config import ObjectiveConfig
from hftransfer.errors import ConfigError

Pooling = Literal["cls", "mean"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """``[batch, seq, width] -> [batch, width]``: the first token's state, or the mean over real tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def token_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[batch, seq, width] -> [real tokens, width]``: every position the attention mask keeps."""
    return hidden[attention_mask.bool()]


def representation(
    outputs: Any, inputs: dict[str, torch.Tensor], task: str, pooling: Pooling = "cls", layer: int = -1
) -> torch.Tensor:
    """The rows an objective compares across domains: one per text (sequence tasks, pooled) or one per real token
    (token tasks), from hidden layer ``layer`` of ``outputs`` (a forward with ``output_hidden_states=True``) on
    ``inputs`` (the batch that produced them: its attention mask)."""
    hidden = outputs.hidden_states[layer]
    mask = inputs["attention_mask"]
    if task == "token-classification":
        return token_states(hidden, mask)
    return pool(hidden, mask, pooling)


def paired_rows(
    outputs: Any, batch: dict[str, Any], source: str, task: str, pooling: Pooling, layer: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The labelled batch's rows and source ``source``'s batch's rows, or None for a forward pass without the
    source (outside training)."""
    if "sources" not in outputs:
        return None
    labelled = representation(outputs, batch, task, pooling, layer)
    return labelled, representation(
        outputs["sources"][source], batch["sources"][source], task, pooling, layer
    )


@dataclass
class AlignmentConfig(ObjectiveConfig):
    """The fields of the objectives that compare the labelled text's representation with a named source's."""

    source: str = "target"
    """The named source (``sources: [{name: ..., data: ...}]``) of unlabelled target-domain text."""
    pooling: Pooling = "mean"
    """How a sequence task's text becomes one row: the first token's state (``cls``) or the mean over real tokens
    (``mean``). Token tasks compare every real token's own state."""
    layer: int = -1
    """Which hidden state to compare: -1 the last layer's output, 0 the embeddings (Python indexing)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_alignment_fields(self)


def check_alignment_fields(config: Any) -> None:
    """Checks of the fields the alignment objectives share (``source``, ``pooling``, ``layer``: a layer the model
    has is checked when the objective is built, :func:`aligned_task`).

    Raises:
        ConfigError: naming ``objectives.<name>.<field>``.
    """
    where = f"objectives.{config.name}"
    if not config.source or not all(c.isalnum() or c in "_-" for c in config.source):
        raise ConfigError(
            f"{where}.source must name a source (letters, digits, '_', '-'), got {config.source!r}"
        )
    if config.pooling not in ("cls", "mean"):
        raise ConfigError(f"{where}.pooling must be 'cls' or 'mean', got {config.pooling!r}")
    if isinstance(config.layer, bool) or not isinstance(config.layer, int):
        raise ConfigError(f"{where}.layer must be an integer, got {config.layer!r}")


def aligned_task(context: Any) -> str:
    """The run's task, after checking that ``layer`` indexes the model's hidden states (the embeddings and one
    per layer).

    Raises:
        ConfigError: a run of several tasks (it has no named sources); a layer the model does not have, naming
            ``objectives.<name>.layer``.
    """
    config = context.objective
    task = getattr(context.config, "task", None)
    if task is None:
        raise ConfigError(
            f"objectives: {config.name} reads a named source (sources: [...]), which only one-task runs have"
        )
    layers = getattr(context.model.config, "num_hidden_layers", None)
    if layers is not None and not -(layers + 1) <= config.layer <= layers:
        raise ConfigError(
            f"objectives.{config.name}.layer={config.layer} is not a hidden state of this model: it has "
            f"{layers + 1} (the embeddings and {layers} layers), so use -{layers + 1}..{layers}"
        )
    return task


def requires_encoder_training(strategy: Any) -> str | None:
    """Alignment moves the encoder's features, so it refuses strategies whose encoder never changes."""
    if strategy.trains_encoder:
        return None
    return (
        "the encoder never changes, so its features cannot move towards the target domain's; use a strategy "
        "that trains the encoder (full, freeze, lora, ...)"
    )


def check_single_label_sequences(config: Any, name: str, verb: str) -> None:
    """What the objectives that group texts by label (``contrastive``, ``prototypical``) need of the run.

    Raises:
        ConfigError: not a single-label sequence-classification run (``verb``: how the objective uses the label).
    """
    from hftransfer.config.problem import SINGLE_LABEL

    task = getattr(config, "task", None)
    problem = getattr(getattr(config, "data", None), "problem_type", SINGLE_LABEL)
    if task != "sequence-classification" or problem != SINGLE_LABEL:
        raise ConfigError(
            f"objectives: {name} {verb} texts by their one class label, so it needs a single-label "
            f"sequence-classification run (this one: task={task}, data.problem_type={problem})"
        )


def encoder_must_train(what: str) -> Any:
    """A ``requires`` check for an objective that moves the encoder's embeddings (``what``: its loss, for the
    message): refused with strategies that keep the encoder fixed."""

    def requires(strategy: Any) -> str | None:
        if strategy.trains_encoder:
            return None
        return f"the encoder never changes, so {what} cannot move its embeddings; use full, freeze, lora, ..."

    return requires

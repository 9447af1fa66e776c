"""Progressive neural networks (Rusu et al. 2016) built from Hugging Face encoder classifiers.

Task 1 trains column 0, an ordinary ``AutoModelFor{Token,Sequence}Classification``. Task ``k`` adds column
``k - 1``: a fresh copy of the pretrained encoder with its own head, whose encoder layers also read the frozen
earlier columns' hidden states through :class:`LateralAdapter` s. Earlier columns never change, so their tasks'
predictions stay bit-identical while later tasks train, and later tasks can reuse what earlier ones learned.

How a lateral is wired in (the same for BERT, RoBERTa, MPNet, ELECTRA, DistilBERT, plain or peft-wrapped):

- the earlier columns run first (no grad, eval mode), progressively: column ``j`` reads columns ``< j``;
- hidden state ``l`` of a column is the input of its encoder layer ``l`` (``0`` = embeddings output), taken
  before that layer's own laterals are added, i.e. what the column itself computed up to layer ``l - 1``;
- the target column then runs with a forward pre-hook on every encoder layer ``l`` that adds
  ``sum_j laterals[k][l][j](hidden_j[l])`` to the layer's input hidden states;
- and, as the paper's output layer reads the earlier columns' last hidden layer, a forward hook on its last encoder
  layer adds ``sum_j laterals[k][L][j](hidden_j[L])`` to that layer's output (``L`` = number of layers;
  ``hidden_j[L]`` is column ``j``'s last layer output), which the head reads. Without it the earlier columns'
  most task-specific layer reaches the new column only through layer inputs, and a short run barely uses them.
  Columns saved before it existed have no output lateral (``output_lateral=False``).

The hooks only exist for the length of one forward, so a column called directly is the plain Hugging Face model.

Columns must share the tokenizer (same vocabulary, so the same ``input_ids`` and padding run through all of them)
and have the same number of encoder layers: layer ``l`` reads layer ``l`` of every earlier column. Hidden sizes may
differ; the adapters project between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from hftransfer.errors import ConfigError
from hftransfer.strategies.layers import EncoderLayout

__all__ = ["LateralAdapter", "ProgressiveModel", "encoder_layers"]


class LateralAdapter(nn.Module):
    """``up(gelu(down(x)))``: an earlier column's hidden states ``[batch, seq, hidden_in]`` mapped to this column's
    width ``[batch, seq, hidden_out]`` through a rank-``rank`` bottleneck.

    The form is the paper's non-linear adapter (a projection, a nonlinearity, then the lateral weights) rather
    than a linear low-rank map: it costs the same, and the nonlinearity lets the adapter pick out features of the
    earlier column instead of only adding a linear rotation of a subspace of its residual stream. The low rank keeps
    the lateral parameters small next to a column (the paper uses the bottleneck for the same reason). ``up`` starts
    at zero, so the adapter outputs exactly 0 and training starts from the plain pretrained encoder; ``down``
    keeps its random initialisation so that ``up`` gets a gradient from the first step (as LoRA's ``B = 0``).
    """

    def __init__(self, hidden_in: int, hidden_out: int, rank: int = 16) -> None:
        super().__init__()
        if rank < 1:
            raise ConfigError(f"lateral rank must be at least 1, got {rank}")
        self.down = nn.Linear(hidden_in, rank)
        self.act = nn.GELU()
        # No bias: a constant shift of the layer input is not knowledge from the earlier column.
        self.up = nn.Linear(rank, hidden_out, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(hidden_states)))  # [batch, seq, hidden_out]


def _config(model: nn.Module) -> Any:
    return EncoderLayout.task_model(model).config


def _encoder(model: nn.Module) -> nn.Module:
    """The encoder of a task model (``model.bert``, ...), under a peft wrapper if there is one."""
    return getattr(EncoderLayout.task_model(model), EncoderLayout.of(model).encoder_prefix)


def _checkpointing(model: nn.Module) -> bool:
    # transformers 5 renamed is_gradient_checkpointing (now deprecated) to is_activation_checkpointing.
    flag = getattr(model, "is_activation_checkpointing", None)
    return bool(getattr(model, "is_gradient_checkpointing", False) if flag is None else flag)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``config.num_hidden_layers`` encoder layers of a transformers encoder classifier (plain or peft-wrapped):
    the one ``ModuleList`` named ``layer`` or ``layers`` under its encoder (``bert.encoder.layer``,
    ``distilbert.transformer.layer``, ...).

    Raises:
        ConfigError: the model is not an encoder classifier, or its layers cannot be told apart.
    """
    layout, encoder = EncoderLayout.of(model), _encoder(model)
    found = [
        module
        for name, module in encoder.named_modules()
        if isinstance(module, nn.ModuleList)
        and name.rsplit(".", 1)[-1] in ("layer", "layers")
        and len(module) == layout.num_layers
    ]
    if len(found) != 1:
        raise ConfigError(
            f"cannot find the {layout.num_layers} encoder layers of {type(encoder).__name__} "
            f"({len(found)} candidate ModuleLists named 'layer' or 'layers'); progressive columns need them"
        )
    return found[0]


class ProgressiveModel(nn.Module):
    """A progressive network: ``columns[k]`` is task ``k``'s Hugging Face model, ``laterals[k][l][j]`` feeds column
    ``j``'s hidden state ``l`` into column ``k``'s encoder layer ``l`` (``j < k``; ``laterals[0]`` is empty).

    Only the last column and its laterals train; every earlier column and its laterals are frozen (no gradients)
    and stay in eval mode even under ``.train()``, so dropout never touches them and their outputs do not change.
    Column indices are 0-based; negative indices count from the last column.

    Args:
        columns: the task models, oldest first; each is added with :meth:`add_column`.
        rank: bottleneck width of every lateral adapter.
    """

    def __init__(self, columns: Iterable[nn.Module] = (), rank: int = 16) -> None:
        super().__init__()
        self.rank = rank
        self.column_ranks: list[int | None] = []  # each column's lateral rank (None: column 0 reads none)
        self.output_laterals: list[
            bool
        ] = []  # whether each column's last layer output reads the earlier columns
        self.columns = nn.ModuleList()
        self.laterals = nn.ModuleList()
        for column in columns:
            self.add_column(column)

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    def add_column(self, task_model: nn.Module, rank: int | None = None, output_lateral: bool = True) -> None:
        """Freeze every existing column (and its laterals), then append ``task_model`` as the column that trains,
        with one :class:`LateralAdapter` per encoder layer and earlier column, of rank ``rank`` (default
        ``self.rank``), and with ``output_lateral`` one more per earlier column into its last layer's output.

        ``task_model`` should be a fresh copy of the pretrained encoder with a new head (its own ``num_labels``,
        ``id2label``, task type); it is used as it is, not copied.

        Raises:
            ConfigError: its vocabulary size or number of encoder layers differs from the first column's.
        """
        config, layers = _config(task_model), encoder_layers(task_model)
        if self.columns:
            first = _config(self.columns[0])
            if config.vocab_size != first.vocab_size:
                raise ConfigError(
                    f"new column has vocab_size {config.vocab_size} but column 0 has {first.vocab_size}: progressive "
                    "columns must share the tokenizer, since the same input_ids run through every column"
                )
            if len(layers) != first.num_hidden_layers:
                raise ConfigError(
                    f"new column has {len(layers)} encoder layers but column 0 has {first.num_hidden_layers}: "
                    "laterals feed layer l from layer l of every earlier column, so the layer counts must match"
                )
        for column, laterals in zip(self.columns, self.laterals):
            for module in (column, laterals):
                module.requires_grad_(False)
                module.eval()
        parameter = next(task_model.parameters())
        rank = self.rank if rank is None else rank
        output_lateral = output_lateral and bool(self.columns)  # column 0 reads nothing
        adapters = nn.ModuleList(
            nn.ModuleList(
                LateralAdapter(_config(earlier).hidden_size, config.hidden_size, rank)
                for earlier in self.columns
            )
            for _ in range(len(layers) + output_lateral)
        ).to(device=parameter.device, dtype=parameter.dtype)
        self.column_ranks.append(rank if self.columns else None)
        self.output_laterals.append(output_lateral)
        self.columns.append(task_model)
        self.laterals.append(adapters)

    def train(self, mode: bool = True) -> ProgressiveModel:
        """Set the training column's mode; frozen columns stay in eval mode (no dropout, same outputs)."""
        super().train(mode)
        for column, laterals in zip(self.columns[:-1], self.laterals[:-1]):
            column.eval()
            laterals.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """What the optimizer should update: the last column's and its laterals' parameters that require grad."""
        for module in (self.columns[-1], self.laterals[-1]):
            yield from (p for p in module.parameters() if p.requires_grad)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        column: int | None = None,
    ) -> Any:
        """Run column ``column`` (default: the last, the one training) on top of the columns before it.

        Returns:
            That column's Hugging Face output (``logits``; ``loss`` when ``labels`` are given).
        """
        if not self.columns:
            raise ValueError("a progressive model needs at least one column; call add_column first")
        target = range(self.num_columns)[-1 if column is None else column]  # IndexError names a bad index
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        # MPNet and DistilBERT take no token_type_ids: pass only what was given.
        inputs = {key: value for key, value in inputs.items() if value is not None}
        if torch.is_grad_enabled() and _checkpointing(self.columns[target]):
            # Checkpointing recomputes the layers during backward, after the hooks that add the laterals are gone.
            raise ConfigError("gradient checkpointing is not supported in a progressive column: turn it off")
        # Hidden states of the earlier columns, each a list over layers of [batch, seq, hidden_j]. No grad: they
        # are frozen, so nothing upstream of the laterals needs a graph.
        sources: list[list[torch.Tensor]] = []
        with torch.no_grad():
            for j in range(target):
                states: dict[int, torch.Tensor] = {}
                with self._hooks(j, sources, record=states):
                    _encoder(self.columns[j])(**inputs)  # the head is not needed, only the layer inputs
                # layer inputs 0..L-1 and the last layer's output L
                sources.append([states[layer] for layer in range(len(encoder_layers(self.columns[j])) + 1)])
        with self._hooks(target, sources):
            return self.columns[target](**inputs, **({} if labels is None else {"labels": labels}))

    @contextmanager
    def _hooks(
        self, column: int, sources: list[list[torch.Tensor]], record: dict[int, torch.Tensor] | None = None
    ) -> Iterator[None]:
        """Pre-hooks on ``column``'s encoder layers, removed on exit even if the forward raises: each records the
        layer's input (into ``record``) and adds the laterals from ``sources`` (the columns before ``column``)."""
        handles = []
        layers, adapters = encoder_layers(self.columns[column]), self.laterals[column]
        try:
            for index, layer in enumerate(layers):
                hook = self._lateral_hook(adapters[index], sources, index, record)
                handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
            last = len(layers)
            output_adapters = adapters[last] if self.output_laterals[column] else None
            hook = self._output_hook(output_adapters, sources, last, record)
            handles.append(layers[-1].register_forward_hook(hook))
            yield
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def _lateral_hook(
        adapters: nn.ModuleList,
        sources: list[list[torch.Tensor]],
        index: int,
        record: dict[int, torch.Tensor] | None,
    ) -> Callable[..., tuple[tuple, dict] | None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            # Encoders pass the hidden states first, positionally (BERT, MPNet) or by keyword (some newer layers).
            key = None if args else next(k for k in ("hidden_states", "x", "hidden_state") if k in kwargs)
            hidden = args[0] if key is None else kwargs[key]  # [batch, seq, hidden]
            if record is not None:
                record[index] = hidden
            if not sources:
                return None
            lateral = sum(adapter(states[index]) for adapter, states in zip(adapters, sources))
            hidden = hidden + lateral.to(hidden.dtype)
            if key is None:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, key: hidden}

        return hook

    @staticmethod
    def _output_hook(
        adapters: nn.ModuleList | None,
        sources: list[list[torch.Tensor]],
        index: int,
        record: dict[int, torch.Tensor] | None,
    ) -> Callable[..., Any]:
        """Records the last layer's output as hidden state ``index`` and adds the output laterals (if any)."""

        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            # A layer returns its hidden states alone or first in a tuple, depending on the architecture.
            hidden = output[0] if isinstance(output, tuple) else output
            if record is not None:
                record[index] = hidden
            if adapters is None or not sources:
                return None
            hidden = hidden + sum(a(states[index]) for a, states in zip(adapters, sources)).to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

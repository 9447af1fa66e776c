"""Dropout masks drawn four to a random number on CPU, where torch draws them one element at a time on one core.

On CPUs without Intel's MKL random streams (AMD, ARM), ``torch.nn.functional.dropout`` fills its mask with
``bernoulli_``, whose CPU kernel runs serially and spends two Mersenne-Twister draws (one double) per element. A
BERT-style encoder draws a mask after the embeddings, twice per layer on the hidden states and once per layer on
the attention probabilities: in the MiniLM-L6 NER recipe on a small AMD CPU ``bernoulli_`` took more of a training
step than anything but the matrix products (measured: docs/results.md). Here one 64-bit draw gives four 16-bit
numbers and an element is kept when its number clears ``round(p * 65536)``: far less time for the mask (measured:
docs/results.md), and the mask kept for the backward pass is a bool (1 byte an element, torch's own dropout keeps a
float).

The drop probability is therefore quantised to 1/65536 (0.1 becomes 0.100006) and the kept elements are scaled by
the exact inverse of the quantised keep probability, so the expected output still equals the input. Draws come from
torch's default CPU generator: runs stay reproducible under ``train.seed``, but masks differ from torch's own dropout
under the same seed. ``train.fast_cpu_dropout=false`` keeps torch's dropout.

``fast_cpu_dropout(model)`` applies this for the duration of a ``with`` block: every ``nn.Dropout`` module becomes a
:class:`FastDropout` (no parameters, so nothing saved changes), and a model whose attention runs through
transformers' SDPA interface switches to :func:`sdpa_with_fast_dropout`, which draws the attention-probability mask
the same way. Both are restored on exit, so the model handed back is the one that came in.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

_LEVELS = 1 << 16  # a mask element is a uniform 16-bit number
#: The attention implementation registered with transformers for CPU training with these masks.
FAST_DROPOUT_ATTENTION = "hftransfer_sdpa_fast_dropout"


def dropout_keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """A bool mask keeping each element with probability ``1 - round(p * 65536) / 65536``, and the scale that makes
    the masked values unbiased (the inverse of that keep probability)."""
    dropped_levels = round(p * _LEVELS)
    numel = math.prod(shape)
    # random_ with from=-2**63 and to=None fills the whole int64 range: four independent uniform int16 per draw.
    draws = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    uniform16 = draws.view(torch.int16)[:numel].view(shape)
    keep = uniform16 >= dropped_levels - _LEVELS // 2  # int16 runs from -32768: P(keep) = 1 - dropped / 65536
    return keep, _LEVELS / (_LEVELS - dropped_levels)


class _ApplyMask(torch.autograd.Function):
    """``x * keep * scale`` that keeps only the bool mask for the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of a CPU tensor with masks drawn four to a 64-bit random number (see the module doc).
    Other devices get ``torch.nn.functional.dropout``."""
    if x.device.type != "cpu" or not 0.0 < p < 1.0 or not x.is_floating_point():
        return nn.functional.dropout(x, p, training=True)
    keep, scale = dropout_keep_mask(x.shape, p)
    return _ApplyMask.apply(x, keep, scale)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` drawing its CPU masks with :func:`fast_dropout`; identical in eval mode and off the CPU."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Dropout's own argument name)
        if not self.training or self.inplace:
            return super().forward(input)
        return fast_dropout(input, self.p)  # which hands other devices and p of 0 or 1 to torch


def sdpa_with_fast_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except that training with attention dropout on CPU draws the mask with
    :func:`dropout_keep_mask`. That case computes attention the way torch's SDPA does on CPU when dropout is on (its
    fused CPU kernel has no dropout, so it falls back to explicit products and softmax); every other case (no
    dropout, another device, causal or grouped-query attention, a position bias) is handed to transformers' SDPA
    function unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    simple = (
        dropout > 0.0
        and query.device.type == "cpu"
        and not causal
        # transformers' SDPA reads only these of the extra arguments (the others, e.g. position_ids, it ignores too)
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and query.shape[1]
        == key.shape[1]
        == value.shape[1]  # same number of heads: no grouped-query attention
        and (attention_mask is None or attention_mask.dim() == 4)
    )
    if not simple:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs,
        )  # fmt: skip
    return attention_with_dropout(
        query, key, value, attention_mask, scaling, lambda p: fast_dropout(p, dropout)
    )


def attention_with_dropout(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    drop: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, None]:
    """Scaled dot-product attention over ``[batch, heads, length, head_dim]`` tensors with ``drop`` applied to the
    probabilities; returns ``[batch, length, heads, head_dim]`` like transformers' attention functions. A bool mask
    marks the key positions to attend to, a float mask is added to the scores."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-2, -1)).mul_(scale)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(drop(probs), value).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if FAST_DROPOUT_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(FAST_DROPOUT_ATTENTION, sdpa_with_fast_dropout)
        # The same masks as SDPA (bool, or none at all when nothing is padded).
        AttentionMaskInterface.register(FAST_DROPOUT_ATTENTION, sdpa_mask)


def _sdpa_models(model: nn.Module) -> list[nn.Module]:
    """The outermost transformers models inside ``model`` (itself included) that attend through SDPA with attention
    dropout. A multitask model holds its encoder as a submodule; a task model's inner encoder shares its config, so
    switching the outer one switches both."""
    from transformers import PreTrainedModel

    found: list[nn.Module] = []
    for module in model.modules():  # pre-order: outer models come first
        if not isinstance(module, PreTrainedModel) or any(module.config is outer.config for outer in found):
            continue
        if (
            module.config._attn_implementation == "sdpa"
            and getattr(module.config, "attention_probs_dropout_prob", 0.0)
            and module._can_set_attn_implementation()
        ):
            found.append(module)
    return found


@contextlib.contextmanager
def fast_cpu_dropout(model: nn.Module) -> Iterator[int]:
    """Within the block, ``model``'s dropout (modules and SDPA attention) draws its CPU masks with
    :func:`fast_dropout`; on exit the model has its own modules and attention implementation back. Yields how many
    dropout sites were switched (modules, plus one per switched attention implementation)."""
    swapped = [module for module in model.modules() if type(module) is nn.Dropout]
    for module in swapped:
        module.__class__ = FastDropout  # same attributes, no parameters or buffers: nothing saved changes
    attending = _sdpa_models(model)
    if attending:
        _register_attention()
    for module in attending:
        module.set_attn_implementation(FAST_DROPOUT_ATTENTION)
    try:
        yield len(swapped) + len(attending)
    finally:
        for module in swapped:
            module.__class__ = nn.Dropout
        for module in attending:
            module.set_attn_implementation("sdpa")

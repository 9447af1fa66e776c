"""Gradient-norm clipping whose rescaling rides along in a fused AdamW step on CPU.

``torch.nn.utils.clip_grad_norm_`` reads every gradient once for the norm (a ``vector_norm`` per tensor) and again to
multiply it by the clip coefficient; the multiply runs even when the norm is under the limit, because the
coefficient is clamped to 1 without asking the device. A BERT-style model's word-embedding gradient is dense, so on
MiniLM-L6 (22.7M parameters, half of them word embeddings) both passes over the gradients are a visible part of a
training step on a small CPU (measured: docs/results.md).

torch's fused Adam/AdamW kernels take a ``grad_scale`` tensor and divide every gradient by it as they read it: the
protocol ``GradScaler`` uses to unscale fp16 gradients inside the step. Handing the clip factor over that way makes
the multiply free, and the norm is summed from per-tensor BLAS dot products, faster than ``vector_norm`` here
(measured: docs/results.md). The update is the same as clipping then stepping, up to float rounding (a division instead of a multiply).

Only where that protocol is unambiguous: a CPU run with one process or DDP (gradients already reduced, so the local
norm is the global one), no fp16 gradient scaler (which would own ``grad_scale``) and a fused torch Adam/AdamW.
Everything else (GPU, FSDP, DeepSpeed, other optimizers) goes through ``accelerator.clip_grad_norm_``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

_EPS = 1e-6  # as in torch.nn.utils.clip_grad_norm_: coefficient = max_norm / (norm + 1e-6)


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps torch's


def _can_defer(accelerator: Accelerator, optimizer: torch.optim.Optimizer) -> bool:
    inner = _inner(optimizer)
    return (
        accelerator.device.type == "cpu"
        and accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU)
        and getattr(accelerator, "scaler", None) is None
        and isinstance(inner, torch.optim.Adam)  # AdamW included
        and bool(inner.defaults.get("fused"))
        and getattr(inner, "_step_supports_amp_scaling", False)
    )


def gradient_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The L2 norm of all gradients together (a 0-d float32 tensor), from one dot product per gradient; parameters
    without a gradient (frozen or unused) are left out."""
    squares = [
        torch.dot(flat, flat)
        for flat in (p.grad.reshape(-1).float() for p in parameters if p.grad is not None)
    ]
    if not squares:
        return torch.zeros(())
    return torch.stack(squares).sum().sqrt()


def clip_gradients(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    max_norm: float,
) -> torch.Tensor:
    """Clip the global gradient norm to ``max_norm`` and return the norm before clipping.

    Where the step is a fused AdamW on CPU (see the module doc) the gradients are left as they are and the optimizer
    is told to divide them by ``max(1, (norm + 1e-6) / max_norm)`` during its next step; call
    :func:`end_deferred_clip` after that step. Elsewhere this is ``accelerator.clip_grad_norm_``.
    """
    if not _can_defer(accelerator, optimizer):
        return accelerator.clip_grad_norm_(model.parameters(), max_norm)
    norm = gradient_norm(model.parameters())
    _inner(optimizer).grad_scale = torch.clamp((norm + _EPS) / max_norm, min=1.0)
    return norm


def end_deferred_clip(optimizer: torch.optim.Optimizer) -> None:
    """Forget a deferred clip factor, so that it never divides a later step's gradients."""
    inner = _inner(optimizer)
    if "grad_scale" in vars(inner):
        del inner.grad_scale

"""FLOP accounting: this machine's dense matmul peak, and the training FLOPs of a run.

Training FLOPs are counted, not estimated by rule of thumb: torch's ``FlopCounterMode`` runs one forward and backward
of the model on the meta device (shapes only: no weights, no arithmetic) at three sequence lengths, which fixes the
exact quadratic FLOPs(S) = c0 + c1*S + c2*S^2 of one sequence (c2: attention scores and mixing). A run is then
``sequences * FLOPs(mean padded length)``; with length-grouped batches the lengths within a batch are close, so
the attention term is barely under-counted (and it is a few percent of the total for short texts). Only matrix
products are counted (as in every MFU figure): embeddings, norms, activations and the optimizer are overhead.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

AUTO = {
    "token-classification": AutoModelForTokenClassification,
    "sequence-classification": AutoModelForSequenceClassification,
}


def matmul_peak_flops(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int = 2048,
    min_seconds: float = 1.0,
    rounds: int = 3,
) -> float:
    """FLOP/s of a large square ``torch.matmul`` on ``device``: the best of ``rounds`` timed runs of at least
    ``min_seconds`` each (2*size^3 FLOPs per product)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.matmul(a, b, out=out)  # warm-up: thread pool start, kernel selection
    sync()
    best = 0.0
    for _ in range(rounds):
        done, started = 0, time.perf_counter()
        while True:
            torch.matmul(a, b, out=out)
            done += 1
            sync()
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        best = max(best, 2 * size**3 * done / elapsed)
    return best


def sequence_flops(model_dir: str, task: str, seq_len: int) -> float:
    """Matmul FLOPs of one training step (forward + backward) on one sequence of ``seq_len`` tokens."""
    return _sequence_flops(Path(model_dir, "config.json").read_text(), task, seq_len)


@functools.cache
def _sequence_flops(config_json: str, task: str, seq_len: int) -> float:
    # Keyed by the config's text: every seed's exported model of one setting shares one count.
    config = AutoConfig.for_model(**json.loads(config_json))
    with torch.device("meta"):
        model = AUTO[task].from_config(config, attn_implementation="eager")
    ids = torch.zeros((1, seq_len), dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids).logits  # no mask: the same FLOPs, and no data-dependent branch
        logits.sum().backward()
    return float(counter.get_total_flops())


def flops_coefficients(model_dir: str, task: str) -> tuple[float, float, float]:
    """``(c0, c1, c2)`` with one training sequence of length S costing c0 + c1*S + c2*S^2 matmul FLOPs."""
    lengths = (16, 32, 64)
    c2, c1, c0 = torch.linalg.solve(
        torch.tensor([[s * s, s, 1.0] for s in lengths], dtype=torch.float64),
        torch.tensor([sequence_flops(model_dir, task, s) for s in lengths], dtype=torch.float64),
    ).tolist()
    return c0, c1, c2


def training_flops(model_dir: str, task: str, sequences: int, padded_tokens: int) -> float:
    """Matmul FLOPs of training on ``sequences`` sequences padded to ``padded_tokens`` tokens in all."""
    c0, c1, c2 = flops_coefficients(model_dir, task)
    mean_length = padded_tokens / sequences
    return sequences * (c0 + c1 * mean_length + c2 * mean_length**2)

"""The representations that domain-adaptation objectives compare: a pooled vector per text for sequence tasks, a
vector per real token for token tasks, from the model's hidden states (``needs_hidden_states = True``)."""

from __future__ import annotations

from typing import Any, Literal

import torch

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

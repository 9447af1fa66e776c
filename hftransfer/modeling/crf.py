"""A linear-chain CRF on a token classifier's emissions (``model.head=crf``).

The Hugging Face model stays as it is: its logits are the CRF's *emissions*. The CRF adds learned start, transition
and end scores and scores whole tag sequences of a sentence's words, one position per word (its first sub-token:
``word_index >= 0``, the positions that carry labels). Training maximises the log-likelihood of the gold sequence
(:func:`crf_nll`, the forward algorithm in log space, batched, padding masked); decoding is Viterbi over the
learned scores (:func:`~hftransfer.evaluation.decoding.best_path`).

The moves IOB2 forbids (``I-X`` first, or after anything but ``B-X`` / ``I-X``) are **masked**, not merely
initialised strongly negative: a masked move is never decoded however long training runs (AdamW's decay pulls a
learned -1e4 towards 0), the likelihood normalises over valid sequences only, so no probability mass is spent
learning what the rules already say, and the masked scores get exactly zero gradient. The data is IOB2 (readers
repair IOB1), so a gold sequence never takes a masked move. The mask is a large finite number, not -inf: a row of
all-forbidden moves then still has a finite log-sum-exp and gradient.

A sentence longer than ``data.max_length`` is trained as windows (``hftransfer/data/features.py``): a window that
starts inside the sentence gets no start score (its first word may well be ``I-X``); evaluation and prediction
decode the whole sentence's words at once.

The exported ``crf.safetensors`` holds this module's state dict (the learned scores and the masks) with the label
names in its metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from hftransfer.errors import ConfigError
from hftransfer.evaluation.decoding import iob2_constraints
from hftransfer.utils import atomic_write

CRF_FILE = "crf.safetensors"
FORBIDDEN = -1e4  # the score of a masked move: exp(-1e4) is 0 in float32, and sums of it stay finite
IGNORE_INDEX = -100


class CRFScores(NamedTuple):
    """The effective scores (masked moves at ``FORBIDDEN``) as numpy arrays, for decoding."""

    start: np.ndarray  # [tags]
    transition: np.ndarray  # [previous, next]
    end: np.ndarray  # [tags]


class CRF(nn.Module):
    """Learned start / transition / end scores over ``label_names``, IOB2-invalid moves masked.

    Calling it returns the effective ``(start, transition, end)`` scores: the objective that owns it runs it inside
    the model's forward, so that DDP sees its parameters (``hftransfer/objectives/owned.py``).
    """

    def __init__(self, label_names: Sequence[str]) -> None:
        super().__init__()
        self.label_names = list(label_names)
        size = len(self.label_names)
        start, transition = iob2_constraints(self.label_names)
        # Zero start: the emissions alone decide until the data teaches the transitions something.
        self.start_scores = nn.Parameter(torch.zeros(size))
        self.transition_scores = nn.Parameter(torch.zeros(size, size))
        self.end_scores = nn.Parameter(torch.zeros(size))
        # Float 0/1 masks rather than bool: every backend broadcasts float buffers (DDP syncs buffers).
        self.register_buffer("start_mask", torch.from_numpy(start.astype(np.float32)))
        self.register_buffer("transition_mask", torch.from_numpy(transition.astype(np.float32)))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(start [tags], transition [previous, next], end [tags])`` with the masked moves at ``FORBIDDEN``."""
        start = torch.where(self.start_mask > 0, self.start_scores, FORBIDDEN)
        transition = torch.where(self.transition_mask > 0, self.transition_scores, FORBIDDEN)
        return start, transition, self.end_scores

    @torch.no_grad()
    def scores(self) -> CRFScores:
        """The effective scores as numpy arrays (float64), for :func:`~hftransfer.evaluation.decoding.best_path`."""
        return CRFScores(*(t.detach().double().cpu().numpy() for t in self()))

    def save(self, path: str | Path) -> None:
        """Write the state dict to ``path`` (safetensors, atomically), with the label names in its metadata."""
        tensors = {
            name: tensor.detach().float().cpu().contiguous() for name, tensor in self.state_dict().items()
        }
        metadata = {"format": "hftransfer-crf", "label_names": json.dumps(self.label_names)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), what="the CRF scores")

    def load(self, path: str | Path) -> None:
        """Load what :meth:`save` wrote into this module (in place: an optimizer keeps its parameters).

        Raises:
            ConfigError: the file is missing or was saved for other labels.
        """
        tensors = _read(path, self.label_names)
        with torch.no_grad():
            for name, tensor in self.state_dict().items():
                tensor.copy_(tensors[name])

    @classmethod
    def from_file(cls, path: str | Path, label_names: Sequence[str]) -> CRF:
        """A CRF over ``label_names`` with the scores saved at ``path`` (see :meth:`load`)."""
        crf = cls(label_names)
        crf.load(path)
        return crf


def _read(path: str | Path, label_names: Sequence[str]) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: the model's config says hftransfer_decoding=crf, and its transition scores live "
            "in that file (written with the model by a model.head=crf run); copy it next to the model, or decode "
            "with decoding='argmax' (the emissions' argmax, what transformers' pipeline does)"
        )
    with safe_open(str(path), framework="pt") as handle:
        saved = json.loads((handle.metadata() or {}).get("label_names", "null"))
    tensors = load_file(str(path))
    if saved != list(label_names):
        raise ConfigError(f"{path} was saved for the labels {saved}, the model has {list(label_names)}")
    return tensors


def find_crf(model: nn.Module) -> CRF | None:
    """The CRF among ``model``'s submodules (an objective's owned module; wrappers included), or None."""
    return next((module for module in model.modules() if isinstance(module, CRF)), None)


def word_positions(
    labels: torch.Tensor, word_index: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's labelled word positions moved to the front, in order.

    Args:
        labels: ``[batch, seq]`` with -100 where nothing is scored.
        word_index: ``[batch, seq]``, the word whose first sub-token each token is (-1 elsewhere); without it
            every labelled position is a word (features that keep only labelled positions).

    Returns:
        ``order [batch, seq]`` (gather index: the word positions first), ``lengths [batch]`` (words per row) and
        ``continues [batch]`` (True for a window whose first word is not its sentence's first).
    """
    words = labels != IGNORE_INDEX
    # data.label_all_subwords labels the other sub-tokens too: score each word once.
    if word_index is not None:
        words = words & (word_index >= 0)
    # A stable sort of "not a word" puts the word positions first and keeps their order.
    order = torch.sort((~words).to(torch.int8), dim=1, stable=True).indices
    lengths = words.sum(dim=1)
    if word_index is None:
        continues = torch.zeros_like(lengths, dtype=torch.bool)
    else:
        continues = word_index.gather(1, order[:, :1]).squeeze(1) > 0
    return order, lengths, continues


def crf_nll(
    emissions: torch.Tensor,
    labels: torch.Tensor,
    scores: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    word_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each row's negative log-likelihood of its gold word tags (0 for a row without labelled words).

    Args:
        emissions: ``[batch, seq, tags]`` the token model's logits.
        labels: ``[batch, seq]`` gold tag ids, -100 where not scored.
        scores: the CRF's ``(start, transition, end)`` (calling :class:`CRF`).
        word_index: see :func:`word_positions`.

    Returns:
        ``[batch]``, in float32.
    """
    start, transition, end = (score.float() for score in scores)
    order, lengths, continues = word_positions(labels, word_index)
    width = max(int(lengths.max()), 1) if lengths.numel() else 1
    order = order[:, :width]
    emissions = emissions.float().gather(1, order[..., None].expand(-1, -1, emissions.shape[-1]))
    tags = labels.gather(1, order).clamp(min=0)  # [batch, words]; padding's tag is never counted
    # A window that continues a sentence has no start score: its first word may be I-X.
    start = torch.where(continues[:, None], torch.zeros_like(start), start)  # [batch, tags]
    return log_partition(emissions, lengths, start, transition, end) - path_score(
        emissions, tags, lengths, start, transition, end
    )


def log_partition(
    emissions: torch.Tensor,
    lengths: torch.Tensor,
    start: torch.Tensor,
    transition: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """``[batch]`` log of the summed exp-scores of every tag sequence (forward algorithm); 0 for empty rows.

    Args:
        emissions: ``[batch, words, tags]``, each row's first ``lengths`` words real; start: ``[batch, tags]``.
    """
    alpha = start + emissions[:, 0]  # [batch, tags]: log-sum of the paths ending in each tag
    for word in range(1, emissions.shape[1]):
        step = torch.logsumexp(alpha[:, :, None] + transition, dim=1) + emissions[:, word]
        alpha = torch.where((word < lengths)[:, None], step, alpha)  # a finished row keeps its value
    return torch.where(lengths > 0, torch.logsumexp(alpha + end, dim=1), 0.0)


def path_score(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    lengths: torch.Tensor,
    start: torch.Tensor,
    transition: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """``[batch]`` score of each row's tag sequence ``tags [batch, words]`` (first ``lengths`` words); 0 if empty."""
    real = torch.arange(tags.shape[1], device=tags.device)[None, :] < lengths[:, None]  # [batch, words]
    emitted = (emissions.gather(2, tags[..., None]).squeeze(-1) * real).sum(dim=1)
    moved = (transition[tags[:, :-1], tags[:, 1:]] * real[:, 1:]).sum(dim=1)
    first = start.gather(1, tags[:, :1]).squeeze(1)
    last = tags.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    return torch.where(lengths > 0, first + emitted + moved + end[last], 0.0)

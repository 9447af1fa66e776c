"""Distillation loss terms on tensors; each returns a per-batch mean (the objective weights and logs them).

* :func:`soft_kl`: ``T² · KL(softmax(teacher/T) || softmax(student/T))`` per item (Hinton et al., 2015: the T²
  keeps gradient magnitudes comparable across temperatures), averaged over the items that ``mask`` keeps.
* :func:`hidden_mse`: mean squared error between mapped student and teacher hidden states (through a learned
  projection when the widths differ), over real tokens.
* :func:`attention_mse`: mean squared error between mapped attention maps (same head count required).
* :func:`rkd_distance` / :func:`rkd_angle`: relational KD (Park et al., 2019): the Huber loss between the
  structures of two sets of representations of the same items (their normalised pairwise distances, the angles of
  their triplets), so the two widths may differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def soft_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Temperature-scaled KL divergence per item, times T², averaged over kept items.

    Args:
        student_logits / teacher_logits: ``[..., num_labels]`` with the same shape.
        mask: boolean ``[...]``: items to average over (e.g. labelled or first-subword positions); None = all.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} != teacher {tuple(teacher_logits.shape)}"
        )
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_item = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=-1)
    if mask is not None:
        per_item = per_item[mask]
    if per_item.numel() == 0:
        return student_logits.sum() * 0.0  # keeps the graph (and DDP) intact on a batch with nothing to match
    return per_item.mean() * temperature**2


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer ``i`` (1..S) ↔ teacher layer ``round(i · T / S)``; hidden-state indices (0 = embeddings)."""
    return [(i, round(i * teacher_layers / student_layers)) for i in range(1, student_layers + 1)]


class HiddenProjection(nn.Module):
    """One learned linear map per matched layer from the student's width to the teacher's (identity if equal)."""

    def __init__(self, student_width: int, teacher_width: int, count: int) -> None:
        super().__init__()
        same = student_width == teacher_width
        self.maps = nn.ModuleList(
            nn.Identity() if same else nn.Linear(student_width, teacher_width) for _ in range(count)
        )

    def forward(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.maps[index](hidden)


def hidden_mse(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    layer_map: Sequence[tuple[int, int]],
    mask: torch.Tensor,
    projection: HiddenProjection | None = None,
) -> torch.Tensor:
    """Mean over mapped layers of the MSE (mean over units) between student and teacher states at kept positions.

    Args:
        student_hidden / teacher_hidden: hidden-state tuples ``[batch, seq, width]`` (index 0 = embeddings), with
            positions already aligned (same tokenisation, or gathered per word).
        mask: boolean ``[batch, seq]`` of positions to compare.
    """
    terms = []
    for index, (s, t) in enumerate(layer_map):
        student = student_hidden[s].float()
        if projection is not None:
            student = projection(index, student)
        terms.append((student - teacher_hidden[t].float()).pow(2).mean(dim=-1)[mask])
    if not terms or terms[0].numel() == 0:
        return student_hidden[0].sum() * 0.0
    return torch.stack([term.mean() for term in terms]).mean()


def attention_mse(
    student_attentions: Sequence[torch.Tensor],
    teacher_attentions: Sequence[torch.Tensor],
    layer_map: Sequence[tuple[int, int]],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """MSE between attention probabilities of mapped layers (1-based layer numbers), over real query/key pairs."""
    pair = attention_mask[:, None, :, None].bool() & attention_mask[:, None, None, :].bool()  # [b, 1, q, k]
    terms = []
    for s, t in layer_map:
        student, teacher = student_attentions[s - 1].float(), teacher_attentions[t - 1].float()
        if student.shape != teacher.shape:
            raise ValueError(
                f"attention maps differ in shape {tuple(student.shape)} vs {tuple(teacher.shape)}: attention "
                "matching needs the same number of heads"
            )
        terms.append((student - teacher).pow(2)[pair.expand_as(student)].mean())
    return torch.stack(terms).mean()


def pairwise_distances(items: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[n, n]`` between the rows of ``items`` ``[n, width]`` (exactly 0 between equal rows)."""
    squared = (items[:, None, :] - items[None, :, :]).pow(2).sum(-1)
    # sqrt has an infinite slope at 0: take it of the clamped value and zero the equal pairs (the diagonal) after.
    return squared.clamp(min=1e-12).sqrt() * (squared > 0)


def _normalised_distances(items: torch.Tensor) -> torch.Tensor | None:
    distances = pairwise_distances(items.float())
    positive = distances[distances > 0]
    return None if positive.numel() == 0 else distances / positive.mean()


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distance-wise RKD: Huber (smooth L1, delta 1) between the two models' pairwise distances, each divided by
    the mean non-zero distance of its own model; averaged over all n² pairs, the diagonal included, as in the
    authors' code (so the weights of the paper apply).

    Args:
        student / teacher: ``[n, width]`` representations of the same n items (widths may differ).
    """
    with torch.no_grad():
        target = _normalised_distances(teacher)
    distances = _normalised_distances(student)
    if target is None or distances is None:  # fewer than two distinct items: no structure to match
        return student.sum() * 0.0
    return F.smooth_l1_loss(distances, target)


def triplet_cosines(items: torch.Tensor) -> torch.Tensor:
    """``[n, n, n]``: entry ``[j, i, k]`` is the cosine of the angle at ``items[j]`` between ``items[i]`` and
    ``items[k]`` (0 where two of them coincide)."""
    differences = items[None, :, :] - items[:, None, :]  # [j, i, width]: e_i - e_j
    squared = differences.pow(2).sum(-1, keepdim=True)
    # Unit vectors; a zero difference stays 0 with a zero gradient (a clamped norm alone would scale it by 1e6).
    directions = differences / squared.clamp(min=1e-12).sqrt() * (squared > 0)
    return directions @ directions.transpose(1, 2)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Angle-wise RKD: Huber (smooth L1, delta 1) between the cosines of the angles formed by every triplet of
    items in each model; averaged over all n³ triplets (degenerate ones are 0 in both), as in the authors' code.

    Args:
        student / teacher: ``[n, width]`` representations of the same n items (widths may differ).
    """
    with torch.no_grad():
        target = triplet_cosines(teacher.float())
    return F.smooth_l1_loss(triplet_cosines(student.float()), target)

"""The losses of the few-shot methods, over one group of texts' embeddings: SetFit's cosine pair loss and the
prototypical-network losses. Plain functions of tensors: the two-stage strategies (``setfit``, ``protonet``) call
them in their first stage, and the objectives of the same names wrap them for the run's loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hftransfer.fewshot.pairs import pair_masks


def cosine_pair_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The balanced pair loss of a batch: ``[batch, width]`` embeddings (any scale) and ``[batch]`` class ids.

    ``mean over positive pairs of (cos - 1)^2`` and ``mean over negative pairs of cos^2``, averaged (a batch with
    pairs of one kind only: that kind's mean; a batch of one text: zero).
    """
    unit = F.normalize(embeddings.float(), dim=-1)
    cosine = unit @ unit.T
    positive, negative = pair_masks(labels)
    means = []
    if positive.any():
        means.append((cosine[positive] - 1.0).pow(2).mean())
    if negative.any():
        means.append(cosine[negative].pow(2).mean())
    if not means:
        return cosine.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) without a pair to learn from
    return torch.stack(means).mean()


def episode_loss(embeddings: torch.Tensor, labels: torch.Tensor, support: int, scale: float) -> torch.Tensor:
    """Cross-entropy of the queries (rows ``support:``) against the prototypes of the support rows' classes.

    Raises:
        ValueError: a query whose class has no support row.
    """
    unit = F.normalize(embeddings.float(), dim=-1)
    classes, support_class = torch.unique(labels[:support], return_inverse=True)
    sums = torch.zeros(len(classes), unit.shape[1], device=unit.device).index_add_(
        0, support_class, unit[:support]
    )
    prototypes = F.normalize(sums, dim=-1)  # the direction of the mean of unit vectors
    query_labels = labels[support:]
    target = torch.searchsorted(classes, query_labels)
    if (target >= len(classes)).any() or (classes[target.clamp(max=len(classes) - 1)] != query_labels).any():
        raise ValueError("every query's class needs support texts in its episode")
    logits = scale * unit[support:] @ prototypes.T
    return F.cross_entropy(logits, target)


def leave_one_out_loss(embeddings: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Every row a query against the prototypes of the batch's other rows; rows alone in their class (no prototype
    to be near) are not scored, and a batch of one class has nothing to tell apart (zero)."""
    unit = F.normalize(embeddings.float(), dim=-1)
    classes, row_class = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(row_class, minlength=len(classes))
    if len(classes) < 2:
        return unit.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) with nothing to tell apart
    sums = torch.zeros(len(classes), unit.shape[1], device=unit.device).index_add_(0, row_class, unit)
    others = sums.unsqueeze(0).expand(len(unit), -1, -1).clone()  # [rows, classes, width]
    rows = torch.arange(len(unit), device=unit.device)
    others[rows, row_class] -= unit  # a row's own class without itself
    logits = scale * torch.einsum("rw,rcw->rc", unit, F.normalize(others, dim=-1))
    scored = counts[row_class] > 1
    if not scored.any():
        return unit.sum() * 0.0
    return F.cross_entropy(logits[scored], row_class[scored])

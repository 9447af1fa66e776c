"""Multi-kernel maximum mean discrepancy (Gretton et al., 2012, "A kernel two-sample test"; Long et al., 2015,
"Learning transferable features with deep adaptation networks", DAN): pull the distribution of the labelled
batch's features towards that of a batch of unlabelled target-domain text.

The kernel is a sum of Gaussians ``k(x, y) = sum_k exp(-||x - y||^2 / (base * multiplier^k))`` over ``kernels``
bandwidths centred on ``base``; ``base`` is the median squared distance between the rows of both sides together
(the median heuristic, detached: it sets the scale and is not trained) unless ``bandwidth`` sets it. The rows are
the encoder's hidden states at one layer, as in CORAL: one pooled row per text, or one per real token for token
tasks (``representation.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from hftransfer.errors import ConfigError
from hftransfer.objectives.base import Objective, ObjectiveContext
from hftransfer.objectives.representation import (
    AlignmentConfig,
    aligned_task,
    paired_rows,
    requires_encoder_training,
)
from hftransfer.registry import register_objective

Estimator = Literal["biased", "unbiased"]


@dataclass
class MmdConfig(AlignmentConfig):
    """Match the distribution of the labelled text's features to the target domain's under a multi-kernel MMD."""

    name: str = "mmd"
    weight: float = 1.0
    """Multiplier of the squared MMD (a per-step term)."""
    kernels: int = 5
    """Number of Gaussian kernels summed; their bandwidths are ``base * multiplier^k`` for
    ``k = -(kernels // 2) ... kernels - kernels // 2 - 1`` (centred on ``base`` for an odd number)."""
    multiplier: float = 2.0
    """Ratio between neighbouring bandwidths (> 1): several scales, so that neither near nor far rows are lost
    when the features move during training."""
    bandwidth: float | None = None
    """The central bandwidth ``base`` in squared-distance units; None: the median squared distance between the
    batch's rows at each step."""
    estimator: Estimator = "biased"
    """``biased``: the V-statistic (never negative; includes each row's kernel with itself). ``unbiased``: the
    U-statistic without those (unbiased for MMD^2, so it can dip below zero when the domains already match)."""
    max_rows: int = 512
    """Rows used per side at most (an evenly strided subset of them): the kernel matrices grow with the square of
    the rows, and a token task's batch has one row per token."""

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"objectives.{self.name}"
        if self.kernels < 1:
            raise ConfigError(f"{where}.kernels must be >= 1, got {self.kernels}")
        if not self.multiplier > 1:
            raise ConfigError(
                f"{where}.multiplier must be > 1 (the ratio between bandwidths), got {self.multiplier}"
            )
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ConfigError(
                f"{where}.bandwidth must be > 0, or null for the median heuristic, got {self.bandwidth}"
            )
        if self.estimator not in ("biased", "unbiased"):
            raise ConfigError(f"{where}.estimator must be 'biased' or 'unbiased', got {self.estimator!r}")
        if self.max_rows < 2:
            raise ConfigError(f"{where}.max_rows must be >= 2, got {self.max_rows}")


def strided_rows(rows: torch.Tensor, limit: int) -> torch.Tensor:
    """At most ``limit`` of ``rows``, evenly spaced. A fixed stride rather than a random draw: it takes no random
    numbers (a run's random stream, and so its resumption, stay as without the objective) and covers all of a
    batch's texts rather than the first few."""
    count = rows.shape[0]
    if count <= limit:
        return rows
    index = torch.arange(limit, device=rows.device) * count // limit
    return rows[index]


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n, d], [m, d] -> [n, m]``: ``||a_i - b_j||^2``, clamped at 0 against rounding."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp(min=0)


def median_bandwidth(distances: torch.Tensor) -> torch.Tensor:
    """The median of the distinct pairs' squared distances (``distances``: ``[n, n]`` over all rows), detached.
    When more than half of the pairs coincide it is 0, which no kernel can use: the mean then, or 1 when every
    row is the same (then any bandwidth gives the same kernel)."""
    n = distances.shape[0]
    upper = torch.triu_indices(n, n, offset=1, device=distances.device)
    pairs = distances.detach()[upper[0], upper[1]].sort().values
    # An even count has two middle values: averaged, as numpy's median does.
    middle = (pairs[(len(pairs) - 1) // 2] + pairs[len(pairs) // 2]) / 2
    fallback = torch.where(pairs.mean() > 0, pairs.mean(), torch.ones_like(middle))
    return torch.where(middle > 0, middle, fallback)


def mmd_loss(
    source: torch.Tensor,
    target: torch.Tensor,
    kernels: int = 5,
    multiplier: float = 2.0,
    bandwidth: float | None = None,
    estimator: Estimator = "biased",
) -> torch.Tensor:
    """The squared multi-kernel MMD between two sets of rows of the same width (float32, outside autocast).

    Args:
        source: ``[n_s, d]`` rows of one domain.
        target: ``[n_t, d]`` rows of the other.
        kernels, multiplier, bandwidth: the Gaussian kernels (see :class:`MmdConfig`).
        estimator: ``biased`` (``mean K_ss + mean K_tt - 2 mean K_st``) or ``unbiased`` (the same without the
            diagonals of ``K_ss`` and ``K_tt``).

    Returns:
        A scalar; 0 when a side has fewer than 2 rows (no pair to estimate a bandwidth or a U-statistic from).
    """
    n_s, n_t = source.shape[0], target.shape[0]
    if n_s < 2 or n_t < 2:
        return torch.zeros((), device=source.device)
    with torch.autocast(device_type=source.device.type, enabled=False):
        rows = torch.cat([source.float(), target.float()])  # [n_s + n_t, d]
        distances = squared_distances(rows, rows)
        base = (
            median_bandwidth(distances) if bandwidth is None else torch.tensor(bandwidth, device=rows.device)
        )
        exponents = torch.arange(-(kernels // 2), kernels - kernels // 2, device=rows.device)
        bandwidths = base * multiplier ** exponents.float()  # [kernels]
        kernel = torch.exp(-distances.unsqueeze(-1) / bandwidths).sum(-1)  # [n, n]
        k_ss, k_tt, k_st = kernel[:n_s, :n_s], kernel[n_s:, n_s:], kernel[:n_s, n_s:]
        if estimator == "biased":
            return k_ss.mean() + k_tt.mean() - 2 * k_st.mean()
        within_s = (k_ss.sum() - k_ss.diagonal().sum()) / (n_s * (n_s - 1))
        within_t = (k_tt.sum() - k_tt.diagonal().sum()) / (n_t * (n_t - 1))
        return within_s + within_t - 2 * k_st.mean()


class Mmd(Objective):
    """``weight * mmd_loss(labelled rows, target rows)`` at every training step, under the term ``mmd``."""

    name = "mmd"
    needs_hidden_states = True

    def __init__(self, task: str, config: MmdConfig) -> None:
        self.task = task
        self.config = config
        self.sources = (config.source,)

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> Mmd:
        return cls(aligned_task(context), context.objective)

    def terms(self, model: torch.nn.Module, batch: dict, outputs: Any, state: Any) -> dict[str, torch.Tensor]:
        config, source = self.config, self.sources[0]
        rows = paired_rows(outputs, batch, source, self.task, config.pooling, config.layer)
        if rows is None:  # a forward pass without the source's batch (outside training)
            return {"mmd": torch.zeros((), device=batch["input_ids"].device)}
        labelled, target = (strided_rows(side, config.max_rows) for side in rows)
        value = mmd_loss(
            labelled, target, config.kernels, config.multiplier, config.bandwidth, config.estimator
        )
        return {"mmd": config.weight * value}


register_objective(
    "mmd",
    config=MmdConfig,
    build=Mmd.from_context,
    regulariser=True,
    requires=requires_encoder_training,
    describe=lambda config: (
        f"multi-kernel MMD alignment to source {config.get('source')} ({config.get('kernels')} kernels, "
        f"{config.get('estimator')}, weight {config.get('weight')})"
    ),
)

"""BitFit (Ben Zaken, Goldberg & Ravfogel, 2021): train only the encoder's bias terms and the new head.

Every weight matrix and embedding keeps its pretrained value; the biases (attention, feed-forward and LayerNorm)
adapt, which is a small fraction of the parameters. The model is saved whole, so the export is an ordinary
transformers model. Layer-wise LR decay, ``head_lr`` and objectives such as L2-SP combine with it as with any
strategy that trains encoder weights.
"""

from __future__ import annotations

from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan, encoder_plan, finish_plan
from hftransfer.strategies.layers import EncoderLayout


def build_bitfit(context: StrategyContext) -> StrategyPlan:
    """BitFit (Ben Zaken et al., 2021): only the encoder's bias terms and the new head train."""
    plan = encoder_plan(context)
    layout = EncoderLayout.of(plan.model)
    for name, param in plan.model.named_parameters():
        param.requires_grad_(layout.is_head(name) or name.endswith(".bias"))
    return finish_plan(plan, context)


register_strategy(
    "bitfit",
    build=build_bitfit,
    describe=lambda strategy, report: "BitFit: only the encoder's bias terms and the head trained",
)

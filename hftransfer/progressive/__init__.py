"""Progressive neural networks: one frozen column per earlier task, a new column per task that reads them through
lateral adapters (see :mod:`hftransfer.progressive.model`)."""

from hftransfer.progressive.model import LateralAdapter, ProgressiveModel, encoder_layers

__all__ = ["LateralAdapter", "ProgressiveModel", "encoder_layers"]

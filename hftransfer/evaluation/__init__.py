"""Evaluation: inference over feature loaders, task metrics, and those metrics as ``evaluate`` modules."""

from hftransfer.evaluation.loading import METRICS, load_metric, metric_path

__all__ = ["METRICS", "load_metric", "metric_path"]

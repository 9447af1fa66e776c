"""The run flow: what every recipe does between parsing its config and printing where the results are."""

from hftransfer.flow.core import Run, evaluate_best, finish, start_loop, train

__all__ = ["Run", "evaluate_best", "finish", "start_loop", "train"]

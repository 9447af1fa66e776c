"""The run flow: what every recipe does between parsing its config and printing where the results are
(``setup -> train -> evaluate_best -> finish``, for any tasks x strategy x objectives)."""

from hftransfer.flow.core import Run, evaluate_best, finish, start_loop, train
from hftransfer.flow.setup import setup

__all__ = ["Run", "evaluate_best", "finish", "setup", "start_loop", "train"]

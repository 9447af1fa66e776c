"""hftransfer's metrics as ``evaluate`` modules: where their scripts are, and a loader the library itself uses.

Each metric is one self-contained ``evaluate`` script in ``modules/<name>/<name>.py``. Users load it by path, which
needs no Hub and works offline::

    import evaluate
    from hftransfer.evaluation import metric_path

    seqeval = evaluate.load(metric_path("seqeval_strict"))

:func:`load_metric` gives the same metric class without ``evaluate.load``'s detour: that copies the script into
the modules cache (``HF_MODULES_CACHE``) and imports the copy, which needs a writable cache and a file lock on
every call; importing the script from the package needs neither, so evaluation also works from a read-only
install. The instance keeps its inputs in memory (no Arrow cache file, no lock shared between processes).
"""

from __future__ import annotations

import importlib
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evaluate import EvaluationModule

MODULES_DIR = Path(__file__).resolve().parent / "modules"

METRICS = ("accuracy_f1", "multilabel_f1", "regression", "seqeval_strict")
"""The packaged metrics: strict-IOB2 entities, single-label classification, multi-label F1, regression."""


def metric_path(name: str) -> str:
    """The directory of the packaged metric ``name``, for ``evaluate.load(metric_path(name))``.

    Raises:
        ValueError: there is no packaged metric of that name.
    """
    if name not in METRICS:
        raise ValueError(f"no packaged metric {name!r}; choose one of: {', '.join(METRICS)}")
    return str(MODULES_DIR / name)


@cache
def _metric_class(name: str) -> type:
    metric_path(name)  # the check and its message
    import evaluate  # on first use: it imports transformers' pipelines, which `hftransfer --help` does not need

    module = importlib.import_module(f"hftransfer.evaluation.modules.{name}.{name}")
    # As evaluate.load picks it: the script's one concrete EvaluationModule subclass.
    return next(
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, evaluate.EvaluationModule)
        and value.__module__ == module.__name__
    )


def load_metric(name: str, **init_kwargs: Any) -> EvaluationModule:
    """A fresh ``evaluate.EvaluationModule`` of the packaged metric ``name`` (class imported once per process).

    Args:
        name: one of :data:`METRICS`.
        init_kwargs: the metric's own options (``label_names=[...]`` for ``accuracy_f1`` and ``multilabel_f1``).

    Returns:
        The metric, with ``compute``, ``add_batch`` and ``evaluate.combine`` as for ``evaluate.load``'s.

    Raises:
        ValueError: there is no packaged metric of that name.
    """
    cls = _metric_class(name)
    try:
        return cls(keep_in_memory=True, **init_kwargs)
    except OSError:
        # evaluate makes a (here unused) directory under HF_METRICS_CACHE even for in-memory metrics; a cache that
        # cannot be written must not stop an evaluation.
        cache_dir = Path(tempfile.gettempdir()) / "hftransfer-evaluate"
        return cls(keep_in_memory=True, cache_dir=str(cache_dir), **init_kwargs)

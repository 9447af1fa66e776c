"""Problem types of sequence classification, named as Hugging Face names them (``config.problem_type``), and the
config rules they bring.

``single_label_classification`` (one class per text, softmax), ``multi_label_classification`` (any number of
labels per text, including none: a sigmoid per label and a threshold chosen on validation) and ``regression`` (a
number per text, one output unit, mean squared error). The type is a property of the data's labels, so it lives in
the data section (``data.problem_type``); token classification is always single-label.
"""

from __future__ import annotations

from typing import Any, Literal

from hftransfer.errors import ConfigError

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]

# The headline metrics each type reports (besides ``loss`` and the per-class entries), the first the default of
# ``train.metric_for_best``. Regression selects by MSE: it is always defined, where a correlation of constant early
# predictions is NaN.
METRICS = {
    SINGLE_LABEL: ("accuracy", "macro_f1"),
    MULTI_LABEL: ("micro_f1", "macro_f1", "micro_precision", "micro_recall"),
    REGRESSION: ("mse", "pearson", "spearman"),
}
LOWER_IS_BETTER = ("loss", "iw_loss", "dev_risk", "mse")
"""Metric names whose smaller values are better (the default of ``train.greater_is_better`` for them is False)."""


def default_metric(task: str, problem_type: str) -> str:
    """The default ``train.metric_for_best``: entity F1 for NER, else the problem type's first headline metric."""
    return "f1" if task == "token-classification" else METRICS[problem_type][0]


def check_problem_type(config: Any) -> None:
    """What ``data.problem_type`` asks of the rest of a single-task run config.

    Raises:
        ConfigError: naming the field: a multi-label or regression token task, a label-free selection or report
            sets (both compare class predictions), a prior head bias (label frequencies of one class per text), or
            a ``train.metric_for_best`` that only another problem type reports.
    """
    problem_type = config.data.problem_type
    if problem_type == SINGLE_LABEL:
        return
    where = f"data.problem_type={problem_type}"
    if config.task != "sequence-classification":
        raise ConfigError(f"{where} is for task=sequence-classification; NER tags are one class per word")
    if config.selection.method != "source":
        raise ConfigError(
            f"selection.method={config.selection.method} weighs single-label losses; with {where} use "
            "selection.method=source"
        )
    if config.report:
        raise ConfigError(f"report sets are scored as single-label classification; drop report with {where}")
    if config.model.head_bias_init != "default":
        raise ConfigError(
            f"model.head_bias_init={config.model.head_bias_init} starts a softmax head at the label frequencies; "
            f"use model.head_bias_init=default with {where}"
        )
    metric = config.train.metric_for_best
    others = {name for kind, names in METRICS.items() if kind != problem_type for name in names}
    if metric in others - set(METRICS[problem_type]):
        raise ConfigError(
            f"train.metric_for_best={metric} is not reported with {where}; choose one of "
            f"{', '.join(METRICS[problem_type])} or loss"
        )


def refuse_problem_type(data: Any, field: str, flow: str) -> None:
    """Refuse a multi-label or regression task in a flow that trains single-label heads only.

    Args:
        data: the task's data section; field: how the config names its ``problem_type`` (for the message);
        flow: what refuses, e.g. ``"a multitask run"``.

    Raises:
        ConfigError: ``data.problem_type`` is not ``single_label_classification``.
    """
    if data.problem_type != SINGLE_LABEL:
        raise ConfigError(
            f"{field}={data.problem_type}: {flow} trains single-label classifiers only; train this task on its "
            "own with recipes/finetune_classifier.py"
        )

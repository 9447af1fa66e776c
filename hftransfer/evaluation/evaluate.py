"""Score gathered predictions against the examples they came from."""

from __future__ import annotations

from collections.abc import Sequence

from datasets import Dataset

from hftransfer.config.problem import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from hftransfer.evaluation.inference import InferenceOutput, word_label_ids
from hftransfer.evaluation.metrics import (
    regression_metrics,
    sequence_classification_metrics,
    token_classification_metrics,
)
from hftransfer.evaluation.multilabel import multilabel_metrics


def compute_metrics(
    output: InferenceOutput,
    examples: Dataset,
    task: str,
    label_names: Sequence[str],
    *,
    problem_type: str = SINGLE_LABEL,
    threshold: float | None = None,
    metric: str = "micro_f1",
) -> dict:
    """Task metrics of ``output`` over every example of ``examples`` (plus ``loss`` when labels were present).

    Args:
        output: predictions gathered by :func:`~hftransfer.evaluation.inference.run_inference`.
        examples: the untokenised split (``tokens``/``tags`` or ``text``/``label``), indexed by ``example_id``.
        task: ``token-classification`` or ``sequence-classification``.
        label_names: label of each class id.
        problem_type: of a sequence task (``data.problem_type``).
        threshold: multi-label: the probability above which a label is predicted; None chooses it on these
            examples to maximise ``metric`` (:mod:`hftransfer.evaluation.multilabel`); the metrics then hold it.

    Raises:
        RuntimeError: an example or word got no prediction.
    """
    if task == "token-classification":
        pred_ids = word_label_ids(output, [len(tokens) for tokens in examples["tokens"]])
        pred_tags = [[label_names[i] for i in ids] for ids in pred_ids]
        metrics = token_classification_metrics(examples["tags"], pred_tags)
    else:
        predicted = output.example_predictions if problem_type == SINGLE_LABEL else output.example_scores
        missing = len(examples) - len(predicted)
        if missing:
            raise RuntimeError(f"{missing} of {len(examples)} examples got no prediction")
        if problem_type == MULTI_LABEL:
            scores = [predicted[index] for index in range(len(examples))]
            metrics = multilabel_metrics(scores, examples["label"], label_names, threshold, metric)
        elif problem_type == REGRESSION:
            metrics = regression_metrics(examples["label"], [predicted[i] for i in range(len(examples))])
        else:
            label2id = {name: index for index, name in enumerate(label_names)}
            true_ids = [label2id[label] for label in examples["label"]]
            pred_ids = [predicted[index][0] for index in range(len(examples))]
            metrics = sequence_classification_metrics(true_ids, pred_ids, label_names)
    metrics["num_examples"] = len(examples)
    metrics["num_features"] = output.rows
    if output.loss is not None:
        metrics["loss"] = output.loss
    return metrics

"""Labelled sets scored only in the final report (``config.report``): a target domain's test set, say.

They are read after training, when the best model is already chosen, so nothing before the report — training,
validation, model selection — can see their labels. Each is scored like the test split, and ``metrics.json``
holds the scores under ``report.<name>``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from datasets import Dataset

from hftransfer.config import DataConfig
from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.data.features import tokenize, tokenize_options
from hftransfer.data.sources import load_task_data
from hftransfer.errors import DataError
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import run_inference

logger = logging.getLogger("hftransfer")


def read_report_set(spec: Any, task: str, label_names: list[str]) -> Dataset:
    """The examples of one report set (its ``data`` section, or a single ``file``).

    Raises:
        DataError: a label the run's model does not know (name it in ``data.label_map`` or ``data.drop_labels``).
    """
    data = spec.data
    split = spec.split
    if spec.file is not None:  # one file: all of it is the set
        data = dataclasses.replace(
            data or DataConfig(train_file=spec.file),
            dataset=None,
            train_file=spec.file,
            validation_file=None,
            test_file=None,
            validation_size=0.0,
            test_size=0.0,
        )
        split = "train"
    loaded = load_task_data(data, task)
    if split not in loaded.splits:
        raise DataError(f"report {spec.name}: its data has no {split!r} split (it has {list(loaded.splits)})")
    examples = loaded.splits[split]
    key = "tags" if task == "token-classification" else "label"
    values = examples[key]
    present = {tag for tags in values for tag in tags} if key == "tags" else set(values)
    unknown = sorted(present - set(label_names))
    if unknown:
        raise DataError(
            f"report {spec.name}: labels {unknown} are not labels of the trained model ({label_names}); map them "
            "with report[].data.label_map or leave them out with report[].data.drop_labels"
        )
    return examples


def evaluate_report_sets(run: Any) -> dict[str, dict[str, Any]]:
    """Score the run's (best) model on every report set; called by the final evaluation only."""
    config, accelerator = run.config, run.accelerator
    results: dict[str, dict[str, Any]] = {}
    token_model = run.plan.token_model
    model = token_model(accelerator, run.loop.model) if token_model else run.loop.model
    for spec in getattr(config, "report", []):
        examples = read_report_set(spec, config.task, run.label_names)
        label2id = {label: index for index, label in enumerate(run.label_names)}
        # The set's own length and windowing options when it has a data section (long target texts).
        options = tokenize_options(spec.data or config.data)
        features, _ = tokenize(examples, run.tokenizer, config.task, label2id, **options)
        loader = accelerator.prepare(
            build_eval_dataloader(
                features,
                FeatureCollator.for_device(run.tokenizer, accelerator.device),
                batch_size=config.train.eval_batch_size,
                num_workers=config.train.num_workers,
            )
        )
        output = run_inference(
            model,
            loader,
            accelerator,
            config.task,
            desc=f"Report {spec.name}",
            window_aggregation=(spec.data or config.data).window_aggregation,
        )
        results[spec.name] = compute_metrics(output, examples, config.task, run.label_names)
        logger.info("Report set %s: %d examples", spec.name, len(examples))
    return results

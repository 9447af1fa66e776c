"""Domain adaptation: labelled source-domain data, unlabelled target-domain text, and a labelled target test set
that only the final report reads.

    accelerate launch recipes/domain_adapt.py          # MiniLM-L6, Rotten Tomatoes -> Drugs.com reviews, DANN
    accelerate launch recipes/domain_adapt.py --config recipes/configs/minilm/domain_adapt_coral.yaml
    accelerate launch recipes/domain_adapt.py sources='[{name: target, data: my_target.txt}]' \\
        report='[{name: target, file: my_target_test.jsonl}]' data.train_file=my_source.jsonl

Every method is an objective reading the named source ``target`` (``dann``, ``coral``, ``mmd``, ``mlm``,
``importance_weighted_task``); ``selection.method`` picks the model without target labels (``source``
validation, importance-weighted ``iwv``, or ``dev``). ``metrics.json`` holds the target scores under
``report.target``; docs/domain_adaptation.md walks through the methods and what to try first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hftransfer.config import parse_config
from hftransfer.flow import evaluate_best, finish, setup, train
from hftransfer.utils import run_main

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "minilm" / "domain_adapt_dann.yaml"
logger = logging.getLogger("hftransfer")


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(argv, default_config=DEFAULT_CONFIG)
    if not config.sources:
        logger.warning("No target source (sources: []): this run trains on the source domain alone")
    if not config.report:
        logger.warning("No report set (report: []): nothing will say how the model does on the target domain")
    run = setup(config, recipe="domain_adapt")
    train(run)
    metrics = evaluate_best(run)
    finish(run)
    for name, scores in metrics.get("report", {}).items():
        shown = {
            key: round(value, 4) for key, value in scores.items() if key in ("accuracy", "macro_f1", "f1")
        }
        logger.info("report %s: %s", name, shown)
    return metrics


if __name__ == "__main__":
    run_main(main)

"""One run of the ``setfit`` library (its defaults: contrastive pairs, one epoch, logistic-regression head) on the
training examples hftransfer's config draws, scored on the same test split; prints a JSON line.

Runs in an environment with ``setfit`` installed (not a dependency of hftransfer), e.g.
``python -m venv --system-site-packages /tmp/setfit-env && /tmp/setfit-env/bin/pip install setfit==1.2.0``; called
by ``benchmarks/fewshot.py``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--set", nargs="*", default=[], help="the classifier recipe's overrides (its data is used)"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from hftransfer.assets import resolve_model_name
    from hftransfer.config import parse_config
    from hftransfer.data.sources import load_task_data
    from hftransfer.evaluation.metrics import sequence_classification_metrics

    scratch = tempfile.mkdtemp(prefix="setfit-")
    # The classifier recipe's default preset and these overrides: the same data as hftransfer's runs of the cell.
    config = parse_config(
        args.set, default_config=ROOT / "recipes" / "configs" / "minilm" / "classifier_full.yaml"
    )
    data = load_task_data(config.data, config.task)
    names = data.label_names
    train = data.splits["train"]
    test = data.splits["test"]
    loaded = time.perf_counter()
    model = SetFitModel.from_pretrained(resolve_model_name(config.model.name_or_path))
    # The texts cut where hftransfer's runs cut them (data.max_length; the encoder's own limit would be 256 for the
    # sentence-transformers checkpoints): the same text seen, the same compute per token.
    model.model_body.max_seq_length = config.data.max_length
    trainer = Trainer(
        model=model,
        # its defaults but for where checkpoints and logs go: nowhere (no tracker, a temporary directory)
        args=TrainingArguments(
            seed=args.seed, show_progress_bar=False, output_dir=scratch, report_to="none", save_strategy="no"
        ),
        train_dataset=Dataset.from_dict(
            {"text": train["text"], "label": [names.index(x) for x in train["label"]]}
        ),
    )
    trainer.train()
    trained = time.perf_counter()
    predictions = model.predict(test["text"], as_numpy=True)
    gold = [names.index(x) for x in test["label"]]
    # hftransfer's own scorer, as its runs are scored
    scores = sequence_classification_metrics(gold, [int(p) for p in predictions], names)
    print(
        json.dumps(
            {
                "test": scores["accuracy"],
                "macro_f1": scores["macro_f1"],
                "train_examples": len(train),
                "train_seconds": round(trained - loaded, 2),
                "predict_seconds": round(time.perf_counter() - trained, 2),
                "in_process_seconds": round(time.perf_counter() - STARTED, 2),
            }
        )
    )


if __name__ == "__main__":
    main()

"""The baseline: the same fine-tuning written the way a transformers user would, with ``transformers.Trainer``.

    python benchmarks/trainer_baseline.py --task ner --epochs 5 --lr 2e-4 --output-dir /tmp/trainer-ner
    python benchmarks/trainer_baseline.py --task sentiment --epochs 2 --lr 1e-4 --batch-size 32

Only the examples come from hftransfer (``load_task_data``), so that both sides see the identical split; the rest
is the transformers token-classification / text-classification example: tokenise with ``is_split_into_words`` and
label first subwords, ``DataCollatorForTokenClassification`` / ``DataCollatorWithPadding``, ``Trainer`` with
evaluation every epoch and the best checkpoint reloaded at the end. Entity F1 is reported both strictly (seqeval
IOB2 strict mode, what hftransfer reports) and in seqeval's default (conlleval-style) mode, which most scripts use.
Prints one JSON line with the scores and times.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from seqeval.metrics import f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hftransfer.assets import resolve_model_name
from hftransfer.config import DataConfig
from hftransfer.data.sources import load_task_data
from hftransfer.evaluation.metrics import sequence_classification_metrics, token_classification_metrics
from hftransfer.modeling.head_init import init_head_bias_to_prior
from hftransfer.runs import peak_memory_mb

TASKS = {
    "ner": ("token-classification", "wnut16"),
    "sentiment": ("sequence-classification", "rotten_tomatoes"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=list(TASKS), default="ner")
    parser.add_argument("--model", default="minilm-l6", help="alias, directory or Hub id")
    parser.add_argument(
        "--train-file", help="use this file instead of the builtin dataset (with --validation/test)"
    )
    parser.add_argument("--validation-file")
    parser.add_argument("--test-file")
    parser.add_argument("--epochs", type=float, default=5.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument(
        "--head-bias-init",
        choices=["default", "prior"],
        default="default",
        help="prior: the new head's bias starts at the training labels' log frequencies (the same start as "
        "hftransfer's model.head_bias_init=prior, so both runners begin from one model)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="/tmp/hftransfer-trainer-baseline")
    return parser.parse_args(argv)


class EvaluationClock(TrainerCallback):
    """Training seconds (evaluations included) at each evaluation, for time-to-target curves."""

    def __init__(self, metric: str) -> None:
        self.metric, self.started, self.history = metric, time.perf_counter(), []

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201 - Trainer's callback API
        self.started = time.perf_counter()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001, ANN201
        if metrics and f"eval_{self.metric}" in metrics:
            self.history.append(
                {
                    "step": state.global_step,
                    "train_seconds": round(time.perf_counter() - self.started, 2),
                    self.metric: metrics[f"eval_{self.metric}"],
                }
            )


def count_tokens(loader) -> tuple[int, int, int]:  # noqa: ANN001 - a DataLoader of padded batches
    """(sequences, real tokens, padded tokens) of one pass over ``loader`` (collation only, no model)."""
    sequences = tokens = padded = 0
    for batch in loader:
        mask = batch["attention_mask"]
        sequences, tokens, padded = sequences + mask.shape[0], tokens + int(mask.sum()), padded + mask.numel()
    return sequences, tokens, padded


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    task, dataset = TASKS[args.task]
    data_config = DataConfig(
        dataset=None if args.train_file else dataset,
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        max_train_samples=args.max_train_samples,
    )
    data = load_task_data(data_config, task)
    labels = data.label_names
    label2id = {label: i for i, label in enumerate(labels)}
    model_path = resolve_model_name(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    token_task = task == "token-classification"

    def encode_tokens(batch):
        encoded = tokenizer(
            batch["tokens"], is_split_into_words=True, truncation=True, max_length=args.max_length
        )
        encoded["labels"] = []
        for row, tags in enumerate(batch["tags"]):
            previous, row_labels = None, []
            for word in encoded.word_ids(row):
                row_labels.append(-100 if word is None or word == previous else label2id[tags[word]])
                previous = word
            encoded["labels"].append(row_labels)
        return encoded

    def encode_texts(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=args.max_length)
        encoded["labels"] = [label2id[label] for label in batch["label"]]
        return encoded

    encode = encode_tokens if token_task else encode_texts
    splits = {
        name: split.map(encode, batched=True, remove_columns=split.column_names)
        for name, split in data.splits.items()
    }

    def compute_metrics(prediction):
        logits, gold = prediction
        predicted = np.argmax(logits, axis=-1)
        if not token_task:
            return sequence_classification_metrics(gold.tolist(), predicted.tolist(), labels)
        true_tags = [[labels[g] for g in row if g != -100] for row in gold]
        pred_tags = [
            [labels[p] for p, g in zip(prow, grow) if g != -100] for prow, grow in zip(predicted, gold)
        ]
        metrics = token_classification_metrics(true_tags, pred_tags)
        return {
            "f1": metrics["f1"],
            "precision": metrics["precision"],
            "recall": metrics["recall"],
            "f1_conlleval": f1_score(true_tags, pred_tags),
        }

    auto = AutoModelForTokenClassification if token_task else AutoModelForSequenceClassification
    model = auto.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )
    if args.head_bias_init == "prior":
        init_head_bias_to_prior(model, splits["train"]["labels"])
    metric = "f1" if token_task else "accuracy"
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        warmup_steps=0.1,  # transformers 5: a float below 1 is a ratio of the total steps
        weight_decay=0.01,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        logging_steps=50,
        report_to=[],
        seed=args.seed,
    )
    collator = (
        DataCollatorForTokenClassification(tokenizer) if token_task else DataCollatorWithPadding(tokenizer)
    )
    clock = EvaluationClock(metric)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=[clock],
    )
    started = time.perf_counter()
    train_output = trainer.train()
    train_wall = time.perf_counter() - started
    # What the model computed on: one pass of the Trainer's own (shuffled, padded) loader, times the epochs; under
    # several processes each loader holds its share, and the processes' shares are alike.
    sequences, tokens, padded = (
        count * training_args.world_size for count in count_tokens(trainer.get_train_dataloader())
    )
    result = {
        "task": args.task,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_seconds": round(train_wall, 1),
        "train_runtime": train_output.metrics.get("train_runtime"),
        "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "train_sequences": round(sequences * args.epochs),
        "train_tokens": round(tokens * args.epochs),
        "train_padded_tokens": round(padded * args.epochs),
        "history": clock.history,
        "validation": trainer.evaluate(splits["validation"], metric_key_prefix="validation"),
    }
    if "test" in splits:
        # Trainer.evaluate's own timing: samples/s of the test split, the metric computation included.
        result["test"] = trainer.evaluate(splits["test"], metric_key_prefix="test")
    result["peak_rss_mb"] = peak_memory_mb()["rss"]
    result["processes"] = training_args.world_size
    result["threads"] = torch.get_num_threads()  # per process: what the launch line left it
    if trainer.is_world_process_zero():  # one line of output, whatever the launch line
        print(json.dumps(result))  # noqa: T201 - the benchmark's output
    return result


if __name__ == "__main__":
    main()

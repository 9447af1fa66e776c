"""Few-shot learning curves: zero-shot, hftransfer's few-shot strategies and the ``setfit`` library on the same K
examples per class.

    python benchmarks/fewshot.py                                   # every dataset, K, method; 5 samplings
    python benchmarks/fewshot.py --datasets rt --ks 8 16 --methods setfit setfit_lib --resume
    python benchmarks/fewshot.py --datasets drugs speeches --resume &    # a second process may share the work dir

Protocol:
- each dataset's test split as hftransfer's config carves it (Rotten Tomatoes and the convention speeches'
  paragraphs, labelled by party: 10%, stratified, seed 0; drug reviews: its own test file, neutral left out); no
  validation split (a few-shot user has none to select on), so
  every method trains a fixed budget and keeps its last model;
- K examples per class drawn from the rest with ``data.train_per_class=K data.sample_seed=s``, s = 1..5: every
  method of a (K, s) cell trains on exactly the same texts (the setfit library reads them through hftransfer's
  loader);
- ``+desc`` methods also train on the label descriptions (``data.label_template``, each label's description
  weighing as much as its K examples); ``setfit_lib+desc`` gives the library the identical augmented set;
- methods of a cell run one after the other, so that they share the machine's load; the wall time is the whole
  process (start-up, data, training, scoring the test split), and ``train_s`` excludes scoring the test split;
  every run encodes its own features (a feature cache of its own, as the setfit library has none).
Results: ``benchmarks/results/fewshot.{json,md,png}`` (saved after every run; ``--resume`` keeps finished runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fewshot_report import write_report
from runner import RESULTS, ROOT, run_logged, run_or_resume

from hftransfer.utils import atomic_write_text

REVIEW = "This review is {label}."
DATASETS = {  # the data overrides, and the template that describes a label
    "rt": (["data.dataset=rotten_tomatoes", "data.test_size=0.1", "data.split_seed=0"], REVIEW),
    "drugs": (["data.dataset=drug_reviews", "data.drop_labels=[neutral]"], REVIEW),
    "speeches": (
        ["data.dataset=political_speeches", "data.test_size=0.1", "data.split_seed=0"],
        "This is a speech by a {label}.",
    ),
}
HEAD = ["train.batch_size=16", "train.epochs=50", "train.warmup_ratio=0.0", "strategy.head=linear"]
DESC = ["+desc"]  # replaced by the dataset's data.label_template
FROZEN = ["strategy.name=frozen", "train.lr=1e-2"]
SETFIT = ["strategy.name=setfit", "strategy.head_lr=1e-2"]
LR2 = ["strategy.body_lr=2e-5"]  # the pair stage's default when the setfit rows were measured (now 5e-5)
LR5 = ["strategy.body_lr=5e-5"]
ZERO_SHOT_HEAD = ["strategy.head_init=descriptions"]
METHODS = {
    "zeroshot": None,  # no training: hftransfer's ZeroShotClassifier with the template
    "frozen": [*FROZEN, *HEAD],
    "frozen+desc": [*FROZEN, *HEAD, *DESC],
    "setfit": [*SETFIT, *LR2, *HEAD],
    "setfit+desc": [*SETFIT, *LR2, *HEAD, *DESC],
    # Half the pair stage: every text still meets 75 partners (SetFit's defaults give it ~34 at K = 16).
    "setfit_b5": [*SETFIT, *LR2, "strategy.body_epochs=5", *HEAD],
    # The pair stage at 2.5x the learning rate (the default since): as many steps, further moves (SetFit's library
    # takes more, smaller steps: 34 of 16 pairs at K = 16 against 20 blocks here).
    "setfit_lr5": [*SETFIT, *LR5, *HEAD],
    "setfit_lr5+desc": [*SETFIT, *LR5, *HEAD, *DESC],
    # The head started as the nearest-prototype classifier of the tuned embeddings (weight imprinting).
    "setfit_proto": [*SETFIT, *LR2, "strategy.head_init=prototypes", *HEAD],
    "protonet": ["strategy.name=protonet", "strategy.head_lr=1e-2", *HEAD],
    "full": ["strategy.name=full", "train.lr=5e-5", "strategy.head_lr=1e-3", "train.batch_size=16"],
    # The head started as the zero-shot classifier of the template, the template's texts also among the examples.
    "frozen+zs": [*FROZEN, *HEAD, *DESC, *ZERO_SHOT_HEAD],
    "setfit+zs": [*SETFIT, *HEAD, *DESC, *ZERO_SHOT_HEAD],
    "setfit_lib": [],
    "setfit_lib+desc": DESC,
}
KS = [4, 8, 16, 32, 64]
SETFIT_PYTHON = "/tmp/setfit-env/bin/python"


def cell_argv(dataset: str, encoder: str, k: int, sampling: int) -> list[str]:
    return [
        "task=sequence-classification",
        f"model.name_or_path={encoder}",
        *DATASETS[dataset][0],
        "data.validation_size=0",
        *([f"data.train_per_class={k}", f"data.sample_seed={sampling}"] if k else []),
        "train.eval_every_epoch=false",
    ]


def method_argv(method: str, k: int, dataset: str) -> list[str]:
    argv = with_template(METHODS[method] or [], dataset)
    if method == "protonet":  # episodes of both classes, half the K as support and half as queries
        argv += [f"strategy.k_shot={max(1, k // 2)}", f"strategy.queries={max(1, k - k // 2)}"]
    if method == "full":  # at least 50 optimizer steps, whatever K
        argv += [f"train.max_steps={max(50, 10 * -(-2 * k // 16))}"]
    return argv


def run_one(method: str, dataset: str, encoder: str, k: int, sampling: int, work: Path, resume: bool) -> dict:
    run_dir = work / dataset / encoder / f"{method}-k{k}-s{sampling}"
    if method.startswith("setfit_lib") or method == "zeroshot":
        return worker_record(method, dataset, encoder, k, sampling, run_dir, resume)
    # Each run encodes its own test split: a feature cache shared between runs would leave the encoding out of
    # some runs' wall time (the setfit library has none).
    cache = [f"strategy.cache_dir={run_dir / 'feature-cache'}"] if method != "full" else []
    metrics = run_or_resume(
        "finetune_classifier.py",
        [*cell_argv(dataset, encoder, k, sampling), *method_argv(method, k, dataset), *cache],
        run_dir,
        resume,
    )
    test_encoding = metrics.get("strategy", {}).get("feature_cache", {}).get("test", {}).get("seconds", 0.0)
    wall = metrics["benchmark_wall_s"]
    return {
        "test": metrics["test"]["accuracy"],
        "macro_f1": metrics["test"]["macro_f1"],
        "wall_s": wall,
        "train_s": round(wall - test_encoding - metrics["test"]["seconds"], 1),
    }


def worker_record(
    method: str, dataset: str, encoder: str, k: int, sampling: int, run_dir: Path, resume: bool
) -> dict:
    """The setfit library's run (in its own environment) or zero-shot, in a process of its own."""
    path = run_dir / "record.json"
    if resume and path.is_file():
        return json.loads(path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = [*cell_argv(dataset, encoder, k, sampling), *with_template(METHODS[method] or [], dataset)]
    if method == "zeroshot":
        command = [
            sys.executable,
            str(Path(__file__)),
            "--zero-shot-worker",
            DATASETS[dataset][1],
            *overrides,
        ]
    else:
        command = [SETFIT_PYTHON, str(ROOT / "benchmarks" / "setfit_lib_run.py"), "--set", *overrides]
    stdout, wall = run_logged(command, run_dir / "run.log", capture_stdout=True)
    result = json.loads(stdout.strip().splitlines()[-1])
    record = {
        "test": result["test"],
        "macro_f1": result["macro_f1"],
        "wall_s": round(wall, 1),
        "train_s": round(wall - result["predict_seconds"], 1),
    }
    atomic_write_text(path, json.dumps(record) + "\n")
    return record


def with_template(argv: list[str], dataset: str) -> list[str]:
    """``argv`` with the ``+desc`` marker replaced by the dataset's ``data.label_template``."""
    return [f"data.label_template={DATASETS[dataset][1]}" if item == "+desc" else item for item in argv]


def zero_shot_worker(template: str, overrides: list[str]) -> None:
    """Score the test split zero-shot (the template, no training); prints the JSON line ``worker_record`` reads."""
    import time

    from hftransfer.config import parse_config
    from hftransfer.data.sources import load_task_data
    from hftransfer.evaluation.metrics import sequence_classification_metrics
    from hftransfer.zeroshot import ZeroShotClassifier

    config = parse_config(overrides)
    test = load_task_data(config.data, config.task).splits["test"]
    classifier = ZeroShotClassifier(config.model.name_or_path, template=template)
    started = time.perf_counter()
    labels = sorted(set(test["label"]))
    rows = classifier.predict(test["text"], labels)
    scores = sequence_classification_metrics(
        [labels.index(gold) for gold in test["label"]], [labels.index(row["label"]) for row in rows], labels
    )
    print(
        json.dumps(
            {
                "test": scores["accuracy"],
                "macro_f1": scores["macro_f1"],
                "predict_seconds": time.perf_counter() - started,
            }
        )
    )


def previous_records(records_path: Path) -> list[dict]:
    """The work dir's records; where the work dir is gone (a lost machine), the committed results' records, so a
    resumed benchmark goes on from what was published instead of starting over."""
    if records_path.is_file():
        return [
            _with_macro_f1(json.loads(line), records_path.parent)
            for line in records_path.read_text().splitlines()
        ]
    published = RESULTS / "fewshot.json"
    return json.loads(published.read_text())["records"] if published.is_file() else []


def _with_macro_f1(record: dict, work: Path) -> dict:
    """A record from before macro-F1 was recorded, with it read from its run's metrics.json where there is one."""
    if record.get("macro_f1") is None:
        run_dir = (
            work
            / record["dataset"]
            / record["encoder"]
            / f"{record['method']}-k{record['k']}-s{record['sampling']}"
        )
        metrics = run_dir / "metrics.json"
        if metrics.is_file():
            record["macro_f1"] = json.loads(metrics.read_text())["test"]["macro_f1"]
    return record


def merged_records(records_path: Path, records: list[dict]) -> list[dict]:
    """``records`` plus the ones another process sharing the work dir wrote since (e.g. one process per dataset):
    each process rereads the file before it writes, so neither drops the other's runs."""
    key = lambda r: (r["dataset"], r["encoder"], r["k"], r["sampling"], r["method"])  # noqa: E731
    on_disk = (
        [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.is_file() else []
    )
    mine = {key(r) for r in records}
    return [*(r for r in on_disk if key(r) not in mine), *records]


def majority_shares(datasets: list[str]) -> dict[str, float]:
    """Each dataset's majority-class share of its test split: the score of always answering the commonest label."""
    from collections import Counter

    from hftransfer.config import parse_config
    from hftransfer.data.sources import load_task_data

    shares = {}
    for dataset in datasets:
        config = parse_config(cell_argv(dataset, "minilm-l6", 0, 0))
        labels = load_task_data(config.data, config.task).splits["test"]["label"]
        shares[dataset] = max(Counter(labels).values()) / len(labels)
    return shares


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--zero-shot-worker":
        zero_shot_worker(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--encoders", nargs="+", default=["minilm-l6"])
    parser.add_argument("--ks", nargs="+", type=int, default=KS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--samplings", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-fewshot"))
    parser.add_argument("--resume", action="store_true", help="keep runs that finished")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the results from the work dir's records"
    )
    args = parser.parse_args()
    work = Path(args.work_dir)
    records_path = work / "records.jsonl"
    settings = {"samplings": len(args.samplings), "templates": {name: d[1] for name, d in DATASETS.items()}}
    if args.report_only:
        records = previous_records(records_path)
        settings["majority"] = majority_shares(sorted({r["dataset"] for r in records}))
        write_report(records, settings, list(METHODS))
        return
    records = previous_records(records_path) if args.resume else []
    done = {(r["dataset"], r["encoder"], r["k"], r["sampling"], r["method"]) for r in records}
    cells = [
        (dataset, encoder, k, sampling, method)
        for dataset in args.datasets
        for encoder in args.encoders
        # zero-shot needs no examples: one run per dataset and encoder, recorded as K = 0
        for k, sampling, method in (
            ([(0, 0, "zeroshot")] if "zeroshot" in args.methods else [])
            + [(k, s, m) for k in args.ks for s in args.samplings for m in args.methods if m != "zeroshot"]
        )
    ]
    for dataset, encoder, k, sampling, method in cells:
        key = (dataset, encoder, k, sampling, method)
        if key in done:
            continue
        record = {
            "dataset": dataset,
            "encoder": encoder,
            "k": k,
            "sampling": sampling,
            "method": method,
        }
        record.update(run_one(method, dataset, encoder, k, sampling, work, args.resume))
        work.mkdir(parents=True, exist_ok=True)
        records = merged_records(records_path, [*records, record])
        atomic_write_text(records_path, "".join(json.dumps(r) + "\n" for r in records))
        print(json.dumps(record), flush=True)
        write_report(records, settings, list(METHODS))
    write_report(records, settings, list(METHODS))


if __name__ == "__main__":
    main()

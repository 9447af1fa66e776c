"""A real two-process CPU run through ``accelerate launch``: gathered evaluation covers exactly the eval set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoTokenizer

from hftransfer.data.features import tokenize_token_task
from tests.conftest import make_ner_examples, write_conll

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_cpu_run_gathers_exactly_the_eval_rows(tiny_model_dir, tmp_path):
    train = write_conll(tmp_path / "train.conll", make_ner_examples(40, seed=1))
    dev_examples = make_ner_examples(17, seed=2)  # 17 rows: not a multiple of 2 processes x batch 4
    dev = write_conll(tmp_path / "dev.conll", dev_examples)
    run_dir = tmp_path / "run"
    with socket.socket() as probe:  # a free port: a concurrent launch on the default 29500 would hang this one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        str(ROOT / "recipes" / "finetune_ner.py"),
        f"model.name_or_path={tiny_model_dir}", f"data.train_file={train}", f"data.validation_file={dev}",
        "data.test_size=0", "data.max_length=10", f"output_dir={run_dir}",
        "train.epochs=2", "train.batch_size=4", "train.eval_batch_size=4", "train.trackers=[]", "train.lr=3e-3",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["num_processes"] == 2
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    label2id = {t: i for i, t in enumerate(metrics["label_names"])}
    features, _ = tokenize_token_task(Dataset.from_list(dev_examples), tokenizer, label2id, max_length=10)
    assert (
        len(features) > 17
    )  # windowing produced extra rows, so the check below is about rows, not sentences
    assert metrics["validation"]["num_features"] == len(features)
    assert metrics["validation"]["num_examples"] == 17
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["num_features"] == len(features) for r in evals if r["split"] == "validation")

"""Fixed-seed toy runs of every recipe x strategy, multitask and distillation, and their fingerprints.

A fingerprint is what a refactor must not change: the last logged training loss and terms, the final validation
and test metrics, the best step, and a digest of every exported weight file. ``tests/test_regression_runs.py``
compares fresh runs with ``tests/regression_runs.json``, which holds one recording per environment (the CPU
kernels torch dispatches to, and the torch version): the same code gives bit-identical weights in one
environment, not across them (AVX2 and AVX-512 kernels round differently). Record the current environment's
fingerprints only from a commit whose behaviour the existing recordings vouch for, and say so in the commit:

    HF_HUB_OFFLINE=1 python -m tests.regression_runs --write tests/regression_runs.json [--only CASE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from hftransfer.toy import (  # noqa: E402
    make_classification_examples,
    make_ner_examples,
    write_conll,
    write_jsonl,
    write_tiny_bert,
)

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "train.batch_size=8",
    "train.trackers=[]",
    "train.warmup_ratio=0",
    "train.lr=3e-3",
    "train.max_steps=8",
    "train.eval_every_steps=3",
    "train.log_every_steps=1",
    "train.seed=7",
]
STRATEGIES = {
    "full": [],
    "frozen_linear": ["strategy.name=frozen", "strategy.head=linear", "train.lr=5e-2"],
    "frozen_mlp": ["strategy.name=frozen", "strategy.head=mlp", "train.lr=5e-2"],
    "freeze": ["strategy.name=freeze", "strategy.freeze_layers=1"],
    "gradual": ["strategy.name=gradual", "strategy.unfreeze_unit=step", "strategy.unfreeze_every=2"],
    "lora": ["strategy.name=lora", "train.lr=1e-2"],
    "llrd": ["strategy.layer_lr_decay=0.8", "strategy.head_lr=6e-3"],
    "l2sp": ["objectives+=[{name: l2sp, weight: 1.0}]"],
    "drift": ["objectives+=[{name: drift, weight: 1.0}]"],
}
CASES: dict[str, tuple[str, list[str]]] = {
    **{f"ner_{name}": ("finetune_ner", extra) for name, extra in STRATEGIES.items()},
    **{f"classifier_{name}": ("finetune_classifier", extra) for name, extra in STRATEGIES.items()},
    "multitask_proportional": ("multitask", ["sampler.name=proportional"]),
    "multitask_round_robin": ("multitask", ["sampler.name=round_robin"]),
    "distill_logits": ("distill", ["objectives.task.weight=0.5", "objectives.distill_soft.weight=0.5"]),
    "distill_hidden": (
        "distill",
        ["objectives=[{name: task, weight: 1}, {name: distill_hidden, weight: 1}]"],
    ),
}
# Log fields that measure time or memory, not behaviour.
_VOLATILE = ("seconds", "per_second", "memory", "rss", "runtime")


def _files(root: Path) -> dict[str, dict[str, Path]]:
    return {
        "ner": {
            "train": write_conll(root / "ner_train.conll", make_ner_examples(48, seed=1)),
            "validation": write_conll(root / "ner_dev.conll", make_ner_examples(16, seed=2)),
            "test": write_conll(root / "ner_test.conll", make_ner_examples(16, seed=3)),
        },
        "cls": {
            "train": write_jsonl(root / "cls_train.jsonl", make_classification_examples(64, seed=1)),
            "validation": write_jsonl(root / "cls_dev.jsonl", make_classification_examples(24, seed=2)),
            "test": write_jsonl(root / "cls_test.jsonl", make_classification_examples(24, seed=3)),
        },
    }


def _data(files: dict[str, Path], prefix: str = "data") -> list[str]:
    return [f"{prefix}.{split}_file={path}" for split, path in files.items()]


def _tasks_yaml(root: Path, files: dict[str, dict[str, Path]]) -> Path:
    lines = ["tasks:"]
    for name, task in (("ner", "token-classification"), ("cls", "sequence-classification")):
        lines += [f"  - name: {name}", f"    task: {task}", "    data:"]
        lines += [f"      {split}_file: {path}" for split, path in files[name].items()]
    path = root / "tasks.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _recipe(name: str):
    sys.path.insert(0, str(ROOT / "recipes"))
    return __import__(name)


def run_case(name: str, workdir: Path) -> dict[str, Any]:
    """Run case ``name`` in ``workdir`` (a fresh directory) and return its fingerprint.

    Runs on one CPU thread: with two, the order of float reductions (and so the last bits of the weights, and
    more under L2-SP) depends on the thread count, which is not what this comparison is about.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_case(name, workdir)
    finally:
        torch.set_num_threads(threads)


def _run_case(name: str, workdir: Path) -> dict[str, Any]:
    recipe, extra = CASES[name]
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = write_tiny_bert(workdir / "tiny-bert", seed=0)
    files = _files(workdir)
    run_dir = workdir / "run"
    argv = [f"model.name_or_path={model_dir}", f"output_dir={run_dir}", *COMMON]
    if recipe == "multitask":
        argv = ["--config", str(_tasks_yaml(workdir, files)), *argv, *extra]
    elif recipe == "distill":
        teacher = workdir / "teacher"
        _recipe("finetune_ner").main(
            [f"model.name_or_path={model_dir}", f"output_dir={teacher}", *COMMON, *_data(files["ner"])]
        )
        # The student: the teacher's every other layer (the preset's), so hidden states compare token by token.
        argv = [
            *argv[1:],
            *_data(files["ner"]),
            f"distill.teacher={teacher}",
            f"distill.cache_dir={workdir / 'teacher-cache'}",
            *extra,
        ]
    else:
        files = files["ner"] if recipe == "finetune_ner" else files["cls"]
        argv = [*argv, *_data(files), *extra]
        if "strategy.name=frozen" in extra:  # the feature cache stays inside the case's directory
            argv.append(f"strategy.cache_dir={workdir / 'cache'}")
    _recipe(recipe).main(argv)
    return fingerprint(run_dir)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if any(word in key for word in _VOLATILE):
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _numbers(value).items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


def _weights(path: Path) -> dict[str, Any]:
    tensors = load_file(str(path))
    digest = hashlib.sha256()
    total = total_sq = 0.0
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        total += float(tensor.double().sum())
        total_sq += float(tensor.double().pow(2).sum())
    return {"sha256": digest.hexdigest(), "sum": total, "sum_sq": total_sq}


def environment() -> dict[str, str]:
    """What decides the last bits of a run besides the code: the CPU (its vector instructions and its model: two
    AVX-512 CPUs of different makers differ in the last bits), the torch build, and the releases of the libraries
    whose kernels and update rules a run goes through (a new transformers or peft release moved weight sums by
    ~1e-6 with identical metrics). Recordings made before these keys existed are compared with margins only."""
    import accelerate
    import peft
    import transformers

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": _cpu_model(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def fingerprint(run_dir: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_train = [r for r in records if r["split"] == "train"][-1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train_terms = {k: v for k, v in last_train.items() if k not in ("split", "epoch", "step")}
    weights = {
        str(path.relative_to(run_dir)): _weights(path)
        for folder in ("model", "adapter")
        for path in sorted((run_dir / folder).rglob("*.safetensors"))
    }
    return {
        "train": {**_numbers(train_terms), "step": last_train["step"]},
        "validation": _numbers(metrics.get("validation", {})),
        "test": _numbers(metrics.get("test", {})),
        "best_step": metrics.get("best_step"),
        "weights": weights,
    }


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    import hftransfer

    code_root = Path(hftransfer.__file__).resolve().parents[1]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=code_root, capture_output=True, text=True, check=False
    ).stdout.strip()
    stored = json.loads(args.write.read_text()) if args.write.exists() else {"recordings": []}
    here = environment()
    others = [r for r in stored["recordings"] if r["environment"] != here]
    mine = [r for r in stored["recordings"] if r["environment"] == here]
    recorded = mine[0] if mine and args.only else {"environment": here, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(CASES):
            recorded["cases"][name] = run_case(name, Path(tmp) / name)
    recorded["recorded_at_commit"] = commit
    recorded["command"] = " ".join(sys.argv)
    stored["recordings"] = [*others, recorded]
    args.write.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""The benchmark suite: one command runs every measurement and writes ``benchmarks/RESULTS.md`` (tables and plots)
and ``benchmarks/results/suite.json``.

    python benchmarks/suite.py                                  # MiniLM-L6, WNUT-16 + Rotten Tomatoes, 3 seeds
    python benchmarks/suite.py --models minilm-l6 mpnet-base    # both offline encoders
    python benchmarks/suite.py --sections baseline --tasks ner --seeds 1 2 3
    python benchmarks/suite.py --quick --output-dir /tmp/suite  # smoke run: tiny model, toy data (checks the harness)

Sections (each over every seed; a run shared by two sections is run once):

- ``baseline``: full fine-tuning by hftransfer and by a plain ``transformers.Trainer`` script
  (``benchmarks/trainer_baseline.py``) with the same model, split, hyper-parameters and epochs: scores, wall
  times and their ratio, training samples/s and tokens/s, achieved matmul FLOP/s against this machine's measured
  ``torch.matmul`` peak, peak RSS, time to reach a target validation score, inference samples/s.
- ``strategies``: score, trainable fraction, seconds per epoch and peak memory of each transfer strategy.
- ``multitask``: one shared encoder for both tasks against the two single-task runs: the same optimizer steps in
  total, each task its single-task share of them (sampling weights) and its single-task learning rate.
- ``distill``: a 3-layer student of the teacher's layers trained with and without the teacher.

The baseline section runs on each launch line of ``--launchers`` (python, ``accelerate launch`` with one process,
the README's two-process CPU line), the Trainer script on the same line as hftransfer.

Every run is the real recipe (or the Trainer script) in a fresh process, so peak memory is its own; runs go one
after another, never side by side (on a small CPU, anything running next to a timed run slows it several times).
Results are saved after every run, and records of runs outside the invocation's sections, tasks and seeds are
always kept. Without ``--resume`` the planned runs are made again and replace their records; with it, planned runs
already in the JSON file are kept and only the missing ones run (an interrupted suite loses at most one run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from flops import matmul_peak_flops, training_flops
from runner import LAUNCHERS, ROOT, launch_command, run_logged, run_recipe
from suite_report import write_report

from hftransfer.utils import atomic_write_text

SECTIONS = ("baseline", "strategies", "multitask", "distill")
METRIC = {"ner": "f1", "sentiment": "accuracy"}
TASK_TYPE = {"ner": "token-classification", "sentiment": "sequence-classification"}
RECIPE = {"ner": "finetune_ner.py", "sentiment": "finetune_classifier.py"}

# Strategy -> overrides per task, on top of the task's full fine-tuning settings (tuned on these assets:
# benchmarks/results/strategies.md). ``full`` is the baseline section's run.
STRATEGIES = {
    "full": {"ner": [], "sentiment": []},
    "frozen_linear": {
        task: ["strategy.name=frozen", "strategy.head=linear", "train.epochs=20", "train.lr=3e-3"]
        + ["train.batch_size=32", "train.warmup_ratio=0"]
        for task in METRIC
    },
    "freeze_bottom_3": {task: ["strategy.name=freeze", "strategy.freeze_layers=3"] for task in METRIC},
    "llrd": {
        "ner": ["train.lr=3e-4", "strategy.layer_lr_decay=0.8", "strategy.head_lr=1e-3"],
        "sentiment": ["train.lr=1.5e-4", "strategy.layer_lr_decay=0.8", "strategy.head_lr=1e-3"],
    },
    "lora": {
        "ner": ["strategy.name=lora", "strategy.r=8", "strategy.target_modules=[all-linear]", "train.lr=1e-3"]
        + ["train.epochs=8", "strategy.lora_dropout=0.1"],
        "sentiment": ["strategy.name=lora", "strategy.r=8", "strategy.target_modules=[query,value,dense]"]
        + ["train.lr=1e-3", "strategy.lora_dropout=0.1"],
    },
    "l2sp": {task: ["objectives+=[{name: l2sp, weight: 1.0e-4}]"] for task in METRIC},
}
# Without adapter-input dropout, peft keeps no dropped copy of each adapted layer's input for backward.
STRATEGIES["lora_dropout0"] = {
    task: [o for o in overrides if not o.startswith("strategy.lora_dropout=")] + ["strategy.lora_dropout=0"]
    for task, overrides in STRATEGIES["lora"].items()
}
SAMPLERS = ("proportional", "round_robin")
# Multitask configurations beyond the sampler and the optimizer state (runs named <sampler>+<variant>).
MULTITASK_VARIANTS = {
    # Heads at the encoder's learning rate, as in the single-task runs (the multitask preset sets a head rate).
    "plain": ["strategy.head_lr=null"],
    # New heads learn 5x faster than the pretrained encoder (the multitask preset's setting).
    "head_lr": ["strategy.head_lr=1e-3"],
}
STUDENTS = {
    "undistilled": ["objectives=[{name: task, weight: 1}]", "distill.transfer_data=null"],
    "distilled": [],
}


@dataclass
class Setting:
    """What the runs train on: the model and data of each task, and the full fine-tuning hyper-parameters."""

    models: list[str]
    data: dict[str, list[str]]  # task -> recipe overrides selecting its data
    trainer_data: dict[str, list[str]]  # task -> trainer_baseline.py arguments selecting the same data
    # task -> epochs, lr, batch_size, optional max_train_samples and head_bias_init (shared by hftransfer and the
    # Trainer)
    hyper: dict[str, dict[str, float | str]]
    # model -> task -> the hyper-parameters that differ for that model (e.g. a larger encoder's learning rate)
    model_hyper: dict[str, dict[str, dict[str, float | str]]] = field(default_factory=dict)
    scale: list[str] = field(default_factory=list)  # overrides every recipe run gets (quick mode: tiny runs)
    peak_size: int = 2048
    peak_seconds: float = 1.0

    def task_hyper(self, model: str, task: str) -> dict[str, float | str]:
        """Epochs, lr, batch size (and any training-set cap) of ``task`` on ``model``."""
        return {**self.hyper[task], **self.model_hyper.get(model, {}).get(task, {})}


def real_setting(models: list[str]) -> Setting:
    # Rotten Tomatoes keeps 2,000 training reviews (little labelled data is the point; full validation and test).
    sentiment = {"epochs": 3, "lr": 1e-4, "batch_size": 16, "max_train_samples": 2000}
    return Setting(
        models=models,
        data={"ner": ["data.dataset=wnut16"], "sentiment": ["data.dataset=rotten_tomatoes"]},
        trainer_data={"ner": [], "sentiment": []},
        hyper={"ner": {"epochs": 5, "lr": 2e-4, "batch_size": 16}, "sentiment": sentiment},
        # MiniLM-L6 is small and wants a high learning rate; the 12-layer, 768-wide MPNet gets the rates usual for
        # fine-tuning BERT-base-sized encoders (not tuned here). Its NER head starts at the label prior: from a
        # zero bias, all-mpnet-base-v2's nearly parallel token vectors collapsed and every token became O (entity
        # F1 0.0 for 5 epochs, 2026-11-26); both runners get the same start.
        model_hyper={
            "mpnet-base": {"ner": {"lr": 5e-5, "head_bias_init": "prior"}, "sentiment": {"lr": 3e-5}}
        },
    )


def quick_setting(work: Path) -> Setting:
    from hftransfer.toy import make_toy_assets

    toy = make_toy_assets(work / "toy", ner_sizes=(96, 24, 24), sentiment_sizes=(96, 24, 24))
    files = {"ner": toy.ner_files, "sentiment": toy.sentiment_files}
    return Setting(
        models=[str(toy.model_dir)],
        data={
            task: ["data.dataset=null", *(f"data.{split}_file={path}" for split, path in paths.items())]
            for task, paths in files.items()
        },
        trainer_data={
            task: [f"--{split}-file={path}" for split, path in paths.items()] for task, paths in files.items()
        },
        hyper={task: {"epochs": 2, "lr": 5e-3, "batch_size": 8} for task in METRIC},
        scale=["train.epochs=2", "train.batch_size=8"],
        peak_size=256,
        peak_seconds=0.1,
    )


class Suite:
    """Runs the sections, one process per run, saving every record as soon as it exists."""

    def __init__(self, args: argparse.Namespace, setting: Setting, work: Path, out: Path) -> None:
        self.args, self.setting, self.work = args, setting, work
        self.path = out / "results" / "suite.json"
        # Records of runs outside this invocation are always kept: running one section or seed must not wipe the
        # rest of the file. Without --resume the runs this invocation plans are made again and replace their records.
        previous = json.loads(self.path.read_text()) if self.path.exists() else {}
        if previous and bool(previous.get("quick")) != bool(args.quick):
            kind = "smoke-run (--quick)" if previous.get("quick") else "real"
            raise SystemExit(
                f"{self.path} holds {kind} results; write {'these' if args.quick else 'real'} ones elsewhere "
                "(--output-dir) instead of mixing the two"
            )
        self.records: dict[str, dict] = previous.get("runs", {})
        self.made: set[str] = set()  # keys run by this invocation (a run shared by two sections is made once)
        self.machine = previous.get("machine") or machine_facts(setting)
        self.save()

    def reuse(self, key: str) -> bool:
        """Whether ``key``'s saved record stands in for running it now."""
        return key in self.records and (self.args.resume or key in self.made)

    def store(self, key: str, record: dict) -> dict:
        """Keep a run's new record (replacing any saved one) and save the file at once."""
        self.records[key] = record
        self.made.add(key)
        self.save()
        return record

    def save(self) -> None:
        payload = {"machine": self.machine, "quick": self.args.quick, "runs": self.records}
        atomic_write_text(self.path, json.dumps(payload, indent=1) + "\n")

    def peak(self) -> float:
        """This machine's matmul peak right now. A shared VM drifts: this 2-core one ran the same training 20%
        faster one evening than that afternoon, and 1-second peaks taken a minute apart ranged 121-161 GFLOP/s. So
        every timed run carries the mean of peaks taken just before and just after it (``matmul_peak_flops``) and
        both ends (``matmul_peaks``)."""
        return matmul_peak_flops(size=self.setting.peak_size, min_seconds=self.setting.peak_seconds)

    def peaks_around(self, record: dict, before: float) -> None:
        after = self.peak()
        record["matmul_peaks"] = [before, after]
        record["matmul_peak_flops"] = (before + after) / 2

    # ---------------------------------------------------------------------------------------------- runs
    def recipe_run(
        self, key: str, recipe: str, argv: list[str], extra: dict | None = None, launcher: str = "python"
    ) -> dict:
        """Run a recipe once (or take its saved record): the record of its metrics.json and timings."""
        if self.reuse(key):
            return self.records[key]
        run_dir = self.work / key.replace("/", "-")
        peak = self.peak()
        print(f"[{time.strftime('%H:%M:%S')}] {key} ...", flush=True)
        metrics, wall = run_recipe(recipe, [*argv, *self.setting.scale], run_dir, launcher=launcher)
        # When it ended: which runs shared a sitting (the machine's speed drifts between sittings).
        record = {
            "run_dir": str(run_dir),
            "wall_seconds": round(wall, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M"),
            "launcher": launcher,
            "threads": metrics.get("threads", {}).get("threads_per_process"),
            "processes": metrics.get("threads", {}).get("processes"),
        }
        self.peaks_around(record, peak)
        record.update(extra or {})
        record.update(summarise(metrics, run_dir))
        return self.store(key, record)

    def trainer_run(self, key: str, model: str, task: str, seed: int, launcher: str = "python") -> dict:
        if self.reuse(key):
            return self.records[key]
        hyper = self.setting.task_hyper(model, task)
        launch, env = launch_command(launcher, ROOT / "benchmarks" / "trainer_baseline.py")
        command = [
            *launch,
            f"--task={task}",
            f"--model={model}",
            f"--seed={seed}",
            f"--epochs={hyper['epochs']}",
            f"--lr={hyper['lr']}",
            f"--batch-size={hyper['batch_size']}",
            f"--output-dir={self.work / key.replace('/', '-')}",
            *self.setting.trainer_data[task],
        ]
        if "max_train_samples" in hyper:
            command.append(f"--max-train-samples={hyper['max_train_samples']}")
        if "head_bias_init" in hyper:
            command.append(f"--head-bias-init={hyper['head_bias_init']}")
        peak = self.peak()
        print(f"[{time.strftime('%H:%M:%S')}] {key} ...", flush=True)
        stdout, wall = run_logged(
            command, self.work / f"{key.replace('/', '-')}.log", capture_stdout=True, env=env
        )
        output = json.loads(stdout.strip().splitlines()[-1])
        metric = METRIC[task]
        record = {
            "wall_seconds": round(wall, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M"),
            "launcher": launcher,
            "processes": output.get("processes", 1),
            "threads": output.get("threads"),
            "score": output["test"][f"test_{metric}"],
            "validation_score": output["validation"][f"validation_{metric}"],
            "train_seconds": output["train_runtime"],
            "samples": output["train_sequences"],
            "tokens": output["train_tokens"],
            "padded_tokens": output["train_padded_tokens"],
            "history": [{"train_seconds": h["train_seconds"], "score": h[metric]} for h in output["history"]],
            "peak_rss_mb": output["peak_rss_mb"],
            "inference_samples_per_second": output["test"]["test_samples_per_second"],
        }
        self.peaks_around(record, peak)
        if "test_f1_conlleval" in output["test"]:
            record["score_conlleval"] = output["test"]["test_f1_conlleval"]
        return self.store(key, record)

    def full_argv(self, task: str, seed: int, model: str) -> list[str]:
        hyper = self.setting.task_hyper(model, task)
        argv = [f"model.name_or_path={model}", *self.setting.data[task], f"train.seed={seed}"]
        argv += [f"train.epochs={hyper['epochs']}", f"train.lr={hyper['lr']}"]
        argv += [f"train.batch_size={hyper['batch_size']}"]
        if "max_train_samples" in hyper:
            argv.append(f"data.max_train_samples={hyper['max_train_samples']}")
        if "head_bias_init" in hyper:
            argv.append(f"model.head_bias_init={hyper['head_bias_init']}")
        return argv

    def ours_full(self, model: str, task: str, seed: int, launcher: str = "python") -> dict:
        key = f"{alias(model)}/{task}/{launched('full', launcher)}/{seed}"
        record = self.recipe_run(key, RECIPE[task], self.full_argv(task, seed, model), launcher=launcher)
        self.add_flops(record, Path(record["run_dir"]) / "model", task)
        return record

    def add_flops(self, record: dict, model_dir: Path, task: str) -> None:
        """The matmul FLOPs of a full fine-tuning run, from its sequence and padded-token counts."""
        if "training_flops" not in record:
            record["training_flops"] = training_flops(
                str(model_dir), TASK_TYPE[task], record["samples"], record["padded_tokens"]
            )
            self.save()

    # ------------------------------------------------------------------------------------------ sections
    def baseline(self, model: str, task: str, seed: int) -> None:
        """hftransfer and the Trainer script on each launch line asked for (``--launchers``), side by side."""
        for launcher in self.args.launchers:
            ours = self.ours_full(model, task, seed, launcher)
            key = f"{alias(model)}/{task}/{launched('trainer', launcher)}/{seed}"
            trainer = self.trainer_run(key, model, task, seed, launcher)
            self.add_flops(trainer, Path(ours["run_dir"]) / "model", task)  # the same architecture

    def strategies(self, model: str, task: str, seed: int) -> None:
        for name in self.args.strategies:
            if name == "full":
                self.ours_full(model, task, seed)
                continue
            argv = [*self.full_argv(task, seed, model), *STRATEGIES[name][task]]
            key = f"{alias(model)}/{task}/{name}/{seed}"
            if name.startswith("frozen"):
                # The row is the second run: features from the cache the first one wrote.
                cache = self.work / "feature-cache"
                argv.append(f"strategy.cache_dir={cache}")
                self.recipe_run(f"{key}/encode", RECIPE[task], argv)
            self.recipe_run(key, RECIPE[task], argv)

    def multitask(self, model: str, seed: int) -> None:
        """Both tasks on one encoder with the single-task runs' budgets: their steps in total, each task its own
        share of them (sampling weights) and its own learning rate."""
        singles = {task: self.ours_full(model, task, seed) for task in METRIC}
        budget = sum(record["steps"] for record in singles.values())
        ner = self.setting.task_hyper(model, "ner")  # the shared schedule's rate and batch size
        configurations = [
            (sampler, state, variant)
            for sampler in self.args.samplers
            for state in self.args.optimizer_states
            for variant in self.args.multitask_variants
        ]
        for sampler, state, variant in configurations:
            if sampler == "proportional":  # p ∝ weight × batches: the epochs give each task its own steps
                weights = {task: self.setting.task_hyper(model, task)["epochs"] for task in METRIC}
            elif sampler in ("uniform", "round_robin"):  # p ∝ weight
                weights = {task: singles[task]["steps"] for task in METRIC}
            else:  # temperature: its own flattening of the sizes is the point, so no budget matching
                weights = {task: 1 for task in METRIC}
            argv = [
                f"--config={self.multitask_tasks(model, sampler, weights)}",
                f"model.name_or_path={model}",
                f"sampler.name={sampler}",
                f"train.seed={seed}",
                f"train.max_steps={budget}",
                "train.epochs=1000",
                f"train.lr={ner['lr']}",
                f"train.batch_size={ner['batch_size']}",
                f"optimizer_state={state}",
                *MULTITASK_VARIANTS[variant],
            ]
            name = "+".join(
                [sampler, *([state] if state != "shared" else []), *([variant] if variant != "plain" else [])]
            )
            self.recipe_run(f"{alias(model)}/multitask/{name}/{seed}", "multitask.py", argv)

    def multitask_tasks(self, model: str, sampler: str, weights: dict[str, float]) -> Path:
        """The two tasks, on exactly the single-task runs' data and learning rates, as a YAML layered on the
        multitask preset."""
        import yaml

        tasks = []
        for task, kind in TASK_TYPE.items():
            data = {}
            for override in self.setting.data[task]:
                name, value = override.removeprefix("data.").split("=", 1)
                data[name] = None if value == "null" else value
            data.update({"validation_size": 0.1, "test_size": 0.1, "split_seed": 0})
            hyper = self.setting.task_hyper(model, task)
            if "max_train_samples" in hyper:
                data["max_train_samples"] = hyper["max_train_samples"]
            tasks.append(
                {
                    "name": task,
                    "task": kind,
                    "data": data,
                    "metric": METRIC[task],
                    "lr": hyper["lr"],
                    "sampling_weight": weights[task],
                }
            )
        path = self.work / f"multitask-tasks-{alias(model)}-{sampler}.yaml"
        path.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
        return path

    def distill(self, model: str, seed: int) -> None:
        teacher = self.ours_full(model, "ner", seed)
        argv = [
            *self.setting.data["ner"],
            f"distill.teacher={teacher['run_dir']}",
            "distill.student=teacher_layers",
            f"train.seed={seed}",
        ]
        if self.args.quick:
            argv += ["distill.student_layers=[1]", f"distill.cache_dir={self.work / 'teacher-cache'}"]
        for name, overrides in STUDENTS.items():
            self.recipe_run(
                f"{alias(model)}/ner/student_{name}/{seed}",
                "distill.py",
                [*argv, *overrides],
                extra={"teacher_score": teacher["score"]},
            )

    def run(self) -> None:
        for model in self.setting.models:
            for seed in self.args.seeds:
                for section in self.args.sections:
                    if section in ("baseline", "strategies"):
                        tasks = self.args.strategy_tasks if section == "strategies" else self.args.tasks
                        for task in tasks:
                            getattr(self, section)(model, task, seed)
                    else:
                        getattr(self, section)(model, seed)


def summarise(metrics: dict, run_dir: Path) -> dict:
    """The numbers the report needs from one run's ``metrics.json`` and validation history."""
    train = metrics["train"]
    if "tasks" in metrics["test"]:  # multitask: one score per task
        score = {
            task: values[METRIC.get(task, "accuracy")] for task, values in metrics["test"]["tasks"].items()
        }
    else:
        metric = "f1" if "f1" in metrics["test"] else "accuracy"
        score = metrics["test"][metric]
    history = []
    log = run_dir / "metrics.jsonl"
    if log.exists() and not isinstance(score, dict):
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if entry["split"] == "validation" and "train_seconds" in entry:
                history.append(
                    {"train_seconds": entry["train_seconds"], "score": entry.get("f1", entry.get("accuracy"))}
                )
    record = {
        "score": score,
        "steps": train["steps"],
        "steps_per_task": train.get("steps_per_task"),
        "train_seconds": train["runtime_seconds"],
        "step_seconds": train.get("step_seconds"),
        "seconds_per_epoch": train["seconds_per_epoch"],
        "samples": train.get("samples"),
        "tokens": train.get("tokens"),
        "padded_tokens": train.get("padded_tokens"),
        "peak_rss_mb": metrics["peak_memory_mb"]["rss"],
        "peak_gpu_mb": metrics["peak_memory_mb"].get("gpu"),
        # The process peak when training ended: before the export (a LoRA merge copies the model) and the test.
        "train_peak_rss_mb": (train.get("peak_memory_mb") or {}).get("rss"),
        # Resident memory that training steps added over what the process held before training (model, data).
        "train_rss_growth_mb": (train.get("rss_mb") or {}).get("growth_in_steps"),
        "trainable_fraction": metrics.get("parameters", {}).get("trainable_fraction"),
        "history": history,
    }
    test = metrics["test"]
    if test.get("seconds") and test.get("num_examples"):
        record["inference_samples_per_second"] = test["num_examples"] / test["seconds"]
    if "distill_report" in metrics:
        report = metrics["distill_report"]
        record.update(
            teacher_score=report["teacher"]["metrics"][METRIC["ner"]],
            speedup=report["speedup"],
            parameter_ratio=report["parameter_ratio"],
        )
    return record


def launched(name: str, launcher: str) -> str:
    """A run's name in the records: ``full``, or ``full@accelerate`` on another launch line than plain python (the
    records from before launch lines were compared are python runs, under their old names)."""
    return name if launcher == "python" else f"{name}@{launcher}"


def alias(model: str) -> str:
    return Path(model).name if os.sep in model else model


def machine_facts(setting: Setting) -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        cpu = names[0] if names else cpu
    facts = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "matmul_peak_flops": matmul_peak_flops(size=setting.peak_size, min_seconds=setting.peak_seconds),
        "started": time.strftime("%Y-%m-%d %H:%M"),
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
        facts["gpu_matmul_peak_flops"] = {
            str(dtype).removeprefix("torch."): matmul_peak_flops("cuda", dtype, size=8192)
            for dtype in (torch.float32, torch.bfloat16)
        }
    return facts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny model and toy data: checks the harness in seconds"
    )
    parser.add_argument("--models", nargs="+", default=["minilm-l6"], help="aliases, directories or Hub ids")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--tasks", nargs="+", choices=list(METRIC), default=list(METRIC))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--launchers",
        nargs="+",
        choices=list(LAUNCHERS),
        default=list(LAUNCHERS),
        help="launch lines of the baseline section (other sections run under python): python <script>, "
        "accelerate launch <script> (the README's line), and the README's two-process CPU line",
    )
    parser.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument(
        "--optimizer-states",
        nargs="+",
        choices=["shared", "per_task"],
        default=["shared"],
        help="multitask AdamW state: one shared, or one per task (runs named <sampler>+per_task)",
    )
    parser.add_argument(
        "--multitask-variants",
        nargs="+",
        choices=list(MULTITASK_VARIANTS),
        default=["plain"],
        help="multitask configurations (runs named <sampler>+<variant>): "
        + "; ".join(
            f"{name}: {' '.join(overrides) or 'as the single-task runs'}"
            for name, overrides in MULTITASK_VARIANTS.items()
        ),
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="default: benchmarks/ (quick: a temp dir)"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="run directories (default: a temp dir)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip planned runs already in results/suite.json (others are always kept)",
    )
    args = parser.parse_args(argv)
    if args.quick and args.strategies == list(STRATEGIES):
        args.strategies = ["full", "frozen_linear", "lora"]
    if args.quick and args.seeds == [1, 2, 3]:
        args.seeds = [1]
    if args.quick and args.samplers == list(SAMPLERS):
        args.samplers = ["proportional"]
    # Quick mode: the strategies on one task are enough to exercise every code path of the harness.
    args.strategy_tasks = ["ner"] if args.quick else args.tasks
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="hftransfer-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.output_dir or (work / "report" if args.quick else ROOT / "benchmarks")
    setting = quick_setting(work) if args.quick else real_setting(args.models)
    suite = Suite(args, setting, work, out)
    suite.run()
    report = write_report(suite.machine, suite.records, out, quick=args.quick)
    print(f"Report: {report}")
    return report


if __name__ == "__main__":
    main()

"""A real two-process CPU run through ``accelerate launch``: gathered evaluation covers exactly the eval set."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from hftransfer.data.features import tokenize_token_task
from tests.conftest import make_ner_examples, write_conll

ROOT = Path(__file__).resolve().parents[1]


def hermetic_env(tmp_path: Path) -> dict[str, str]:
    """The launch must not pick up a shared machine's accelerate config or a parent job's rank variables."""
    inherited = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in inherited and not key.startswith(("ACCELERATE_", "TORCHELASTIC_"))
    }
    env.update(
        ACCELERATE_USE_CPU="1",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),  # no ~/.cache/huggingface/accelerate/default_config.yaml
        OMP_NUM_THREADS="1",
        PYTHONFAULTHANDLER="1",  # SIGABRT on timeout prints every process's Python stack
    )
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # both processes are local; never route through an outside interface
    return env


def run_launch(command: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, str]:
    """Run ``command`` with its output in ``log``; on timeout, dump the stacks of the hung processes first."""
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # torchrun starts the workers in sessions of their own: signal every descendant, not a process group.
            processes = [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]
            for child in processes:
                child.send_signal(signal.SIGABRT)
            time.sleep(5)
            for child in processes:
                if child.is_running():
                    child.kill()
            process.wait()
            return -1, f"timed out after {timeout} s; stacks and output:\n" + readable_log(log)
    return returncode, readable_log(log)


def readable_log(log: Path) -> str:
    """The launch output without faulthandler's lists of loaded extension modules (one per aborted process,
    thousands of characters each), which would otherwise push the stacks out of a failure message."""
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if not line.startswith("Extension modules:"))


def launch_or_fail(
    command: list[str], tmp_path: Path, run_dir: Path, timeout: float = 240, attempts: int = 2
) -> str:
    """Run a 2-process launch; fail the test with its output unless it exits 0; returns the output.

    A launch that hangs is aborted (every process prints its stacks) and tried once more from an empty run
    directory. A hang seen once in CI (2 cores, shared) and never in hundreds of local runs should not block a
    landing, but its stacks are kept visible as a warning in the test summary; two hangs in a row fail the test.
    """
    for attempt in range(1, attempts + 1):
        log = tmp_path / f"launch-{attempt}.log"
        returncode, output = run_launch(command, hermetic_env(tmp_path), log, timeout=timeout)
        if returncode != -1 or attempt == attempts:
            break
        warnings.warn(
            f"2-process launch hung (attempt {attempt} of {attempts}); retrying. {excerpt(output)}",
            stacklevel=2,
        )
        shutil.rmtree(run_dir, ignore_errors=True)
    assert returncode == 0, excerpt(output)
    return output


def excerpt(output: str, head: int = 1500, tail: int = 6000) -> str:
    """The start of a launch's output (the launcher's and the recipe's first lines) and its end (the error, or
    every process's stack after a hang)."""
    if len(output) <= head + tail:
        return output
    return f"{output[:head]}\n[... {len(output) - head - tail} characters ...]\n{output[-tail:]}"


def test_a_hung_launch_is_reported_with_its_stacks(tmp_path):
    sleeper = [
        sys.executable,
        "-c",
        "import numpy, time\ndef waiting_forever():\n    time.sleep(60)\nwaiting_forever()",
    ]
    returncode, output = run_launch(sleeper, hermetic_env(tmp_path), tmp_path / "launch.log", timeout=2)
    assert returncode == -1
    assert "timed out after 2 s" in output and "waiting_forever" in output  # the hung process's Python stack
    # faulthandler's module list (numpy's extensions here) is in the log but left out of the report
    assert "Extension modules" in (tmp_path / "launch.log").read_text() and "Extension modules" not in output


PREFLIGHT = """
import torch, torch.distributed as dist
from accelerate import PartialState
state = PartialState(cpu=True)
value = torch.ones(1) * (state.process_index + 1)
dist.all_reduce(value)
assert state.num_processes == 2 and value.item() == 3.0, (state.num_processes, value)
state.wait_for_everyone()
print("gloo ok", flush=True)
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def gloo_works(tmp_path_factory) -> None:
    """Skip (with the launcher's output) on a machine where a bare 2-process gloo job cannot run at all.

    This separates "this sandbox cannot do multi-process CPU jobs" from a bug of ours: with a working gloo, the
    tests below must pass.
    """
    tmp_path = tmp_path_factory.mktemp("gloo-preflight")
    script = tmp_path / "preflight.py"
    script.write_text(PREFLIGHT)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
    ]  # fmt: skip
    returncode, output = run_launch(command, hermetic_env(tmp_path), tmp_path / "launch.log", timeout=120)
    # Both workers reaching the end is what the preflight asks; the launcher's exit code is not: on a loaded
    # machine a worker's teardown has been seen to make it return 1 after both printed (CI run of 2026-12-07).
    if output.count("gloo ok") != 2:
        pytest.skip(
            f"a bare 2-process gloo job does not run on this machine (rc {returncode}): {excerpt(output)}"
        )


# Strategies whose multi-process behaviour differs: gradual unfreezing changes the trainable set under DDP (it
# needs find_unused_parameters), the frozen head trains on features the main process caches first, LoRA wraps the
# model in peft before DDP.
STRATEGIES = {
    "full": [],
    "gradual": ["strategy.name=gradual", "strategy.unfreeze_every=2", "strategy.unfreeze_unit=step"],
    "frozen": ["strategy.name=frozen"],
    "lora": ["strategy.name=lora", "strategy.r=2", "objectives+=[{name: drift, weight: 0.1}]"],
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_two_process_cpu_run_gathers_exactly_the_eval_rows(tiny_model_dir, tmp_path, strategy, gloo_works):
    train = write_conll(tmp_path / "train.conll", make_ner_examples(40, seed=1))
    dev_examples = make_ner_examples(17, seed=2)  # 17 rows: not a multiple of 2 processes x batch 4
    dev = write_conll(tmp_path / "dev.conll", dev_examples)
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0",  # 0: accelerate picks a free port (a busy 29500 would hang the launch)
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "finetune_ner.py"),
        f"model.name_or_path={tiny_model_dir}", f"data.train_file={train}", f"data.validation_file={dev}",
        "data.test_size=0", "data.max_length=10", f"output_dir={run_dir}",
        "train.epochs=2", "train.batch_size=4", "train.eval_batch_size=4", "train.trackers=[]", "train.lr=3e-3",
        f"strategy.cache_dir={tmp_path / 'cache'}" if strategy == "frozen" else "train.seed=42",
        *STRATEGIES[strategy],
    ]  # fmt: skip
    launch_or_fail(command, tmp_path, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["num_processes"] == 2
    assert metrics["strategy"]["name"] == strategy
    # what really ran: plain DDP, asked for and recorded as such (tests/test_fsdp.py: when FSDP is asked for)
    report = metrics["distributed"]
    assert (report["distributed_type"], report["wrapper"]) == ("MULTI_CPU", "DistributedDataParallel")
    assert (
        report["requested"] == {"sharding": "none"}
        and report["as_requested"]
        and not report["parameters_sharded"]
    )
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


def test_two_process_multitask_run(tiny_model_dir, tmp_path, gloo_works):
    # Each step trains one task, so the other head gets no gradient: DDP must be told (find_unused_parameters),
    # and both processes must draw the same task at every step.
    from tests.conftest import make_classification_examples, write_jsonl

    ner_train = write_conll(tmp_path / "ner.conll", make_ner_examples(24, seed=1))
    ner_dev = write_conll(tmp_path / "ner_dev.conll", make_ner_examples(9, seed=2))
    cls_train = write_jsonl(tmp_path / "cls.jsonl", make_classification_examples(24, seed=3))
    cls_dev = write_jsonl(tmp_path / "cls_dev.jsonl", make_classification_examples(7, seed=4))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        "tasks:\n"
        f"  - {{name: ner, task: token-classification, data: {{train_file: {ner_train}, validation_file: {ner_dev}, test_size: 0}}}}\n"
        f"  - {{name: cls, task: sequence-classification, data: {{train_file: {cls_train}, validation_file: {cls_dev}, test_size: 0}}, lr: 1.5e-3, sampling_weight: 2}}\n"
    )
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "multitask.py"), "--config", str(tasks),
        f"model.name_or_path={tiny_model_dir}", f"output_dir={run_dir}", "train.epochs=2", "train.batch_size=4",
        "train.eval_batch_size=4", "train.trackers=[]", "train.lr=3e-3", "sampler.name=round_robin",
    ]  # fmt: skip
    launch_or_fail(command, tmp_path, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["num_processes"] == 2
    # per-task learning rate and weighted round-robin (cls twice as often) under DDP
    assert metrics["sampler"]["lr_scales"] == {"ner": 1.0, "cls": 0.5}
    steps = metrics["train"]["steps_per_task"]
    assert abs(steps["cls"] - 2 * steps["ner"]) <= 2 and sum(steps.values()) == metrics["train"]["steps"]
    assert metrics["validation"]["tasks"]["ner"]["num_examples"] == 9
    assert metrics["validation"]["tasks"]["cls"]["num_examples"] == 7  # gathered rows, no duplicates


def test_two_process_distillation_run(tiny_model_dir, tmp_path, gloo_works):
    # The teacher labels the data once (main process first, the other reads the cache); both processes run it
    # online for hidden-state matching; the student is exported once.
    sys.path.insert(0, str(ROOT / "recipes"))
    import finetune_ner

    train = write_conll(tmp_path / "train.conll", make_ner_examples(40, seed=1))
    dev = write_conll(tmp_path / "dev.conll", make_ner_examples(9, seed=2))
    data = [f"data.train_file={train}", f"data.validation_file={dev}", "data.test_size=0"]
    teacher = tmp_path / "teacher"
    finetune_ner.main(
        [f"model.name_or_path={tiny_model_dir}", f"output_dir={teacher}", "train.epochs=2", "train.trackers=[]",
         "train.batch_size=8", *data]
    )  # fmt: skip
    run_dir = tmp_path / "student"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "distill.py"), f"distill.teacher={teacher}", "distill.student_layers=[1]",
        "objectives+=[{name: distill_hidden}]", f"distill.cache_dir={tmp_path / 'cache'}", f"output_dir={run_dir}", *data,
        "train.epochs=2", "train.batch_size=4", "train.eval_batch_size=4", "train.trackers=[]", "train.lr=3e-3",
    ]  # fmt: skip
    launch_or_fail(command, tmp_path, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["num_processes"] == 2
    assert metrics["validation"]["num_examples"] == 9
    assert metrics["distill_report"]["student"]["metrics"]["num_examples"] == 9  # no test split: validation
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    assert AutoTokenizer.from_pretrained(run_dir / "model") is not None


def test_two_process_progressive_run_with_forgetting_report(tiny_model_dir, tmp_path, gloo_works):
    # Frozen earlier columns have no gradient (DDP must not wait for one); the export is written once, and the
    # forgetting report's prediction is shared by both processes.
    sys.path.insert(0, str(ROOT / "recipes"))
    import finetune_ner

    train = write_conll(tmp_path / "train.conll", make_ner_examples(32, seed=1))
    dev = write_conll(tmp_path / "dev.conll", make_ner_examples(9, seed=2))
    data = [f"data.train_file={train}", f"data.validation_file={dev}", f"data.test_file={dev}"]
    common = [
        "train.epochs=2",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.trackers=[]",
        "train.lr=3e-3",
    ]
    source = tmp_path / "source"
    finetune_ner.main([f"model.name_or_path={tiny_model_dir}", f"output_dir={source}", *data, *common])
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "finetune_ner.py"), f"model.name_or_path={tiny_model_dir}", f"output_dir={run_dir}",
        *data, *common, "strategy.name=progressive", f"strategy.columns={source}", "strategy.rank=4",
        f"transfer.source_eval={source}",
    ]  # fmt: skip
    launch_or_fail(command, tmp_path, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["num_processes"] == 2 and metrics["strategy"]["columns"] == 2
    assert metrics["distributed"]["wrapper"] == "DistributedDataParallel"
    report = metrics["transfer"]
    assert report["examples"] == 9 and report["after"] == report["before"]
    assert report["before"]["f1"] == json.loads((source / "metrics.json").read_text())["test"]["f1"]
    assert sorted(p.name for p in (run_dir / "model").iterdir() if p.is_dir()) == ["column_0", "column_1"]

"""CPU threads per process (:mod:`hftransfer.training.threads`): the decision, and the same count recorded in
metrics.json under ``python`` and under ``accelerate launch`` (which exports ``OMP_NUM_THREADS=1`` by default)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from hftransfer.errors import ConfigError
from hftransfer.training import threads
from hftransfer.training.threads import (
    Launcher,
    choose_cpu_threads,
    configure_cpu_threads,
    local_process_count,
    parse_launcher,
    thread_report,
    usable_cores,
)
from tests.test_distributed import excerpt, hermetic_env, run_launch

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_DEFAULT = Launcher("accelerate", thread_option=False, exported=False)
USER_EXPORTED = Launcher("accelerate", thread_option=False, exported=True)
THREAD_OPTION = Launcher("accelerate", thread_option=True, exported=False)


def choose(requested=None, *, processes=1, device="cpu", env=None, launcher=None, cores=8, current=8):
    return choose_cpu_threads(
        requested,
        num_local_processes=processes,
        device_type=device,
        env={} if env is None else env,
        launcher=launcher,
        cores=cores,
        current=current,
    )


def test_the_config_wins_over_everything():
    choice = choose(3, env={"OMP_NUM_THREADS": "1"}, launcher=ACCELERATE_DEFAULT, processes=2)
    assert (choice.threads, choice.source) == (3, "config")
    assert choose(3, env={"OMP_NUM_THREADS": "5"}, launcher=USER_EXPORTED).threads == 3
    assert choose(2, device="cuda").threads == 2  # asked for explicitly: also on GPU


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_a_bad_config_value_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="train.cpu_threads"):
        choose(bad)


@pytest.mark.parametrize("launcher", [None, USER_EXPORTED], ids=["python", "exported-before-launch"])
def test_an_omp_num_threads_the_user_exported_is_kept(launcher):
    choice = choose(env={"OMP_NUM_THREADS": "1"}, launcher=launcher)
    assert (choice.threads, choice.source) == (None, "environment")  # None: torch already follows it
    assert choose(env={"MKL_NUM_THREADS": "3"}).source == "environment"


def test_num_cpu_threads_per_process_is_kept():
    choice = choose(env={"OMP_NUM_THREADS": "1"}, launcher=THREAD_OPTION)
    assert (choice.threads, choice.source) == (None, "launcher option")


@pytest.mark.parametrize(("processes", "expected"), [(1, 8), (2, 4), (3, 2), (8, 1), (16, 1)])
def test_the_launcher_default_is_replaced_by_cores_per_process(processes, expected):
    for name in ("accelerate", "torchrun"):
        launcher = Launcher(name, thread_option=False, exported=False)
        choice = choose(env={"OMP_NUM_THREADS": "1"}, launcher=launcher, processes=processes)
        assert (choice.threads, choice.source) == (expected, "launcher default replaced")


@pytest.mark.parametrize(("processes", "cores", "expected"), [(2, 8, 4), (4, 2, 1), (3, 1, 1)])
def test_local_processes_share_the_cores_and_never_get_below_one(processes, cores, expected):
    choice = choose(processes=processes, cores=cores, current=cores)
    assert (choice.threads, choice.source) == (expected, "all cores")
    replaced = choose(
        env={"OMP_NUM_THREADS": "1"}, launcher=ACCELERATE_DEFAULT, processes=processes, cores=cores
    )
    assert replaced.threads == expected


def test_one_process_with_nothing_set_keeps_torchs_count():
    assert (choose(cores=8, current=8).threads, choose(cores=8, current=8).source) == (None, "all cores")
    # a program (a notebook, the golden-run harness) that set its own count before the run keeps it
    assert (choose(cores=8, current=1).threads, choose(cores=8, current=1).source) == (None, "program")


def test_gpu_leaves_torch_alone():
    choice = choose(device="cuda", env={"OMP_NUM_THREADS": "1"}, launcher=ACCELERATE_DEFAULT)
    assert (choice.threads, choice.source) == (None, "not cpu")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/python3", "/usr/bin/accelerate", "launch", "train.py"], ACCELERATE_DEFAULT),
        (["python", "-m", "accelerate.commands.launch", "--num_processes", "1", "t.py"], ACCELERATE_DEFAULT),
        (["/usr/bin/python3", "/usr/bin/accelerate-launch", "t.py"], ACCELERATE_DEFAULT),
        (["accelerate", "launch", "--num_cpu_threads_per_process", "2", "t.py"], THREAD_OPTION),
        (["accelerate", "launch", "--num_cpu_threads_per_process=2", "t.py"], THREAD_OPTION),
        (["accelerate", "launch", "--num_cpu", "2", "t.py"], THREAD_OPTION),  # argparse takes prefixes
        # the script's own arguments are not the launcher's
        (["accelerate", "launch", "t.py", "--num_cpu_threads_per_process", "2"], ACCELERATE_DEFAULT),
        (["accelerate", "launch", "--num_processes", "2", "t.py"], ACCELERATE_DEFAULT),
        (
            ["/usr/bin/python3", "/usr/bin/torchrun", "--nproc-per-node", "2", "t.py"],
            Launcher("torchrun", False, False),
        ),
        (["python", "-m", "torch.distributed.run", "t.py"], Launcher("torchrun", False, False)),
        (["bash"], None),
        (["python", "-m", "pytest", "tests"], None),
        (["/usr/bin/accelerate", "env"], None),
    ],
)
def test_parse_launcher(argv, expected):
    assert parse_launcher(argv, {}) == expected


def test_parse_launcher_sees_an_exported_omp_num_threads():
    argv = ["accelerate", "launch", "t.py"]
    assert parse_launcher(argv, {"OMP_NUM_THREADS": "2"}) == USER_EXPORTED


def test_local_process_count():
    assert local_process_count(4, {"LOCAL_WORLD_SIZE": "2"}) == 2  # 2 machines x 2
    assert local_process_count(3, {}) == 3
    assert local_process_count(3, {"LOCAL_WORLD_SIZE": "x"}) == 3
    assert local_process_count(0, {}) == 1


def test_usable_cores_counts_physical_cores_this_process_may_use(monkeypatch):
    import psutil

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 2 if not logical else 4)
    assert usable_cores() == 2  # 4 hyper-threads on 2 cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert usable_cores() == 1  # taskset -c 3
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: None)  # psutil cannot tell
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert usable_cores() == 3
    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed
    assert usable_cores() == 3


@pytest.fixture()
def torch_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_configure_replaces_the_launcher_default_and_reports(monkeypatch, caplog, torch_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "parent_launcher", lambda: ACCELERATE_DEFAULT)
    monkeypatch.setattr(threads, "usable_cores", lambda: torch_threads + 2)
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        report = configure_cpu_threads(None, num_local_processes=1, device_type="cpu")
    assert torch.get_num_threads() == torch_threads + 2
    assert report["threads_per_process"] == torch_threads + 2
    assert report["source"] == "launcher default replaced" and report["launcher"] == "accelerate"
    assert report["processes"] == 1 and report["OMP_NUM_THREADS"] == "1"
    assert thread_report() == report
    assert "CPU threads:" in caplog.text and "launcher default replaced" in caplog.text


def test_configure_keeps_a_user_choice(monkeypatch, torch_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "parent_launcher", lambda: USER_EXPORTED)
    report = configure_cpu_threads(None, num_local_processes=1, device_type="cpu")
    assert report["source"] == "environment"
    assert torch.get_num_threads() == torch_threads
    report = configure_cpu_threads(1, num_local_processes=1, device_type="cpu")
    assert report["source"] == "config" and torch.get_num_threads() == 1


# End to end: the toy NER run records the machine's cores under both launch lines, and a launch that chose a
# count keeps it.

LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch",
    "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip
TOY_ARGS = ["data.max_length=16", "train.epochs=1", "train.batch_size=8", "train.trackers=[]"]
PROBE = """
import json
from hftransfer.training.threads import configure_cpu_threads
print("REPORT", json.dumps(configure_cpu_threads(None, num_local_processes=1, device_type="cpu")))
"""


def _env(tmp_path: Path, **variables: str) -> dict[str, str]:
    env = hermetic_env(tmp_path)
    env.pop("OMP_NUM_THREADS")  # hermetic_env's 1 would be a user's choice, which is kept
    return {**env, **variables}


def _toy_run(command: list[str], tmp_path: Path, name: str, data: list[str], model: Path) -> dict:
    run_dir = tmp_path / name
    command = [*command, f"model.name_or_path={model}", f"output_dir={run_dir}", *data, *TOY_ARGS]
    returncode, output = run_launch(command, _env(tmp_path), tmp_path / f"{name}.log", timeout=180)
    assert returncode == 0, excerpt(output)
    return json.loads((run_dir / "metrics.json").read_text())["threads"]


@pytest.mark.skipif(usable_cores() < 2, reason="one core: one thread either way")
def test_python_and_accelerate_launch_record_the_same_threads(tiny_model_dir, ner_files, tmp_path):
    data = [f"data.{split}_file={path}" for split, path in ner_files.items()]
    recipe = str(ROOT / "recipes" / "finetune_ner.py")
    plain = _toy_run([sys.executable, recipe], tmp_path, "python", data, tiny_model_dir)
    launched = _toy_run([*LAUNCH, recipe], tmp_path, "launch", data, tiny_model_dir)
    assert plain["threads_per_process"] == launched["threads_per_process"] == usable_cores()
    assert plain["source"] == "all cores" and plain["OMP_NUM_THREADS"] is None
    assert launched["source"] == "launcher default replaced" and launched["OMP_NUM_THREADS"] == "1"


@pytest.mark.parametrize(
    ("option", "exported", "source"),
    [
        (["--num_cpu_threads_per_process", "1"], {}, "launcher option"),
        ([], {"OMP_NUM_THREADS": "1"}, "environment"),
    ],
    ids=["num_cpu_threads_per_process", "exported"],
)
def test_a_thread_count_chosen_at_launch_is_kept(tmp_path, option, exported, source):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {**_env(tmp_path, **exported), "PYTHONPATH": str(ROOT)}
    returncode, output = run_launch([*LAUNCH, *option, str(script)], env, tmp_path / "probe.log", timeout=120)
    assert returncode == 0, excerpt(output)
    report = json.loads(output.split("REPORT ", 1)[1].splitlines()[0])
    assert (report["threads_per_process"], report["source"], report["launcher"]) == (1, source, "accelerate")


def test_train_cpu_threads_in_the_config_reaches_the_run(tiny_model_dir, ner_files, tmp_path, torch_threads):
    sys.path.insert(0, str(ROOT / "recipes"))
    import finetune_ner

    data = [f"data.{split}_file={path}" for split, path in ner_files.items()]
    metrics = finetune_ner.main(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={tmp_path / 'run'}",
            *data,
            *TOY_ARGS,
            "train.cpu_threads=1",
        ]
    )
    assert metrics["threads"]["threads_per_process"] == 1 and metrics["threads"]["source"] == "config"
    assert torch.get_num_threads() == 1

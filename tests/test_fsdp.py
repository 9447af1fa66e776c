"""FSDP and DeepSpeed: what a launch asked for against what really ran (:mod:`hftransfer.training.distributed`),
the accelerate config files in ``recipes/accelerate/``, and Accelerate's FSDP2 code path in two CPU processes.

Accelerate 1.16 never uses FSDP on CPU (a 2-process CPU launch with ``--use_fsdp`` runs DDP), but torch's
``fully_shard`` works on CPU over gloo, and so does Accelerate's own FSDP2 code once its one device-based decision
is flipped (``FORCE_FSDP_ON_CPU`` below, a test harness only). That runs our loop, export, best-model restore and
checkpoint/resume on really sharded parameters here, as a GPU FSDP2 run would.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from hftransfer.errors import ConfigError
from hftransfer.training.distributed import distributed_report, requested_sharding, wrapper_name
from hftransfer.training.distributed_checks import check_distributed_setup, check_processes_joined
from tests.conftest import make_classification_examples, write_jsonl
from tests.test_distributed import ROOT, gloo_works, launch_or_fail  # noqa: F401 - gloo_works is a fixture

LAUNCH_ENV = (
    "ACCELERATE_USE_FSDP",
    "FSDP_VERSION",
    "FSDP_USE_ORIG_PARAMS",
    "FSDP_CPU_RAM_EFFICIENT_LOADING",
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_DEEPSPEED_ZERO_STAGE",
    "WORLD_SIZE",
)


@pytest.fixture()
def launch_env(monkeypatch):
    """A clean slate of the variables ``accelerate launch`` sets; returns a setter."""
    for key in LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)
    return lambda **values: [monkeypatch.setenv(k, v) for k, v in values.items()]


def fake_accelerator(distributed_type: DistributedType, *, plugin=None, num_processes=2, main=True):
    """What the checks read from an Accelerator; FSDP cannot be set up on CPU, so its state is faked."""
    return SimpleNamespace(
        distributed_type=distributed_type,
        num_processes=num_processes,
        device=torch.device("cpu"),
        is_main_process=main,
        mixed_precision="no",
        state=SimpleNamespace(fsdp_plugin=plugin),
    )


def partly_frozen() -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    model[0].requires_grad_(False)  # a frozen encoder under a trainable head
    return model


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, {"sharding": "none"}),
        (
            {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_CPU_RAM_EFFICIENT_LOADING": "false"},
            {"sharding": "fsdp2", "fsdp_cpu_ram_efficient_loading": False},
        ),
        (
            {"ACCELERATE_USE_FSDP": "true", "FSDP_USE_ORIG_PARAMS": "true"},  # FSDP_VERSION unset: version 1
            {"sharding": "fsdp1", "fsdp_use_orig_params": True, "fsdp_cpu_ram_efficient_loading": False},
        ),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
            {"sharding": "deepspeed", "deepspeed_zero_stage": 3},
        ),
    ],
)
def test_what_the_launch_asked_for_is_read_from_its_environment(launch_env, env, expected):
    launch_env(**env)
    assert requested_sharding(fake_accelerator(DistributedType.MULTI_CPU)) == expected


def test_the_plugin_in_effect_is_read_before_the_environment(launch_env):
    launch_env(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
    plugin = SimpleNamespace(fsdp_version=1, use_orig_params=False)
    requested = requested_sharding(fake_accelerator(DistributedType.FSDP, plugin=plugin))
    assert requested["sharding"] == "fsdp1" and requested["fsdp_use_orig_params"] is False


def test_fsdp1_without_orig_params_rejects_a_partly_frozen_model(launch_env):
    plugin = SimpleNamespace(fsdp_version=1, use_orig_params=False)
    accelerator = fake_accelerator(DistributedType.FSDP, plugin=plugin)
    with pytest.raises(ConfigError) as error:
        check_distributed_setup(accelerator, partly_frozen(), strategy="freeze")
    message = str(error.value)
    assert "\n" not in message and message.startswith("strategy=freeze trains 18 of 58 parameters")
    assert "fsdp_version: 2" in message and "fsdp_use_orig_params: true" in message
    assert "strategy=full" in message


@pytest.mark.parametrize(
    ("strategy", "objectives", "named"),
    [("lora", (), "lora"), ("frozen", ("task",), "frozen"), ("full", ("task", "l2sp"), "l2sp")],
)
def test_what_reads_whole_parameters_is_refused_where_fsdp_really_runs(
    launch_env, strategy, objectives, named
):
    fsdp2 = fake_accelerator(DistributedType.FSDP, plugin=SimpleNamespace(fsdp_version=2))
    with pytest.raises(ConfigError, match=rf"^{named} cannot run under FSDP yet .* launch with DDP"):
        check_distributed_setup(fsdp2, torch.nn.Linear(4, 2), strategy=strategy, objectives=objectives)
    # The same run where Accelerate runs DDP (FSDP asked for on CPU) is no error.
    ddp = fake_accelerator(DistributedType.MULTI_CPU, plugin=None)
    check_distributed_setup(ddp, torch.nn.Linear(4, 2), strategy=strategy, objectives=objectives)


@pytest.mark.parametrize(
    "plugin, model",
    [
        (SimpleNamespace(fsdp_version=1, use_orig_params=True), partly_frozen()),  # per-parameter flags kept
        (SimpleNamespace(fsdp_version=2), partly_frozen()),  # FSDP2 shards each parameter on its own
        (SimpleNamespace(fsdp_version=1, use_orig_params=False), torch.nn.Linear(4, 2)),  # all trainable
    ],
    ids=["fsdp1-orig-params", "fsdp2", "fsdp1-all-trainable"],
)
def test_sharding_that_works_passes_the_check(launch_env, plugin, model, caplog):
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        check_distributed_setup(fake_accelerator(DistributedType.FSDP, plugin=plugin), model, strategy="x")
    assert not caplog.records


def test_fsdp_asked_for_on_cpu_warns_once_with_what_runs(launch_env, caplog):
    launch_env(ACCELERATE_USE_FSDP="true", FSDP_VERSION="1", FSDP_CPU_RAM_EFFICIENT_LOADING="false")
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        # FSDP1 with a partly frozen model is no error here: DDP is what runs
        check_distributed_setup(fake_accelerator(DistributedType.MULTI_CPU), partly_frozen(), strategy="lora")
        check_distributed_setup(fake_accelerator(DistributedType.MULTI_CPU, main=False), partly_frozen())
    [record] = caplog.records  # the main process only
    assert record.getMessage() == (
        "fsdp1 was requested, but this run is distributed_type=MULTI_CPU: each of the 2 processes holds the whole "
        "model (DistributedDataParallel) and nothing is sharded; Accelerate uses FSDP and DeepSpeed only on GPUs "
        "(or other accelerators), never on CPU (docs/distributed.md)"
    )


def test_weights_loaded_on_one_process_for_fsdp_that_does_not_run_are_an_error(launch_env):
    # accelerate launch --use_fsdp defaults to cpu_ram_efficient_loading: transformers then loads the weights on the
    # main process only, and with DDP instead of FSDP nothing would send them to the others
    launch_env(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_CPU_RAM_EFFICIENT_LOADING="true")
    with pytest.raises(ConfigError, match="--fsdp_cpu_ram_efficient_loading false"):
        check_distributed_setup(fake_accelerator(DistributedType.MULTI_CPU), torch.nn.Linear(2, 2))


def test_processes_that_did_not_join_are_an_error(launch_env):
    # --multi_gpu on a machine without GPUs and without ACCELERATE_USE_CPU=1: every process alone
    launch_env(WORLD_SIZE="2")
    with pytest.raises(ConfigError, match="ACCELERATE_USE_CPU=1"):
        check_processes_joined(fake_accelerator(DistributedType.NO, num_processes=1))
    check_processes_joined(fake_accelerator(DistributedType.MULTI_CPU, num_processes=2))


def test_a_single_process_run_reports_no_wrapper_and_nothing_sharded(launch_env):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(4, 2))
    report = distributed_report(accelerator, model)
    assert report == {
        "requested": {"sharding": "none"},
        "distributed_type": "NO",
        "num_processes": 1,
        "launched_processes": 1,
        "device": "cpu",
        "mixed_precision": "no",
        "wrapper": "none",
        "compiled": False,
        "parameters": 2,
        "sharded_parameters": 0,
        "parameters_sharded": False,
        "as_requested": True,
        "note": None,
    }


def test_wrappers_are_named_by_what_they_are(tmp_path):
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert wrapper_name(torch.nn.Linear(2, 2)) == "none"
        assert wrapper_name(DistributedDataParallel(torch.nn.Linear(2, 2))) == "DistributedDataParallel"
        sharded = fully_shard(torch.nn.Linear(2, 2))  # FSDP2 changes the class in place
        assert wrapper_name(sharded) == "FSDPModule"
        assert wrapper_name(torch.compile(sharded)) == "FSDPModule"  # seen through torch.compile's wrapper
    finally:
        dist.destroy_process_group()


# --- the accelerate config files users launch with -------------------------------------------------------------

CONFIGS = ROOT / "recipes" / "accelerate"
# What each file must make the launcher do: its arguments after reading the file, and the environment it gives
# the training processes (what Accelerate and hftransfer then read).
EXPECTED = {
    "fsdp2.yaml": {
        "args": {"use_fsdp": True, "num_machines": 1},
        "env": {
            "ACCELERATE_USE_FSDP": "true",
            "FSDP_VERSION": "2",
            "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
            "FSDP_CPU_RAM_EFFICIENT_LOADING": "false",
            "FSDP_TRANSFORMER_CLS_TO_WRAP": "BertLayer",
        },
    },
    "deepspeed_zero2.yaml": {
        "args": {"use_deepspeed": True},
        "env": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
    },
    "deepspeed_zero3.yaml": {
        "args": {"use_deepspeed": True},
        "env": {
            "ACCELERATE_USE_DEEPSPEED": "true",
            "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
            "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true",  # the export gathers whole weights
        },
    },
    "multi_node.yaml": {
        # torchrun's arguments: 2 machines of 4 processes, meeting at the main machine
        "args": {"multi_gpu": True, "nnodes": "2", "nproc_per_node": "4", "rdzv_endpoint": "10.0.0.1:29500"},
        "env": {},
    },
    "cpu_2proc.yaml": {"args": {"multi_gpu": True, "nproc_per_node": "2"}, "env": {}},
}


def test_every_config_file_is_checked():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_file_is_read_by_accelerate_as_intended(name, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    for key in LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)
    # machine 0 of the multi-node file would refuse a port that a run beside this test holds
    monkeypatch.setattr("accelerate.utils.launch.is_port_in_use", lambda port: False)
    path = CONFIGS / name
    first_line = path.read_text().splitlines()[0]  # the command that uses the file
    assert (
        first_line.startswith("# ")
        and f"accelerate launch --config_file recipes/accelerate/{name}" in first_line
    )
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown top-level keys
    parser = launch_command_parser()
    # The launcher copies fsdp_config / deepspeed_config entries onto its arguments and ignores unknown ones
    # silently: every key must be one of its arguments.
    known = {action.dest for action in parser._actions}
    for key in config.fsdp_config:
        assert (key if key.startswith("fsdp") else f"fsdp_{key}") in known, key
    for key in config.deepspeed_config:
        assert key in known, key
    args, defaults, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "train.py"]))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    for key, value in EXPECTED[name]["args"].items():
        assert getattr(args, key) == value, key
    for key, value in EXPECTED[name]["env"].items():
        assert env.get(key) == value, key


# --- two processes ----------------------------------------------------------------------------------------------

# Test harness, not a feature: Accelerate sets up FSDP only when the processes have GPUs; flip that one decision
# (the state's distributed type, when an FSDP plugin was made from the launch) and run the recipe unchanged.
FORCE_FSDP_ON_CPU = """
import runpy, sys
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

original_init = AcceleratorState.__init__

def init(self, *args, fsdp_plugin=None, **kwargs):
    original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP

AcceleratorState.__init__ = init
sys.argv = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[0]).parent))
runpy.run_path(sys.argv[0], run_name="__main__")
"""

FSDP2_ON_CPU = [
    "--use_fsdp", "--fsdp_version", "2", "--num_processes", "2", "--num_machines", "1",
    # the launcher's default (weights read on the main process only) needs FSDP to broadcast them
    "--fsdp_cpu_ram_efficient_loading", "false", "--fsdp_sync_module_states", "false",
]  # fmt: skip


def classifier_command(tiny_model_dir: Path, tmp_path: Path, run_dir: Path, launch: list[str], *extra: str):
    train = write_jsonl(tmp_path / "train.jsonl", make_classification_examples(32, seed=1))
    dev = write_jsonl(tmp_path / "dev.jsonl", make_classification_examples(12, seed=2))
    return [
        sys.executable, "-m", "accelerate.commands.launch", *launch, "--main_process_port", "0",
        "--mixed_precision", "no", "--dynamo_backend", "no", *extra,
        f"model.name_or_path={tiny_model_dir}", f"data.train_file={train}", f"data.validation_file={dev}",
        "data.test_size=0", "data.max_length=12", f"output_dir={run_dir}", "train.epochs=2", "train.batch_size=4",
        "train.eval_batch_size=4", "train.trackers=[]", "train.lr=3e-3", "train.seed=42",
    ]  # fmt: skip


@pytest.mark.slow  # one 2-process launch: 20-40 s on 2 shared cores
@pytest.mark.usefixtures("gloo_works")
def test_fsdp2_asked_for_on_cpu_runs_ddp_and_says_so(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    recipe = str(ROOT / "recipes" / "finetune_classifier.py")
    command = classifier_command(tiny_model_dir, tmp_path, run_dir, FSDP2_ON_CPU, recipe)
    command += ["strategy.name=lora", "strategy.r=2"]  # frozen and trainable parameters: fine under DDP
    output = launch_or_fail(command, tmp_path, run_dir)
    report = json.loads((run_dir / "metrics.json").read_text())["distributed"]
    assert report["requested"] == {"sharding": "fsdp2", "fsdp_cpu_ram_efficient_loading": False}
    assert report["distributed_type"] == "MULTI_CPU" and report["wrapper"] == "DistributedDataParallel"
    assert report["num_processes"] == report["launched_processes"] == 2
    assert report["sharded_parameters"] == 0 and not report["parameters_sharded"]
    assert not report["as_requested"] and "never on CPU" in report["note"]
    assert output.count("fsdp2 was requested, but this run is distributed_type=MULTI_CPU") == 1


@pytest.mark.slow  # two 2-process launches: 45-90 s on 2 shared cores
@pytest.mark.usefixtures("gloo_works")
def test_accelerate_fsdp2_on_cpu_shards_exports_and_resumes_exactly(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hftransfer.training.tracking import is_timing_key

    harness = tmp_path / "force_fsdp_on_cpu.py"
    harness.write_text(FORCE_FSDP_ON_CPU)
    recipe = str(ROOT / "recipes" / "finetune_classifier.py")
    # the shipped config (one FSDP unit per BertLayer), in fp32: bf16 is slow on CPU
    launch = ["--config_file", str(ROOT / "recipes" / "accelerate" / "fsdp2.yaml"), "--num_processes", "2"]
    full = tmp_path / "full"
    # 32 examples / (2 processes x batch 4): 4 steps an epoch, 8 in all; checkpoints at 3, 4 (epoch end), 6, 8
    checkpoints = ["train.save_every_steps=3", "train.keep_checkpoints=10"]
    command = classifier_command(tiny_model_dir, tmp_path, full, launch, str(harness), recipe)
    launch_or_fail([*command, *checkpoints], tmp_path, full)
    metrics = json.loads((full / "metrics.json").read_text())
    report = metrics["distributed"]
    assert report["distributed_type"] == "FSDP" and report["wrapper"] == "FSDPModule"
    assert report["sharded_parameters"] == report["parameters"] > 0 and report["as_requested"]
    assert metrics["validation"]["num_examples"] == 12  # gathered across the shards, no duplicates
    # The export gathered the shards into one ordinary model directory: every weight whole, none missing.
    exported, info = AutoModelForSequenceClassification.from_pretrained(
        full / "model", output_loading_info=True
    )
    assert not any(info.values()), info

    # As if stopped after the step-3 checkpoint, in the middle of the first epoch: resume and land on the same run.
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    later = [p for p in (resumed / "checkpoints").glob("step-*") if int(p.name.split("-")[1]) > 3]
    assert len(later) == 3
    for path in later:
        shutil.rmtree(path)
    shutil.rmtree(resumed / "model")
    (resumed / "metrics.json").unlink()
    command = classifier_command(tiny_model_dir, tmp_path, resumed, launch, str(harness), recipe)
    launch_or_fail([*command, *checkpoints, "train.resume_from_checkpoint=latest"], tmp_path, resumed)

    def untimed_log(run_dir: Path) -> list[dict]:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not is_timing_key(k)} for r in records]

    assert untimed_log(resumed) == untimed_log(full)
    again = AutoModelForSequenceClassification.from_pretrained(resumed / "model").state_dict()
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(again[name], value, msg=name)

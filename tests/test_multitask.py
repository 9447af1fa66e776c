"""Multitask: shared encoder, samplers, per-task export, resume and bad configs, on a tiny BERT."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    pipeline,
)

from hftransfer.errors import ConfigError
from hftransfer.multitask.config import parse_multitask_config
from hftransfer.multitask.model import MultitaskModel
from hftransfer.multitask.run import load_multitask
from hftransfer.multitask.run import setup as multitask_setup
from hftransfer.multitask.sampling import TaskSchedule, task_probabilities
from tests.conftest import make_classification_examples, make_ner_examples, write_conll, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import multitask  # noqa: E402


@pytest.fixture()
def task_files(tmp_path) -> dict[str, dict[str, Path]]:
    return {
        "ner": {
            "train": write_conll(tmp_path / "ner_train.conll", make_ner_examples(40, seed=1)),
            "validation": write_conll(tmp_path / "ner_dev.conll", make_ner_examples(12, seed=2)),
        },
        "cls": {
            "train": write_jsonl(tmp_path / "cls_train.jsonl", make_classification_examples(64, seed=3)),
            "validation": write_jsonl(tmp_path / "cls_dev.jsonl", make_classification_examples(16, seed=4)),
        },
    }


def _tasks_yaml(tmp_path: Path, files: dict, names=("ner", "cls"), **task_fields: dict) -> Path:
    kinds = {"ner": "token-classification", "cls": "sequence-classification"}
    lines = ["tasks:"]
    for name in names:
        kind = name.split("_")[0]
        lines += [
            f"  - name: {name}",
            f"    task: {kinds[kind]}",
            "    data:",
            f"      train_file: {files[kind]['train']}",
            f"      validation_file: {files[kind]['validation']}",
            "      test_size: 0",
        ]
        lines += [f"    {key}: {value}" for key, value in task_fields.get(name, {}).items()]
    path = tmp_path / "tasks.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _argv(tiny_model_dir, tmp_path, files, run_dir, *extra, task_fields=None):
    return [
        "--config", str(_tasks_yaml(tmp_path, files, **(task_fields or {}))), f"model.name_or_path={tiny_model_dir}", f"output_dir={run_dir}",
        "train.batch_size=8", "train.trackers=[]", "train.lr=3e-3", "train.warmup_ratio=0", *extra,
    ]  # fmt: skip


def test_sampler_probabilities_and_draws_match_their_definitions():
    sizes = [900, 100]
    assert task_probabilities(sizes, "proportional") == pytest.approx([0.9, 0.1])
    t2 = task_probabilities(sizes, "temperature", 2.0)
    assert t2 == pytest.approx([30 / 40, 10 / 40])  # sqrt(900)=30, sqrt(100)=10
    assert task_probabilities(sizes, "uniform") == pytest.approx([0.5, 0.5])
    for kind, expected in (("proportional", 0.9), ("temperature", 0.75), ("uniform", 0.5)):
        draws = TaskSchedule(sizes, kind, steps_per_epoch=4000, seed=0, temperature=2.0).epoch(0)
        share = draws.count(0) / len(draws)
        # binomial standard deviation at n=4000 is <= 0.008: 4 sigma
        assert abs(share - expected) < 0.032, (kind, share)
    assert TaskSchedule(sizes, "round_robin", 5, seed=0).epoch(0) == [0, 1, 0, 1, 0]
    assert TaskSchedule(sizes, "round_robin", 5, seed=0).epoch(1) == [1, 0, 1, 0, 1]
    schedule = TaskSchedule(sizes, "proportional", 50, seed=3)
    assert schedule.epoch(2) == TaskSchedule(sizes, "proportional", 50, seed=3).epoch(2)  # deterministic
    assert schedule.epoch(1) != schedule.epoch(2)
    assert schedule.consumed(1, 10) == Counter(schedule.epoch(0)) + Counter(schedule.epoch(1)[:10])


def test_sampling_weights_scale_the_probabilities_and_round_robin_keeps_exact_shares():
    sizes = [120, 125]  # batches of WNUT-16 and of 2000 Rotten Tomatoes reviews at batch 16
    # epochs of the single-task runs (5 and 3) as weights: the single-task step budgets, 600 : 375
    assert task_probabilities(sizes, "proportional", weights=[5, 3]) == pytest.approx([600 / 975, 375 / 975])
    assert task_probabilities(sizes, "uniform", weights=[3, 1]) == pytest.approx([0.75, 0.25])
    draws = TaskSchedule(sizes, "proportional", 4000, seed=1, weights=[5, 3]).epoch(0)
    assert abs(draws.count(0) / 4000 - 600 / 975) < 0.031  # 4 binomial sigmas
    with pytest.raises(ValueError, match="one positive number per task"):
        task_probabilities(sizes, "proportional", weights=[1, 0])

    # Weighted round-robin: exact shares in every window of sum(weights) steps, interleaved, across epochs.
    schedule = TaskSchedule(sizes, "round_robin", steps_per_epoch=7, seed=0, weights=[600, 375])
    order = [task for epoch in range(5 * 39) for task in schedule.epoch(epoch)]  # 1365 = 7 x 195 steps
    for start in range(0, 1365 - 975, 97):
        assert order[start : start + 975].count(0) in (599, 600, 601)
    assert max(len(run) for run in "".join(map(str, order)).split("1")) <= 2  # never more than 2 in a row
    fresh = TaskSchedule(sizes, "round_robin", steps_per_epoch=7, seed=0, weights=[600, 375])
    assert fresh.epoch(40) == schedule.epoch(40)  # a pure function of the epoch, whatever was asked before
    assert schedule.consumed(3, 2) == Counter(order[: 3 * 7 + 2])


def test_task_learning_rate_scales_every_group_on_that_tasks_steps_only(
    tiny_model_dir, task_files, tmp_path, monkeypatch
):
    seen: list[list[float]] = []
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    run_dir = tmp_path / "run"
    metrics = multitask.main(
        _argv(
            tiny_model_dir,
            tmp_path,
            task_files,
            run_dir,
            "train.max_steps=6",
            "sampler.name=round_robin",
            "strategy.head_lr=6e-3",
            task_fields={"cls": {"lr": "7.5e-4"}, "ner": {"sampling_weight": 2}},
        )  # fmt: skip
    )
    assert metrics["sampler"]["lr_scales"] == {"ner": 1.0, "cls": 0.25}
    assert metrics["train"]["steps_per_task"] == {"ner": 4, "cls": 2}  # weights 2 : 1
    tasks = ["ner", "cls", "ner", "ner", "cls", "ner"]  # smooth weighted round-robin of 2 : 1
    assert len(seen) == 6
    for step, (task, lrs) in enumerate(zip(tasks, seen)):
        decay = 1 - step / 6  # linear schedule without warm-up
        scale = 0.25 if task == "cls" else 1.0
        # every group (encoder groups at train.lr, head groups at head_lr) scaled alike
        assert lrs == pytest.approx([peak * decay * scale for peak in seen[0]])
    assert set(seen[0]) == {3e-3, 6e-3}
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["lr"] == pytest.approx(3e-3 * (1 - r["step"] / 6)) for r in logged if r["split"] == "train")


def test_per_task_optimizer_keeps_each_tasks_moments_apart(tiny_model_dir):
    from hftransfer.config import TrainConfig, strategy_config
    from hftransfer.multitask.optim import PerTaskAdamW, groups_per_task
    from hftransfer.strategies.transfer import param_groups
    from hftransfer.training.optim import build_scheduler

    torch.manual_seed(0)
    token = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=5)
    sequence = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    model = MultitaskModel({"ner": token, "cls": sequence})
    train = TrainConfig(lr=1e-3, warmup_ratio=0.0)
    groups = groups_per_task(
        param_groups(model, train, strategy_config("full")), model.encoder, model.task_models
    )
    ner_params = {id(p) for group in groups["ner"] for p in group["params"]}
    assert {id(p) for p in model.encoder.parameters()} <= ner_params  # the shared encoder ...
    assert not ner_params & {id(p) for p in sequence.classifier.parameters()}  # ... but not the other head
    optimizer = PerTaskAdamW(groups, train)
    scheduler = build_scheduler(optimizer, train, total_steps=4)
    weight = model.encoder.encoder.layer[0].attention.self.query.weight
    ids = torch.randint(5, 40, (2, 7))
    batches = {"ner": torch.randint(0, 5, (2, 7)), "cls": torch.tensor([0, 1])}

    def step(task: str) -> None:
        model(task=task, input_ids=ids, labels=batches[task]).loss.backward()
        optimizer.active = task
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

    step("ner")
    assert weight not in optimizer.optimizers["cls"].state  # the cls moments have not seen the ner gradient
    ner_momentum = optimizer.optimizers["ner"].state[weight]["exp_avg"].clone()
    step("cls")
    step("cls")
    # the cls steps moved the shared weight but left the ner moments as they were
    torch.testing.assert_close(optimizer.optimizers["ner"].state[weight]["exp_avg"], ner_momentum)
    assert float(optimizer.optimizers["ner"].state[weight]["step"]) == 1
    assert float(optimizer.optimizers["cls"].state[weight]["step"]) == 2
    # one schedule drives every task's learning rate (linear decay, step 3 of 4)
    lrs = [g["lr"] for opt in optimizer.optimizers.values() for g in opt.param_groups]
    assert lrs == pytest.approx([2.5e-4] * len(lrs))
    restored = PerTaskAdamW(groups, train)
    restored.load_state_dict(optimizer.state_dict())
    torch.testing.assert_close(restored.optimizers["cls"].state[weight]["exp_avg_sq"], optimizer.optimizers["cls"].state[weight]["exp_avg_sq"])  # fmt: skip
    optimizer.active = None
    with pytest.raises(RuntimeError, match="no task selected"):
        optimizer.step()


def test_prior_start_sets_each_tasks_head_from_its_own_labels(tiny_model_dir, task_files, tmp_path):
    argv = _argv(tiny_model_dir, tmp_path, task_files, tmp_path / "run", "model.head_bias_init=prior")
    run = multitask_setup(parse_multitask_config(argv))
    model = run.loop.accelerator.unwrap_model(run.loop.model)
    for task in ("ner", "cls"):
        frequencies = run.report["label_prior"][task]
        task_model = model.task_models[task]
        head = task_model.classifier
        predicted = torch.softmax(head.bias.detach(), 0)
        assert set(frequencies) == set(task_model.config.id2label.values())
        for index, label in task_model.config.id2label.items():
            assert float(predicted[index]) == pytest.approx(frequencies[label], abs=0.03), (task, label)
    assert run.report["label_prior"]["ner"]["O"] > 0.5


def test_shared_encoder_is_one_module_and_both_tasks_train_it(tiny_model_dir):
    token = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=5)
    sequence = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    model = MultitaskModel({"ner": token, "cls": sequence})
    assert model.task_models["ner"].bert is model.task_models["cls"].bert is model.encoder
    encoder_params = {id(p) for p in model.encoder.parameters()}
    assert len({id(p) for p in model.parameters()}) == len(list(model.parameters()))  # each parameter once
    ids = torch.randint(5, 40, (2, 7))
    weight = model.encoder.encoder.layer[0].attention.self.query.weight
    for task, labels in (("ner", torch.randint(0, 5, (2, 7))), ("cls", torch.tensor([0, 1]))):
        model.zero_grad()
        model(task=task, input_ids=ids, labels=labels).loss.backward()
        assert weight.grad is not None and weight.grad.abs().sum() > 0, task
    assert id(weight) in encoder_params
    # the token task's own state has no pooler (it never reads it); the sequence task's has
    assert not any("pooler" in k for k in model.task_state_dict("ner"))
    assert any("pooler" in k for k in model.task_state_dict("cls"))


def test_multitask_recipe_exports_each_task_as_a_plain_model(tiny_model_dir, task_files, tmp_path):
    run_dir = tmp_path / "run"
    metrics = multitask.main(_argv(tiny_model_dir, tmp_path, task_files, run_dir, "train.epochs=4"))
    assert set(metrics["validation"]["tasks"]) == {"ner", "cls"}
    average = (
        metrics["validation"]["tasks"]["ner"]["f1"] + metrics["validation"]["tasks"]["cls"]["accuracy"]
    ) / 2
    assert metrics["validation"]["average"] == pytest.approx(average)
    assert sum(metrics["train"]["steps_per_task"].values()) == metrics["train"]["steps"]
    assert all(count > 0 for count in metrics["train"]["steps_per_task"].values())
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert (
        saved["validation"]["tasks"]["cls"]["accuracy"] == metrics["validation"]["tasks"]["cls"]["accuracy"]
    )

    multitask_model = load_multitask(run_dir / "model")
    assert multitask_model.task_models["ner"].bert is multitask_model.task_models["cls"].bert
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model" / "ner")
    inputs = tokenizer(["alice lives in paris .", "a great film"], return_tensors="pt", padding=True)
    for name, auto in (("ner", AutoModelForTokenClassification), ("cls", AutoModelForSequenceClassification)):
        standalone = auto.from_pretrained(run_dir / "model" / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(
                standalone(**inputs).logits, multitask_model(task=name, **inputs).logits, atol=1e-5, rtol=1e-5
            )
    ner = pipeline(
        "token-classification", model=str(run_dir / "model" / "ner"), aggregation_strategy="simple"
    )
    assert all(e["entity_group"] in {"per", "loc"} for e in ner("alice lives in paris ."))
    classify = pipeline("text-classification", model=str(run_dir / "model" / "cls"))
    assert classify("a great film")[0]["label"] in saved["label_names"]["cls"]


@pytest.mark.parametrize("optimizer_state", ["shared", "per_task"])
def test_resumed_multitask_run_continues_with_the_same_sampler_state(
    tiny_model_dir, task_files, tmp_path, optimizer_state
):
    from safetensors.torch import load_file

    common = [
        "train.max_steps=10",
        "train.save_every_steps=4",
        "train.log_every_steps=2",
        "train.keep_checkpoints=5",
        "sampler.name=uniform",
        f"optimizer_state={optimizer_state}",
    ]
    multitask.main(_argv(tiny_model_dir, tmp_path, task_files, tmp_path / "a", *common))
    checkpoint = tmp_path / "a" / "checkpoints" / "step-00000004"
    multitask.main(
        _argv(
            tiny_model_dir,
            tmp_path,
            task_files,
            tmp_path / "b",
            *common,
            f"train.resume_from_checkpoint={checkpoint}",
        )
    )
    final_a = load_file(tmp_path / "a" / "checkpoints" / "step-00000008" / "model.safetensors")
    final_b = load_file(tmp_path / "b" / "checkpoints" / "step-00000008" / "model.safetensors")
    for name, value in final_a.items():
        torch.testing.assert_close(final_b[name], value, atol=1e-6, rtol=1e-5, msg=name)

    def losses(run_dir: Path) -> list[float]:
        records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        return [r["loss"] for r in records if r["split"] == "train"]

    assert losses(tmp_path / "b")[-1] == pytest.approx(losses(tmp_path / "a")[-1], rel=1e-5)


def test_tasks_of_a_config_file_replace_the_presets_tasks_whole(task_files, tmp_path):
    # The default preset's tasks carry sampling weights, a learning rate and a training-data limit; none of them may
    # leak into the user's tasks at the same positions.
    preset = parse_multitask_config([], default_config=multitask.DEFAULT_CONFIG)
    assert preset.tasks[0].sampling_weight != 1.0 and preset.tasks[1].data.max_train_samples is not None
    config = parse_multitask_config(
        ["--config", str(_tasks_yaml(tmp_path, task_files))], default_config=multitask.DEFAULT_CONFIG
    )
    assert [t.name for t in config.tasks] == ["ner", "cls"]
    assert [(t.sampling_weight, t.lr, t.data.max_train_samples) for t in config.tasks] == [
        (1.0, None, None)
    ] * 2
    assert config.sampler.name == preset.sampler.name  # the rest of the preset still applies

    # The same between two --config files, with --config=FILE spelling: the later list wins as a whole.
    (tmp_path / "w").mkdir()
    weighted = _tasks_yaml(tmp_path / "w", task_files, ner={"sampling_weight": 4, "lr": 1e-3})
    plain = _tasks_yaml(tmp_path, task_files, names=("ner",))
    config = parse_multitask_config([f"--config={weighted}", "--config", str(plain)])
    assert [(t.name, t.sampling_weight, t.lr) for t in config.tasks] == [("ner", 1.0, None)]
    config = parse_multitask_config(["--config", str(plain), f"--config={weighted}"])
    assert [(t.name, t.sampling_weight, t.lr) for t in config.tasks] == [
        ("ner", 4.0, 1e-3),
        ("cls", 1.0, None),
    ]
    # ...and a tasks= override replaces a config file's list, while tasks+= appends to it.
    extra = json.dumps(
        {
            "name": "more",
            "task": "sequence-classification",
            "data": {"train_file": str(task_files["cls"]["train"])},
        }
    )
    config = parse_multitask_config([f"--config={weighted}", f"tasks=[{extra}]"])
    assert [(t.name, t.sampling_weight) for t in config.tasks] == [("more", 1.0)]
    config = parse_multitask_config([f"--config={weighted}", f"tasks+={extra}"])
    assert [(t.name, t.sampling_weight) for t in config.tasks] == [("ner", 4.0), ("cls", 1.0), ("more", 1.0)]


def test_bad_multitask_configs_fail_before_training(tiny_model_dir, task_files, tmp_path):
    yaml_path = _tasks_yaml(tmp_path, task_files, names=("ner", "ner"))
    with pytest.raises(ConfigError, match="two tasks are named 'ner'"):
        parse_multitask_config(["--config", str(yaml_path)])
    with pytest.raises(ConfigError, match="at least one task"):
        parse_multitask_config(["tasks=[]"])
    # The frozen strategy checks its own options when it meets the shared encoder, before any training step.
    with pytest.raises(
        ConfigError,
        match="in a multitask run keeps the encoder fixed .* strategy.head is an option of the feature-cache head",
    ):
        multitask.main(
            _argv(
                tiny_model_dir,
                tmp_path,
                task_files,
                tmp_path / "frozen",
                "strategy.name=frozen",
                "strategy.head=mlp",
            )
        )
    assert not (tmp_path / "frozen" / "metrics.jsonl").exists()
    with pytest.raises(ConfigError, match="selects by 'average'"):
        parse_multitask_config(
            ["--config", str(_tasks_yaml(tmp_path, task_files)), "train.metric_for_best=f1"]
        )
    with pytest.raises(ConfigError, match="grad_accum_steps=1"):
        parse_multitask_config(
            [
                "--config",
                str(_tasks_yaml(tmp_path, task_files)),
                "optimizer_state=per_task",
                "train.grad_accum_steps=2",
            ]
        )
    for field, value in (("lr", 0), ("sampling_weight", -1)):
        with pytest.raises(ConfigError, match=f"tasks.cls.{field} must be > 0"):
            parse_multitask_config(["--config", str(_tasks_yaml(tmp_path, task_files, cls={field: value}))])
    bad = tmp_path / "nodata.yaml"
    bad.write_text("tasks:\n  - name: x\n    task: token-classification\n    data: {}\n")
    with pytest.raises(ConfigError, match="data"):
        parse_multitask_config(["--config", str(bad)])
    bad.write_text("tasks:\n  - name: x\n    task: regression\n    data: {dataset: wnut16}\n")
    with pytest.raises(ConfigError, match="task"):
        parse_multitask_config(["--config", str(bad)])


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy.name=lora", "strategy.r=4", "strategy.layer_lr_decay=0.5", "strategy.head_lr=1e-2"],
        ["strategy.name=frozen"],
        ["strategy.name=ia3"],
        ["strategy.name=bitfit"],
    ],
    ids=["shared-lora+llrd", "frozen-encoder", "shared-ia3", "bitfit"],
)
def test_multitask_strategies_train_the_intended_parameters_and_export_plain_models(
    tiny_model_dir, task_files, tmp_path, strategy
):
    run_dir = tmp_path / "run"
    metrics = multitask.main(
        _argv(tiny_model_dir, tmp_path, task_files, run_dir, "train.epochs=3", *strategy)
    )
    fraction = metrics["strategy"]["parameters"]["trainable_fraction"]
    assert 0 < fraction < 0.5
    groups = metrics["strategy"]["lr_groups"]
    if strategy[0].endswith("lora"):
        assert groups["layer.0/decay"] == pytest.approx(3e-3 * 0.5) and groups["head/decay"] == pytest.approx(
            1e-2
        )
        assert metrics["strategy"]["lora"]["target_modules"] == ["query", "value"]
    elif strategy[0].endswith("frozen"):
        assert set(groups) <= {"head/decay", "head/no_decay"}  # only the heads train
    if strategy[0].endswith(
        ("lora", "ia3")
    ):  # one adapter, shared by the tasks, kept beside their merged exports
        assert (run_dir / "model" / "shared_adapter.safetensors").exists()
        assert any(
            "ia3_l" in key or "lora_A" in key
            for key in load_file(run_dir / "model" / "shared_adapter.safetensors")
        )
    # exports are plain models that predict exactly like the (best) multitask model
    multitask_model = load_multitask(run_dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model" / "ner")
    inputs = tokenizer(["alice lives in paris ."], return_tensors="pt")
    for name, auto in (("ner", AutoModelForTokenClassification), ("cls", AutoModelForSequenceClassification)):
        standalone = auto.from_pretrained(run_dir / "model" / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(
                standalone(**inputs).logits, multitask_model(task=name, **inputs).logits, atol=1e-4, rtol=1e-4
            )
    assert metrics["validation"]["average"] == pytest.approx(metrics["best_validation_average"])

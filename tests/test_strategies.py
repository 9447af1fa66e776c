"""Layer freezing, gradual unfreezing, discriminative / layer-wise LRs and conservative penalties on a tiny BERT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, pipeline

from hftransfer.config import RunConfig, TrainConfig, parse_config, strategy_config
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import ObjectiveSet, build_objectives
from hftransfer.objectives.drift import OutputDrift
from hftransfer.objectives.l2sp import L2SP
from hftransfer.strategies import plan_strategy
from hftransfer.strategies.gradual import GradualUnfreezing
from hftransfer.strategies.layers import EncoderLayout

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

PRESET = ROOT / "recipes" / "configs" / "minilm" / "ner_full.yaml"


def _token_model(model_dir: Path, num_labels: int = 5):
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=num_labels)


def _config(tmp_path: Path, lr: float = 1e-3, objectives: list | None = None, **strategy) -> RunConfig:
    return RunConfig(
        train=TrainConfig(lr=lr, weight_decay=0.0),
        strategy=strategy_config(strategy),
        objectives=[{"name": "task"}, *(objectives or [])],
    )


def _batch(num_labels: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 40, (4, 9), generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": torch.randint(0, num_labels, (4, 9), generator=generator),
    }


def _step(plan) -> dict[str, torch.Tensor]:
    """One AdamW step of the task's loss; returns the parameters before it."""
    before = {name: p.detach().clone() for name, p in plan.model.named_parameters()}
    optimizer = torch.optim.AdamW(plan.param_groups)
    loss, penalties = plan.objectives(plan.model, _batch())
    (loss + sum(penalties.values())).backward()
    optimizer.step()
    return before


def _changed(model, before) -> set[str]:
    return {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}


def _plan(model, config, tmp_path):
    """The strategy's plan, with the run's objectives (built first, as the flows do) as ``plan.objectives``."""
    objectives = build_objectives(config, model)
    plan = plan_strategy(
        model,
        config,
        tokenizer=None,
        run_dir=tmp_path,
        base_model_name_or_path="unused",
        encoder_weight_decay=not objectives.replaces_weight_decay,
    )
    plan.objectives = objectives
    return plan


def test_full_strategy_trains_every_parameter(tiny_model_dir, tmp_path):
    model = _token_model(tiny_model_dir)
    plan = _plan(model, _config(tmp_path), tmp_path)
    before = _step(plan)
    unused = {n for n in before if ".pooler." in n}  # the token head does not read the pooler
    assert _changed(model, before) == set(before) - unused
    assert plan.report["parameters"]["trainable_fraction"] == 1.0


@pytest.mark.parametrize("freeze_layers", [1, -1])
def test_freeze_bottom_layers_trains_only_the_top(tiny_model_dir, tmp_path, freeze_layers):
    model = _token_model(tiny_model_dir)  # 2 layers: 1 and -1 both freeze embeddings + layer 0
    plan = _plan(model, _config(tmp_path, name="freeze", freeze_layers=freeze_layers), tmp_path)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if ".embeddings." in n or ".layer.0." in n}
    before = _step(plan)
    changed = _changed(model, before)
    assert changed and not changed & frozen
    assert {n for n in changed if ".layer.1." in n} and {n for n in changed if n.startswith("classifier.")}
    assert 0 < plan.report["parameters"]["trainable_fraction"] < 1
    assert plan.report["frozen_layers"] == 1


def test_freeze_more_layers_than_the_model_has_is_a_config_error(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="freeze_layers=3 does not fit a model with 2"):
        _plan(_token_model(tiny_model_dir), _config(tmp_path, name="freeze", freeze_layers=3), tmp_path)


def test_layer_wise_lr_decay_and_head_lr(tiny_model_dir, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    plan = _plan(model, _config(tmp_path, lr=1e-3, head_lr=1e-2, layer_lr_decay=0.5), tmp_path)
    lrs = {group["name"].split("/")[0]: group["lr"] for group in plan.param_groups}
    assert lrs == pytest.approx(
        {"head": 1e-2, "encoder": 1e-3, "layer.1": 1e-3, "layer.0": 5e-4, "embeddings": 2.5e-4}
    )
    layout = EncoderLayout.of(model)
    for group in plan.param_groups:  # every parameter sits in the group of its own layer
        names = {n for n, p in model.named_parameters() if any(p is q for q in group["params"])}
        unit = group["name"].split("/")[0]
        if unit.startswith("layer."):
            assert {layout.layer_of(n) for n in names} == {int(unit.split(".")[1])}
        if unit == "encoder":
            assert all(".pooler." in n for n in names)
    assert sum(len(g["params"]) for g in plan.param_groups) == len(list(model.parameters()))


def test_gradual_unfreezing_schedule_by_step(tiny_model_dir):
    model = _token_model(tiny_model_dir)
    schedule = GradualUnfreezing(model, EncoderLayout.of(model), every=2, unit="step")

    for step in (0, 1):
        schedule.apply(model, step=step, epoch=0)
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {
            n for n, _ in model.named_parameters() if n.startswith("classifier.")
        }
    schedule.apply(model, step=2, epoch=0)
    assert {n for n, p in model.named_parameters() if p.requires_grad and ".layer." in n} == {
        n for n, _ in model.named_parameters() if ".layer.1." in n
    }
    schedule.apply(model, step=4, epoch=0)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".layer." in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".embeddings." in n)
    schedule.apply(model, step=6, epoch=0)
    assert all(p.requires_grad for p in model.parameters())


def test_gradual_unfreezing_in_the_loop_changes_layers_only_after_their_step(
    tiny_model_dir, ner_files, tmp_path
):
    run_dir = tmp_path / "run"
    finetune_ner.main(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={run_dir}",
            f"data.train_file={ner_files['train']}",
            f"data.validation_file={ner_files['validation']}",
            "data.test_size=0",
            "train.max_steps=6",
            "train.batch_size=8",
            "train.trackers=[]",
            "train.save_every_steps=1",
            "train.keep_checkpoints=10",
            "train.warmup_ratio=0",
            "train.lr=1e-2",
            "strategy.name=gradual",
            "strategy.unfreeze_every=2",
            "strategy.unfreeze_unit=step",
        ]
    )
    from safetensors.torch import load_file

    def weights(step: int) -> dict[str, torch.Tensor]:
        return load_file(run_dir / "checkpoints" / f"step-{step:08d}" / "model.safetensors")

    states = {step: weights(step) for step in range(1, 7)}

    def moved(name_part: str, a: int, b: int) -> bool:
        return any(
            not torch.equal(states[a][k], states[b][k]) for k in states[a] if name_part in k and "weight" in k
        )

    # steps 1-2 train the head only, steps 3-4 add the top layer, steps 5-6 add the bottom one.
    assert moved("classifier", 1, 2) and not moved(".layer.1.", 1, 2) and not moved(".layer.0.", 1, 2)
    assert moved(".layer.1.", 2, 3) and not moved(".layer.0.", 2, 4)
    assert moved(".layer.0.", 4, 5) and not moved("embeddings", 4, 6)


def test_l2sp_is_zero_at_start_and_grows_with_drift(tiny_model_dir):
    model = _token_model(tiny_model_dir)
    penalty = L2SP(model)
    batch = _batch()
    assert penalty.penalty(model, batch).item() == 0.0
    values = []
    for scale in (1e-3, 1e-2, 1e-1):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(penalty.reference.get(name, p) + scale)
        values.append(penalty.penalty(model, batch).item())
    encoder_numel = sum(p.numel() for n, p in model.named_parameters() if n.startswith("bert."))
    assert values[0] < values[1] < values[2]
    assert values[2] == pytest.approx(encoder_numel * 0.1**2, rel=1e-3)  # the head is not penalised


def test_l2sp_gradient_pulls_towards_pretrained(tiny_model_dir, tmp_path):
    model = _token_model(tiny_model_dir)
    plan = _plan(model, _config(tmp_path, objectives=[{"name": "l2sp", "weight": 0.5}]), tmp_path)
    name = "bert.encoder.layer.0.output.dense.weight"
    param = dict(model.named_parameters())[name]
    with torch.no_grad():
        param.add_(0.2)
    _, penalties = plan.objectives(model, _batch())
    penalties["penalty_l2sp"].backward()
    assert torch.allclose(param.grad, torch.full_like(param, 0.5 * 2 * 0.2), atol=1e-5)
    # L2-SP replaces weight decay on the encoder (decay would pull towards zero instead).
    assert all(g["weight_decay"] == 0.0 for g in plan.param_groups if not g["name"].startswith("head"))


@pytest.mark.parametrize("distance", ["mse", "kl"])
def test_output_drift_is_zero_for_the_original_and_grows(tiny_model_dir, distance):
    model = _token_model(tiny_model_dir).eval()
    objective = ObjectiveSet([OutputDrift(model, distance)])
    batch = _batch()
    _, penalties = objective(model, batch)
    assert penalties["penalty_drift"].item() == pytest.approx(0.0, abs=1e-6)
    values = []
    noise = torch.randn(
        model.bert.encoder.layer[1].output.dense.weight.shape, generator=torch.Generator().manual_seed(0)
    )
    for scale in (0.05, 0.5):  # a random direction: a uniform shift would be undone by the LayerNorm
        with torch.no_grad():
            model.bert.encoder.layer[1].output.dense.weight.add_(scale * noise)
        values.append(objective(model, batch)[1]["penalty_drift"].item())
    assert 0 < values[0] < values[1]
    # padding does not count: padded positions with garbage make no difference
    padded = {k: torch.cat([v, v[:, :3]], dim=1) for k, v in batch.items()}
    padded["attention_mask"][:, 9:] = 0
    padded["labels"][:, 9:] = -100
    assert objective(model, padded)[1]["penalty_drift"].item() == pytest.approx(values[1], rel=1e-4)


def test_invalid_strategy_combinations_fail_at_config_time():
    cases = {
        (
            "strategy.r=4",
        ): r"strategy.r is not a field of strategy.name=full \(it is a field of strategy lora\)",
        ("strategy.name=frozen", "strategy.layer_lr_decay=0.8"): "needs encoder weights that train",
        ("strategy.name=lora", "objectives+=[{name: l2sp}]"): "never changes the pretrained weights",
        ("strategy.name=frozen", "objectives+=[{name: drift}]"): "the encoder never changes",
        ("strategy.name=freeze",): "needs strategy.freeze_layers",
        ("strategy.name=frozen", "strategy.pooling=mean"): "pooling is for sequence tasks",
        ("strategy.layer_lr_decay=1.5",): "layer_lr_decay must be in",
        ("strategy.name=gradual", "strategy.freeze_layers=2"): "it is a field of strategy freeze",
        # keys that moved to the objectives list say where they went
        (
            "strategy.l2sp_weight=0.1",
        ): r"moved to the objectives list: add objectives\+=\[\{name: l2sp, weight: 0.1",
        ("strategy.drift_distance=kl",): r"objectives\+=\[\{name: drift, distance: kl",
        ("objectives=[{name: l2sp}]",): "only regularise, nothing would be learned",
        (
            "objectives+=[{name: l2sp, wieght: 1}]",
        ): r"objectives\[1\].wieght is not a field of objective l2sp",
        ("objectives+=[{name: l2sp}]", "objectives+=[{name: l2sp}]"): "listed twice",
        ("objectives.l2sp.weight=0.1",): r"has no 'l2sp'; add it with objectives\+=",
        ("objectives+=[{name: l2sp, weight: -1}]",): "l2sp.weight must be > 0",
        ("objectives+=[{name: nope}]",): "'nope' is not a registered objective",
        ("strategy.name=lora", "strategy.r=x"): r"strategy.r.*Expected a <class 'int'>",
    }
    for argv, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_config(list(argv), default_config=PRESET)
    config = parse_config(
        [
            "strategy.name=freeze",
            "strategy.freeze_layers=-2",
            "objectives+=[l2sp]",
            "objectives.l2sp.weight=1e-4",
        ],
        PRESET,
    )
    assert config.strategy.freeze_layers == -2
    assert [(o.name, o.weight) for o in config.objectives] == [("task", 1.0), ("l2sp", 1e-4)]
    # LoRA's defaults: r=8, alpha=2r, and no adapter-input dropout (peft's default; the benchmark's choice)
    lora = parse_config(["strategy.name=lora"], PRESET).strategy
    assert (lora.r, lora.alpha, lora.lora_dropout, lora.lora_export) == (8, 16.0, 0.0, "both")
    assert (
        parse_config(["strategy.name=lora", "strategy.lora_dropout=0.1"], PRESET).strategy.lora_dropout == 0.1
    )


def test_recipe_with_freeze_and_l2sp_logs_the_penalty_and_exports(
    tiny_model_dir, classification_files, tmp_path
):
    run_dir = tmp_path / "run"
    finetune_classifier.main(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={run_dir}",
            f"data.train_file={classification_files['train']}",
            f"data.validation_file={classification_files['validation']}",
            "data.test_size=0",
            "train.epochs=2",
            "train.batch_size=8",
            "train.log_every_steps=1",
            "train.trackers=[]",
            "train.lr=3e-3",
            "strategy.name=freeze",
            "strategy.freeze_layers=1",
            "objectives=[{name: task}, {name: l2sp, weight: 0.1}, {name: drift, weight: 0.5}]",
            "strategy.head_lr=1e-2",
        ]
    )
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert all("penalty_l2sp" in r and "penalty_drift" in r for r in train)
    assert train[0]["penalty_l2sp"] < train[-1]["penalty_l2sp"]  # the encoder drifts as it trains
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["strategy"]["name"] == "freeze" and metrics["strategy"]["frozen_layers"] == 1
    assert 0 < metrics["parameters"]["trainable_fraction"] < 1
    assert metrics["strategy"]["lr_groups"]["head/decay"] == pytest.approx(1e-2)
    classifier = pipeline("text-classification", model=str(run_dir / "model"))
    assert classifier("a great film")[0]["label"] in metrics["label_names"]


def test_resumed_gradual_l2sp_run_ends_with_the_same_weights(tiny_model_dir, ner_files, tmp_path):
    # The unfreezing schedule and the L2-SP reference must survive a restart: resume run A's step-4 checkpoint
    # into a new run directory and finish; the final checkpoints must match.
    from safetensors.torch import load_file

    common = [
        f"model.name_or_path={tiny_model_dir}",
        f"data.train_file={ner_files['train']}",
        f"data.validation_file={ner_files['validation']}",
        "data.test_size=0",
        "train.max_steps=8",
        "train.batch_size=8",
        "train.trackers=[]",
        "train.save_every_steps=4",
        "train.keep_checkpoints=5",
        "train.lr=1e-2",
        "strategy.name=gradual",
        "strategy.unfreeze_every=3",
        "strategy.unfreeze_unit=step",
        "objectives+=[{name: l2sp, weight: 0.1}]",
    ]
    finetune_ner.main([*common, f"output_dir={tmp_path / 'a'}"])
    checkpoint = tmp_path / "a" / "checkpoints" / "step-00000004"
    finetune_ner.main([*common, f"output_dir={tmp_path / 'b'}", f"train.resume_from_checkpoint={checkpoint}"])
    final_a = load_file(tmp_path / "a" / "checkpoints" / "step-00000008" / "model.safetensors")
    final_b = load_file(tmp_path / "b" / "checkpoints" / "step-00000008" / "model.safetensors")
    for name, value in final_a.items():
        torch.testing.assert_close(final_b[name], value, atol=1e-6, rtol=1e-5, msg=name)
    # by step 8 the schedule (every 3 steps) reached the bottom layer, which changed after the restart point
    halfway = load_file(checkpoint / "model.safetensors")
    assert not torch.equal(
        final_a["bert.encoder.layer.0.output.dense.weight"],
        halfway["bert.encoder.layer.0.output.dense.weight"],
    )

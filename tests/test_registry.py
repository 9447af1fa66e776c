"""The strategy registry: names are looked up in one place, a strategy is one module + one registration, and a
strategy registered from a module outside the package runs by config through a recipe; BitFit as the worked
example of a built-in one."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, pipeline

from hftransfer.config import strategy_config
from hftransfer.errors import ConfigError
from hftransfer.registry import get_strategy, register_strategy, strategy_names

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

from tests.test_strategy_recipes import _argv  # noqa: E402

# A strategy written by a user, in a module of their own: it trains the head alone, as the simplest thing that is
# not a built-in strategy. The module records that its builder ran, so the test sees the registry used it.
OUTSIDE_MODULE = """
from hftransfer.registry import register_strategy
from hftransfer.strategies.base import encoder_plan, finish_plan
from hftransfer.strategies.layers import EncoderLayout

CALLS = []


def build_head_only(context):
    CALLS.append(context.config.task)
    plan = encoder_plan(context)
    layout = EncoderLayout.of(plan.model)
    for name, param in plan.model.named_parameters():
        param.requires_grad_(layout.is_head(name))
    plan.report["outside"] = True
    return finish_plan(plan, context)


register_strategy("head_only_outside", build=build_head_only)
"""


def test_an_unknown_strategy_is_a_config_error_listing_the_registered_ones():
    with pytest.raises(ConfigError, match=r"strategy.name='nope'.*'bitfit'.*'lora'"):
        strategy_config("nope")
    assert {"full", "frozen", "freeze", "gradual", "lora", "bitfit"} <= set(strategy_names())


def test_a_taken_name_needs_replace_and_malformed_names_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("full", build=lambda context: None)
    with pytest.raises(ValueError, match="letters, digits"):
        register_strategy("has space", build=lambda context: None)
    assert get_strategy("full").module == "hftransfer.strategies.full"


def test_traits_reach_the_flow_without_the_name():
    assert get_strategy("gradual").changes_trainable_set and not get_strategy("full").changes_trainable_set
    assert not get_strategy("frozen").trains_encoder and get_strategy("bitfit").trains_encoder
    # a strategy that never trains the encoder refuses encoder-only options, naming the field
    with pytest.raises(ConfigError, match="strategy.layer_lr_decay needs encoder weights that train"):
        strategy_config("frozen", layer_lr_decay=0.8)


def test_a_strategy_from_a_module_outside_the_package_runs_through_a_recipe(
    tiny_model_dir, ner_files, tmp_path, monkeypatch
):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "my_head_only.py").write_text(OUTSIDE_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    module = importlib.import_module("my_head_only")
    run_dir = tmp_path / "run"
    metrics = finetune_ner.main(
        _argv(
            tiny_model_dir,
            ner_files,
            run_dir,
            "strategy.name=head_only_outside",
            "train.max_steps=4",
            "train.lr=1e-2",
        )
    )
    assert module.CALLS == ["token-classification"]
    assert metrics["strategy"]["outside"] and metrics["strategy"]["name"] == "head_only_outside"
    assert set(metrics["strategy"]["lr_groups"]) <= {"head/decay", "head/no_decay"}
    # the encoder is exactly the pretrained one, the head trained
    pretrained = load_file(str(tiny_model_dir / "model.safetensors"))
    exported = load_file(str(run_dir / "model" / "model.safetensors"))
    compared = [name for name in pretrained if f"bert.{name}" in exported]  # a token model has no pooler
    assert len(compared) >= len(pretrained) - 2
    for name in compared:
        assert torch.equal(exported[f"bert.{name}"], pretrained[name]), name
    assert any(key.startswith("classifier.") for key in exported)


def test_bitfit_trains_biases_and_the_head_and_exports_a_plain_model(
    tiny_model_dir, classification_files, tmp_path
):
    run_dir = tmp_path / "bitfit"
    metrics = finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "strategy.name=bitfit",
            "train.epochs=3",
            "train.lr=1e-2",
        )
    )
    parameters = metrics["strategy"]["parameters"]
    assert 0 < parameters["trainable_fraction"] < 0.2
    pretrained = load_file(str(tiny_model_dir / "model.safetensors"))
    exported = load_file(str(run_dir / "model" / "model.safetensors"))
    changed = {
        name
        for name, tensor in pretrained.items()
        if f"bert.{name}" in exported and not torch.equal(exported[f"bert.{name}"], tensor)
    }
    assert changed, "no encoder parameter trained"
    assert all(name.endswith(".bias") for name in changed), sorted(changed)
    # the bias of every encoder layer moved, not only the top one
    assert {name.split(".")[2] for name in changed if name.startswith("encoder.layer.")} == {"0", "1"}
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert set(model.config.id2label.values()) == {"positive", "negative"}
    classify = pipeline("text-classification", model=str(run_dir / "model"), device="cpu")
    assert classify("this film was very good")[0]["label"] in {"positive", "negative"}


def test_model_cards_take_the_strategy_line_from_its_registration():
    from hftransfer.hub.card import describe_strategy

    assert "bias terms" in describe_strategy({"name": "bitfit"}, {})
    lora = describe_strategy({"name": "lora", "r": 4, "alpha": 8}, {"lora": {"target_modules": ["query"]}})
    assert lora == "LoRA r=4, alpha=8, targets ['query']"
    # a run made with a strategy that this process has not registered still gets a card
    assert describe_strategy({"name": "from_elsewhere"}, {}) == "strategy from_elsewhere"


# A user's plug-in file: a strategy with an option of its own and an objective that reads the loop state.
PLUGIN_FILE = '''
from dataclasses import dataclass

import torch

from hftransfer.config import EncoderStrategyConfig, ObjectiveConfig
from hftransfer.objectives.base import Objective
from hftransfer.registry import register_objective, register_strategy
from hftransfer.strategies.base import encoder_plan, finish_plan
from hftransfer.strategies.layers import EncoderLayout

seen = []


@dataclass
class TopLayersConfig(EncoderStrategyConfig):
    """Train the head and the top ``k`` encoder layers."""

    name: str = "top_layers"
    k: int = 1
    """Encoder layers that train, counted from the top."""


def build_top_layers(context):
    plan = encoder_plan(context)
    layout = EncoderLayout.of(plan.model)
    for name, param in plan.model.named_parameters():
        layer = layout.layer_of(name)
        top = layer is not None and layer >= layout.num_layers - context.strategy.k
        param.requires_grad_(layout.is_head(name) or top)
    return finish_plan(plan, context)


@dataclass
class ConfidenceConfig(ObjectiveConfig):
    """Confidence penalty (Pereyra et al., 2017): minus the entropy of the predictions, ramped up over training."""

    name: str = "confidence"
    weight: float = 0.1


class ConfidencePenalty(Objective):
    name = "confidence"

    def __init__(self, context):
        self.weight = context.objective.weight

    def terms(self, model, batch, outputs, state):
        seen.append((state.step, state.total_steps))
        mask = batch["labels"] != -100
        probs = outputs.logits.float().softmax(-1)
        entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1)[mask].mean()
        return {"penalty_confidence": -self.weight * (state.step + 1) / state.total_steps * entropy}


register_strategy("top_layers", config=TopLayersConfig, build=build_top_layers)
register_objective("confidence", config=ConfidenceConfig, build=ConfidencePenalty, regulariser=True)
'''


def test_a_plugin_file_adds_a_typed_strategy_and_an_objective_that_sees_the_loop_state(
    tiny_model_dir, ner_files, tmp_path
):
    import json

    import yaml

    from hftransfer.config import load_config_file, parse_config

    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN_FILE, encoding="utf-8")
    run_dir = tmp_path / "run"
    argv = _argv(
        tiny_model_dir,
        ner_files,
        run_dir,
        f"plugins=[{plugin}]",
        "strategy.name=top_layers",
        "strategy.k=1",
        "objectives+=[{name: confidence, weight: 0.5}]",
        "train.max_steps=4",
        "train.grad_accum_steps=2",
        "train.log_every_steps=1",
    )
    metrics = finetune_ner.main(argv)
    module = sys.modules["hftransfer_plugin_my_plugin"]
    # the objective saw every micro-batch (two per step) with the loop's step and total
    expected = [(step, 4) for step in range(4) for _ in range(2)]
    assert module.seen == expected
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    penalties = [r["penalty_confidence"] for r in records if r["split"] == "train"]
    assert len(penalties) == 4 and all(p < 0 for p in penalties)
    # only the top layer and the head trained
    groups = set(metrics["strategy"]["lr_groups"])
    assert groups and all(g.startswith(("head/", "layer.1/")) for g in groups), groups
    # the typed field is checked, the saved config names the plug-in and parses back
    with pytest.raises(ConfigError, match=r"strategy.k.*Expected a <class 'int'>"):
        parse_config([f"plugins=[{plugin}]", "strategy.name=top_layers", "strategy.k=two"])
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["plugins"] == [str(plugin)] and saved["strategy"] == {
        "name": "top_layers",
        "head_lr": None,
        "layer_lr_decay": 1.0,
        "k": 1,
    }
    assert saved["objectives"][1] == {"name": "confidence", "weight": 0.5}
    again = load_config_file(run_dir / "config.yaml")
    assert (again.strategy.k, [o.name for o in again.objectives]) == (1, ["task", "confidence"])


def test_plugins_that_cannot_be_imported_are_config_errors(tmp_path):
    from hftransfer.config import parse_config

    with pytest.raises(ConfigError, match="plugins: cannot import 'no_such_plugin_module'"):
        parse_config(["plugins=[no_such_plugin_module]"])
    with pytest.raises(ConfigError, match="is not a file"):
        parse_config([f"plugins=[{tmp_path / 'missing.py'}]"])


OWNING_PLUGIN = '''
import torch

from hftransfer.objectives.base import Objective
from hftransfer.registry import register_objective


class LengthProbe(Objective):
    """Owns a module: a linear probe that predicts each sentence's length from its first token's last hidden
    state (a stand-in for a domain head)."""

    name = "length_probe"
    needs_hidden_states = True

    def __init__(self, context):
        self.weight = context.objective.weight
        self.module = torch.nn.Linear(context.model.config.hidden_size, 1)

    def extend_outputs(self, outputs, module):
        outputs["length_guess"] = module(outputs.hidden_states[-1][:, 0]).squeeze(-1)

    def terms(self, model, batch, outputs, state):
        lengths = batch["attention_mask"].sum(-1).float()
        return {"penalty_length": self.weight * (outputs["length_guess"] - lengths).pow(2).mean()}


register_objective("length_probe", build=LengthProbe, regulariser=True)
'''


def test_an_objective_owns_a_module_that_trains_in_its_own_group_and_stays_out_of_the_export(
    tiny_model_dir, ner_files, tmp_path
):
    import json

    from safetensors.torch import load_file as load

    plugin = tmp_path / "owning_plugin.py"
    plugin.write_text(OWNING_PLUGIN, encoding="utf-8")
    run_dir = tmp_path / "run"
    metrics = finetune_ner.main(
        _argv(
            tiny_model_dir,
            ner_files,
            run_dir,
            f"plugins=[{plugin}]",
            "objectives+=[{name: length_probe, weight: 0.1}]",
            "strategy.head_lr=5e-3",
            "train.max_steps=6",
            "train.log_every_steps=1",
            "train.save_every_steps=6",
        )
    )
    assert metrics["strategy"]["lr_groups"]["length_probe"] == 5e-3  # its own group, at the head's LR
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["penalty_length"] for r in records if r["split"] == "train"]
    assert len(losses) == 6 and losses[-1] < losses[0]  # the probe learns
    exported = load(str(run_dir / "model" / "model.safetensors"))
    assert not any("owned" in key or "length" in key for key in exported)
    from transformers import AutoModelForTokenClassification

    AutoModelForTokenClassification.from_pretrained(run_dir / "model")  # a plain token model
    # the checkpoint holds the probe with the model, so a resumed run continues it
    checkpoint = load(str(run_dir / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert any(key.startswith("owned.length_probe.") for key in checkpoint)


def test_model_cards_describe_the_objectives_beyond_the_task_loss():
    from hftransfer.hub.card import describe_objectives

    assert describe_objectives([{"name": "task", "weight": 1.0}]) == []  # the default goes without saying
    lines = describe_objectives(
        [
            {"name": "task", "weight": 2.0},
            {"name": "l2sp", "weight": 0.01},
            {"name": "drift", "weight": 0.5, "distance": "kl"},
            {"name": "from_elsewhere", "weight": 1.0},
        ]
    )
    assert lines == [
        "cross-entropy on the labels (weight 2.0)",
        "L2-SP 0.01",
        "output-drift penalty 0.5 (kl)",
        "objective from_elsewhere",
    ]

"""(IA)³ via peft, the proof that a peft method is one strategy file: exactly the rescaling vectors and the head
train, merged models and saved adapters reload exactly, and the recipes run, export and publish it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel
from peft.tuners.ia3 import IA3Layer
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    pipeline,
)

from hftransfer.config import RunConfig, TrainConfig, parse_config, strategy_config
from hftransfer.errors import ConfigError
from hftransfer.export.peft_adapter import load_adapter, merge_adapter, save_adapter, set_adapter_state
from hftransfer.hub.publish import HubError, stage_run
from hftransfer.predict import predict_file
from hftransfer.registry import get_strategy
from hftransfer.strategies import plan_strategy
from hftransfer.strategies.layers import EncoderLayout, plain_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

from tests.test_lora import AUTO, ID2LABEL, SEQUENCE, TOKEN, build, logits  # noqa: E402
from tests.test_lora import sgd_steps as lora_sgd_steps  # noqa: E402
from tests.test_strategy_recipes import _argv  # noqa: E402

PRESET = ROOT / "recipes" / "configs" / "minilm" / "ner_full.yaml"
HIDDEN, INTERMEDIATE, LAYERS = 32, 37, 2  # the tiny BERT of conftest


def ia3_plan(model_dir: Path, task: str, tmp_path: Path, **strategy):
    """The registered strategy's plan, as the recipes build it."""
    config = RunConfig(
        task=task,
        train=TrainConfig(lr=1e-2, weight_decay=0.01),
        strategy=strategy_config({"name": "ia3", **strategy}),
    )
    return plan_strategy(
        build(model_dir, task),
        config,
        tokenizer=None,
        run_dir=tmp_path,
        base_model_name_or_path=str(model_dir),
    )


def sgd_steps(model: torch.nn.Module, task: str, steps: int = 1) -> None:
    lora_sgd_steps(
        model, task, steps, lr=0.5
    )  # IA3's vectors move slowly: a larger step than LoRA's tests take


def perturb_vectors(model: torch.nn.Module) -> None:
    """The vectors start at 1 (the identity); move them so that round trips and merges test something."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ia3_l." in name:
                param.mul_(1 + 0.3 * torch.randn(param.shape, generator=generator))


def expected_trainable(task: str) -> set[str]:
    prefix = "base_model.model."
    # peft's BERT default: keys, values and output.dense, a suffix that covers the attention output projection too
    targets = ("attention.self.key", "attention.self.value", "attention.output.dense", "output.dense")
    names = {f"{prefix}bert.encoder.layer.{i}.{t}.ia3_l.default" for i in range(LAYERS) for t in targets}
    names |= {f"{prefix}classifier.modules_to_save.default.{p}" for p in ("weight", "bias")}
    if task == SEQUENCE:
        names |= {f"{prefix}bert.pooler.modules_to_save.default.dense.{p}" for p in ("weight", "bias")}
    return names


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_exactly_the_vectors_and_the_head_train_and_the_vectors_get_no_decay(tiny_model_dir, tmp_path, task):
    plan = ia3_plan(tiny_model_dir, task, tmp_path)
    model = plan.model
    trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
    assert set(trainable) == expected_trainable(task)
    # keys/values rescale their outputs, the feed-forward projections (output.dense) their inputs
    shapes = {
        name.split(".layer.0.")[1]: tuple(p.shape) for name, p in trainable.items() if ".layer.0." in name
    }
    assert shapes == {
        "attention.self.key.ia3_l.default": (HIDDEN, 1),
        "attention.self.value.ia3_l.default": (HIDDEN, 1),
        "attention.output.dense.ia3_l.default": (1, HIDDEN),
        "output.dense.ia3_l.default": (1, INTERMEDIATE),
    }
    num_labels = len(ID2LABEL[task])
    pooler = HIDDEN * (HIDDEN + 1) if task == SEQUENCE else 0
    assert (
        plan.report["parameters"]["trainable"]
        == LAYERS * 4 * HIDDEN + LAYERS * (INTERMEDIATE - HIDDEN) + num_labels * (HIDDEN + 1) + pooler
    )
    assert plan.report["ia3"] == {
        "target_modules": ["key", "value", "output.dense"],
        "feedforward_modules": ["output.dense"],
        "export": "both",
    }
    # weight decay would pull the vectors (which start at 1) towards 0; the head's weight keeps it
    decay = {id(p): group["weight_decay"] for group in plan.param_groups for p in group["params"]}
    assert all(decay[id(p)] == 0.0 for name, p in trainable.items() if ".ia3_l." in name)
    assert decay[id(trainable["base_model.model.classifier.modules_to_save.default.weight"])] == 0.01
    assert {name for name in plan.report["lr_groups"] if "layer." in name} == {
        f"layer.{i}/no_decay" for i in range(LAYERS)
    }

    # every wrapped weight reads as its name in the plain model (layer-wise LRs, freezing, gradual unfreezing)
    plain = {plain_name(name) for name, _ in model.named_parameters() if ".ia3_l." not in name}
    assert plain == {name for name, _ in build(tiny_model_dir, task).named_parameters()}
    layout = EncoderLayout.of(model)
    assert layout.layer_of("base_model.model.bert.encoder.layer.1.output.dense.ia3_l.default") == 1
    assert layout.is_head("base_model.model.classifier.modules_to_save.default.weight")

    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    sgd_steps(model, task)
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed == set(trainable)
    assert all(param.grad is None for param in model.parameters() if not param.requires_grad)


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_merged_model_gives_the_adapters_logits_and_runs_in_pipeline(tiny_model_dir, tmp_path, task):
    model = ia3_plan(tiny_model_dir, task, tmp_path).model
    perturb_vectors(model)
    sgd_steps(model, task)
    with torch.no_grad():  # make label 1 win everywhere so the pipeline's answer is known
        model.base_model.model.classifier.modules_to_save["default"].bias[1] += 20.0
    expected = logits(model, task)

    merged = merge_adapter(model)  # for sequence tasks this includes BERT's pooler, trained in full
    assert not any(isinstance(m, IA3Layer) for m in merged.modules())
    torch.testing.assert_close(logits(merged, task), expected, atol=1e-5, rtol=0)
    directory = tmp_path / "merged"
    merged.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    reloaded = AUTO[task].from_pretrained(directory)
    torch.testing.assert_close(logits(reloaded, task), expected, atol=1e-5, rtol=0)
    assert reloaded.config.id2label == ID2LABEL[task]
    assert torch.equal(logits(model, task), expected)  # the adapter model is untouched
    if task == TOKEN:
        tagger = pipeline("token-classification", model=str(directory), aggregation_strategy="simple")
        assert {entity["entity_group"] for entity in tagger("alice lives in paris")} == {"per"}
    else:
        classifier = pipeline("text-classification", model=str(directory))
        assert classifier("this movie was very good")[0]["label"] == "positive"


def test_adapter_round_trip_and_best_model_restore(tiny_model_dir, tmp_path):
    model = ia3_plan(tiny_model_dir, SEQUENCE, tmp_path).model
    perturb_vectors(model)
    sgd_steps(model, SEQUENCE)
    saved = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    expected = logits(model, SEQUENCE)
    directory = tmp_path / "best"
    save_adapter(model, directory, str(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir))
    assert json.loads((directory / "adapter_config.json").read_text())["peft_type"] == "IA3"

    via_peft = PeftModel.from_pretrained(build(tiny_model_dir, SEQUENCE), directory)
    via_ours = load_adapter(directory)
    for loaded in (via_peft, via_ours):
        torch.testing.assert_close(logits(loaded, SEQUENCE), expected, atol=1e-5, rtol=0)
    assert via_ours.config.id2label == ID2LABEL[SEQUENCE]

    sgd_steps(model, SEQUENCE, steps=3)
    assert not torch.equal(logits(model, SEQUENCE), expected)
    set_adapter_state(model, directory)
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, saved[name]), name
    assert torch.equal(logits(model, SEQUENCE), expected)
    # an adapter of another shape (LoRA's) does not restore into it
    lora = plan_strategy(
        build(tiny_model_dir, SEQUENCE),
        RunConfig(task=SEQUENCE, strategy=strategy_config("lora")),
        tokenizer=None,
        run_dir=tmp_path / "lora",
        base_model_name_or_path=str(tiny_model_dir),
    ).model
    with pytest.raises(RuntimeError, match="does not match the model"):
        set_adapter_state(lora, directory)


def test_ner_recipe_exports_a_merged_model_and_the_adapter_that_predict_alike(
    tiny_model_dir, ner_files, tmp_path
):
    run_dir = tmp_path / "run"
    metrics = finetune_ner.main(
        _argv(tiny_model_dir, ner_files, run_dir, "strategy.name=ia3", "train.epochs=2", "train.lr=3e-2")
    )
    assert metrics["strategy"]["name"] == "ia3" and metrics["strategy"]["ia3"]["export"] == "both"
    assert metrics["parameters"]["trainable_fraction"] < 0.05
    assert set(metrics["export"]) == {"adapter", "merged"}
    model_dir, adapter_dir = run_dir / "model", run_dir / "adapter"

    merged = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    base = AutoModelForTokenClassification.from_pretrained(
        tiny_model_dir, id2label=merged.config.id2label, label2id=merged.config.label2id
    )
    adapter = PeftModel.from_pretrained(base, adapter_dir).eval()
    assert set(merged.config.id2label.values()) == {"O", "B-per", "I-per", "B-loc", "I-loc"}
    assert load_adapter(adapter_dir).config.id2label == merged.config.id2label  # label maps survive
    inputs = AutoTokenizer.from_pretrained(adapter_dir)(["alice lives in paris ."], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs).logits, adapter(**inputs).logits, atol=1e-5, rtol=0)
    tagger = pipeline("token-classification", model=str(model_dir), aggregation_strategy="simple")
    assert all(entity["entity_group"] in {"per", "loc"} for entity in tagger("alice lives in paris ."))

    # both artefacts score the test split exactly as the run reported, through hftransfer's Predictor
    for directory in (model_dir, adapter_dir):
        predicted = predict_file(str(directory), str(ner_files["test"]), str(tmp_path / "p.jsonl"), cpu=True)
        assert predicted.metrics["f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-6), directory

    # published: the merged model by default, the adapter on request; the card names the method
    [staged] = stage_run(run_dir, "me/ner-ia3", staging_dir=tmp_path / "hub")
    card = ModelCard.load(staged.folder / "README.md")
    assert (
        staged.kind == "merged" and "(IA)³ rescaling vectors on ['key', 'value', 'output.dense']" in card.text
    )
    [staged] = stage_run(run_dir, "me/ner-ia3-adapter", what="adapter", staging_dir=tmp_path / "hub")
    assert (
        staged.kind == "adapter" and ModelCard.load(staged.folder / "README.md").data.library_name == "peft"
    )

    # an adapter teacher is merged into a plain model for distillation
    from hftransfer.distill.teacher import load_teacher

    teacher = load_teacher(str(adapter_dir), TOKEN, list(merged.config.id2label.values()))
    assert teacher.is_transformers_model and not isinstance(teacher.model, PeftModel)


def test_classifier_recipe_with_the_merged_model_only(tiny_model_dir, classification_files, tmp_path):
    run_dir = tmp_path / "run"
    metrics = finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "strategy.name=ia3",
            "strategy.ia3_export=merged",
            "train.epochs=2",
            "train.lr=3e-2",
        )
    )
    assert not (run_dir / "adapter").exists() and set(metrics["export"]) == {"merged"}
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert set(model.config.id2label.values()) == {"positive", "negative"}
    classify = pipeline("text-classification", model=str(run_dir / "model"), device="cpu")
    assert classify("this film was very good")[0]["label"] in {"positive", "negative"}
    predicted = predict_file(
        str(run_dir / "model"), str(classification_files["test"]), str(tmp_path / "p.jsonl"), cpu=True
    )
    assert predicted.metrics["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    with pytest.raises(HubError, match="adapter was not kept.*--what merged"):
        stage_run(run_dir, "me/x", what="adapter", staging_dir=tmp_path / "hub")
    assert stage_run(run_dir, "me/x", what="merged", staging_dir=tmp_path / "hub")[0].kind == "merged"


def test_ia3_config_is_checked_and_refuses_l2sp():
    entry = get_strategy("ia3")
    assert entry.trains_encoder and not entry.updates_pretrained_weights
    cases = {
        ("strategy.name=ia3", "objectives+=[{name: l2sp}]"): "never changes the pretrained weights",
        (
            "strategy.feedforward_modules=[output.dense]",
        ): r"not a field of strategy.name=full \(it is a field of "
        r"strategy ia3\)",
        ("strategy.ia3_export=adapter",): "it is a field of strategy ia3",
        ("strategy.name=ia3", "strategy.ia3_export=all"): "strategy.ia3_export",
        (
            "strategy.name=ia3",
            "strategy.target_modules=[key]",
            "strategy.feedforward_modules=[output.dense]",
        ): (r"strategy.feedforward_modules: \['output.dense'\] not in the target modules"),
        ("strategy.name=ia3", "strategy.target_modules=[]"): "strategy.target_modules: empty",
    }
    for argv, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_config(list(argv), default_config=PRESET)
    config = parse_config(["strategy.name=ia3", "strategy.target_modules=[all-linear]"], PRESET).strategy
    assert (config.target_modules, config.feedforward_modules, config.ia3_export) == (
        ["all-linear"],
        None,
        "both",
    )


def test_defaults_resolve_at_build_and_bad_targets_fail(tiny_model_dir, tmp_path):
    plan = ia3_plan(tiny_model_dir, TOKEN, tmp_path, target_modules=["all-linear"])
    adapted = {
        n.removeprefix("base_model.model.") for n, m in plan.model.named_modules() if isinstance(m, IA3Layer)
    }
    per_layer = ["self.query", "self.key", "self.value", "output.dense"]
    expected = {f"bert.encoder.layer.{i}.attention.{name}" for i in range(LAYERS) for name in per_layer}
    expected |= {
        f"bert.encoder.layer.{i}.{name}"
        for i in range(LAYERS)
        for name in ("intermediate.dense", "output.dense")
    }
    assert adapted == expected  # every encoder linear, never the head
    assert plan.report["ia3"]["feedforward_modules"] == ["output.dense"]
    # targets without the feed-forward projection: none is feed-forward by default
    plan = ia3_plan(tiny_model_dir, TOKEN, tmp_path, target_modules=["key", "value"])
    assert plan.report["ia3"]["feedforward_modules"] == []
    with pytest.raises(ConfigError, match="'kee' matches no module"):
        ia3_plan(tiny_model_dir, TOKEN, tmp_path, target_modules=["kee"])
    with pytest.raises(ConfigError, match="part of the head"):
        ia3_plan(tiny_model_dir, TOKEN, tmp_path, target_modules=["classifier"])


def test_the_generic_parts_take_a_method_that_cannot_merge(tiny_model_dir, tmp_path):
    """Prompt tuning (virtual tokens, no target modules) through the same save / reload / restore; a merged export of
    it is refused when the plan is built."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from hftransfer.export.peft_adapter import adapter_parameter_names, can_merge
    from hftransfer.strategies.adapters import adapter_plan, head_modules
    from hftransfer.strategies.base import StrategyContext

    base = build(tiny_model_dir, SEQUENCE)
    config = PromptTuningConfig(
        task_type=TaskType.SEQ_CLS, num_virtual_tokens=4, modules_to_save=head_modules(base, SEQUENCE)
    )
    model = get_peft_model(base, config)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert (
        adapter_parameter_names(model) == trainable and "prompt_encoder.default.embedding.weight" in trainable
    )
    sgd_steps(model, SEQUENCE)
    expected = logits(model, SEQUENCE)
    save_adapter(model, tmp_path / "prompt", str(tiny_model_dir))
    torch.testing.assert_close(
        logits(load_adapter(tmp_path / "prompt"), SEQUENCE), expected, atol=1e-5, rtol=0
    )
    sgd_steps(model, SEQUENCE, steps=2)
    set_adapter_state(model, tmp_path / "prompt")
    assert torch.equal(logits(model, SEQUENCE), expected)

    assert not can_merge(model)
    with pytest.raises(ConfigError, match="PROMPT_TUNING adapter cannot be merged"):
        merge_adapter(model)
    context = StrategyContext(model, RunConfig(task=SEQUENCE), None, tmp_path, str(tiny_model_dir))
    with pytest.raises(ConfigError, match="export=both: this peft method cannot be merged"):
        adapter_plan(context, model, "both", {})


def test_the_extending_guide_shows_ia3_py_as_it_is():
    guide = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    source = (ROOT / "hftransfer" / "strategies" / "ia3.py").read_text(encoding="utf-8")
    assert f"```python\n{source.rstrip()}\n```" in guide

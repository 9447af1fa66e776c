"""LoRA via peft: exactly the adapters and the head train, and saved adapters / merged models reload exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForSequenceClassification, AutoPeftModelForTokenClassification, PeftModel
from peft.tuners.lora import LoraLayer
from transformers import (
    AlbertConfig,
    AlbertForTokenClassification,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    pipeline,
)

from hftransfer.errors import ConfigError
from hftransfer.strategies.lora import (
    apply_lora,
    base_model_kwargs,
    default_target_modules,
    load_adapter,
    merge_lora,
    save_adapter,
    set_adapter_state,
)

TOKEN, SEQUENCE = "token-classification", "sequence-classification"
ID2LABEL = {
    TOKEN: {0: "O", 1: "B-per", 2: "I-per", 3: "B-loc", 4: "I-loc"},
    SEQUENCE: {0: "negative", 1: "positive"},
}
AUTO = {TOKEN: AutoModelForTokenClassification, SEQUENCE: AutoModelForSequenceClassification}
AUTO_PEFT = {TOKEN: AutoPeftModelForTokenClassification, SEQUENCE: AutoPeftModelForSequenceClassification}
R = 4


def build(model_dir: Path, task: str):
    torch.manual_seed(0)
    id2label = ID2LABEL[task]
    return AUTO[task].from_pretrained(
        model_dir, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )


def lora(model_dir: Path, task: str, target_modules: list[str] | None = None):
    return apply_lora(
        build(model_dir, task), task, r=R, alpha=2.0 * R, dropout=0.0, target_modules=target_modules
    )


def batch(task: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 40, (3, 7), generator=generator)  # [batch, seq]; ids past the special tokens
    num_labels = len(ID2LABEL[task])
    shape = (3, 7) if task == TOKEN else (3,)
    labels = torch.randint(0, num_labels, shape, generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def perturb_lora_b(model: torch.nn.Module) -> None:
    """LoRA B starts at zero (the adapter is a no-op); give it values so round trips test something."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B." in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def sgd_steps(model: torch.nn.Module, task: str, steps: int = 1, lr: float = 0.1) -> None:
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        model(**batch(task, seed=step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@torch.no_grad()
def logits(model: torch.nn.Module, task: str) -> torch.Tensor:
    model.eval()
    inputs = {k: v for k, v in batch(task, seed=5).items() if k != "labels"}
    return model(**inputs).logits  # [batch, seq, num_labels] or [batch, num_labels]


def expected_trainable(task: str, targets: tuple[str, ...] = ("query", "value")) -> set[str]:
    prefix = "base_model.model."
    names = {
        f"{prefix}bert.encoder.layer.{layer}.attention.self.{target}.lora_{ab}.default.weight"
        for layer in range(2)
        for target in targets
        for ab in "AB"
    }
    names |= {f"{prefix}classifier.modules_to_save.default.{p}" for p in ("weight", "bias")}
    if task == SEQUENCE:
        names |= {f"{prefix}bert.pooler.modules_to_save.default.dense.{p}" for p in ("weight", "bias")}
    return names


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_exactly_adapters_and_head_train(tiny_model_dir, task):
    model = lora(tiny_model_dir, task)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable == expected_trainable(task)

    perturb_lora_b(model)  # with B = 0 the gradient of A is 0 and A would not move
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    sgd_steps(model, task)
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed == trainable
    # The frozen original head and every pretrained weight are bit-identical; they got no gradient at all.
    assert "base_model.model.classifier.original_module.weight" in before
    assert all(param.grad is None for param in model.parameters() if not param.requires_grad)


def test_trainable_fraction_is_small(tiny_model_dir):
    model = lora(tiny_model_dir, TOKEN)
    hidden, num_labels = 32, len(ID2LABEL[TOKEN])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    # 2 layers x (query, value) x (A [r, hidden] + B [hidden, r]) + the head's copy.
    assert trainable == 2 * 2 * 2 * R * hidden + num_labels * (hidden + 1)
    assert trainable / total < 0.08  # ~6% on this tiny model; ~0.1% on bert-base with r=8


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_all_linear_adapts_encoder_linears_not_the_head(tiny_model_dir, task):
    model = lora(tiny_model_dir, task, ["all-linear"])
    adapted = {
        name.removeprefix("base_model.model.")
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }
    per_layer = [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ]
    assert adapted == {f"bert.encoder.layer.{i}.{name}" for i in range(2) for name in per_layer}
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    all_targets = ("query", "key", "value")
    expected = expected_trainable(task, all_targets) | {
        f"base_model.model.bert.encoder.layer.{i}.{name}.lora_{ab}.default.weight"
        for i in range(2)
        for name in ("attention.output.dense", "intermediate.dense", "output.dense")
        for ab in "AB"
    }
    assert trainable == expected  # classifier (and pooler) in full via modules_to_save, never LoRA


def test_pooler_can_be_adapted_instead_of_trained_in_full(tiny_model_dir, tmp_path):
    """``lora_pooler=adapt``: the pooler becomes one more LoRA target, and the merged model still matches."""
    model = apply_lora(
        build(tiny_model_dir, SEQUENCE),
        SEQUENCE,
        r=R,
        alpha=2.0 * R,
        dropout=0.0,
        target_modules=["all-linear"],
        train_pooler=False,
    )
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    prefix = "base_model.model.bert.pooler.dense"
    assert {f"{prefix}.lora_{ab}.default.weight" for ab in "AB"} <= trainable
    assert not any(
        "pooler.modules_to_save" in name or name.startswith(f"{prefix}.base_layer") for name in trainable
    )
    assert not any("pooler" in name and "lora_" not in name for name in trainable)

    perturb_lora_b(model)
    sgd_steps(model, SEQUENCE)
    expected = logits(model, SEQUENCE)
    merge_lora(model).save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(reloaded, SEQUENCE), expected, atol=1e-4, rtol=0)

    # Not targeted (query/value only) and not trained in full: the pooler stays fixed.
    fixed = apply_lora(
        build(tiny_model_dir, SEQUENCE), SEQUENCE, r=R, alpha=2.0 * R, dropout=0.0, target_modules=None,
        train_pooler=False,
    )  # fmt: skip
    assert not any("pooler" in name for name, param in fixed.named_parameters() if param.requires_grad)


def test_bad_targets_raise_config_error(tiny_model_dir):
    with pytest.raises(ConfigError, match="'querry' matches no module.*query"):
        lora(tiny_model_dir, TOKEN, ["query", "querry"])
    with pytest.raises(ConfigError, match="part of the head"):
        lora(tiny_model_dir, TOKEN, ["classifier"])
    with pytest.raises(ConfigError, match="cannot be combined"):
        lora(tiny_model_dir, TOKEN, ["all-linear", "query"])
    with pytest.raises(ConfigError, match="strategy.r"):
        apply_lora(build(tiny_model_dir, TOKEN), TOKEN, r=0, alpha=1.0, dropout=0.0, target_modules=None)
    albert = AlbertForTokenClassification(
        AlbertConfig(
            vocab_size=40, embedding_size=8, hidden_size=16, num_attention_heads=2, intermediate_size=16
        )
    )
    with pytest.raises(ConfigError, match="'albert'.*strategy.target_modules"):
        apply_lora(albert, TOKEN, r=R, alpha=8.0, dropout=0.0, target_modules=None)


@pytest.mark.parametrize(
    "model_class, config_class, targets, head",
    [
        (RobertaForSequenceClassification, RobertaConfig, ["query", "value"], ["classifier"]),
        (
            DistilBertForSequenceClassification,
            DistilBertConfig,
            ["q_lin", "v_lin"],
            ["pre_classifier", "classifier"],
        ),
        (MPNetForSequenceClassification, MPNetConfig, ["q", "v"], ["classifier"]),
        (
            DebertaV2ForSequenceClassification,
            DebertaV2Config,
            ["query_proj", "value_proj"],
            ["pooler", "classifier"],
        ),
    ],
)
def test_defaults_for_other_architectures(model_class, config_class, targets, head):
    sizes = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
    if config_class is DistilBertConfig:
        sizes = {"dim": 16, "n_layers": 1, "n_heads": 2, "hidden_dim": 16}
    model = model_class(config_class(vocab_size=40, max_position_embeddings=64, **sizes))
    assert default_target_modules(model) == targets
    wrapped = apply_lora(model, SEQUENCE, r=2, alpha=4.0, dropout=0.0, target_modules=None)
    trained_heads = {
        name.removeprefix("base_model.model.").split(".modules_to_save")[0]
        for name, param in wrapped.named_parameters()
        if param.requires_grad and ".modules_to_save." in name
    }
    assert sorted(trained_heads - {"roberta.pooler", "mpnet.pooler"}) == sorted(head)
    adapted = [name for name, param in wrapped.named_parameters() if param.requires_grad and "lora_" in name]
    assert adapted and all(any(f".{t}.lora_" in name for t in targets) for name in adapted)


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_adapter_round_trip(tiny_model_dir, tmp_path, task):
    model = lora(tiny_model_dir, task)
    perturb_lora_b(model)
    sgd_steps(model, task)
    expected = logits(model, task)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    directory = tmp_path / "adapter"
    save_adapter(model, directory, str(tiny_model_dir), tokenizer)
    save_adapter(model, directory, str(tiny_model_dir), tokenizer)  # replacing an existing adapter works too

    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary siblings left
    files = {p.name for p in directory.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "hftransfer_adapter.json",
        "tokenizer_config.json",
    } <= files
    assert not any(name.endswith(".bin") for name in files)
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(tiny_model_dir).resolve())
    meta = json.loads((directory / "hftransfer_adapter.json").read_text())
    assert meta["task"] == task and meta["id2label"] == {str(k): v for k, v in ID2LABEL[task].items()}

    # (a) plain peft on a base built with the label maps
    via_peft = PeftModel.from_pretrained(build(tiny_model_dir, task), directory)
    # (b) AutoPeftModel: the base is built from the checkpoint alone, so it needs the label kwargs
    via_auto = AUTO_PEFT[task].from_pretrained(directory, **base_model_kwargs(directory))
    # (c) hftransfer's loader reads them from hftransfer_adapter.json
    via_ours = load_adapter(directory)
    for loaded in (via_peft, via_auto, via_ours):
        torch.testing.assert_close(logits(loaded, task), expected, atol=1e-5, rtol=0)
    assert via_ours.config.id2label == ID2LABEL[task]
    assert not via_ours.training


def test_load_adapter_without_adapter_raises(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="no peft adapter"):
        load_adapter(tmp_path)
    model = lora(tiny_model_dir, TOKEN)
    model.save_pretrained(tmp_path / "peft-only")  # a peft adapter without hftransfer's metadata
    with pytest.raises(ConfigError, match="hftransfer_adapter.json"):
        load_adapter(tmp_path / "peft-only")
    with pytest.raises(ConfigError, match="no peft adapter"):
        set_adapter_state(model, tmp_path)


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_merged_model_reloads_and_runs_in_pipeline(tiny_model_dir, tmp_path, task):
    model = lora(tiny_model_dir, task)
    perturb_lora_b(model)
    sgd_steps(model, task)
    with torch.no_grad():  # make label 1 win everywhere so the pipeline's answer is known
        model.base_model.model.classifier.modules_to_save["default"].bias[1] += 20.0
    expected = logits(model, task)

    merged = merge_lora(model)
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    directory = tmp_path / "merged"
    merged.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    assert (directory / "model.safetensors").is_file()

    reloaded = AUTO[task].from_pretrained(directory)
    torch.testing.assert_close(logits(reloaded, task), expected, atol=1e-4, rtol=0)
    assert reloaded.config.id2label == ID2LABEL[task]
    # The trained PeftModel is untouched: same LoRA layers, bit-identical logits.
    assert isinstance(model, PeftModel) and any(isinstance(m, LoraLayer) for m in model.modules())
    assert torch.equal(logits(model, task), expected)

    if task == TOKEN:
        tagger = pipeline("token-classification", model=str(directory), aggregation_strategy="simple")
        groups = {entity["entity_group"] for entity in tagger("alice lives in paris")}
        assert groups == {"per"}  # "B-per" with the IOB prefix stripped
    else:
        classifier = pipeline("text-classification", model=str(directory))
        assert classifier("this movie was very good")[0]["label"] == "positive"


def test_set_adapter_state_restores_saved_weights(tiny_model_dir, tmp_path):
    model = lora(tiny_model_dir, SEQUENCE)
    perturb_lora_b(model)
    sgd_steps(model, SEQUENCE)
    saved = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    expected = logits(model, SEQUENCE)
    save_adapter(model, tmp_path / "best", str(tiny_model_dir))

    sgd_steps(model, SEQUENCE, steps=3)
    assert not torch.equal(logits(model, SEQUENCE), expected)
    set_adapter_state(model, tmp_path / "best")
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, saved[name]), name
    assert torch.equal(logits(model, SEQUENCE), expected)

"""``strategy.name=auto``: the data-size policy's decision table, its config checks, and runs through the real
recipes where the choice becomes the concrete strategy (in ``config.yaml``) with the learning rate it was measured
with, and the decision lands in ``metrics.json``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from hftransfer.advisor.policy import DEFAULT_RULES, decide, decision_table
from hftransfer.config import parse_config
from hftransfer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

SEQUENCE, TOKEN = "sequence-classification", "token-classification"


def test_decision_follows_the_rules_smallest_limit_first() -> None:
    rules = {"lora": 1000, "frozen": 100, "freeze": 300}
    assert decision_table(SEQUENCE, [1, 99, 100, 299, 300, 999, 1000, 10**6], rules) == [
        (1, "frozen"),
        (99, "frozen"),
        (100, "freeze"),
        (299, "freeze"),
        (300, "lora"),
        (999, "lora"),
        (1000, "full"),
        (10**6, "full"),
    ]
    assert decide(SEQUENCE, 5, rules={}).strategy == "full"  # no rule: everything trains


def test_default_table_is_the_one_documented_per_task_type() -> None:
    for task in (SEQUENCE, TOKEN):
        rules = DEFAULT_RULES[task]
        assert decide(task, max(rules.values(), default=1)).strategy == "full"
        smallest = min(rules, key=rules.get) if rules else "full"
        assert decide(task, 1).strategy == smallest
        assert "the measured default table" in decide(task, 1).reason


def test_decision_carries_the_settings_each_strategy_was_measured_with() -> None:
    frozen = decide(SEQUENCE, 10, rules={"frozen": 50}, frozen_lr=0.01)
    assert frozen.options == {"head": "mlp", "pooling": "mean"}  # the last layer, as measured
    assert frozen.train == {"lr": 0.01, "warmup_ratio": 0.0}
    assert "10 training examples < 50: frozen" in frozen.reason and "strategy.rules" in frozen.reason
    assert decide(TOKEN, 10, rules={"frozen": 50}).options == {"head": "linear", "feature_layer": "auto"}
    lora = decide(TOKEN, 10, rules={"lora": 50}, lora_lr=2e-3)
    assert lora.train == {"lr": 2e-3} and lora.options["r"] == 8
    assert lora.options["target_modules"] == ["all-linear"] and lora.options["lora_dropout"] == 0.0
    sentence_lora = decide(SEQUENCE, 10, rules={"lora": 50})
    assert sentence_lora.options["target_modules"] == ["query", "value", "dense"]
    assert sentence_lora.options["lora_dropout"] == 0.1
    assert decide(TOKEN, 10, rules={"freeze": 50}).options == {"freeze_layers": -2}
    assert decide(TOKEN, 100, rules={"freeze": 50}).train == {}  # full keeps train.lr
    with pytest.raises(ValueError, match="bitfit"):
        decide(TOKEN, 10, rules={"bitfit": 50})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("strategy.rules={bitfit: 10}", "bitfit"),
        ("strategy.rules={frozen: 0}", "positive"),
        ("strategy.frozen_lr=0", "frozen_lr"),
    ],
)
def test_bad_auto_options_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(["strategy.name=auto", override])


def _argv(model_dir: Path, files: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={run_dir}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['validation']}",
        f"data.test_file={files['test']}",
        "train.batch_size=8",
        "train.epochs=1",
        "train.lr=1e-4",
        "train.trackers=[]",
        "strategy.name=auto",
        f"strategy.cache_dir={run_dir.parent / 'cache'}",
        *extra,
    ]


def test_auto_run_with_little_data_trains_a_frozen_head_and_records_why(
    tiny_model_dir, classification_files, tmp_path
):
    metrics = finetune_classifier.main(
        _argv(tiny_model_dir, classification_files, tmp_path / "run", "strategy.rules={frozen: 100000}")
    )
    strategy = metrics["strategy"]
    assert strategy["name"] == "frozen" and strategy["auto"]["chosen"] == "frozen"
    assert strategy["auto"]["examples"] > 0 and "< 100000: frozen" in strategy["auto"]["reason"]
    assert "feature_layer_auto" not in strategy  # sentences keep the last layer (token tasks probe for one)
    assert strategy["lr_groups"] == {"head/decay": 3e-3, "head/no_decay": 3e-3}
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["strategy"]["name"] == "frozen" and saved["strategy"]["feature_layer"] == -1
    assert saved["train"]["lr"] == 3e-3


def test_auto_run_above_every_rule_fine_tunes_everything_at_train_lr(tiny_model_dir, ner_files, tmp_path):
    metrics = finetune_ner.main(
        _argv(tiny_model_dir, ner_files, tmp_path / "run", "strategy.rules={lora: 2}")
    )
    strategy = metrics["strategy"]
    assert (
        strategy["auto"]["chosen"] == "full"
        and "above every rule (lora below 2)" in strategy["auto"]["reason"]
    )
    assert strategy["parameters"]["trainable_fraction"] == pytest.approx(1.0)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["strategy"]["name"] == "full" and saved["train"]["lr"] == 1e-4


def test_auto_run_can_choose_lora(tiny_model_dir, ner_files, tmp_path):
    metrics = finetune_ner.main(
        _argv(
            tiny_model_dir,
            ner_files,
            tmp_path / "run",
            "strategy.rules={lora: 100000}",
            "strategy.lora_lr=5e-3",
        )
    )
    assert metrics["strategy"]["auto"]["chosen"] == "lora"
    assert metrics["strategy"]["parameters"]["trainable_fraction"] < 0.5
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["strategy"]["name"] == "lora" and saved["train"]["lr"] == 5e-3

"""The plug-in sections of a config (``strategy``, ``objectives``): how sources merge, how old keys fail, that an
older run directory's config.yaml still loads, and that ``--help`` documents every registered method's fields."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from hftransfer.config import load_config_file, parse_config, save_config
from hftransfer.errors import ConfigError
from hftransfer.registry import get_objective, get_strategy, objective_names, strategy_names

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "recipes" / "configs" / "minilm"

# strategy and objectives as the previous flat StrategyConfig saved them (a LoRA run and a frozen run)
OLD_STRATEGY = {
    "head": None, "head_hidden_size": None, "feature_layer": None, "feature_layers": None, "pooling": None,
    "cache_features": None, "cache_dir": None, "freeze_layers": None, "unfreeze_every": None,
    "unfreeze_unit": None, "r": None, "alpha": None, "lora_dropout": None, "target_modules": None,
    "lora_pooler": None, "lora_export": None, "head_lr": None, "layer_lr_decay": 1.0, "l2sp_weight": 0.0,
    "drift_weight": 0.0, "drift_distance": "mse",
}  # fmt: skip


def _yaml(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


def test_a_later_source_updates_the_strategy_and_a_new_name_keeps_only_shared_fields(tmp_path, caplog):
    preset = _yaml(tmp_path / "preset.yaml", {"strategy": {"name": "lora", "r": 4, "head_lr": 1e-3}})
    config = parse_config(["strategy.alpha=2"], default_config=preset)
    assert (config.strategy.name, config.strategy.r, config.strategy.alpha) == ("lora", 4, 2.0)
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        config = parse_config(["strategy.name=freeze", "strategy.freeze_layers=1"], default_config=preset)
    assert (config.strategy.name, config.strategy.head_lr) == ("freeze", 1e-3)  # shared field carried over
    assert "dropping its strategy.r" in caplog.text
    # a --config file, then the command line, in the order given
    other = _yaml(tmp_path / "other.yaml", {"strategy": {"r": 16}})
    assert parse_config(["--config", str(other)], default_config=preset).strategy.r == 16
    assert parse_config([f"--config={other}", "strategy.r=2"], default_config=preset).strategy.r == 2
    assert parse_config(["strategy.r=2", f"--config={other}"], default_config=preset).strategy.r == 16
    # a strategy given as a bare name, and list fields appended to
    assert parse_config(["strategy=gradual"]).strategy.name == "gradual"
    config = parse_config(["strategy.target_modules=[query]", "strategy.target_modules+=value"], preset)
    assert config.strategy.target_modules == ["query", "value"]


def test_objective_lists_replace_append_and_change_one_field(tmp_path):
    preset = _yaml(tmp_path / "preset.yaml", {"objectives": [{"name": "task"}, {"name": "drift"}]})
    names = lambda config: [(o.name, o.weight) for o in config.objectives]  # noqa: E731
    assert names(parse_config([], default_config=preset)) == [("task", 1.0), ("drift", 1.0)]
    assert names(parse_config(["objectives=[task]"], default_config=preset)) == [("task", 1.0)]
    config = parse_config(
        ["objectives+=l2sp", "objectives.drift.weight=0.5", "objectives.0.weight=2"], preset
    )
    assert names(config) == [("task", 2.0), ("drift", 0.5), ("l2sp", 0.01)]
    later = _yaml(tmp_path / "later.yaml", {"objectives": [{"name": "task", "weight": 3.0}]})
    assert names(parse_config(["--config", str(later)], default_config=preset)) == [("task", 3.0)]
    with pytest.raises(ConfigError, match="must be a list"):
        parse_config(["objectives={name: task}"])


def test_saved_configs_parse_back_and_older_run_directories_still_load(tmp_path):
    config = parse_config(["strategy.name=lora", "strategy.r=4", "objectives+=[{name: drift, distance: kl}]"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config_file(tmp_path / "config.yaml")
    assert again.strategy == config.strategy and again.objectives == config.objectives
    base = yaml.safe_load((PRESETS / "ner_full.yaml").read_text())
    for name, extra in {"lora": {"r": 4, "alpha": 8.0, "lora_pooler": "train", "lora_export": "both"},
                        "frozen": {"head": "linear", "feature_layer": -1, "feature_layers": 1,
                                   "cache_features": True}}.items():  # fmt: skip
        old = _yaml(
            tmp_path / f"old_{name}.yaml", {**base, "strategy": {**OLD_STRATEGY, "name": name, **extra}}
        )
        assert load_config_file(old).strategy.name == name
    moved = _yaml(
        tmp_path / "old_l2sp.yaml",
        {**base, "strategy": {**OLD_STRATEGY, "name": "full", "l2sp_weight": 0.01}},
    )
    with pytest.raises(
        ConfigError, match=r"strategy.l2sp_weight moved.*objectives\+=\[\{name: l2sp, weight: 0.01"
    ):
        load_config_file(moved)


def test_every_preset_validates():
    from hftransfer.distill.config import DistillRunConfig
    from hftransfer.multitask.config import parse_multitask_config

    for preset in sorted(PRESETS.glob("*.yaml")):
        if preset.name.startswith("multitask"):
            parse_multitask_config([], default_config=preset)
        elif preset.name.startswith("distill"):
            parse_config(["distill.teacher=some/teacher"], default_config=preset, schema=DistillRunConfig)
        elif preset.name.startswith("pretrain"):
            from hftransfer.pretrain.run import PretrainConfig

            parse_config([], default_config=preset, schema=PretrainConfig)
        else:
            parse_config([], default_config=preset)


def test_help_documents_every_registered_strategy_and_objective(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_config(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert "Hub model id, local directory" in text  # the core sections' field docs
    for name in strategy_names():
        assert f"strategy.name={name}" in text
        for field in get_strategy(name).config.__dataclass_fields__:
            assert field == "name" or f"strategy.{field} (" in text, (name, field)
    for name in objective_names():
        assert f"{{name: {name}}}" in text
        for field in get_objective(name).config.__dataclass_fields__:
            assert field == "name" or f"objectives.{name}.{field} (" in text, (name, field)
    assert "Adapter rank." in text  # a strategy field's docstring


@pytest.mark.parametrize("quote", ["'", '"'])
def test_quoted_override_values_mean_the_same_in_core_and_plugin_sections(quote):
    # A program passing argv (no shell) keeps the quotes; both kinds of section must drop one matching pair.
    config = parse_config(
        [
            f"data.label_template={quote}This review is {{label}}.{quote}",
            f"strategy.head={quote}linear{quote}",
            "data.text_column='it''s'",  # inner quotes: not one quoted value, left as written
        ],
        default_config=PRESETS / "classifier_frozen.yaml",
    )
    assert config.data.label_template == "This review is {label}."
    assert config.strategy.head == "linear"
    assert config.data.text_column == "'it''s'"

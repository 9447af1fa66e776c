"""recipes/domain_adapt.py on tiny models: a DANN run from labelled source text to an unlabelled target source,
scored on a target report set; the presets name their recipe so ``hftransfer train <preset>`` finds it."""

from __future__ import annotations

import sys
from pathlib import Path

from hftransfer.cli import recipe_for_config
from hftransfer.toy import make_classification_examples, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import domain_adapt  # noqa: E402

from tests.test_strategy_recipes import _argv  # noqa: E402


def test_a_dann_run_reports_on_the_target_set(tiny_model_dir, classification_files, tmp_path):
    rows = [
        {"text": row["text"].replace("was very", "seemed"), "label": row["label"]}
        for row in make_classification_examples(20, seed=5)
    ]
    target_test = write_jsonl(tmp_path / "target_test.jsonl", rows)
    target_text = tmp_path / "target.txt"
    target_text.write_text("\n".join(f"this drug seemed {w}" for w in ("fine", "bad", "odd", "good")) + "\n")
    metrics = domain_adapt.main(
        [
            "--config",
            str(ROOT / "recipes" / "configs" / "minilm" / "domain_adapt_dann.yaml"),
            *_argv(tiny_model_dir, classification_files, tmp_path / "run", "train.max_steps=4"),
            "train.log_every_steps=1",
            f"sources=[{{name: target, data: {target_text}}}]",
            f"report=[{{name: target, file: {target_test}}}]",
        ]
    )
    assert metrics["report"]["target"]["num_examples"] == 20
    assert 0.0 <= metrics["report"]["target"]["accuracy"] <= 1.0
    assert metrics["sources"]["target"]["examples"] == 4


def test_domain_adaptation_presets_go_to_their_recipe():
    for preset in (ROOT / "recipes" / "configs" / "minilm").glob("domain_adapt_*.yaml"):
        assert recipe_for_config(preset) == "domain_adapt", preset.name
    assert recipe_for_config(ROOT / "recipes" / "configs" / "minilm" / "pretrain_mlm.yaml") == "pretrain_mlm"


def test_each_preset_on_top_of_the_recipe_default_is_itself():
    # `--config preset.yaml` layers on the recipe's default (DANN): a preset that left out `objectives` or
    # `sources` would silently keep DANN's (the source-only baseline once did).
    from hftransfer.config import parse_config

    for preset in (ROOT / "recipes" / "configs" / "minilm").glob("domain_adapt_*.yaml"):
        layered = parse_config(["--config", str(preset)], default_config=domain_adapt.DEFAULT_CONFIG)
        alone = parse_config([], default_config=preset)
        for key in ("objectives", "sources", "selection", "report", "label_shift"):
            assert getattr(layered, key) == getattr(alone, key), (preset.name, key)

"""Real packaged assets (MiniLM-L6, WNUT-16, Rotten Tomatoes): slow, run with ``python -m pytest -m slow``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from transformers import pipeline

from hftransfer import assets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(assets.is_available(name) for name in ("minilm-l6", "wnut16", "rotten_tomatoes")),
        reason="offline asset packages not installed",
    ),
]


def test_ner_default_preset_learns_wnut16_quickly(tmp_path):
    import finetune_ner

    metrics = finetune_ner.main(
        [f"output_dir={tmp_path}", "train.max_steps=120", "train.eval_every_epoch=false"]
    )
    assert metrics["validation"]["num_examples"] == 239
    assert metrics["test"]["f1"] > 0.15  # 120 steps is ~1 epoch: far from the full run, far above zero
    ner = pipeline("token-classification", model=str(tmp_path / "model"), aggregation_strategy="simple")
    assert isinstance(ner("Going to the Empire State Building with Justin Bieber"), list)


def test_classifier_default_preset_learns_rotten_tomatoes_quickly(tmp_path):
    import finetune_classifier

    metrics = finetune_classifier.main(
        [
            f"output_dir={tmp_path}",
            "train.max_steps=60",
            "data.max_train_samples=2000",
            "train.eval_every_epoch=false",
        ]
    )
    assert metrics["test"]["accuracy"] > 0.6

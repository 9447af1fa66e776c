"""strategy.head_init=descriptions: a linear head started as the zero-shot classifier of the labels' descriptions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from hftransfer.errors import ConfigError
from hftransfer.predict import Predictor
from hftransfer.strategies.frozen import FeatureHead
from hftransfer.strategies.head_start import SIMILARITY_SCALE, imprint_descriptions
from hftransfer.zeroshot import ZeroShotClassifier
from tests.conftest import recipe_argv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

TEMPLATE = "this text is {label}"


def test_the_started_head_classifies_by_the_nearest_description():
    torch.manual_seed(0)
    labels, vectors = torch.randn(3, 8), 4.0 * torch.randn(50, 8)
    head = FeatureHead(8, 3, dropout=0.0).eval()
    report = imprint_descriptions(head, labels, vectors)
    cosine = torch.nn.functional.normalize(vectors, dim=-1) @ torch.nn.functional.normalize(labels, dim=-1).T
    logits = head(vectors).logits
    assert torch.equal(logits.argmax(dim=1), cosine.argmax(dim=1))
    # A vector of the training set's mean length gets logits of SIMILARITY_SCALE x its cosine similarities.
    mean_length = vectors.norm(dim=-1).mean()
    assert report["scale"] == pytest.approx(float(SIMILARITY_SCALE / mean_length), rel=1e-4)
    assert torch.allclose(logits, cosine * vectors.norm(dim=-1, keepdim=True) * report["scale"], atol=1e-4)


def _run(tiny_model_dir, classification_files, run_dir, *overrides):
    return finetune_classifier.main(
        recipe_argv(
            tiny_model_dir,
            classification_files,
            run_dir,
            "task=sequence-classification",
            "strategy.name=frozen",
            "strategy.head=linear",
            f"strategy.cache_dir={run_dir.parent / 'cache'}",
            *overrides,
        )
    )


def test_a_run_starts_where_zero_shot_classification_is(tiny_model_dir, classification_files, tmp_path):
    run_dir = tmp_path / "run"
    metrics = _run(
        tiny_model_dir,
        classification_files,
        run_dir,
        "strategy.head_init=descriptions",
        f"data.label_template={TEMPLATE}",
        "train.max_steps=1",
        "train.lr=1e-9",  # the head barely moves: it predicts as it started
    )
    assert metrics["strategy"]["head_init"]["from"] == "descriptions"
    texts = Dataset.from_json(str(classification_files["test"]))["text"]
    labels = metrics["label_names"]
    predicted = [row["label"] for row in Predictor(str(run_dir / "model"), cpu=True).predict(Dataset.from_dict({"text": texts})).rows]  # fmt: skip
    zero_shot = [row["label"] for row in ZeroShotClassifier(str(tiny_model_dir), template=TEMPLATE).predict(texts, labels)]  # fmt: skip
    assert predicted == zero_shot


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "set data.label_template"),
        ([f"data.label_template={TEMPLATE}", "strategy.pooling=cls"], None),
    ],
)
def test_descriptions_are_required(tiny_model_dir, classification_files, tmp_path, overrides, message):
    argv = ["strategy.head_init=descriptions", "train.max_steps=1", *overrides]
    if message is None:  # CLS-pooled features work too: the descriptions are pooled the same way
        assert _run(tiny_model_dir, classification_files, tmp_path / "run", *argv)["strategy"]["head_init"]
        return
    with pytest.raises(ConfigError, match=message):
        _run(tiny_model_dir, classification_files, tmp_path / "run", *argv)
    assert not (tmp_path / "run" / "metrics.json").exists()

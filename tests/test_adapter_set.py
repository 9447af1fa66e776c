"""Per-task adapters on one base: three tasks' LoRA adapters (NER, a 2-class and a 3-class text task) loaded into
one shared base per task type predict exactly as each adapter loaded alone, in any order of switching."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from datasets import Dataset

from hftransfer.adapter_set import AdapterSet, adapter_directory
from hftransfer.errors import ConfigError
from hftransfer.predict import Predictor
from hftransfer.toy import make_classification_examples, make_ner_examples, write_conll, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

LORA = ["strategy.name=lora", "strategy.r=2", "train.epochs=2", "train.lr=5e-3", "train.batch_size=8"]


def _three_way(rows: list[dict]) -> list[dict]:
    """The toy texts with a third class: every text about a plot is "neutral"."""
    return [{**row, "label": "neutral" if "plot" in row["text"] else row["label"]} for row in rows]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    common = [f"model.name_or_path={tiny_model_dir}", "train.trackers=[]", "train.warmup_ratio=0", *LORA]
    ner = {
        s: write_conll(root / f"ner-{s}.conll", make_ner_examples(n, seed=i))
        for i, (s, n) in enumerate([("train", 32), ("dev", 12)])
    }
    finetune_ner.main(
        [*common, f"data.train_file={ner['train']}", f"data.validation_file={ner['dev']}", "data.test_size=0",
         f"output_dir={root / 'ner'}", "strategy.lora_export=adapter"]
    )  # fmt: skip
    for name, transform, export in (("two", list, "both"), ("three", _three_way, "adapter")):
        files = {
            s: write_jsonl(root / f"{name}-{s}.jsonl", transform(make_classification_examples(n, seed=i)))
            for i, (s, n) in enumerate([("train", 48), ("dev", 16)])
        }
        finetune_classifier.main(
            [*common, f"data.train_file={files['train']}", f"data.validation_file={files['dev']}", "data.test_size=0",
             f"output_dir={root / name}", f"strategy.lora_export={export}"]
        )  # fmt: skip
    return {name: root / name for name in ("ner", "two", "three")}


def test_every_task_predicts_as_its_adapter_alone_in_any_switching_order(adapters):
    shared = AdapterSet(adapters, cpu=True)
    assert shared.tasks == ["ner", "two", "three"] and len(shared.shared) == 2  # one base per task type
    texts = Dataset.from_list(
        [{"text": t} for t in ("a film was very good", "this plot was very bad", "a movie")]
    )
    sentences = Dataset.from_list([{"tokens": ex["tokens"]} for ex in make_ner_examples(6, seed=9)])
    inputs = {"ner": sentences, "two": texts, "three": texts}
    alone = {
        name: Predictor(str(adapter_directory(path)), cpu=True).predict(inputs[name]).rows
        for name, path in adapters.items()
    }
    assert {row["label"] for row in alone["three"]} <= {"negative", "neutral", "positive"}
    for name in ("three", "ner", "two", "three", "two"):  # switching back and forth
        assert shared.predict(name, inputs[name]).rows == alone[name]
    assert shared.predictor("three").label_names == Predictor(str(adapters["three"]), cpu=True).label_names
    with pytest.raises(KeyError, match="no adapter named 'four'"):
        shared.predictor("four")


def test_a_weighted_merge_is_a_new_task_with_the_head_it_names(adapters):
    shared = AdapterSet(adapters, cpu=True)
    texts = Dataset.from_list(
        [{"text": t} for t in ("a film was very good", "this plot was very bad", "a movie")]
    )
    alone = shared.predict("two", texts).rows
    # One adapter at weight 1, concatenated: the same adapter again, with its own head.
    shared.merge(["two"], [1.0], "two-again", head_from="two")
    assert shared.predict("two-again", texts).rows == alone
    shared.merge(["two", "three"], [0.5, 0.5], "blend", head_from="three")
    rows = shared.predict("blend", texts).rows
    assert shared.predictor("blend").label_names == shared.predictor("three").label_names
    assert {row["label"] for row in rows} <= {"negative", "neutral", "positive"}
    assert shared.predict("two", texts).rows == alone  # the merged-from adapters are unchanged
    with pytest.raises(ConfigError, match="different task types"):
        shared.merge(["two", "ner"], [0.5, 0.5], "mixed", head_from="two")
    with pytest.raises(ConfigError, match="unknown"):
        shared.merge(["two", "four"], [0.5, 0.5], "x", head_from="two")


def test_adapters_must_share_their_base_and_exist(adapters, tmp_path):
    with pytest.raises(ConfigError, match="holds no adapter written by hftransfer"):
        AdapterSet({"x": tmp_path})
    other = tmp_path / "other"
    other.mkdir()
    meta = (adapter_directory(adapters["two"]) / "hftransfer_adapter.json").read_text()
    (other / "hftransfer_adapter.json").write_text(
        meta.replace('"base_model_name_or_path": "', '"base_model_name_or_path": "/elsewhere')
    )
    with pytest.raises(ConfigError, match="different base models"):
        AdapterSet({"two": adapters["two"], "other": other})

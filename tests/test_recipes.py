"""Each recipe's real ``main()`` on a tiny model and toy files: artefacts, loss going down, pipeline round trip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, pipeline

from hftransfer.config import load_config_file, parse_config
from hftransfer.errors import ConfigError
from hftransfer.multitask.config import parse_multitask_config
from tests.conftest import make_classification_examples, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402
import predict  # noqa: E402


def _records(run_dir: Path, split: str) -> list[dict]:
    return [
        r
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if r["split"] == split
    ]


def _common(model_dir: Path, run_dir: Path) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        f"output_dir={run_dir}",
        "train.lr=3e-3",
        "train.batch_size=8",
        "train.log_every_steps=2",
        "train.trackers=[]",
        "train.warmup_ratio=0.0",
    ]


@pytest.mark.parametrize(
    "preset", sorted((ROOT / "recipes" / "configs").rglob("*.yaml")), ids=lambda p: p.name
)
def test_every_preset_validates_and_names_its_launch_command(preset):
    first_line = preset.read_text().splitlines()[0]
    assert first_line.startswith("# accelerate launch recipes/") and preset.name in first_line
    if "recipes/multitask.py" in first_line:
        config = parse_multitask_config(["--config", str(preset)])
        assert len(config.tasks) >= 2
    elif "recipes/distill.py" in first_line:
        from hftransfer.distill.config import DistillRunConfig

        config = parse_config(["--config", str(preset)], schema=DistillRunConfig)
        assert config.distill.teacher and config.distill.student == "teacher_layers"
    elif "recipes/pretrain_mlm.py" in first_line:
        from hftransfer.pretrain.run import PretrainConfig

        config = parse_config(["--config", str(preset)], schema=PretrainConfig)
        assert config.mlm.mask_probability > 0
    else:
        config = load_config_file(preset)
        assert config.task in {"token-classification", "sequence-classification"}


def test_ner_recipe_trains_exports_and_loads_in_pipeline(tiny_model_dir, ner_files, tmp_path):
    run_dir = tmp_path / "run"
    argv = _common(tiny_model_dir, run_dir) + [
        f"data.train_file={ner_files['train']}",
        f"data.validation_file={ner_files['validation']}",
        f"data.test_file={ner_files['test']}",
        "train.epochs=8",
        "data.max_length=12",  # forces windowing of the longer toy sentences
        "train.trackers=[tensorboard]",
    ]
    metrics = finetune_ner.main(argv)
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "metrics.json",
        "model/model.safetensors",
        "model/tokenizer.json",
    ):
        assert (run_dir / name).exists(), name
    losses = [r["loss"] for r in _records(run_dir, "train")]
    assert losses[-1] < losses[0] * 0.5
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test"]["f1"] == metrics["test"]["f1"] > 0.5
    assert (
        saved["validation"]["num_examples"] == 16 and saved["features"]["validation"]["split_sentences"] > 0
    )
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["lr"] == 3e-3
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "tensorboard tracker wrote nothing"

    model = AutoModelForTokenClassification.from_pretrained(run_dir / "model")
    assert set(model.config.id2label.values()) == {"O", "B-loc", "I-loc", "B-per", "I-per"}
    ner = pipeline("token-classification", model=str(run_dir / "model"), aggregation_strategy="simple")
    entities = ner("alice lives in paris .")
    assert {e["entity_group"] for e in entities} <= {"per", "loc"}
    assert [e["word"] for e in entities if e["entity_group"] == "loc"] == ["paris"]


def test_ner_rerun_into_same_dir_is_refused(tiny_model_dir, ner_files, tmp_path):
    run_dir = tmp_path / "run"
    argv = _common(tiny_model_dir, run_dir) + [f"data.train_file={ner_files['train']}", "train.max_steps=2"]
    finetune_ner.main(argv)
    with pytest.raises(ConfigError, match="already holds a run"):
        finetune_ner.main(argv)
    finetune_ner.main(argv + ["overwrite_output_dir=true"])


@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_classifier_recipe_single_and_pair(tiny_model_dir, tmp_path, pair):
    files = {
        split: write_jsonl(tmp_path / f"{split}.jsonl", make_classification_examples(n, seed=seed, pair=pair))
        for split, n, seed in (("train", 96, 1), ("validation", 24, 2), ("test", 24, 3))
    }
    run_dir = tmp_path / "run"
    argv = _common(tiny_model_dir, run_dir) + [
        f"data.train_file={files['train']}",
        f"data.validation_file={files['validation']}",
        f"data.test_file={files['test']}",
        "train.epochs=6",
    ]
    if pair:
        argv += ["data.text_column=premise", "data.text_pair_column=hypothesis"]
    metrics = finetune_classifier.main(argv)
    losses = [r["loss"] for r in _records(run_dir, "train")]
    assert losses[-1] < losses[0]
    assert metrics["test"]["num_examples"] == 24 and "macro_f1" in metrics["test"]
    if not pair:
        assert metrics["test"]["accuracy"] > 0.8
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    expected = {"different", "same"} if pair else {"negative", "positive"}
    assert set(model.config.id2label.values()) == expected
    classify = pipeline("text-classification", model=str(run_dir / "model"))
    if pair:
        out = classify({"text": "this movie was very good", "text_pair": "really bad"})
    else:
        out = classify("this film was very superb")[0]
    assert out["label"] in expected


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU defaults")
def test_mixed_precision_choice_on_cpu():
    from hftransfer.runs import resolve_mixed_precision

    assert resolve_mixed_precision("auto") == "no"  # bf16 autocast is ~20x slower on AVX2 CPUs
    assert resolve_mixed_precision("bf16") == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve_mixed_precision("fp16")


def test_wrong_task_for_recipe_and_bad_key_fail_fast(tmp_path):
    with pytest.raises(ConfigError, match="finetune_classifier.py"):
        finetune_ner.main(["task=sequence-classification", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="train.lrr"):
        finetune_ner.main(["train.lrr=1"])
    with pytest.raises(ConfigError, match="train.batch_size"):
        finetune_ner.main(["train.batch_size=0"])


def test_predict_recipe_scores_conll_and_labels_text(tiny_model_dir, ner_files, tmp_path):
    run_dir = tmp_path / "run"
    finetune_ner.main(
        _common(tiny_model_dir, run_dir)
        + [
            f"data.train_file={ner_files['train']}",
            f"data.validation_file={ner_files['validation']}",
            "train.epochs=8",
        ]
    )
    out = tmp_path / "preds.conll"
    metrics = predict.main([f"model={run_dir / 'model'}", f"input={ner_files['test']}", f"output={out}"])
    assert metrics["f1"] > 0.5
    blocks = out.read_text().strip().split("\n\n")
    assert len(blocks) == 16 and all("\t" in line for line in blocks[0].splitlines())
    text = tmp_path / "input.txt"
    text.write_text("alice lives in rome .\nbob works near oslo with carol .\n")
    predict.main(
        [f"model={run_dir / 'model'}", f"input={text}", f"output={tmp_path / 'preds.jsonl'}", "max_length=6"]
    )
    rows = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [len(r["tags"]) for r in rows] == [5, 7]  # every word predicted despite 6-token windows
    assert rows[0]["tokens"] == ["alice", "lives", "in", "rome", "."]

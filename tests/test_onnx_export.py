"""ONNX export (fp32 and int8) and ONNX Runtime prediction, on tiny models and toy data.

The export's checks are recomputed here from the predictions rather than trusted; fp32 must predict what PyTorch
predicts. Tests that run ONNX skip without the ``onnx`` extra; the missing-extra messages are tested either way.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from hftransfer.cli import main
from hftransfer.config import DataConfig, RunConfig
from hftransfer.errors import ConfigError
from hftransfer.export.onnx_layout import META_FILE, missing_onnx_packages
from hftransfer.predict import Predictor, predict_file
from tests.conftest import make_classification_examples, make_ner_examples, write_conll, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
NER_LABELS = ["O", "B-per", "I-per", "B-loc", "I-loc"]
TOKEN, SEQUENCE = "token-classification", "sequence-classification"
SPLITS = ("train", "validation", "test")
requires_onnx = pytest.mark.skipif(
    bool(missing_onnx_packages()), reason='needs pip install "hftransfer[onnx]"'
)


def fake_run(root: Path, model_dir: Path, task: str) -> Path:
    """A run directory as a recipe leaves it, without the recipe: ``model/`` (the tiny encoder and a head, trained
    for a few steps) and a ``config.yaml`` whose data has a test split."""
    root.mkdir(parents=True)
    if task == TOKEN:
        labels, auto = NER_LABELS, AutoModelForTokenClassification
        splits = {split: make_ner_examples(12, seed=i) for i, split in enumerate(SPLITS)}
        files = {split: write_conll(root / f"{split}.conll", rows) for split, rows in splits.items()}
    else:
        labels, auto = ["negative", "positive"], AutoModelForSequenceClassification
        splits = {split: make_classification_examples(16, seed=i) for i, split in enumerate(SPLITS)}
        files = {split: write_jsonl(root / f"{split}.jsonl", rows) for split, rows in splits.items()}
    torch.manual_seed(0)
    label2id = {name: i for i, name in enumerate(labels)}
    model = auto.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_briefly(model, tokenizer, splits["train"], label2id)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    data = {f"{split}_file": str(path) for split, path in files.items()}
    config = {"task": task, "model": {"name_or_path": str(model_dir)}, "data": {**data, "max_length": 16}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def train_briefly(model, tokenizer, rows: list[dict], label2id: dict[str, int], steps: int = 30) -> None:
    """A few full-batch AdamW steps, so that predictions vary with the input (an untrained sequence head predicts
    one label for every text) and are not near ties everywhere."""
    if "text" in rows[0]:
        batch = tokenizer([row["text"] for row in rows], padding=True, return_tensors="pt")
        labels = torch.tensor([label2id[row["label"]] for row in rows])
    else:
        words = [row["tokens"] for row in rows]
        batch = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")
        labels = torch.tensor(  # every subword carries its word's tag: enough to make predictions vary
            [
                [label2id[row["tags"][w]] if w is not None else -100 for w in batch.word_ids(i)]
                for i, row in enumerate(rows)
            ]
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """Both tasks' fake runs, each exported in both formats with the checks (one export per task per module)."""
    if missing_onnx_packages():
        pytest.skip('needs pip install "hftransfer[onnx]"')
    from hftransfer.export.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("onnx-runs")
    runs = {task: fake_run(root / task.split("-")[0], tiny_model_dir, task) for task in (TOKEN, SEQUENCE)}
    return {task: (run, export_onnx(run)) for task, run in runs.items()}


def test_missing_extra_is_one_line_naming_the_install(tiny_model_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    hint = 'error: ONNX export and inference need the onnx extra: pip install "hftransfer[onnx]" (missing: '
    # one line; it names onnxruntime (and the others when the extra is missing altogether)
    assert len(err) == 1 and err[0].startswith(hint) and "onnxruntime" in err[0]
    with pytest.raises(ConfigError, match=r'pip install "hftransfer\[onnx\]"'):
        Predictor(str(tiny_model_dir), backend="onnx-int8")
    with pytest.raises(ConfigError, match=r'^export_onnx: .*pip install "hftransfer\[onnx\]"'):
        RunConfig(export_onnx=["onnx-int8"])


def test_unknown_backend_and_format_name_the_option(tiny_model_dir):
    with pytest.raises(ConfigError, match="backend='tensorrt'"):
        Predictor(str(tiny_model_dir), backend="tensorrt")
    with pytest.raises(ConfigError, match="export_onnx: unknown format 'onnx-fp16'"):
        RunConfig(export_onnx=["onnx-fp16"])


@requires_onnx
def test_export_of_a_directory_without_a_model_names_the_path(tmp_path, capsys):
    assert main(["export", str(tmp_path / "runs" / "nothing")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {tmp_path / 'runs' / 'nothing'}: no model to export") and err.count("\n") == 1
    )


@requires_onnx
def test_onnx_backend_without_an_export_says_how_to_make_one(tiny_model_dir):
    with pytest.raises(ConfigError, match=f"run `hftransfer export {tiny_model_dir} --format onnx`"):
        Predictor(str(tiny_model_dir), backend="onnx")


@requires_onnx
@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_export_writes_a_self_contained_directory_and_fp32_logits_match(exported, task):
    run, report = exported[task]
    directory = run / "onnx"
    assert report["directory"] == str(directory) and report["task"] == task and not report["merged_adapter"]
    names = {path.name for path in directory.iterdir()}
    assert {"model.onnx", "model-int8.onnx", "config.json", "tokenizer_config.json", META_FILE} <= names
    assert not [path for path in run.iterdir() if path.name.startswith(".")]  # no temporaries left
    assert json.loads((directory / META_FILE).read_text()) == {
        k: v for k, v in report.items() if k != "directory"
    }
    assert report["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    fp32 = report["checks"]["onnx"]
    assert fp32["passed"] and fp32["lost"] == [] and fp32["logits"]["max_abs_diff"] <= 1e-4
    assert fp32["test"]["agreement"] == 1.0 and fp32["test"]["change_points"] == 0.0
    int8 = report["checks"]["onnx-int8"]
    assert int8["logits"]["max_abs_diff"] > 0  # int8 weights do change the logits: the int8 graph is what ran
    assert report["files"]["onnx-int8"]["mb"] < report["files"]["onnx"]["mb"]


@requires_onnx
@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_onnx_predictor_returns_the_rows_pytorch_returns(exported, task):
    run, report = exported[task]
    test_file = next(run.glob("test.*"))
    from hftransfer.data.sources import read_unlabelled

    examples = read_unlabelled(str(test_file), task, DataConfig(train_file=str(test_file)))
    eager = Predictor(str(run / "model"), max_length=16).predict(examples)
    fp32 = Predictor(str(run / "onnx"), max_length=16)  # auto: an export directory predicts with ONNX Runtime
    assert fp32.backend == "onnx" and fp32.task == task
    onnx_rows = fp32.predict(examples).rows
    key = "tags" if task == TOKEN else "label"
    predicted = [label for row in eager.rows for label in (row[key] if task == TOKEN else [row[key]])]
    assert len(set(predicted)) > 1  # rows that could differ: not one label everywhere
    assert [row[key] for row in onnx_rows] == [row[key] for row in eager.rows]
    if task == TOKEN:
        assert [row["entities"] for row in onnx_rows] == [row["entities"] for row in eager.rows]
        assert any(row["entities"] for row in onnx_rows)
    for ours, theirs in zip(onnx_rows, eager.rows):
        assert set(ours) == set(theirs)
        assert ours.get("scores", ours.get("score")) == pytest.approx(
            theirs.get("scores", theirs.get("score")), abs=2e-4
        )

    # int8, from the run directory, batched as the export's check batched: the report's agreement and metric are
    # what these predictions give (dynamic quantisation scales activations per batch, so batches must match)
    int8 = Predictor(str(run), backend="onnx-int8", max_length=16, batch_size=64).predict(examples)
    if task == TOKEN:
        pairs = [(a, b) for x, y in zip(int8.rows, eager.rows) for a, b in zip(x["tags"], y["tags"])]
    else:
        pairs = [(x["label"], y["label"]) for x, y in zip(int8.rows, eager.rows)]
    check = report["checks"]["onnx-int8"]["test"]
    assert check["compared"] == len(pairs) and check["examples"] == len(examples)
    assert check["agreement"] == pytest.approx(sum(a == b for a, b in pairs) / len(pairs))
    metric = "f1" if task == TOKEN else "accuracy"
    assert check["exported"] == pytest.approx(int8.metrics[metric])
    assert check["pytorch"] == pytest.approx(eager.metrics[metric])
    passed = check["agreement"] >= 0.99 and abs(check["change_points"]) <= 0.5
    assert report["checks"]["onnx-int8"]["passed"] == passed


@requires_onnx
def test_a_failed_check_still_writes_and_says_what_was_lost(tiny_model_dir, tmp_path, monkeypatch, caplog):
    from hftransfer.export import onnx_check
    from hftransfer.export.onnx_export import export_onnx

    run = fake_run(tmp_path / "run", tiny_model_dir, SEQUENCE)
    monkeypatch.setattr(onnx_check, "MIN_AGREEMENT", 1.01)  # no export can agree on more than all examples
    monkeypatch.setattr(onnx_check, "LOGIT_TOLERANCE", 0.0)
    with caplog.at_level(logging.WARNING, logger="hftransfer.export.onnx_export"):
        report = export_onnx(run, ["onnx"], check_examples=5)
    check = report["checks"]["onnx"]
    assert not report["passed"] and not check["passed"] and check["test"]["examples"] == 5
    assert [phrase.split(" by ")[0].split(" on ")[0] for phrase in check["lost"]] == [
        "logits differ from PyTorch",
        "predictions agree with PyTorch",
    ]
    assert (run / "onnx" / "model.onnx").is_file() and not (run / "onnx" / "model-int8.onnx").exists()
    assert json.loads((run / "onnx" / META_FILE).read_text())["passed"] is False
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and warning[0].startswith(
        "onnx export lost: logits differ from PyTorch by up to"
    )


@requires_onnx
def test_cli_export_then_predict_with_onnx(tiny_model_dir, tmp_path, capsys):
    run = fake_run(tmp_path / "run", tiny_model_dir, TOKEN)
    assert main(["export", str(run / "model"), "--format", "onnx", "--check-examples", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"wrote {run / 'onnx'}"
    assert out[1].startswith("onnx: model.onnx (") and out[1].endswith("checks passed")
    words = sum(len(example["tokens"]) for example in make_ner_examples(12, seed=2)[:4])  # --check-examples 4
    assert f"100.00% of {words} test words agree" in out[1]
    assert not (run / "onnx" / "model-int8.onnx").exists()

    test_file = str(run / "test.conll")
    eager = predict_file(str(run / "model"), test_file, str(tmp_path / "eager.jsonl"), max_length=16)
    for model, extra in ((run / "onnx", []), (run, ["--backend", "onnx"])):
        output = tmp_path / f"{model.name}.jsonl"
        assert main(["predict", str(model), test_file, str(output), "--max-length", "16", *extra]) == 0
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert [row["tags"] for row in rows] == [row["tags"] for row in eager.rows]
    assert main(["predict", str(run), test_file, str(tmp_path / "x.jsonl"), "--backend", "onnx-int8"]) == 2
    assert "holds no model-int8.onnx" in capsys.readouterr().err


@requires_onnx
def test_lora_recipe_exports_the_merged_model_after_training(tiny_model_dir, tmp_path):
    sys.path.insert(0, str(ROOT / "recipes"))
    import finetune_ner

    from hftransfer.export.peft_adapter import load_adapter
    from hftransfer.onnx_predict import OnnxModel

    files = {
        s: write_conll(tmp_path / f"{s}.conll", make_ner_examples(16, seed=i)) for i, s in enumerate(SPLITS)
    }
    run = tmp_path / "run"
    metrics = finetune_ner.main(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={run}",
            *(f"data.{split}_file={path}" for split, path in files.items()),
            "strategy.name=lora",
            "strategy.lora_export=adapter",  # model/ is the adapter: the export must merge it
            "train.max_steps=6",
            "train.lr=1e-2",
            "train.batch_size=8",
            "train.trackers=[]",
            "export_onnx=[onnx]",
        ]
    )
    assert (run / "model" / "adapter_config.json").is_file()
    report = json.loads((run / "onnx" / META_FILE).read_text())
    assert report["merged_adapter"] and report["checks"]["onnx"]["test"]["examples"] == 16
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["onnx"] == metrics["onnx"] == {"directory": str(run / "onnx"), "passed": True, "lost": {}}

    adapter = load_adapter(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(run / "onnx")
    batch = dict(tokenizer(["alice lives in paris .", "bob"], padding=True, return_tensors="pt"))
    graph = OnnxModel(run / "onnx" / "model.onnx", adapter.config)(**batch).logits
    with torch.no_grad():
        torch.testing.assert_close(graph, adapter(**batch).logits, atol=1e-4, rtol=0)
        # the trained head without LoRA's update of the encoder
        for name, param in adapter.named_parameters():
            if "lora_B" in name:
                param.zero_()
        assert (graph - adapter(**batch).logits).abs().max() > 1e-3  # so the graph holds the merged update


@requires_onnx
def test_a_crf_models_export_decodes_with_its_transition_scores(tiny_model_dir, tmp_path):
    from hftransfer.export.onnx_export import export_onnx
    from hftransfer.modeling.crf import CRF, CRF_FILE

    run = fake_run(tmp_path / "run", tiny_model_dir, TOKEN)
    torch.manual_seed(3)
    crf = CRF(NER_LABELS)
    with torch.no_grad():  # scores strong enough to overrule some argmax tags
        for parameter in crf.parameters():
            parameter.normal_(0, 3.0)
    crf.save(run / "model" / CRF_FILE)
    config_path = run / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "hftransfer_decoding": "crf"}))

    export_onnx(run, ["onnx"], check=False)
    assert (run / "onnx" / CRF_FILE).read_bytes() == (run / "model" / CRF_FILE).read_bytes()
    test_file = str(run / "test.conll")
    eager = predict_file(str(run / "model"), test_file, str(tmp_path / "eager.jsonl"), max_length=16)
    argmax = predict_file(
        str(run / "model"), test_file, str(tmp_path / "argmax.jsonl"), max_length=16, decoding="argmax"
    )
    exported = predict_file(str(run / "onnx"), test_file, str(tmp_path / "onnx.jsonl"), max_length=16)
    assert [row["tags"] for row in eager.rows] != [row["tags"] for row in argmax.rows]  # the CRF matters here
    assert [row["tags"] for row in exported.rows] == [row["tags"] for row in eager.rows]

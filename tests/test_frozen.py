"""Frozen encoder strategy: feature extraction, the feature cache, head-only training, evaluation on cached
features, and exports that reproduce the trained model's logits (native HF models or encoder+head)."""

from __future__ import annotations

import logging

import pytest
import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    pipeline,
)

from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.data.features import tokenize_sequence_task, tokenize_token_task
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import model_inputs, run_inference
from hftransfer.objectives.task import task_loss
from hftransfer.strategies import frozen_export
from hftransfer.strategies.feature_cache import (
    cached_features,
    encode_features,
    feature_cache_key,
    load_store,
)
from hftransfer.strategies.feature_data import FeatureDataset, FeatureStoreCollator, build_feature_loaders
from hftransfer.strategies.frozen import ProbeModel, build_feature_head
from hftransfer.strategies.frozen_export import export_frozen, load_probe
from tests.conftest import make_classification_examples, make_ner_examples

TOKEN, SEQUENCE = "token-classification", "sequence-classification"
NER_LABELS = ["O", "B-loc", "I-loc", "B-per", "I-per"]
CLS_LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return AutoModel.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def ner(tokenizer):
    examples = Dataset.from_list(make_ner_examples(12, seed=3))
    label2id = {label: i for i, label in enumerate(NER_LABELS)}
    # max_length=8 splits the longer sentences into windows: several feature rows per example.
    features, report = tokenize_token_task(examples, tokenizer, label2id, max_length=8, window_context=2)
    assert report["split_sentences"] > 0
    return examples, features


@pytest.fixture(scope="module")
def sentences(tokenizer):
    examples = Dataset.from_list(make_classification_examples(10, seed=4))
    examples = examples.map(lambda row, i: {"text": row["text"] + " very" * (i % 3)}, with_indices=True)
    features, _ = tokenize_sequence_task(
        examples, tokenizer, {n: i for i, n in enumerate(CLS_LABELS)}, max_length=32
    )
    return examples, features


def _hidden_states(encoder, features):
    """Per row, unpadded: every hidden state ``[layers + 1, seq, hidden]`` of a plain HF forward."""
    states = []
    with torch.no_grad():
        for row in features:
            inputs = {k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
            states.append(torch.cat(encoder(**inputs, output_hidden_states=True).hidden_states))
    return states


@pytest.fixture(scope="module")
def ner_states(encoder, ner):
    return _hidden_states(encoder, ner[1])


@pytest.fixture(scope="module")
def sentence_states(encoder, sentences):
    return _hidden_states(encoder, sentences[1])


def _big_head(head, seed=0):
    # HF's std=0.02 init makes every logit ~0, which would let a wrong export pass a 1e-4 check.
    torch.manual_seed(seed)
    for parameter in head.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    return head


@pytest.mark.parametrize(
    ("layer", "num_layers", "expected"), [(-1, 1, [2]), (0, 1, [0]), (1, 1, [1]), (-1, 2, [1, 2])]
)
def test_token_features_come_from_the_chosen_hidden_states(
    encoder, tokenizer, ner, ner_states, layer, num_layers, expected
):
    _, features = ner
    store = encode_features(
        encoder, tokenizer, features, layer=layer, num_layers=num_layers, task=TOKEN, batch_size=4
    )
    assert store.rows == len(features) and store.example_id.tolist() == features["example_id"][:]
    for row in range(len(features)):
        reference = ner_states[row][expected].mean(dim=0)  # [seq, hidden]
        labels, word_index = torch.tensor(features[row]["labels"]), torch.tensor(features[row]["word_index"])
        keep = (word_index >= 0) | (labels != -100)
        start, end = store.offsets[row], store.offsets[row + 1]
        torch.testing.assert_close(store.vectors[start:end], reference[keep], atol=1e-5, rtol=1e-5)
        assert store.labels[start:end].tolist() == labels[keep].tolist()
        assert store.word_index[start:end].tolist() == word_index[keep].tolist()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sequence_pooling_ignores_padding(encoder, tokenizer, sentences, sentence_states, pooling):
    _, features = sentences
    assert len(set(len(ids) for ids in features["input_ids"])) > 1  # batches really are padded
    store = encode_features(
        encoder, tokenizer, features, layer=-1, pooling=pooling, task=SEQUENCE, batch_size=16
    )
    assert store.vectors.shape == (len(features), encoder.config.hidden_size)
    for row in range(len(features)):
        last = sentence_states[row][-1]  # [seq, hidden], unpadded
        reference = last[0] if pooling == "cls" else last.mean(dim=0)
        torch.testing.assert_close(store.vectors[row], reference, atol=1e-5, rtol=1e-5)
    assert store.labels.tolist() == features["labels"][:]


def test_only_the_head_trains(encoder, tokenizer, ner):
    _, features = ner
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    store = encode_features(encoder, tokenizer, features, layer=-1, task=TOKEN)
    head = build_feature_head(encoder.config, len(NER_LABELS))
    head_before = [p.clone() for p in head.parameters()]
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    train, _ = build_feature_loaders(store, {}, batch_size=4, eval_batch_size=4, seed=0)
    task_loss(head, next(iter(train))).backward()  # cached features: the encoder is not even run
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(head_before, head.parameters()))

    # Through the live encoder+head model the encoder is frozen and outside the graph.
    probe = ProbeModel(encoder, head, layer=-1, task=TOKEN).train()
    assert not probe.encoder.training and not any(p.requires_grad for p in probe.encoder.parameters())
    batch = FeatureCollator(tokenizer)([features[i] for i in range(4)])
    optimizer.zero_grad()
    task_loss(probe, batch).backward()
    optimizer.step()
    assert all(p.grad is None for p in probe.encoder.parameters())
    assert all(p.grad is not None for p in head.parameters())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_cache_hit_miss_key_and_corruption(encoder, tokenizer, sentences, tmp_path, caplog):
    _, features = sentences
    options = {"layer": -1, "pooling": "mean", "task": SEQUENCE, "cache_dir": tmp_path}
    with caplog.at_level(logging.INFO, logger="hftransfer.strategies.feature_cache"):
        first, hit = cached_features(encoder, tokenizer, features, **options)
        assert not hit and "feature cache miss" in caplog.text
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"{first.key}.json", f"{first.key}.safetensors"]
        second, hit = cached_features(encoder, tokenizer, features, **options)
        assert hit and "feature cache hit" in caplog.text
    for name in ("vectors", "offsets", "labels", "example_id"):
        assert torch.equal(getattr(first, name), getattr(second, name))

    def key(data=features, **changes):
        args = {"layer": -1, "num_layers": 1, "pooling": "mean", "task": SEQUENCE} | changes
        return feature_cache_key(encoder, tokenizer, data, **args)

    assert key() == first.key and key(layer=2) == first.key  # -1 and L are the same hidden state
    one_label = features.map(
        lambda row, i: {"labels": 1 - row["labels"] if i == 0 else row["labels"]}, with_indices=True
    )
    one_token = features.map(
        lambda row, i: {
            "input_ids": [row["input_ids"][0], 5, *row["input_ids"][2:]] if i == 3 else row["input_ids"]
        },
        with_indices=True,
    )
    others = [key(one_label), key(one_token), key(layer=1), key(num_layers=2), key(pooling="cls")]
    assert len(set(others + [first.key])) == 6
    _, hit = cached_features(encoder, tokenizer, one_label, **options)
    assert not hit

    # A damaged file is a miss that recomputes (and rewrites), never a crash.
    (tmp_path / f"{first.key}.safetensors").write_bytes(b"\x00garbage" * 10)
    with caplog.at_level(logging.WARNING):
        third, hit = cached_features(encoder, tokenizer, features, **options)
    assert not hit and "unreadable" in caplog.text
    assert torch.equal(third.vectors, first.vectors)
    assert cached_features(encoder, tokenizer, features, **options)[1]
    assert load_store(tmp_path / "missing.safetensors") is None


def test_feature_dataset_and_collator_shapes(encoder, tokenizer, ner, sentences):
    hidden = encoder.config.hidden_size
    store = encode_features(encoder, tokenizer, ner[1], layer=-1, task=TOKEN)
    dataset = FeatureDataset(store)
    assert dataset.lengths == store.lengths and len(dataset) == len(ner[1])
    short, long = sorted(range(len(dataset)), key=lambda i: dataset.lengths[i])[:: len(dataset) - 1]
    batch = FeatureStoreCollator()([dataset[short], dataset[long]])
    width = dataset.lengths[long]
    assert batch["features"].shape == (2, width, hidden) and batch["labels"].shape == (2, width)
    assert batch["attention_mask"].sum(dim=1).tolist() == [dataset.lengths[short], width]
    pad = dataset.lengths[short]
    assert (batch["labels"][0, pad:] == -100).all() and (batch["word_index"][0, pad:] == -1).all()
    assert (batch["features"][0, pad:] == 0).all()

    sequence = FeatureDataset(encode_features(encoder, tokenizer, sentences[1], layer=-1, task=SEQUENCE))
    assert sequence.lengths == [1] * len(sequence)
    batch = FeatureStoreCollator()([sequence[0], sequence[1], sequence[2]])
    assert batch["features"].shape == (3, hidden) and batch["labels"].shape == (3,)
    assert set(batch) == {"features", "labels", "example_id"}


def test_inference_and_metrics_on_cached_features(encoder, tokenizer, ner, sentences):
    accelerator = Accelerator(cpu=True)
    for task, (examples, features), labels in ((TOKEN, ner, NER_LABELS), (SEQUENCE, sentences, CLS_LABELS)):
        store = encode_features(encoder, tokenizer, features, layer=-1, pooling="mean", task=task)
        head = _big_head(build_feature_head(encoder.config, len(labels)))
        _, loaders = build_feature_loaders(
            None, {"validation": store}, batch_size=4, eval_batch_size=3, seed=0
        )
        output = run_inference(head, accelerator.prepare(loaders["validation"]), accelerator, task)
        metrics = compute_metrics(
            output, examples, task, labels
        )  # raises if a word / example got no prediction
        assert metrics["num_examples"] == len(examples) and metrics["num_features"] == len(features)
        assert "loss" in metrics and ("f1" in metrics if task == TOKEN else "accuracy" in metrics)

        # The cached path predicts exactly what the live encoder+head model predicts from the raw inputs.
        probe = ProbeModel(encoder, head, layer=-1, pooling="mean", task=task)
        live_loader = build_eval_dataloader(features, FeatureCollator(tokenizer), batch_size=5)
        live = run_inference(probe, accelerator.prepare(live_loader), accelerator, task)
        if task == TOKEN:
            assert {e: {w: p[0] for w, p in ws.items()} for e, ws in output.word_predictions.items()} == {
                e: {w: p[0] for w, p in ws.items()} for e, ws in live.word_predictions.items()
            }
        else:
            assert {e: p[0] for e, p in output.example_predictions.items()} == {
                e: p[0] for e, p in live.example_predictions.items()
            }
        assert output.loss == pytest.approx(live.loss, rel=1e-4)


def _live_logits(encoder, head, features, tokenizer, **options):
    batch = FeatureCollator(tokenizer)([features[i] for i in range(6)])
    with torch.no_grad():
        logits = ProbeModel(encoder, head, **options)(**model_inputs(batch)).logits
    return batch, logits


@pytest.mark.parametrize("layer", [-1, 1, 0])
def test_native_token_export(encoder, tokenizer, ner, tmp_path, caplog, layer):
    _, features = ner
    id2label = dict(enumerate(NER_LABELS))
    head = _big_head(build_feature_head(encoder.config, len(NER_LABELS))).eval()
    options = {"layer": layer, "task": TOKEN}
    with caplog.at_level(logging.WARNING):
        info = export_frozen(
            encoder,
            head,
            tokenizer,
            tmp_path / "model",
            name_or_path="tiny",
            id2label=id2label,
            sample=features,
            **options,
        )
    expected_layers = 2 if layer == -1 else layer
    assert info["kind"] == "native" and info["pipeline"]
    assert info["truncated_to_layer"] == (None if layer == -1 else layer)
    assert ("bottom" in caplog.text) == (layer != -1)
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "model")
    assert model.config.num_hidden_layers == expected_layers and model.config.id2label == id2label
    batch, logits = _live_logits(encoder, head, features, tokenizer, **options)
    with torch.no_grad():
        exported = model(**model_inputs(batch)).logits
    mask = batch["attention_mask"].bool()
    assert (exported - logits).abs()[mask].max() < 1e-4
    entities = pipeline("token-classification", model=str(tmp_path / "model"))("alice lives in paris")
    assert all(entity["entity"] in NER_LABELS for entity in entities)


def test_native_sequence_export_with_the_bert_pooler_head(encoder, tokenizer, sentences, tmp_path):
    _, features = sentences
    id2label = dict(enumerate(CLS_LABELS))
    head = _big_head(build_feature_head(encoder.config, 2, kind="mlp")).eval()
    assert isinstance(head.activation, torch.nn.Tanh)
    options = {"layer": -1, "pooling": "cls", "task": SEQUENCE}
    info = export_frozen(
        encoder,
        head,
        tokenizer,
        tmp_path / "model",
        name_or_path="tiny",
        id2label=id2label,
        sample=features,
        **options,
    )
    assert info["kind"] == "native" and info["truncated_to_layer"] is None
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert model.config.id2label == id2label
    batch, logits = _live_logits(encoder, head, features, tokenizer, **options)
    with torch.no_grad():
        assert (model(**model_inputs(batch)).logits - logits).abs().max() < 1e-4
    prediction = pipeline("text-classification", model=str(tmp_path / "model"))("a film was very good")
    assert prediction[0]["label"] in CLS_LABELS


def test_non_native_export_is_encoder_plus_head(encoder, tokenizer, sentences, tmp_path):
    _, features = sentences
    head = _big_head(build_feature_head(encoder.config, 2)).eval()
    options = {"layer": 1, "num_layers": 2, "pooling": "mean", "task": SEQUENCE}
    info = export_frozen(
        encoder,
        head,
        tokenizer,
        tmp_path / "probe",
        name_or_path="tiny",
        id2label=dict(enumerate(CLS_LABELS)),
        sample=features,
        **options,
    )
    assert info["kind"] == "encoder+head" and not info["pipeline"] and info["truncated_to_layer"] == 1
    assert "feature_layers=2" in info["reason"]
    probe = load_probe(tmp_path / "probe")
    assert probe.encoder.config.num_hidden_layers == 1 and probe.config.id2label == dict(
        enumerate(CLS_LABELS)
    )
    batch, logits = _live_logits(encoder, head, features, tokenizer, **options)
    with torch.no_grad():
        assert (probe(**model_inputs(batch)).logits - logits).abs().max() < 1e-5

    # Linear head + mean pooling on the last layer: still not native.
    info = export_frozen(
        encoder,
        head,
        tokenizer,
        tmp_path / "probe2",
        name_or_path="tiny",
        id2label=dict(enumerate(CLS_LABELS)),
        sample=features,
        layer=-1,
        pooling="mean",
        task=SEQUENCE,
    )
    assert info["kind"] == "encoder+head" and info["truncated_to_layer"] is None
    batch, logits = _live_logits(encoder, head, features, tokenizer, layer=-1, pooling="mean", task=SEQUENCE)
    with torch.no_grad():
        assert (load_probe(tmp_path / "probe2")(**model_inputs(batch)).logits - logits).abs().max() < 1e-5


def test_export_that_would_predict_differently_is_refused(encoder, tokenizer, ner, tmp_path, monkeypatch):
    head = _big_head(build_feature_head(encoder.config, len(NER_LABELS)))
    monkeypatch.setattr(
        frozen_export, "_copy_linear", lambda target, source: None
    )  # leave the HF head random
    with pytest.raises(RuntimeError, match="differ"):
        export_frozen(
            encoder,
            head,
            tokenizer,
            tmp_path / "model",
            name_or_path="tiny",
            id2label=dict(enumerate(NER_LABELS)),
            sample=ner[1],
            layer=-1,
            task=TOKEN,
        )
    assert not (tmp_path / "model").exists()
    assert head.training  # the head's mode is restored

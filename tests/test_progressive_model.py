"""Progressive networks on tiny BERTs: zero-start laterals, frozen earlier columns, wiring, mixed tasks and widths."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

from hftransfer.errors import ConfigError
from hftransfer.progressive import ProgressiveModel
from hftransfer.progressive.model import encoder_layers
from tests.conftest import write_tiny_bert

TAGS = ["O", "B-per", "I-per", "B-loc", "I-loc"]
TEXTS = ["alice lives in paris .", "bob visited the city of rome today", "good film", "a really dull plot ."]


def token_model(path, seed: int = 0):
    torch.manual_seed(seed)  # the new head's initialisation
    return AutoModelForTokenClassification.from_pretrained(
        path,
        num_labels=len(TAGS),
        id2label=dict(enumerate(TAGS)),
        label2id={t: i for i, t in enumerate(TAGS)},
    )


def sequence_model(path, seed: int = 0, num_labels: int = 2):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)


@pytest.fixture(scope="module")
def batch(tiny_model_dir) -> dict[str, torch.Tensor]:
    return dict(AutoTokenizer.from_pretrained(tiny_model_dir)(TEXTS, padding=True, return_tensors="pt"))


def token_labels(batch):
    labels = torch.randint(len(TAGS), batch["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    return labels.masked_fill(batch["attention_mask"] == 0, -100)


SEQUENCE_LABELS = torch.tensor([0, 1, 1, 0])


def train_steps(model: ProgressiveModel, batch, labels, steps: int = 3) -> None:
    model.train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def logits(model, batch, column=None):
    with torch.no_grad():
        return model(**batch, column=column).logits if column is not None else model(**batch).logits


@pytest.mark.parametrize("build", [token_model, sequence_model], ids=["token", "sequence"])
def test_laterals_start_at_zero(tiny_model_dir, batch, build):
    second = build(tiny_model_dir, seed=1)
    plain = copy.deepcopy(second).eval()
    model = ProgressiveModel([token_model(tiny_model_dir), second]).eval()
    assert torch.equal(logits(model, batch), logits(plain, batch))


def test_earlier_column_frozen_and_laterals_wired(tiny_model_dir, batch):
    model = ProgressiveModel([token_model(tiny_model_dir), sequence_model(tiny_model_dir, seed=1)]).eval()
    first, second = model.columns
    before = logits(model, batch, column=0)
    assert torch.equal(before, logits(first, batch))  # column 0 alone is the plain model

    model.train()
    assert not first.training and second.training  # frozen columns ignore .train(): no dropout
    model(**batch, labels=SEQUENCE_LABELS).loss.backward()
    assert all(p.grad is None for p in first.parameters())
    assert all(p.grad is not None for p in second.parameters())
    assert all(p.grad is not None for p in model.laterals[1].parameters())
    assert any(adapter.up.weight.grad.abs().sum() > 0 for layer in model.laterals[1] for adapter in layer)
    assert {id(p) for p in model.trainable_parameters()} == {
        id(p) for p in [*second.parameters(), *model.laterals[1].parameters()]
    }
    model.zero_grad()

    train_steps(model, batch, SEQUENCE_LABELS)
    assert torch.equal(logits(model, batch, column=0), before)  # still in .train() mode
    assert all(adapter.up.weight.abs().sum() > 0 for layer in model.laterals[1] for adapter in layer)
    model.eval()
    # Same column-1 weights, with and without the laterals: they change the output, so they are wired in.
    assert not torch.allclose(logits(model, batch), logits(second, batch))
    # The hooks are gone after each forward: the columns called directly are plain models again.
    assert all(
        not layer._forward_pre_hooks and not layer._forward_hooks
        for column in model.columns
        for layer in encoder_layers(column)
    )
    assert torch.equal(logits(first, batch), before)


def test_three_columns_token_then_sequences(tiny_model_dir, batch):
    model = ProgressiveModel([token_model(tiny_model_dir), sequence_model(tiny_model_dir, seed=1)])
    token_labels_ = token_labels(batch)
    assert model(**batch, labels=token_labels_, column=0).loss.isfinite()  # NER column keeps its own task
    train_steps(model, batch, SEQUENCE_LABELS)
    model.eval()
    before = [logits(model, batch, column=j) for j in range(2)]

    model.add_column(sequence_model(tiny_model_dir, seed=2, num_labels=3))
    # each of the 2 layers' inputs, and the last layer's output, reads columns 0 and 1
    assert [len(layer) for layer in model.laterals[2]] == [2, 2, 2]
    assert not any(p.requires_grad for p in model.laterals[1].parameters())
    train_steps(model, batch, torch.tensor([0, 1, 2, 1]))
    assert logits(model, batch).shape == (4, 3)
    for j in range(2):
        assert torch.equal(logits(model, batch, column=j), before[j])
    assert all(p.grad is None for column in model.columns[:2] for p in column.parameters())


def test_different_widths_and_mismatches(tiny_model_dir, tmp_path, batch):
    wide = write_tiny_bert(tmp_path / "wide", seed=1, hidden_size=48)
    model = ProgressiveModel([token_model(tiny_model_dir), sequence_model(wide)], rank=4)
    assert model.laterals[1][0][0].down.in_features == 32 and model.laterals[1][0][0].up.out_features == 48
    train_steps(model, batch, SEQUENCE_LABELS, steps=2)

    with pytest.raises(ConfigError, match="vocab_size"):
        model.add_column(sequence_model(write_tiny_bert(tmp_path / "vocab", vocab=["[PAD]", "[UNK]", "a"])))
    with pytest.raises(ValueError, match="encoder layers"):
        model.add_column(sequence_model(write_tiny_bert(tmp_path / "deep", num_hidden_layers=3)))
    assert model.num_columns == 2 and model.columns[1].training  # a refused column changes nothing


def test_the_last_layer_output_reads_the_earlier_columns_last_layer(tiny_model_dir, batch):
    first, second = token_model(tiny_model_dir), sequence_model(tiny_model_dir, seed=1)
    model = ProgressiveModel([first, second]).eval()
    layers = encoder_layers(second)
    assert len(model.laterals[1]) == len(layers) + 1
    output_lateral = model.laterals[1][len(layers)][0]
    with torch.no_grad():
        output_lateral.up.weight.normal_()  # the only lateral not at zero

    # By hand: column 1 with column 0's last hidden state, through the adapter, added to its last layer's output.
    with torch.no_grad():
        earlier = first.bert(**batch).last_hidden_state

        def add(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden + output_lateral(earlier)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handle = layers[-1].register_forward_hook(add)
        expected = second(**batch).logits
        handle.remove()
    assert torch.allclose(logits(model, batch), expected, atol=1e-6)
    assert not torch.allclose(expected, logits(second, batch))


def test_networks_without_output_laterals_load_as_saved(tiny_model_dir, batch, tmp_path):
    from hftransfer.progressive.export import NETWORK_META, load_progressive, save_progressive

    model = ProgressiveModel([token_model(tiny_model_dir)])
    model.add_column(sequence_model(tiny_model_dir, seed=1), output_lateral=False)  # as version 1 built them
    assert len(model.laterals[1]) == len(encoder_layers(model.columns[1]))
    train_steps(model, batch, SEQUENCE_LABELS)
    model.eval()
    save_progressive(model, AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path / "net")
    meta_file = tmp_path / "net" / NETWORK_META
    meta = json.loads(meta_file.read_text())
    assert meta["version"] == 2 and meta["output_laterals"] == [False, False]
    del meta["output_laterals"]
    meta_file.write_text(json.dumps({**meta, "version": 1}))  # a version 1 export has no such key
    loaded = load_progressive(tmp_path / "net")
    assert loaded.output_laterals == [False, False]
    assert torch.equal(logits(loaded, batch), logits(model, batch))

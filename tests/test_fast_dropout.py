"""CPU dropout masks drawn four to a random number: right probability, unbiased, exact gradients, and a model that
comes back unchanged from the ``with`` block."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForTokenClassification, BertModel

from hftransfer.training import fast_dropout as fd


def _tiny_bert(
    hidden_dropout: float = 0.1, attention_dropout: float = 0.1, layers: int = 2
) -> BertForTokenClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=37,
        num_labels=3, hidden_dropout_prob=hidden_dropout, attention_probs_dropout_prob=attention_dropout,
    )  # fmt: skip
    return BertForTokenClassification(config)


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, 99, (3, 9), generator=generator)
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_mask_drops_the_quantised_probability_and_the_scale_undoes_it(p):
    torch.manual_seed(0)
    keep, scale = fd.dropout_keep_mask((1000, 1000), p)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    dropped = round(p * 65536) / 65536
    assert abs(dropped - p) <= 2**-17
    assert scale == pytest.approx(1 / (1 - dropped), rel=1e-12)
    # 10^6 Bernoulli draws: the drop rate's standard deviation is sqrt(p(1-p)/10^6) <= 0.0005.
    rate = 1 - keep.float().mean().item()
    assert abs(rate - dropped) < 5 * (dropped * (1 - dropped) / 1e6) ** 0.5, rate


def test_mask_bits_are_independent_across_the_four_lanes_of_a_draw():
    # Each 64-bit draw feeds four neighbouring elements: each lane must drop at the rate and neighbours must not agree
    # more often than independent draws would.
    torch.manual_seed(0)
    keep, _ = fd.dropout_keep_mask((400_000, 4), 0.5)
    lanes = keep.float()
    for lane in range(4):
        assert abs(lanes[:, lane].mean().item() - 0.5) < 0.004
    both_kept = (lanes[:, 0] * lanes[:, 1]).mean().item()
    assert abs(both_kept - 0.25) < 0.004


def test_masks_follow_the_torch_seed():
    torch.manual_seed(3)
    first = fd.dropout_keep_mask((64, 33), 0.2)[0]
    again = fd.dropout_keep_mask((64, 33), 0.2)[0]
    torch.manual_seed(3)
    assert torch.equal(fd.dropout_keep_mask((64, 33), 0.2)[0], first)
    assert not torch.equal(first, again)


def test_fast_dropout_is_unbiased_and_its_gradient_is_the_scaled_mask():
    torch.manual_seed(0)
    x = (torch.rand(200, 300) + 0.5).requires_grad_()
    y = fd.fast_dropout(x, 0.2)
    scale = fd.dropout_keep_mask((1,), 0.2)[1]
    kept = y != 0
    assert 0.78 < kept.float().mean().item() < 0.82
    torch.testing.assert_close(y[kept], x.detach()[kept] * scale)
    assert (y.mean() / x.mean()).item() == pytest.approx(1.0, abs=0.01)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, upstream * kept * scale)


def test_fast_dropout_edge_probabilities_and_other_inputs_fall_back_to_torch():
    x = torch.randn(5, 7)
    torch.testing.assert_close(fd.fast_dropout(x, 0.0), x)
    assert torch.count_nonzero(fd.fast_dropout(x, 1.0)) == 0
    module = fd.FastDropout(0.5)
    module.eval()
    assert module(x) is x
    module.train()
    assert torch.count_nonzero(module(torch.ones(100, 100))) < 10_000


@pytest.mark.parametrize("mask", ["none", "bool", "float"])
def test_attention_without_dropout_matches_torch_sdpa(mask):
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 7, 8) for _ in range(3))
    attend = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    attend[1, :, :, 5:] = False  # the second sequence's last two keys are padding
    attention_mask = {
        "none": None,
        "bool": attend,
        "float": torch.zeros(2, 1, 7, 7).masked_fill(~attend, -1e9),
    }[mask]
    ours, weights = fd.attention_with_dropout(query, key, value, attention_mask, 0.3, lambda probs: probs)
    expected = nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=0.3
    )
    assert weights is None
    torch.testing.assert_close(ours, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_model_gets_its_own_dropout_and_attention_back_and_saves_nothing_new(tmp_path):
    model = _tiny_bert()
    batch = _batch()
    model.eval()
    before = model(**batch).logits
    with fd.fast_cpu_dropout(model) as switched:
        # embeddings + 3 per layer (attention probabilities, attention output, feed-forward output) + classifier,
        # and the attention implementation
        assert switched == 1 + 3 * 2 + 1 + 1
        assert all(type(m) is not nn.Dropout for m in model.modules())
        assert model.config._attn_implementation == fd.FAST_DROPOUT_ATTENTION
        torch.testing.assert_close(model(**batch).logits, before)  # eval mode: no dropout either way
        model.train()
        model(**batch).logits.sum().backward()
        model.save_pretrained(tmp_path)
    assert "hftransfer" not in (tmp_path / "config.json").read_text()
    assert not any(
        key.endswith("attn_implementation") for key in json.loads((tmp_path / "config.json").read_text())
    )
    assert sum(type(m) is nn.Dropout for m in model.modules()) == 8
    assert not any(isinstance(m, fd.FastDropout) for m in model.modules())
    assert model.config._attn_implementation == "sdpa"
    model.eval()
    torch.testing.assert_close(model(**batch).logits, before)


def test_attention_probabilities_are_dropped_with_the_fast_masks(monkeypatch):
    model = _tiny_bert(hidden_dropout=0.0, attention_dropout=0.5, layers=3)
    draws = []
    real = fd.dropout_keep_mask
    monkeypatch.setattr(
        fd, "dropout_keep_mask", lambda shape, p: draws.append((tuple(shape), p)) or real(shape, p)
    )
    batch = _batch()
    model.train()
    with fd.fast_cpu_dropout(model):
        torch.manual_seed(0)
        first = model(**batch).logits
        torch.manual_seed(0)
        second = model(**batch).logits
        third = model(**batch).logits
    # hidden dropout is 0: every mask is an attention mask, one per layer and forward pass, [batch, heads, q, k]
    assert draws == [((3, 4, 9, 9), 0.5)] * 9
    torch.testing.assert_close(first, second)
    assert not torch.allclose(first, third)
    model.eval()
    assert not torch.allclose(first, model(**batch).logits)


def test_encoder_inside_another_module_is_switched_once():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.encoder = BertModel(_tiny_bert().config, add_pooling_layer=False)
            self.heads = nn.ModuleList([nn.Sequential(nn.Dropout(0.1), nn.Linear(32, 2)) for _ in range(2)])

    model = TwoHeads()
    with fd.fast_cpu_dropout(model) as switched:
        assert switched == 1 + 3 * 2 + 2 + 1
        assert model.encoder.config._attn_implementation == fd.FAST_DROPOUT_ATTENTION
    assert model.encoder.config._attn_implementation == "sdpa"


def test_eager_attention_is_left_alone():
    model = _tiny_bert()
    model.set_attn_implementation("eager")
    with fd.fast_cpu_dropout(model) as switched:
        assert switched == 8
        assert model.config._attn_implementation == "eager"

"""Loading the encoder: the attention kernel transformers picks, and a clear error for one the architecture lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from hftransfer.config import ModelConfig
from hftransfer.errors import ConfigError
from hftransfer.modeling.build import build_model

LABELS = ["O", "B-per", "I-per"]


def write_tiny_mpnet(directory: Path) -> Path:
    """MPNet: an architecture with no SDPA attention in transformers 5 (like the offline ``mpnet-base``)."""
    import torch
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=130,
    )
    MPNetModel(config).save_pretrained(directory)
    return directory


def test_bert_gets_sdpa_attention_by_default(tiny_model_dir):
    model = build_model(ModelConfig(name_or_path=str(tiny_model_dir)), "token-classification", LABELS)
    assert model.config._attn_implementation == "sdpa"


def test_an_architecture_without_sdpa_loads_with_eager_attention_by_default(tmp_path):
    directory = write_tiny_mpnet(tmp_path / "mpnet")
    model = build_model(ModelConfig(name_or_path=str(directory)), "sequence-classification", ["neg", "pos"])
    assert model.config.model_type == "mpnet" and model.config._attn_implementation == "eager"
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_asking_for_a_kernel_the_architecture_lacks_names_the_setting(tmp_path):
    directory = write_tiny_mpnet(tmp_path / "mpnet")
    with pytest.raises(ConfigError, match=r"model.attn_implementation='sdpa' is not available") as caught:
        build_model(
            ModelConfig(name_or_path=str(directory), attn_implementation="sdpa"),
            "token-classification",
            LABELS,
        )
    message = str(caught.value)
    assert "does not support" in message and "model.attn_implementation=null" in message
    assert "could not be loaded" not in message  # not mistaken for a missing model

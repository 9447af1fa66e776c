"""A new head's bias started at the training labels' log frequencies (``model.head_bias_init=prior``)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from hftransfer.config import parse_config
from hftransfer.errors import ConfigError
from hftransfer.finetune import setup
from hftransfer.modeling.head_init import init_head_bias_to_prior, label_counts, output_layer, prior_bias


def test_label_counts_skip_positions_without_a_label():
    token_labels = [[-100, 0, 0, 2, -100], [-100, 1, 0, -100]]
    assert label_counts(token_labels, 4).tolist() == [3, 1, 1, 0]
    assert label_counts([1, 1, 0], 3).tolist() == [1, 2, 0]


def test_prior_bias_softmax_is_the_smoothed_frequencies():
    counts = torch.tensor([96.0, 3.0, 0.0])
    bias = prior_bias(counts)
    assert torch.softmax(bias, 0).tolist() == pytest.approx([97 / 102, 4 / 102, 1 / 102])
    assert float(bias.sum()) == pytest.approx(0.0, abs=1e-5)  # centred


def test_output_layer_is_the_heads_logit_layer(tiny_model_dir):
    token = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=5)
    assert output_layer(token) is token.classifier
    sequence = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    assert output_layer(sequence) is sequence.classifier
    # RoBERTa-style heads (also MPNet's) end in classifier.out_proj; the encoder's own layers are never taken,
    # even one with as many outputs as there are labels (hidden size 32, 32 labels).
    config = RobertaConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=32,
    )
    roberta = RobertaForSequenceClassification(config)
    assert output_layer(roberta) is roberta.classifier.out_proj


def test_a_head_without_a_matching_layer_is_a_config_error(tiny_model_dir):
    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=5)
    model.classifier = torch.nn.Linear(32, 5, bias=False)
    with pytest.raises(ConfigError, match="head_bias_init"):
        init_head_bias_to_prior(model, [[0, 1]])


@pytest.mark.parametrize("init", ["default", "prior"])
def test_ner_run_starts_its_head_at_the_label_prior_only_when_asked(
    tiny_model_dir, ner_files, tmp_path, init
):
    config = parse_config(
        [
            f"model.name_or_path={tiny_model_dir}",
            f"model.head_bias_init={init}",
            f"data.train_file={ner_files['train']}",
            f"data.validation_file={ner_files['validation']}",
            f"output_dir={tmp_path / 'run'}",
            "train.trackers=[]",
        ]
    )
    run = setup(config, recipe="finetune_ner")
    model = run.loop.accelerator.unwrap_model(run.loop.model)
    bias = model.classifier.bias.detach()
    if init == "default":
        assert torch.count_nonzero(bias) == 0 and "label_prior" not in run.report
        return
    frequencies = run.report["label_prior"]
    assert frequencies["O"] > 0.5 and sum(frequencies.values()) == pytest.approx(1.0)
    # The head's own prediction before any step: the training labels' (smoothed) frequencies.
    predicted = torch.softmax(bias, 0)
    for index, label in model.config.id2label.items():
        assert float(predicted[index]) == pytest.approx(frequencies[label], abs=0.02), label

"""Masked language modelling: whole-word masking, the new tied MLM head, continued pre-training through
``recipes/pretrain_mlm.py`` (export, resume, fine-tuning from the export) and the ``mlm`` objective (UDALM) through
``recipes/finetune_classifier.py``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    MPNetConfig,
    MPNetModel,
)

from hftransfer.config import ModelConfig
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import ObjectiveContext
from hftransfer.objectives.mlm import MLMConfig
from hftransfer.pretrain.masking import (
    IGNORE_INDEX,
    MaskedBatches,
    WholeWordMasker,
    WordIdsCollator,
    continuation_table,
    mask_generator,
    tokenize_windows,
    word_ids_from_vocab,
)
from hftransfer.pretrain.mlm_head import build_masked_lm
from hftransfer.registry import get_objective
from hftransfer.toy import make_classification_examples, make_ner_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import pretrain_mlm  # noqa: E402

from tests.test_strategy_recipes import _argv  # noqa: E402

# Words of several pieces in the toy vocabulary: "alices" -> alice ##s, "parisville" -> paris ##ville.
TEXTS = [
    "alices visited parisville with bobs today .",
    "carol lives in romeville and works near osloville",
    "this film was very good , really superb",
    "unknown erins visited the city of berlinville",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _batch(tokenizer, texts=TEXTS, max_length=128):
    features = tokenize_windows(texts, tokenizer, max_length)
    return WordIdsCollator(tokenizer)([features[i] for i in range(len(features))])


def test_whole_words_are_masked_together_and_special_tokens_never(tokenizer):
    batch = _batch(tokenizer)
    masker = WholeWordMasker.for_tokenizer(tokenizer, mask_probability=0.5)
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert (batch["word_ids"][special] == -1).all() and (batch["word_ids"][~special] >= 0).all()
    # the word ids read from the vocabulary ('##' pieces) are the tokenizer's own (the mlm objective uses them)
    from_vocab = word_ids_from_vocab(batch["input_ids"], special, continuation_table(tokenizer))
    starts = batch["word_ids"] != torch.nn.functional.pad(batch["word_ids"][:, :-1], (1, 0), value=-1)
    assert torch.equal(from_vocab >= 0, batch["word_ids"] >= 0)
    assert torch.equal(starts & (from_vocab >= 0), (from_vocab != -1) & (from_vocab != from_vocab.roll(1, 1)))
    multi_piece = 0
    for seed in range(100):
        masked, labels = masker(batch["input_ids"], batch["word_ids"], mask_generator(seed, "test"))
        predicted = labels != IGNORE_INDEX
        assert not predicted[special].any() and torch.equal(masked[special], batch["input_ids"][special])
        assert torch.equal(masked[~predicted], batch["input_ids"][~predicted])
        assert torch.equal(labels[predicted], batch["input_ids"][predicted])
        for row in range(len(TEXTS)):
            for word in batch["word_ids"][row].unique().tolist():
                pieces = predicted[row][batch["word_ids"][row] == word]
                if word >= 0:
                    assert pieces.all() or not pieces.any(), (seed, row, word)
                    multi_piece += int(len(pieces) > 1 and pieces.all())
    assert multi_piece > 50  # words of several pieces were chosen, whole


def test_masking_rates_on_average():
    generator = mask_generator(0, "rates")
    input_ids = torch.randint(10, 5000, (64, 120), generator=generator)
    word_ids = torch.arange(120).div(3, rounding_mode="floor").expand(64, 120).clone()  # 3-token words
    word_ids[:, 0] = word_ids[:, -1] = -1  # special tokens
    masker = WholeWordMasker(mask_token_id=4, vocab_size=5000)
    masked, labels = masker(input_ids, word_ids, generator)
    predicted = labels != IGNORE_INDEX
    words = predicted[:, 3::3]  # the first token of each whole word
    assert words.float().mean().item() == pytest.approx(0.15, abs=0.015)
    kept = masked[predicted] == input_ids[predicted]
    as_mask = masked[predicted] == 4
    assert as_mask.float().mean().item() == pytest.approx(0.8, abs=0.03)
    assert kept.float().mean().item() == pytest.approx(0.1, abs=0.02)
    assert (~as_mask & ~kept).float().mean().item() == pytest.approx(0.1, abs=0.02)


def test_masks_are_a_function_of_seed_and_position(tokenizer):
    batch = _batch(tokenizer)
    masker = WholeWordMasker.for_tokenizer(tokenizer, mask_probability=0.3)

    def mask(*key):
        return masker(batch["input_ids"], batch["word_ids"], mask_generator(*key))

    first, again = mask(42, "train", 0, 7), mask(42, "train", 0, 7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for other in [(42, "train", 0, 8), (43, "train", 0, 7), (42, "train", 1, 7)]:
        assert not torch.equal(mask(*other)[1], first[1]), other

    class Batches:  # a loader's batches by epoch, as LoaderBatches gives them
        def __len__(self):
            return 3

        def set_epoch(self, epoch):
            pass

        def iterate(self, start=0):
            return iter([dict(batch) for _ in range(3)][start:])

    batches = MaskedBatches(Batches(), masker, seed=42)
    batches.set_epoch(1)
    whole = [b["labels"] for b in batches.iterate(0)]
    assert [torch.equal(a, b) for a, b in zip(whole, whole[1:])] == [False, False]  # new masks per batch
    assert all(
        torch.equal(a, b["labels"]) for a, b in zip(whole[1:], batches.iterate(1))
    )  # resumed: the same


def test_a_headless_checkpoint_gets_a_new_head_tied_to_the_word_embeddings(tiny_model_dir, tmp_path):
    model, report = build_masked_lm(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert report["class"] == "BertForMaskedLM" and report["head"] == "new" and report["tied"]
    assert "cls.predictions.transform.dense.weight" in report["new_weights"]
    decoder, embeddings = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert decoder.data_ptr() == embeddings.data_ptr()  # one tensor: the same storage
    mpnet_dir = tmp_path / "mpnet"
    options = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
    MPNetModel(MPNetConfig(vocab_size=40, max_position_embeddings=64, **options)).save_pretrained(mpnet_dir)
    mpnet, mpnet_report = build_masked_lm(ModelConfig(name_or_path=str(mpnet_dir)))
    assert mpnet_report["class"] == "MPNetForMaskedLM" and mpnet_report["tied"]
    assert mpnet.lm_head.decoder.weight.data_ptr() == mpnet.get_input_embeddings().weight.data_ptr()
    GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ConfigError, match="'gpt2' model, which has no masked-LM class"):
        build_masked_lm(ModelConfig(name_or_path=str(tmp_path / "gpt2")))


@pytest.fixture(scope="module")
def pretrained(tiny_model_dir, tmp_path_factory):
    """A short pretraining run on a text file (``a``), and the same run interrupted after step 4 and continued in
    its directory (``b``)."""
    root = tmp_path_factory.mktemp("pretrain")
    texts = [e["text"] for e in make_classification_examples(150, seed=4)]
    texts += [" ".join(e["tokens"]) for e in make_ner_examples(150, seed=5)]
    (root / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")

    def run(name, *extra):
        return pretrain_mlm.main(
            [
                f"model.name_or_path={tiny_model_dir}",
                f"data.dataset={root / 'texts.txt'}",
                "data.validation_size=0.2",
                f"output_dir={root / name}",
                "train.batch_size=16",
                "train.lr=1e-2",
                "train.warmup_ratio=0",
                "train.max_steps=12",
                "train.eval_every_steps=4",
                "train.eval_every_epoch=false",
                "train.save_every_steps=4",
                "train.keep_checkpoints=3",
                "train.log_every_steps=1",
                "train.trackers=[]",
                *extra,
            ]
        )

    metrics = run("a")
    shutil.copytree(root / "a", root / "b")
    for step in ("00000008", "00000012"):
        shutil.rmtree(root / "b" / "checkpoints" / f"step-{step}")
    run("b", "train.resume_from_checkpoint=latest")
    return root, metrics


def test_pretraining_exports_a_masked_lm_and_resumes_exactly(pretrained, tiny_model_dir):
    root, metrics = pretrained
    run_dir = root / "a"
    assert metrics["data"]["kind"] == "unlabelled" and metrics["data"]["texts"] == {
        "train": 150,
        "validation": 60,
    }
    assert metrics["mlm_head"]["head"] == "new" and metrics["mlm_head"]["tied"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "validation"]
    assert losses[-1] < losses[0] and metrics["best_validation_loss"] == min(losses)
    assert metrics["validation"]["perplexity"] == pytest.approx(2.718281828 ** metrics["validation"]["loss"])
    model, info = AutoModelForMaskedLM.from_pretrained(run_dir / "model", output_loading_info=True)
    assert not info["missing_keys"]
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    # resumed at step 4, it ends where the uninterrupted run ended (same batches, same masks)
    final_a = load_file(run_dir / "checkpoints" / "step-00000012" / "model.safetensors")
    final_b = load_file(root / "b" / "checkpoints" / "step-00000012" / "model.safetensors")
    for name, value in final_a.items():
        torch.testing.assert_close(final_b[name], value, atol=1e-6, rtol=1e-5, msg=name)
    # a classifier from the export: the trained encoder, and the checkpoint's pooler carried over (not a new one)
    exported = load_file(run_dir / "model" / "model.safetensors")
    classifier = AutoModelForSequenceClassification.from_pretrained(run_dir / "model", num_labels=2)
    assert torch.equal(
        classifier.bert.encoder.layer[0].output.dense.weight,
        exported["bert.encoder.layer.0.output.dense.weight"],
    )
    pooler = load_file(tiny_model_dir / "model.safetensors")["pooler.dense.weight"]
    assert torch.equal(classifier.bert.pooler.dense.weight, pooler)


def test_fine_tuning_starts_from_the_pretrained_export(pretrained, classification_files, tmp_path):
    root, _ = pretrained
    metrics = finetune_classifier.main(
        _argv(
            root / "a" / "model",
            classification_files,
            tmp_path / "ft",
            "task=sequence-classification",
            "train.max_steps=3",
        )
    )
    assert metrics["train"]["steps"] == 3 and 0 <= metrics["test"]["accuracy"] <= 1


def test_the_mlm_objective_trains_on_a_source_and_stays_out_of_the_export(
    pretrained, classification_files, tmp_path
):
    root, _ = pretrained
    target = tmp_path / "target.txt"
    target.write_text("\n".join(" ".join(e["tokens"]) for e in make_ner_examples(30, seed=9)) + "\n")
    run_dir = tmp_path / "udalm"
    metrics = finetune_classifier.main(
        _argv(
            root
            / "a"
            / "model",  # the pretraining run's export: the mlm head continues from its trained head
            classification_files,
            run_dir,
            "task=sequence-classification",
            "objectives+=[{name: mlm, weight: 0.5, mask_probability: 0.3}]",
            f"sources=[{{name: target, data: {target}}}]",
            "train.max_steps=4",
            "train.save_every_steps=4",
            "train.log_every_steps=1",
        )
    )
    assert metrics["strategy"]["lr_groups"]["mlm"] > 0
    # the head continues from the export's trained MLM head; words from the vocabulary's '##' pieces
    assert metrics["objectives"]["mlm"]["head"] == "from the checkpoint"
    assert metrics["objectives"]["mlm"]["whole_words"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    mlm = [r["mlm"] for r in records if r["split"] == "train"]
    assert len(mlm) == 4 and all(0 < value < 10 for value in mlm)
    exported = load_file(run_dir / "model" / "model.safetensors")
    assert not any(key.startswith(("cls.", "owned")) for key in exported)
    checkpoint = load_file(run_dir / "checkpoints" / "step-00000004" / "model.safetensors")
    owned = {key.removeprefix("owned.mlm.") for key in checkpoint if key.startswith("owned.mlm.")}
    # the head's transform and bias; its decoder is the model's word-embedding matrix, not a tensor of its own
    assert owned == {"dense.weight", "dense.bias", "norm.weight", "norm.bias", "bias"}


def test_the_mlm_head_starts_from_the_checkpoints_and_holds_the_embeddings_by_reference(pretrained):
    export = pretrained[0] / "a" / "model"
    model = AutoModelForSequenceClassification.from_pretrained(export, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(export)
    config = SimpleNamespace(model=ModelConfig(name_or_path=str(export)), train=SimpleNamespace(seed=0))
    context = ObjectiveContext(model, config, MLMConfig(), tokenizer=tokenizer)
    objective = get_objective("mlm").build(context)
    saved = load_file(export / "model.safetensors")
    assert objective.report["head"] == "from the checkpoint"
    assert torch.equal(objective.module.dense.weight, saved["cls.predictions.transform.dense.weight"])
    assert torch.equal(objective.module.bias, saved["cls.predictions.bias"])
    assert objective.module.tied[0] is model.get_input_embeddings()
    embeddings = model.get_input_embeddings().weight
    assert all(param is not embeddings for param in objective.module.parameters())


def test_the_mlm_objective_refuses_a_fixed_encoder_and_running_alone(
    tiny_model_dir, classification_files, tmp_path
):
    base = _argv(tiny_model_dir, classification_files, tmp_path / "x", "task=sequence-classification")
    source = "sources=[{name: target, data: x.txt}]"
    with pytest.raises(ConfigError, match="mlm with strategy.name=frozen: the encoder never trains"):
        finetune_classifier.main([*base, "strategy.name=frozen", "objectives+=[{name: mlm}]", source])
    with pytest.raises(ConfigError, match="only regularise"):
        finetune_classifier.main([*base, "objectives=[{name: mlm}]", source])


def test_the_preset_validates_and_a_run_directory_reproduces_its_config(pretrained):
    from hftransfer.config import parse_config
    from hftransfer.pretrain.run import PretrainConfig

    preset = ROOT / "recipes" / "configs" / "minilm" / "pretrain_mlm.yaml"
    assert (
        preset.read_text().splitlines()[0]
        == f"# accelerate launch recipes/pretrain_mlm.py --config {preset.relative_to(ROOT)}"
    )
    config = parse_config(["--config", str(preset)], schema=PretrainConfig)
    assert config.model.name_or_path == "minilm-l6" and config.data.dataset == "rotten_tomatoes_plot"
    saved = parse_config(["--config", str(pretrained[0] / "a" / "config.yaml")], schema=PretrainConfig)
    assert saved.train.max_steps == 12 and saved.mlm == config.mlm
    with pytest.raises(ConfigError, match="train.metric_for_best='accuracy': use loss or perplexity"):
        parse_config(["train.metric_for_best=accuracy"], schema=PretrainConfig)

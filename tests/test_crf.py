"""The CRF head (``model.head=crf``): its forward algorithm and Viterbi against exhaustive enumeration of every tag
sequence, its loss and gradients, the IOB2 mask, and a tiny NER run that exports the scores beside a plain
transformers model and predicts with them."""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForTokenClassification

from hftransfer.config import parse_config
from hftransfer.errors import ConfigError
from hftransfer.evaluation.decoding import best_path, crf_log_partition, crf_path_score
from hftransfer.modeling.crf import CRF, CRF_FILE, crf_nll, log_partition
from tests.conftest import recipe_argv

LABELS = ["O", "B-loc", "I-loc", "B-per", "I-per"]


def _valid(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def _random_crf(seed: int) -> CRF:
    """A CRF whose learned scores are random (as after training), masks as built."""
    torch.manual_seed(seed)
    crf = CRF(LABELS)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_(0, 1.5)
    return crf


def _score(emissions, tags, start, transition, end) -> torch.Tensor:
    total = start[tags[0]] + end[tags[-1]] + sum(emissions[w, t] for w, t in enumerate(tags))
    return total + sum(transition[a, b] for a, b in zip(tags, tags[1:]))


@pytest.mark.parametrize("seed", range(4))
def test_the_forward_algorithm_sums_every_tag_sequence(seed):
    crf = _random_crf(seed)
    start, transition, end = crf()
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, 1, 4, 0])  # padded rows, and one with no words
    emissions = torch.randn(4, 4, len(LABELS), generator=generator) * 2
    got = log_partition(emissions, lengths, start.expand(4, -1), transition, end)
    for row, length in enumerate(lengths.tolist()):
        if length == 0:
            assert got[row] == 0
            continue
        every = [
            _score(emissions[row], tags, start, transition, end)
            for tags in itertools.product(range(len(LABELS)), repeat=length)
        ]
        assert got[row].item() == pytest.approx(torch.logsumexp(torch.stack(every), 0).item(), abs=1e-4)
    # The numpy twin used in evaluation agrees, and its marginals are distributions over tags.
    scores = tuple(t.detach().double().numpy() for t in (start, transition, end))
    log_z, marginals = crf_log_partition(emissions[0, :3].double().numpy(), *scores)
    assert log_z == pytest.approx(got[0].item(), abs=1e-4)
    assert marginals.sum(axis=1) == pytest.approx(np.ones(3))


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_finds_the_best_sequence_and_only_valid_ones(seed):
    crf = _random_crf(seed)
    with torch.no_grad():  # learned scores that *favour* every forbidden move: the mask must still win
        crf.transition_scores[crf.transition_mask == 0] = 50.0
        crf.start_scores[crf.start_mask == 0] = 50.0
    scores = crf.scores()
    rng = np.random.default_rng(seed)
    words = int(rng.integers(1, 6))
    emissions = rng.normal(0, 2, size=(words, len(LABELS)))
    emissions[:, [2, 4]] += 5.0  # the I- tags are each word's best tag on its own
    path = best_path(emissions, *scores)
    assert _valid([LABELS[i] for i in path])
    best = max(
        itertools.product(range(len(LABELS)), repeat=words),
        key=lambda tags: crf_path_score(emissions, list(tags), *scores),
    )
    assert crf_path_score(emissions, path, *scores) == pytest.approx(
        crf_path_score(emissions, list(best), *scores)
    )


def test_the_loss_is_a_negative_log_likelihood_over_word_positions_with_gradients():
    crf = _random_crf(0)
    generator = torch.Generator().manual_seed(0)
    emissions = torch.randn(2, 7, len(LABELS), generator=generator, requires_grad=True)
    # Row 0: [CLS] w0 ##sub w1 w2 [SEP] pad; the sub-token labelled too (data.label_all_subwords), yet each word
    # is scored once, at its first sub-token.
    # Row 1: a continuation window: one context token, then words 5 and 6 (starting inside an entity).
    labels = torch.tensor([[-100, 1, 2, 2, 0, -100, -100], [-100, -100, 2, 0, -100, -100, -100]])
    word_index = torch.tensor([[-1, 0, -1, 1, 2, -1, -1], [-1, -1, 5, 6, -1, -1, -1]])
    nll = crf_nll(emissions, labels, crf(), word_index)
    assert (nll >= 0).all() and torch.isfinite(nll).all()
    start, transition, end = crf()
    words = emissions[0, [1, 3, 4]]
    every = [
        _score(words, tags, start, transition, end)
        for tags in itertools.product(range(len(LABELS)), repeat=3)
    ]
    expected = torch.logsumexp(torch.stack(every), 0) - _score(words, [1, 2, 0], start, transition, end)
    assert nll[0].item() == pytest.approx(expected.item(), abs=1e-4)
    # The continuation window starts at I-loc: no start score, so its loss stays small rather than ~1e4.
    assert nll[1].item() < 50
    nll.sum().backward()
    assert emissions.grad[0, [1, 3, 4]].abs().sum() > 0
    assert emissions.grad[0, [0, 2, 5, 6]].abs().sum() == 0  # sub-tokens, specials and padding are not scored
    for parameter in crf.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    assert crf.transition_scores.grad[crf.transition_mask == 0].abs().sum() == 0  # masked moves do not learn


def test_the_scores_file_round_trips_and_checks_the_labels(tmp_path):
    crf = _random_crf(1)
    crf.save(tmp_path / CRF_FILE)
    loaded = CRF.from_file(tmp_path / CRF_FILE, LABELS)
    for name, tensor in crf.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    with pytest.raises(ConfigError, match="saved for the labels"):
        CRF.from_file(tmp_path / CRF_FILE, list(reversed(LABELS)))
    with pytest.raises(ConfigError, match="missing"):
        CRF.from_file(tmp_path / "nothing.safetensors", LABELS)


def test_a_crf_run_exports_a_plain_model_and_predicts_with_its_scores(tiny_model_dir, ner_files, tmp_path):
    from hftransfer.predict import Predictor, predict_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
    import finetune_ner

    files = ner_files
    run = tmp_path / "run"
    argv = recipe_argv(
        tiny_model_dir,
        files,
        run,
        "train.epochs=1",
        "train.lr=3e-3",
        "data.max_length=12",
        "train.log_every_steps=2",
    )
    metrics = finetune_ner.main([*argv, "model.head=crf"])
    model_dir = run / "model"
    assert (model_dir / CRF_FILE).is_file()
    assert json.loads((model_dir / "config.json").read_text())["hftransfer_decoding"] == "crf"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["decoding"] == saved["validation"]["decoding"] == "crf"
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "train"]  # fmt: skip
    assert losses[-1] < losses[0]
    # A plain transformers model: its own head, no CRF inside.
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    assert not any(isinstance(module, CRF) for module in model.modules())

    predicted = predict_file(str(run), str(files["test"]), str(tmp_path / "test.jsonl"), cpu=True)
    assert all(_valid(row["tags"]) for row in predicted.rows)
    for key in ("f1", "precision", "recall"):  # the run's test scores, reproduced from the export
        assert predicted.metrics[key] == pytest.approx(metrics["test"][key])

    # Prediction reads the scores file: other transitions (no O after O), other tags.
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    changed = CRF.from_file(copy / CRF_FILE, list(model.config.id2label.values()))
    with torch.no_grad():
        changed.transition_scores[0, 0] = -1e3
    changed.save(copy / CRF_FILE)
    other = Predictor(str(copy), cpu=True).predict(predicted_examples(files["test"]))
    assert [r["tags"] for r in other.rows] != [r["tags"] for r in predicted.rows]
    (copy / CRF_FILE).unlink()
    with pytest.raises(ConfigError, match=r"crf\.safetensors is missing"):
        Predictor(str(copy), cpu=True)
    argmax = Predictor(str(copy), cpu=True, decoding="argmax")  # the emissions alone still work
    assert len(argmax.predict(predicted_examples(files["test"])).rows) == len(predicted.rows)


def test_a_lora_crf_run_saves_the_scores_with_the_adapter_too(tiny_model_dir, ner_files, tmp_path):
    """lora_export=both: the merged model and the adapter directory each predict with the CRF, as the run scored."""
    from hftransfer.predict import predict_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
    import finetune_ner

    run = tmp_path / "run"
    argv = recipe_argv(
        tiny_model_dir, ner_files, run, "train.epochs=1", "train.lr=3e-3", "data.max_length=12"
    )
    metrics = finetune_ner.main(
        [
            *argv,
            "model.head=crf",
            "strategy.name=lora",
            "strategy.target_modules=[query,value]",
            "strategy.lora_export=both",
        ]
    )
    for directory in ("model", "adapter"):
        assert (run / directory / CRF_FILE).is_file(), directory
        predicted = predict_file(
            str(run / directory), str(ner_files["test"]), str(tmp_path / f"{directory}.jsonl"), cpu=True
        )
        assert predicted.metrics["f1"] == pytest.approx(metrics["test"]["f1"], abs=1e-6), directory
        assert all(_valid(row["tags"]) for row in predicted.rows)


def predicted_examples(path: Path):
    from hftransfer.config import DataConfig
    from hftransfer.data.sources import read_unlabelled

    return read_unlabelled(str(path), "token-classification", DataConfig(train_file=str(path)))


def test_the_crf_head_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="model.head=crf is for token classification"):
        parse_config(["task=sequence-classification", "model.head=crf", "data.dataset=rotten_tomatoes"])
    with pytest.raises(ConfigError, match="model.decoding=iob2 with model.head=crf"):
        parse_config(["model.head=crf", "model.decoding=iob2", "data.dataset=wnut16"])
    assert parse_config(["model.head=crf", "data.dataset=wnut16"]).model.head == "crf"
    from hftransfer.multitask.config import parse_multitask_config

    preset = (
        Path(__file__).resolve().parents[1]
        / "recipes"
        / "configs"
        / "minilm"
        / "multitask_ner_sentiment.yaml"
    )
    with pytest.raises(ConfigError, match="model.head=crf is for single-task"):
        parse_multitask_config(["model.head=crf"], default_config=preset)


def test_the_best_models_scores_are_saved_with_it_and_restored(tmp_path):
    from types import SimpleNamespace

    from accelerate import Accelerator

    from hftransfer.objectives.owned import attach_owned_modules
    from hftransfer.objectives.task import TaskLoss

    config = SimpleNamespace(
        model=SimpleNamespace(head="crf"),
        strategy=SimpleNamespace(head_lr=None),
        train=SimpleNamespace(lr=1e-3, weight_decay=0.0),
    )
    model = torch.nn.Linear(2, len(LABELS))
    model.config = SimpleNamespace(id2label=dict(enumerate(LABELS)))
    owner = TaskLoss(SimpleNamespace(objective=SimpleNamespace(weight=1.0), config=config, model=model))
    saved_models = []
    plan = SimpleNamespace(
        model=model,
        param_groups=[],
        report={},
        save_best=lambda accelerator, trained: saved_models.append(trained),
        restore_best=lambda accelerator, trained: None,
        export=None,
    )
    attach_owned_modules(plan, [owner], config, model_dir=tmp_path / "model")
    assert [group["name"] for group in plan.param_groups] == ["task"]  # the CRF trains in its own group
    accelerator = Accelerator(cpu=True)
    with torch.no_grad():
        owner.module.transition_scores.fill_(0.5)
    plan.save_best(accelerator, plan.model)
    assert saved_models == [model]  # the strategy saves the plain model; the scores go beside it
    with torch.no_grad():
        owner.module.transition_scores.fill_(-3.0)  # training went on past the best step
    plan.restore_best(accelerator, plan.model)
    assert torch.all(owner.module.transition_scores == 0.5)
    assert CRF.from_file(tmp_path / "model" / CRF_FILE, LABELS).transition_scores.eq(0.5).all()


@pytest.mark.parametrize(
    ("task", "model", "expected"),
    [
        ("token-classification", {"head": "crf"}, "linear-chain CRF head"),
        ("token-classification", {"decoding": "iob2"}, "best valid IOB2 tag sequence"),
        ("token-classification", {"decoding": "argmax"}, None),
        ("sequence-classification", {"head": "crf"}, None),
    ],
)
def test_the_model_card_says_how_token_predictions_were_decoded(task, model, expected):
    from hftransfer.hub.card import CardFacts, build_card

    scores = {"f1": 0.5, "precision": 0.5, "recall": 0.5, "accuracy": 0.9}
    config = {"strategy": {"name": "full"}, "model": model}
    facts = CardFacts(repo_id="me/model", task=task, kind="model", config=config,
                      metrics={"validation": scores, "test": scores}, data={"dataset": "x"})  # fmt: skip
    card = str(build_card(facts))
    if expected is None:
        assert "**Decoding**" not in card
    else:
        assert expected in card and "`hftransfer.Predictor` decodes as the results were measured" in card

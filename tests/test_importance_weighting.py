"""Instance re-weighting for domain adaptation: density ratios from a cross-fitted domain classifier recover a known
ratio, clip and normalise as documented; sample matching keeps the rows like the target; the weighted
cross-entropy, importance-weighted validation and DEV match hand computations; the objective trains through the
classifier recipe and refuses what cannot work."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from hftransfer.adaptation import (
    clip_and_normalise,
    dev_risk,
    domain_classifier_ratios,
    domain_log_odds,
    effective_sample_size,
    importance_weighted_validation,
    nearest_to_target,
    validation_ratios,
)
from hftransfer.config import objective_config
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import ObjectiveContext
from hftransfer.objectives.importance_weighting import (
    ImportanceWeightedTask,
    per_item_mean_one,
    weighted_cross_entropy,
)
from hftransfer.toy import make_classification_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

from tests.test_strategy_recipes import _argv  # noqa: E402

NAME = "importance_weighted_task"


def gaussian_shift(n: int, mu: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source N(0, I), target N(mu, I), and the true ratio exp(mu.x - |mu|^2 / 2) of the source rows."""
    rng = np.random.default_rng(seed)
    source, target = rng.normal(size=(n, len(mu))), rng.normal(size=(n, len(mu))) + mu
    return source, target, np.exp(source @ mu - mu @ mu / 2)


def test_domain_classifier_ratios_recover_the_true_ratio_of_a_gaussian_shift():
    source, target, true = gaussian_shift(1000, np.array([1.0, 0.5]))
    weights = domain_classifier_ratios(source, target, clip=None)
    assert weights.mean() == pytest.approx(1.0)
    assert spearmanr(weights, true).statistic > 0.95
    true = true / true.mean()  # the sample's own normalisation, as the estimate's
    assert np.median(np.abs(weights - true) / true) < 0.15
    # the log-odds of the target rows are larger: the classifier tells the domains apart
    source_odds, target_odds = domain_log_odds(source, target)
    assert target_odds.mean() > source_odds.mean() + 0.5


def test_ratios_are_clipped_before_they_are_normalised():
    ratios = np.array([0.01, 0.5, 1.0, 2.0, 50.0])
    clipped = clip_and_normalise(ratios, (0.1, 10.0), normalise=False)
    np.testing.assert_allclose(clipped, [0.1, 0.5, 1.0, 2.0, 10.0])
    normalised = clip_and_normalise(ratios, (0.1, 10.0))
    np.testing.assert_allclose(normalised, clipped / clipped.mean())
    assert normalised.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(clip_and_normalise(ratios, None), ratios / ratios.mean())
    with pytest.raises(ValueError, match="low < high"):
        clip_and_normalise(ratios, (2.0, 1.0))
    # a strong shift: estimated ratios stay inside the range before normalisation
    source, target, _ = gaussian_shift(200, np.array([3.0, 0.0]))
    raw = domain_classifier_ratios(source, target, clip=(0.2, 5.0), normalise=False)
    assert raw.min() == pytest.approx(0.2) and raw.max() == pytest.approx(5.0)
    assert effective_sample_size(np.ones(7)) == pytest.approx(7)
    assert effective_sample_size([1.0, 0.0, 0.0]) == pytest.approx(1)


def test_every_row_is_scored_by_a_classifier_that_never_saw_it():
    # One distribution, more dimensions than rows per domain, weak regularisation: a classifier scoring its own
    # training rows separates them perfectly; cross-fitted scores stay near chance.
    rng = np.random.default_rng(1)
    source, target = rng.normal(size=(60, 100)), rng.normal(size=(60, 100))
    domains = np.r_[np.zeros(60), np.ones(60)]
    in_sample = LogisticRegression(C=100.0, max_iter=1000).fit(np.r_[source, target], domains)
    assert roc_auc_score(domains, in_sample.decision_function(np.r_[source, target])) == 1.0
    source_odds, target_odds = domain_log_odds(source, target, C=100.0)
    assert roc_auc_score(domains, np.r_[source_odds, target_odds]) < 0.75
    with pytest.raises(ValueError, match="folds"):
        domain_log_odds(source, target, folds=1)


def test_nearest_to_target_picks_the_shifted_rows():
    rng = np.random.default_rng(2)
    source = np.r_[rng.normal(size=(160, 2)), rng.normal(size=(40, 2)) + 4.0]  # rows 160.. are shifted
    target = rng.normal(size=(100, 2)) + 4.0
    chosen = nearest_to_target(source, target, 40, chunk=64)
    assert len(set(chosen.tolist())) == 40
    assert (chosen >= 160).mean() >= 0.9


def test_weighted_cross_entropy_matches_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # [batch, num_labels]
    labels = torch.tensor([0, 0, -100])
    weights = torch.tensor([0.5, 2.0, 3.0])
    by_hand = 0.5 * np.log(1 + np.exp(-2.0)) + 2.0 * np.log(1 + np.exp(1.0))  # the third row has no label
    assert weighted_cross_entropy(logits, labels, weights).item() == pytest.approx(by_hand, rel=1e-6)
    # token task: a row's weight on each of its labelled tokens; the objective looks weights up by example id
    token_logits = torch.randn(
        2, 3, 4, generator=torch.Generator().manual_seed(0)
    )  # [batch, seq, num_labels]
    token_labels = torch.tensor([[1, -100, 3], [0, 2, -100]])
    per_token = F.cross_entropy(token_logits.reshape(-1, 4), token_labels.reshape(-1), reduction="none")
    per_token = per_token.reshape(2, 3)
    by_hand = 0.25 * (per_token[0, 0] + per_token[0, 2]) + 4.0 * (per_token[1, 0] + per_token[1, 1])
    objective = ImportanceWeightedTask({7: 0.25, 3: 4.0, 5: 1.0}, weight=2.0)
    batch = {"labels": token_labels, "example_id": torch.tensor([7, 3])}
    terms = objective.terms(None, batch, SimpleNamespace(logits=token_logits), None)
    assert terms["loss"].item() == pytest.approx(2.0 * by_hand.item(), rel=1e-6)


def test_weights_average_one_per_labelled_item():
    from datasets import Dataset

    # example 4 has two windows (3 + 1 labelled tokens), example 9 one window (2 labelled tokens)
    rows = Dataset.from_dict({"example_id": [4, 4, 9], "labels": [[1, 0, 2, -100], [0, -100], [3, 3, -100]]})
    weights = per_item_mean_one(np.array([1.0, 2.0]), np.array([4, 9]), rows)
    assert (4 * weights[0] + 2 * weights[1]) / 6 == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx(2.0)


def test_importance_weighted_validation_and_dev_match_hand_computations():
    losses = np.array([0.2, 1.0, 0.5, 2.0])
    correct = np.array([1, 0, 1, 0])
    weights = np.array([2.0, 0.5, 1.0, 0.5])
    scores = importance_weighted_validation(losses, correct, weights)
    assert scores["iw_loss"] == pytest.approx((0.4 + 0.5 + 0.5 + 1.0) / 4.0)
    assert scores["iw_accuracy"] == pytest.approx(3.0 / 4.0)
    assert scores["iw_ess"] == pytest.approx(16.0 / 5.5)
    # DEV: L = w * loss = [0.4, 0.5, 0.5, 1.0]; mean(L) = 0.6, mean(w) = 1.0
    weighted, mean_w = weights * losses, 1.0
    cov = ((weighted - 0.6) * (weights - mean_w)).sum() / 3
    var = ((weights - mean_w) ** 2).sum() / 3
    eta = -cov / var
    assert dev_risk(losses, weights) == pytest.approx(0.6 + eta * mean_w - eta)
    raw = weights * 1.5  # unnormalised ratios: the control variate moves the estimate
    eta = -np.cov(raw * losses, raw)[0, 1] / np.var(raw, ddof=1)
    assert dev_risk(losses, raw) == pytest.approx((raw * losses).mean() + eta * (raw.mean() - 1))
    assert dev_risk(losses, np.ones(4)) == pytest.approx(losses.mean())
    with pytest.raises(ValueError, match="shape"):
        dev_risk(losses, weights[:3])


def test_validation_ratios_follow_the_true_ratio_and_keep_their_scale():
    source, target, true = gaussian_shift(600, np.array([1.0, 0.5]))
    train, validation = source[:400], source[400:]
    ratios = validation_ratios(validation, target, train_x=train, clip=None)
    assert ratios.shape == (200,)
    assert spearmanr(ratios, true[400:]).statistic > 0.95
    assert 0.7 < ratios.mean() < 1.3  # not normalised: DEV's control variate reads their mean


@pytest.mark.parametrize(
    "field, value",
    [("clip", [2.0, 5.0]), ("clip", [0.5]), ("folds", 1), ("select_top", 0.0), ("select_top", 1.5)],
)
def test_bad_options_fail_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"objectives\.{NAME}\.{field}"):
        objective_config({"name": NAME, field: value})


def test_the_objective_refuses_task_beside_it_and_an_unlisted_source():
    options = objective_config({"name": NAME, "source": "target"})
    both = SimpleNamespace(objectives=[objective_config("task"), options])
    with pytest.raises(ConfigError, match=f"{NAME} replaces task"):
        ImportanceWeightedTask.from_context(ObjectiveContext(None, both, options, features={"train": []}))
    alone = SimpleNamespace(objectives=[options])
    context = ObjectiveContext(None, alone, options, features={"train": []}, sources={"other": []})
    with pytest.raises(ConfigError, match="sources=\\[\\{name: target"):
        ImportanceWeightedTask.from_context(context)


def test_an_example_split_into_windows_gets_the_mean_of_their_vectors(tiny_model_dir):
    from datasets import Dataset
    from transformers import AutoModel, AutoTokenizer

    from hftransfer.adaptation.encode import pooled_example_features

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModel.from_pretrained(tiny_model_dir)
    ids = tokenizer(["alice lives in paris", "with bob .", "a film was very good"])["input_ids"]
    rows = Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids], "example_id": [5, 5, 2]}
    )
    vectors, example_ids = pooled_example_features(model, tokenizer, rows)
    single, _ = pooled_example_features(
        model, tokenizer, rows.map(lambda row, i: {"example_id": i}, with_indices=True)
    )
    assert example_ids.tolist() == [5, 2] and vectors.shape == (2, model.config.hidden_size)
    np.testing.assert_allclose(vectors[0], single[:2].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vectors[1], single[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"select_top": 1 / 3}], ids=["domain_classifier", "select_top"])
def test_the_training_examples_like_the_target_weigh_more(tiny_model_dir, options):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)

    def rows(texts: list[str]) -> Dataset:
        return Dataset.from_dict(
            {**tokenizer(texts), "labels": [0] * len(texts), "example_id": range(len(texts))}
        )

    # The target is a part of the training distribution: texts about films (a third of the training texts).
    train = [example["text"] for example in make_classification_examples(64, seed=1)]
    target = [
        example["text"] for example in make_classification_examples(60, seed=7) if " film " in example["text"]
    ]
    options = objective_config({"name": NAME, **options})
    config = SimpleNamespace(objectives=[options], train=SimpleNamespace(seed=0))
    context = ObjectiveContext(
        model,
        config,
        options,
        tokenizer=tokenizer,
        features={"train": rows(train)},
        sources={"target": rows(target)},
    )
    objective = ImportanceWeightedTask.from_context(context)
    weights = np.array([objective.weights[i] for i in range(len(train))])
    film = np.array([" film " in text for text in train])
    assert weights.mean() == pytest.approx(1.0)
    assert weights[film].mean() > 2 * weights[~film].mean()
    summary = objective.summary
    assert summary["ess"] == pytest.approx(effective_sample_size(weights)) and summary["examples"] == 64
    if options.select_top is not None:
        assert (weights > 0).sum() == round(64 / 3) and summary["method"] == "select_top"
    else:
        assert (
            0.6 < summary["domain_auc"] < 0.98
            and weights.min() >= 0.0
            and summary["method"] == "domain_classifier"
        )


def test_the_classifier_recipe_trains_with_importance_weights(
    tiny_model_dir, classification_files, tmp_path, caplog
):
    target = tmp_path / "target.txt"
    texts = [
        example["text"].replace("was very", "seemed") for example in make_classification_examples(40, seed=7)
    ]
    target.write_text("\n".join(texts) + "\n", encoding="utf-8")
    common = [
        "task=sequence-classification",
        f"sources=[{{name: target, data: {target}, batch_size: 4}}]",
        "train.max_steps=4",
        "data.test_size=0",
    ]
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        metrics = finetune_classifier.main(
            _argv(
                tiny_model_dir,
                classification_files,
                tmp_path / "run",
                *common,
                f"objectives=[{{name: {NAME}, source: target, clip: [0.2, 5.0], folds: 3}}]",
            )
        )
    assert np.isfinite(metrics["validation"]["loss"])
    assert any(f"{NAME}: weights of 64 training examples" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match=f"{NAME} replaces task"):
        finetune_classifier.main(
            _argv(
                tiny_model_dir,
                classification_files,
                tmp_path / "both",
                *common,
                f"objectives=[{{name: task}}, {{name: {NAME}}}]",
            )
        )

"""Label-shift adaptation (``label_shift.method=em``): EM recovers known class frequencies, calibration recovers a
known temperature, the shift folds exactly into the output layer, and a run exports a plain classifier that
predicts with it, without reading a target label."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import softmax
from transformers import AutoModelForSequenceClassification

from hftransfer.adaptation.label_shift import (
    TEMPERATURE_RANGE,
    em_target_prior,
    fit_calibration,
    fold_into_output_layer,
    predicted_shares,
)
from hftransfer.config import parse_config
from hftransfer.data.sources import load_task_data, unlabelled_examples
from hftransfer.errors import ConfigError
from hftransfer.toy import make_classification_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

from tests.conftest import recipe_argv as _argv  # noqa: E402


def _gaussian_posteriors(n: int, prior: list[float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Texts of two classes (1-d Gaussians at -1 and +1) drawn with ``prior``, and their exact posteriors under
    equal class frequencies (what a classifier trained on balanced source data outputs)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(2, size=n, p=prior)
    x = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    log_likelihood = np.stack([-((x + 1) ** 2) / 2, -((x - 1) ** 2) / 2], axis=1)
    return softmax(log_likelihood, axis=1), labels


@pytest.mark.parametrize("target", [0.8, 0.3, 0.5])
def test_em_recovers_the_target_class_frequencies(target):
    posteriors, labels = _gaussian_posteriors(20000, [1 - target, target], seed=1)
    prior, iterations = em_target_prior(posteriors, np.array([0.5, 0.5]))
    assert prior[1] == pytest.approx(labels.mean(), abs=0.02)
    assert prior.sum() == pytest.approx(1.0) and 1 <= iterations < 200
    # The naive estimate (share of argmax predictions) is pulled towards the source's 0.5; EM is not.
    naive = (posteriors.argmax(1) == 1).mean()
    assert abs(prior[1] - labels.mean()) < abs(naive - labels.mean()) or target == 0.5


def test_calibration_recovers_a_known_temperature_and_bias():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(8000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits, axis=1)])
    temperature, bias = fit_calibration(3.0 * true_logits + np.array([0.5, 0.0, -0.5]), labels, kind="bcts")
    assert temperature == pytest.approx(3.0, rel=0.05)
    assert bias - bias.mean() == pytest.approx(np.array([-0.5, 0.0, 0.5]) / 3.0 - 0.0, abs=0.06)
    only_t, zero = fit_calibration(3.0 * true_logits, labels, kind="temperature")
    assert only_t == pytest.approx(3.0, rel=0.05) and not zero.any()
    assert fit_calibration(true_logits, labels, kind="none") == (1.0, pytest.approx(np.zeros(3)))


def test_the_calibration_temperature_stays_bounded_on_separable_validation(caplog):
    # Almost constant logits that separate the validation split perfectly (a barely trained model): the likelihood
    # improves as T -> 0 without end, and 1 / T would blow up the output layer.
    logits = np.array([[0.01, -0.01]] * 20 + [[-0.01, 0.01]] * 20)
    labels = np.array([0] * 20 + [1] * 20)
    temperature, _ = fit_calibration(logits, labels, kind="bcts")
    assert temperature == pytest.approx(TEMPERATURE_RANGE[0])
    assert "stopped at its bound" in caplog.text


def test_the_shift_folds_exactly_into_the_output_layer():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    expected = layer(x) / 2.5 + torch.tensor([0.1, -0.2, 0.3])
    fold_into_output_layer(layer, 2.5, np.array([0.1, -0.2, 0.3]))
    assert torch.allclose(layer(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=token-classification"], "single-label sequence classifier"),
        (["data.long_texts=window"], "data.long_texts=truncate"),
        (["sources=[]"], "list it: sources=\\[\\{name: target"),
    ],
)
def test_runs_it_cannot_adapt_are_refused_at_parse_time(overrides, message):
    base = ["task=sequence-classification", "data.dataset=rotten_tomatoes", "label_shift.method=em"]
    with pytest.raises(ConfigError, match=message):
        parse_config([*base, "sources=[{name: target, data: drug_reviews}]", *overrides])


def _target_texts(path: Path) -> Path:
    """Unlabelled target text, nine positive reviews to one negative (one text per line, no labels)."""
    rows = make_classification_examples(200, seed=5)
    positive = [r["text"] for r in rows if r["label"] == "positive"][:90]
    negative = [r["text"] for r in rows if r["label"] == "negative"][:10]
    path.write_text("\n".join(positive + negative) + "\n", encoding="utf-8")
    return path


def test_a_run_exports_the_shifted_classifier_and_reads_no_target_label(
    tiny_model_dir, classification_files, tmp_path
):
    target = _target_texts(tmp_path / "target.txt")
    run_dir = tmp_path / "run"
    argv = _argv(
        tiny_model_dir,
        classification_files,
        run_dir,
        "task=sequence-classification",
        "train.max_steps=40",
        "train.lr=1e-2",
        f"sources=[{{name: target, data: {target}}}]",
        "label_shift.method=em",
    )
    metrics = finetune_classifier.main(argv)
    shift = metrics["label_shift"]
    assert shift["target_texts"] == metrics["sources"]["target"]["examples"] > 0
    assert sum(shift["target_prior"].values()) == pytest.approx(1.0)
    assert shift["predicted_share_after"]["positive"] >= shift["predicted_share_before"]["positive"]
    assert "batches" not in metrics["sources"]["target"]  # read after training only: no batch per step
    saved = json.loads((run_dir / "metrics.json").read_text())["label_shift"]
    assert saved == json.loads(json.dumps(shift))

    # The export is a plain classifier carrying the shift: against the same run without it (same seed, same
    # training), its logits are the calibrated ones plus log(target / source frequency).
    plain = finetune_classifier.main(
        [
            *[
                a
                for a in argv
                if a != "label_shift.method=em" and not a.startswith(("sources=", "output_dir="))
            ],
            f"output_dir={tmp_path / 'plain'}",
        ]
    )
    assert "label_shift" not in plain
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    texts = [row["text"] for row in make_classification_examples(40, seed=9)]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    shifted_model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    unshifted_model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "plain" / "model").eval()
    with torch.no_grad():
        shifted, unshifted = shifted_model(**batch).logits, unshifted_model(**batch).logits
    positive, negative = shifted_model.config.label2id["positive"], shifted_model.config.label2id["negative"]
    move = {
        label: shift["calibration_bias"][label]
        + np.log(shift["target_prior"][label] / shift["source_prior"][label])
        for label in ("negative", "positive")
    }
    expected = (unshifted[:, positive] - unshifted[:, negative]) / shift["temperature"] + (
        move["positive"] - move["negative"]
    )
    observed = shifted[:, positive] - shifted[:, negative]
    assert torch.allclose(observed, expected.float(), rtol=1e-2, atol=0.05)
    assert move["positive"] - move["negative"] > 0  # towards the target's majority class


def test_strategies_without_a_plain_output_layer_are_refused_before_training(
    tiny_model_dir, classification_files, tmp_path
):
    target = _target_texts(tmp_path / "target.txt")
    for strategy in (["strategy.name=frozen"], ["strategy.name=lora"]):
        argv = _argv(
            tiny_model_dir,
            classification_files,
            tmp_path / strategy[0].split("=")[1],
            "task=sequence-classification",
            f"sources=[{{name: target, data: {target}}}]",
            "label_shift.method=em",
            *strategy,
        )
        with pytest.raises(
            ConfigError, match="folds the shift into a transformers classifier's output layer"
        ):
            finetune_classifier.main(argv)
        assert not (tmp_path / strategy[0].split("=")[1] / "metrics.json").exists()


def test_the_model_card_says_the_boundary_was_moved():
    from hftransfer.hub.card import CardFacts, build_card

    scores = {"accuracy": 0.8, "macro_f1": 0.8}
    config = {
        "strategy": {"name": "full"},
        "sources": [{"name": "target", "data": "drug_reviews"}],
        "label_shift": {"method": "em", "source": "target"},
    }
    facts = CardFacts(repo_id="me/m", task="sequence-classification", kind="model", config=config,
                      metrics={"validation": scores, "test": scores}, data={"dataset": "rotten_tomatoes"})  # fmt: skip
    assert "class frequencies of `drug_reviews` (label shift, EM" in str(build_card(facts))
    config["label_shift"]["method"] = "none"
    assert "label shift" not in str(build_card(facts))


def test_predicted_shares_are_smoothed_class_frequencies():
    shares = predicted_shares(np.array([1, 1, 1, 0, 1, 1, 1, 1]), 3)
    assert shares == pytest.approx(np.array([2, 8, 1]) / 11)


def test_a_zero_shot_estimate_replaces_em_and_the_card_names_it(
    tiny_model_dir, classification_files, tmp_path
):
    """``method: zeroshot``: the target prior is the (smoothed) share of the zero-shot classifier's answers on the
    target texts, and the output layer carries exactly that shift; EM is not run."""
    from hftransfer.zeroshot import ZeroShotClassifier

    target = _target_texts(tmp_path / "target.txt")
    run_dir = tmp_path / "run"
    template = "this text is {label}"
    argv = _argv(
        tiny_model_dir,
        classification_files,
        run_dir,
        "task=sequence-classification",
        "train.max_steps=20",
        f"sources=[{{name: target, data: {target}}}]",
        "label_shift.method=zeroshot",
        f"label_shift.template={template}",
    )
    metrics = finetune_classifier.main(argv)
    shift = metrics["label_shift"]
    assert shift["method"] == "zeroshot" and "em_iterations" not in shift
    texts = metrics["sources"]["target"]["examples"]
    assert shift["zeroshot"] == {"model": str(tiny_model_dir), "template": template, "texts": texts}
    # The texts the run read: the target file's, less those of the task's validation and test splits.
    config = parse_config(argv)
    data = load_task_data(config.data, config.task)
    texts = unlabelled_examples(str(target), config.task, config.data, data)["text"]
    labels = ["negative", "positive"]
    answers = [labels.index(r["label"]) for r in ZeroShotClassifier(str(tiny_model_dir), template=template).predict(texts, labels)]  # fmt: skip
    expected = predicted_shares(np.array(answers), 2)
    assert [shift["target_prior"][label] for label in labels] == pytest.approx(expected, abs=1e-5)

    from hftransfer.hub.card import CardFacts, build_card

    config = {"strategy": {"name": "full"}, "sources": [{"name": "target", "data": "t.txt"}],
              "label_shift": {"method": "zeroshot", "source": "target"}}  # fmt: skip
    scores = {"accuracy": 0.8, "macro_f1": 0.8}
    facts = CardFacts(repo_id="me/m", task="sequence-classification", kind="model", config=config,
                      metrics={"validation": scores, "test": scores}, data={"dataset": "rotten_tomatoes"})  # fmt: skip
    assert "estimated by a zero-shot classifier" in str(build_card(facts))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["label_shift.descriptions={positive: good}"], "missing: \\['negative'\\]"),
        (["label_shift.zeroshot_model=/nonexistent/encoder"], "cannot be loaded"),
    ],
)
def test_zero_shot_settings_are_checked_before_training(
    tiny_model_dir, classification_files, tmp_path, overrides, message
):
    target = _target_texts(tmp_path / "target.txt")
    argv = _argv(
        tiny_model_dir,
        classification_files,
        tmp_path / "run",
        "task=sequence-classification",
        f"sources=[{{name: target, data: {target}}}]",
        "label_shift.method=zeroshot",
        *overrides,
    )
    with pytest.raises(ConfigError, match=message):
        finetune_classifier.main(argv)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_template_without_the_label_is_refused():
    with pytest.raises(ConfigError, match="has no \\{label\\}"):
        parse_config(["task=sequence-classification", "label_shift.template=This is it."])

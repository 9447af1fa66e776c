"""DANN: the gradient reversal flips and scales exactly, λ follows Ganin's schedule, the balanced domain loss and
accuracy are right on a hand-made batch (pooled rows for sequence tasks, real tokens for token tasks), and both
recipes train with it by config, log it, and export a plain model; a fixed encoder is refused."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, pipeline

from hftransfer.errors import ConfigError
from hftransfer.hub.card import describe_objectives
from hftransfer.objectives.base import ObjectiveContext
from hftransfer.objectives.dann import Dann, DannConfig, ganin_lambda, reverse_gradient
from hftransfer.toy import make_classification_examples, make_ner_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402
import finetune_ner  # noqa: E402

from tests.test_strategy_recipes import _argv  # noqa: E402


@pytest.mark.parametrize("lambda_", [0.0, 0.3, 1.0, 2.5])
def test_the_reversal_is_the_identity_forward_and_flips_and_scales_the_gradient(lambda_):
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, dtype=torch.float64)
    plain = torch.autograd.grad((x @ w).tanh().sum(), x)[0]
    reversed_x = reverse_gradient(x, lambda_)
    assert torch.equal(reversed_x, x)
    (grad,) = torch.autograd.grad((reversed_x @ w).tanh().sum(), x)
    torch.testing.assert_close(grad, -lambda_ * plain, rtol=0, atol=1e-15)


def test_the_ganin_schedule_rises_from_zero_towards_one():
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1, abs=1e-15)
    values = [ganin_lambda(p / 100) for p in range(101)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert ganin_lambda(0.5, gamma=1.0) < ganin_lambda(0.5)  # a smaller gamma rises more slowly
    objective = _objective()
    state = SimpleNamespace(step=3, total_steps=12, epoch=0)
    assert objective.strength(state) == pytest.approx(ganin_lambda(0.25))
    assert (
        objective.strength(None)
        == objective.strength(SimpleNamespace(step=5, total_steps=0))
        == ganin_lambda(1.0)
    )
    assert _objective(schedule="constant").strength(state) == 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", "no spaces"),
        ("schedule", "linear"),
        ("gamma", 0.0),
        ("pooling", "max"),
        ("head_hidden_size", -1),
        ("head_dropout", 1.0),
    ],
)
def test_config_fields_are_checked_by_name(field, value):
    with pytest.raises(ConfigError, match=rf"objectives\.dann\.{field}"):
        DannConfig(**{field: value})


def test_the_builder_checks_the_layer_and_the_pooling_of_token_tasks():
    with pytest.raises(ConfigError, match=r"objectives\.dann\.layer"):
        _objective(layer=3)
    with pytest.raises(ConfigError, match=r"objectives\.dann\.pooling"):
        _objective("token-classification", pooling="mean")


class _Outputs(dict):
    """What a forward with ``output_hidden_states=True`` returns, as far as DANN reads it."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden_states = (torch.zeros_like(hidden), hidden)


def _objective(task: str = "sequence-classification", **fields) -> Dann:
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=2, num_hidden_layers=1))
    config = DannConfig(**{"head_hidden_size": 0, "weight": 0.5, **fields})
    return Dann(ObjectiveContext(model, SimpleNamespace(task=task), config))


def _head_reading_the_first_unit(objective: Dann) -> torch.nn.Module:
    head = objective.module  # linear: logit = hidden[..., 0]
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.bias.zero_()
    return head


def _domain_terms(objective, head, labelled, target, masks, state):
    batch = {"attention_mask": masks[0], "sources": {"target": {"attention_mask": masks[1]}}}
    outputs = _Outputs(labelled)
    outputs["sources"] = {"target": _Outputs(target)}
    # as the wrapper (objectives/owned.py) leaves them: each forward's outputs with its attention mask
    outputs["attention_mask"], outputs["sources"]["target"]["attention_mask"] = masks
    objective.before_forward(batch, state)
    objective.extend_outputs(outputs, head)
    return objective.terms(None, batch, outputs, state)


def test_sequence_terms_balance_the_domains_and_count_accuracy_per_domain():
    objective = _objective(pooling="mean")
    head = _head_reading_the_first_unit(objective)
    # mean pooling over real tokens: labelled rows pool to first units -1, 2, -3; target rows to 0.5, -0.5
    labelled = torch.tensor(
        [[[-1.0, 0.0], [-1.0, 0.0]], [[3.0, 0.0], [1.0, 9.0]], [[-3.0, 0.0], [50.0, 9.0]]], requires_grad=True
    )
    target = torch.tensor([[[0.5, 1.0], [0.5, 1.0]], [[-0.5, 0.0], [7.0, 7.0]]], requires_grad=True)
    masks = (torch.tensor([[1, 1], [1, 1], [1, 0]]), torch.tensor([[1, 1], [1, 0]]))
    state = SimpleNamespace(step=1, total_steps=4, epoch=0)
    terms = _domain_terms(objective, head, labelled, target, masks, state)
    assert set(terms) == {"domain", "domain_accuracy", "dann_lambda"}
    assert set(objective.logged) == {"domain_accuracy", "dann_lambda"}

    def bce(logit, domain):  # -log p(domain)
        return math.log1p(math.exp(-logit if domain else logit))

    labelled_loss = (bce(-1, 0) + bce(2, 0) + bce(-3, 0)) / 3
    target_loss = (bce(0.5, 1) + bce(-0.5, 1)) / 2
    assert terms["domain"].item() == pytest.approx(0.5 * 0.5 * (labelled_loss + target_loss), rel=1e-6)
    assert terms["domain_accuracy"].item() == pytest.approx(0.5 * (2 / 3 + 1 / 2))
    lambda_ = ganin_lambda(0.25)
    assert terms["dann_lambda"].item() == pytest.approx(lambda_)

    # The head learns from weight * the loss at full strength (λ never reaches it); the encoder gets -λ times the
    # gradient that the same loss without the reversal would give it. Reference: plain autograd, no objective.
    terms["domain"].backward()
    inputs = [t.detach().clone().requires_grad_() for t in (labelled, target)]
    weight = head.weight.detach().clone().requires_grad_()
    logits = [
        ((x * m[..., None]).sum(1) / m.sum(1, keepdim=True)) @ weight.T
        for x, m in zip(inputs, masks, strict=True)
    ]
    reference = 0.5 * 0.5 * (F.softplus(logits[0]).mean() + F.softplus(-logits[1]).mean())
    reference.backward()
    torch.testing.assert_close(head.weight.grad, weight.grad)
    torch.testing.assert_close(labelled.grad, -lambda_ * inputs[0].grad)
    torch.testing.assert_close(target.grad, -lambda_ * inputs[1].grad)
    assert (
        labelled.grad[2, 1].abs().sum() == 0 and target.grad[1, 1].abs().sum() == 0
    )  # padding takes no part


def test_token_terms_classify_every_real_token():
    objective = _objective("token-classification")
    head = _head_reading_the_first_unit(objective)
    # labelled: 3 real tokens (first units 1, -2, -3), target: 1 real token (first unit 4); padding ignored
    labelled = torch.tensor([[[1.0, 0.0], [-2.0, 0.0]], [[-3.0, 0.0], [100.0, 0.0]]])
    target = torch.tensor([[[4.0, 0.0], [-100.0, 0.0]]])
    masks = (torch.tensor([[1, 1], [1, 0]]), torch.tensor([[1, 0]]))
    terms = _domain_terms(objective, head, labelled, target, masks, None)
    logits = [x[m.bool()][:, 0] for x, m in zip((labelled, target), masks, strict=True)]
    assert [t.tolist() for t in logits] == [[1.0, -2.0, -3.0], [4.0]]
    expected = 0.5 * 0.5 * (F.softplus(logits[0]).mean() + F.softplus(-logits[1]).mean())
    assert terms["domain"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["domain_accuracy"].item() == pytest.approx(0.5 * (2 / 3 + 1))
    assert terms["dann_lambda"].item() == pytest.approx(ganin_lambda(1.0))  # no loop state: full strength


def _train_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if record["split"] == "train"]


def _dann_argv(model_dir, files, run_dir, target, *extra):
    return _argv(
        model_dir,
        files,
        run_dir,
        "objectives+=[{name: dann, weight: 0.5}]",
        f"sources=[{{name: target, data: {target}, batch_size: 4}}]",
        "train.max_steps=4",
        "train.log_every_steps=1",
        "data.test_size=0",
        *extra,
    )


def _check_logged_and_exported(run_dir: Path, metrics: dict, steps: int) -> dict[str, torch.Tensor]:
    records = _train_records(run_dir)
    assert len(records) == steps
    assert all(0 < r["domain"] < 10 and 0 <= r["domain_accuracy"] <= 1 for r in records)
    lambdas = [r["dann_lambda"] for r in records]
    # λ of the step that ended at each log: the schedule at (step - 1) / total_steps
    assert lambdas == pytest.approx([ganin_lambda(step / steps) for step in range(steps)], abs=1e-6)
    assert lambdas[0] == 0 and all(a < b for a, b in zip(lambdas, lambdas[1:], strict=False))
    assert metrics["strategy"]["lr_groups"]["dann"] > 0  # the head trains in its own group
    exported = load_file(str(run_dir / "model" / "model.safetensors"))
    assert not any("owned" in key or "dann" in key or "domain" in key for key in exported)
    return exported


def test_a_classifier_trains_with_dann_and_exports_a_plain_model(
    tiny_model_dir, classification_files, tmp_path
):
    target = tmp_path / "target.txt"
    texts = [e["text"].replace("was very", "seemed") for e in make_classification_examples(24, seed=7)]
    target.write_text("\n".join(texts) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    argv = _dann_argv(tiny_model_dir, classification_files, run_dir, target, "task=sequence-classification")
    metrics = finetune_classifier.main([*argv, "train.save_every_steps=4"])
    _check_logged_and_exported(run_dir, metrics, steps=4)
    checkpoint = load_file(str(run_dir / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert any(key.startswith("owned.dann.") for key in checkpoint)  # a resumed run continues the head
    AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    prediction = pipeline("text-classification", model=str(run_dir / "model"))("a film was very good")
    assert prediction[0]["label"] in {"negative", "positive"}
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["objectives"]
    assert describe_objectives(saved) == [  # the model card's line
        "domain-adversarial training (DANN) against the unlabelled source 'target' (weight 0.5, Ganin schedule, "
        "gamma 10.0)"
    ]


def test_ner_trains_with_a_per_token_domain_head(tiny_model_dir, ner_files, tmp_path):
    target = tmp_path / "target.txt"
    sentences = [" ".join(e["tokens"]).replace("lives", "stays") for e in make_ner_examples(24, seed=9)]
    target.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    rows = []
    original = Dann.extend_outputs

    def spy(self, outputs, module):  # the head's input rows: one per real token of the labelled batch
        original(self, outputs, module)
        rows.append((outputs["domain_logits"][0].shape[0], int(outputs["attention_mask"].sum())))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Dann, "extend_outputs", spy)
        metrics = finetune_ner.main(_dann_argv(tiny_model_dir, ner_files, run_dir, target))
    assert len(rows) == 4 and all(n == real for n, real in rows)
    _check_logged_and_exported(run_dir, metrics, steps=4)
    entities = pipeline("token-classification", model=str(run_dir / "model"))("alice lives in paris")
    assert isinstance(entities, list)


def test_a_fixed_encoder_is_refused_naming_dann(tiny_model_dir, classification_files, tmp_path):
    argv = _argv(
        tiny_model_dir,
        classification_files,
        tmp_path / "x",
        "task=sequence-classification",
        "strategy.name=frozen",
        "objectives+=[{name: dann}]",
        f"sources=[{{name: target, data: {classification_files['train']}}}]",
    )
    with pytest.raises(
        ConfigError, match="objectives: dann with strategy.name=frozen: the encoder never changes"
    ):
        finetune_classifier.main(argv)


def test_the_domain_head_can_learn_at_its_own_rate(tiny_model_dir, classification_files, tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("this drug seemed fine\nthis drug seemed bad\n", encoding="utf-8")
    metrics = finetune_classifier.main(
        _argv(
            tiny_model_dir,
            classification_files,
            tmp_path / "run",
            "task=sequence-classification",
            "train.max_steps=1",
            "objectives+=[{name: dann, head_lr: 0.003}]",
            f"sources=[{{name: target, data: {target}}}]",
        )
    )
    assert metrics["strategy"]["lr_groups"]["dann"] == 0.003

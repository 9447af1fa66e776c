"""The training loop: exact gradient accumulation, resume equivalence, early stopping, best-model selection."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Dataset
from transformers import AutoModelForTokenClassification, AutoTokenizer

from hftransfer.config import DataConfig, RunConfig, TrainConfig
from hftransfer.data.batching import FeatureCollator, build_eval_dataloader, build_train_dataloader
from hftransfer.data.features import tokenize_token_task
from hftransfer.evaluation.evaluate import compute_metrics
from hftransfer.evaluation.inference import run_inference
from hftransfer.training.checkpoint import list_checkpoints, resolve_resume
from hftransfer.training.loop import TrainingLoop
from tests.conftest import make_ner_examples

LABELS = ["O", "B-loc", "I-loc", "B-per", "I-per"]


def _setup(tiny_model_dir, tmp_path, *, dropout=0.0, train_examples=64, **train):
    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = Dataset.from_list(make_ner_examples(train_examples, seed=5))
    eval_examples = Dataset.from_list(make_ner_examples(16, seed=6))
    label2id = {label: i for i, label in enumerate(LABELS)}
    features, _ = tokenize_token_task(examples, tokenizer, label2id, max_length=32)
    eval_features, _ = tokenize_token_task(eval_examples, tokenizer, label2id, max_length=32)
    model = AutoModelForTokenClassification.from_pretrained(
        tiny_model_dir,
        num_labels=len(LABELS),
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    defaults = dict(lr=5e-3, warmup_ratio=0.0, log_every_steps=1, trackers=[], group_by_length=False, seed=0)
    config = RunConfig(data=DataConfig(train_file="unused.conll"), train=TrainConfig(**{**defaults, **train}))
    collator = FeatureCollator(tokenizer)
    accelerator = Accelerator(cpu=True)
    train_loader = build_train_dataloader(
        features,
        collator,
        batch_size=config.train.batch_size,
        seed=0,
        group_by_length=config.train.group_by_length,
    )
    eval_loader = build_eval_dataloader(eval_features, collator, batch_size=8)

    def evaluate(model, loader):
        output = run_inference(model, loader, accelerator, "token-classification")
        return compute_metrics(output, eval_examples, "token-classification", LABELS)

    saved = []
    loop = TrainingLoop(
        accelerator,
        model,
        train_loader,
        eval_loader,
        evaluate=evaluate,
        save_model=lambda m: saved.append({k: v.detach().clone() for k, v in m.state_dict().items()}),
        config=config,
        run_dir=tmp_path,
    )
    return loop, saved


def _weights(loop):
    return {name: param.detach().clone() for name, param in loop.model.named_parameters()}


def _train_losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def test_accumulation_equals_one_big_batch(tiny_model_dir, tmp_path):
    big, _ = _setup(tiny_model_dir, tmp_path / "big", batch_size=16, grad_accum_steps=1, max_steps=3)
    big.fit()
    small, _ = _setup(tiny_model_dir, tmp_path / "small", batch_size=8, grad_accum_steps=2, max_steps=3)
    small.fit()
    for name, value in _weights(big).items():
        torch.testing.assert_close(_weights(small)[name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert _train_losses(tmp_path / "small") == pytest.approx(_train_losses(tmp_path / "big"), rel=1e-5)
    # the weights did move: the comparison above is not between two untouched models
    fresh, _ = _setup(tiny_model_dir, tmp_path / "fresh", batch_size=16, max_steps=3)
    assert any(not torch.equal(w, _weights(big)[n]) for n, w in _weights(fresh).items())


def test_resume_continues_the_same_run(tiny_model_dir, tmp_path):
    # dropout on and several epochs: resuming must restore RNG, data order, optimizer and scheduler state
    common = dict(batch_size=8, epochs=3, save_every_steps=5, eval_every_epoch=True, keep_checkpoints=10)
    full, _ = _setup(tiny_model_dir, tmp_path / "full", dropout=0.1, **common)
    full.fit()
    total = full.total_steps
    assert total == 24

    partial, _ = _setup(tiny_model_dir, tmp_path / "resumed", dropout=0.1, **common, max_steps=None)
    partial.total_steps = 10  # stop in the middle of epoch 2, after the step-10 checkpoint
    partial.fit()
    # every 5 steps and at the end of the first epoch (8 steps)
    names = [p.name for p in list_checkpoints(tmp_path / "resumed")]
    assert names == ["step-00000005", "step-00000008", "step-00000010"]

    resumed, _ = _setup(tiny_model_dir, tmp_path / "resumed", dropout=0.1, **common)
    resumed.resume(resolve_resume("latest", tmp_path / "resumed"))
    assert resumed.state.step == 10 and resumed.state.batches_in_epoch == 2
    resumed.fit()
    for name, value in _weights(full).items():
        torch.testing.assert_close(_weights(resumed)[name], value, atol=1e-6, rtol=1e-5, msg=name)
    # the whole log too, timings aside: the partial run's closing validation at step 10, logged after the step-10
    # checkpoint, is gone
    assert _untimed_log(tmp_path / "resumed") == _untimed_log(tmp_path / "full")


def _untimed_log(run_dir):
    from hftransfer.training.tracking import is_timing_key

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in r.items() if not is_timing_key(key)} for r in records]


def test_early_stopping_and_best_model(tiny_model_dir, tmp_path):
    # A metric that can never improve after the first evaluation: stops after `patience` more evaluations.
    loop, saved = _setup(
        tiny_model_dir,
        tmp_path,
        batch_size=8,
        epochs=10,
        eval_every_steps=2,
        eval_every_epoch=False,
        early_stopping_patience=2,
        metric_for_best="num_examples",
    )
    result = loop.fit()
    assert result.state.stopped_early
    assert result.state.step == 6 and result.state.best_step == 2
    assert len(saved) == 1  # only the best model was exported


def test_unknown_metric_for_best_names_the_choices(tiny_model_dir, tmp_path):
    loop, _ = _setup(tiny_model_dir, tmp_path, batch_size=8, max_steps=2, metric_for_best="bleu")
    with pytest.raises(Exception, match="metric_for_best='bleu'.*f1"):
        loop.fit()


def test_fused_adamw_takes_the_same_steps_as_the_plain_one(tiny_model_dir, tmp_path):
    fused, _ = _setup(tiny_model_dir, tmp_path / "fused", batch_size=8, max_steps=4)
    plain, _ = _setup(tiny_model_dir, tmp_path / "plain", batch_size=8, max_steps=4, fused_optimizer=False)
    assert fused.optimizer.optimizer.defaults["fused"] and not plain.optimizer.optimizer.defaults["fused"]
    fused.fit()
    plain.fit()
    for name, value in _weights(plain).items():
        torch.testing.assert_close(_weights(fused)[name], value, atol=1e-6, rtol=1e-5, msg=name)


def test_summary_counts_real_and_padded_tokens(tiny_model_dir, tmp_path):
    loop, _ = _setup(tiny_model_dir, tmp_path, batch_size=8, epochs=1)
    loop.fit()
    expected_tokens = expected_padded = 0
    for batch in loop.train_loader:
        expected_tokens += int(batch["attention_mask"].sum())
        expected_padded += batch["attention_mask"].numel()
    summary = loop.summary()
    assert summary["tokens"] == expected_tokens < summary["padded_tokens"] == expected_padded
    assert summary["samples"] == 64
    assert 0 < summary["step_seconds"] <= summary["runtime_seconds"]
    rss = summary["rss_mb"]  # resident memory sampled before training and inside the steps
    assert 0 < rss["before_training"] <= rss["max_in_steps"]
    assert rss["growth_in_steps"] == pytest.approx(rss["max_in_steps"] - rss["before_training"], abs=0.11)
    assert summary["peak_memory_mb"]["rss"] >= rss["max_in_steps"] - 1
    validation = [
        json.loads(line)
        for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
        if '"validation"' in line
    ]
    assert validation and validation[-1]["train_seconds"] > 0


def test_compiled_forward_keeps_parameter_names_and_trains(tiny_model_dir, tmp_path):
    # The eager backend traces with dynamo like inductor would, without generating code (seconds, not minutes).
    loop, saved = _setup(
        tiny_model_dir, tmp_path, batch_size=8, max_steps=3, torch_compile=True, compile_backend="eager"
    )
    assert loop.model._compiled_call_impl is not None  # Module.compile took effect, in place
    before = _weights(loop)
    loop.fit()
    assert all(not name.startswith("_orig_mod") for name in saved[-1])
    assert any(not torch.equal(value, _weights(loop)[name]) for name, value in before.items())


@pytest.mark.parametrize("fast", [True, False])
def test_fast_cpu_dropout_is_switched_on_only_while_fitting(tiny_model_dir, tmp_path, fast):
    loop, _ = _setup(tiny_model_dir, tmp_path, dropout=0.1, batch_size=8, max_steps=2, fast_cpu_dropout=fast)
    model = loop.accelerator.unwrap_model(loop.model)
    seen = []

    def record(state):
        dropouts = {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        seen.append((dropouts, model.config._attn_implementation))

    loop.on_step_start = record
    loop.fit()
    if fast:
        assert seen == [({"FastDropout"}, "hftransfer_sdpa_fast_dropout")] * 2
    else:
        assert seen == [({"Dropout"}, "sdpa")] * 2
    assert {type(m) for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {torch.nn.Dropout}
    assert model.config._attn_implementation == "sdpa"


def test_clipping_inside_the_fused_step_takes_the_same_steps_as_clipping_first(
    tiny_model_dir, tmp_path, monkeypatch
):
    from hftransfer.training import clipping

    # max_grad_norm 0.05: well under this model's gradient norms, so every step is clipped
    deferred, _ = _setup(tiny_model_dir, tmp_path / "deferred", batch_size=8, max_steps=4, max_grad_norm=0.05)
    assert clipping._can_defer(deferred.accelerator, deferred.optimizer)
    scales = []
    step = deferred.optimizer.optimizer.step

    def spy(*args, **kwargs):
        scales.append(float(deferred.optimizer.optimizer.grad_scale))
        return step(*args, **kwargs)

    monkeypatch.setattr(deferred.optimizer.optimizer, "step", spy)
    deferred.fit()
    assert len(scales) == 4 and all(scale > 1.0 for scale in scales)
    assert not hasattr(deferred.optimizer.optimizer, "grad_scale")  # nothing left over for a later step
    monkeypatch.setattr(clipping, "_can_defer", lambda accelerator, optimizer: False)
    first, _ = _setup(tiny_model_dir, tmp_path / "first", batch_size=8, max_steps=4, max_grad_norm=0.05)
    first.fit()
    for name, value in _weights(first).items():
        torch.testing.assert_close(_weights(deferred)[name], value, atol=1e-6, rtol=1e-5, msg=name)
    assert float(deferred.meter.grad_norm) == pytest.approx(float(first.meter.grad_norm), rel=1e-4)


def test_gradient_norm_matches_torch():
    from hftransfer.training.clipping import gradient_norm

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in [(300, 40), (40,), (7, 3, 5)]]
    for param in params[:2]:
        param.grad = torch.randn_like(param) * 3
    # the third has no gradient (a frozen or unused parameter) and is left out
    expected = torch.nn.utils.get_total_norm([p.grad for p in params[:2]])
    torch.testing.assert_close(gradient_norm(params), expected, rtol=1e-5, atol=0)


def test_unfused_optimizer_is_clipped_before_its_step(tiny_model_dir, tmp_path):
    from hftransfer.training import clipping

    loop, _ = _setup(
        tiny_model_dir, tmp_path, batch_size=8, max_steps=1, fused_optimizer=False, max_grad_norm=0.05
    )
    assert not clipping._can_defer(loop.accelerator, loop.optimizer)
    batch = next(iter(loop.train_loader))
    loop.accelerator.backward(loop.loss_fn(loop.model, batch, loop.state))
    norm = clipping.clip_gradients(loop.accelerator, loop.model, loop.optimizer, 0.05)
    assert float(norm) > 0.05
    assert float(clipping.gradient_norm(list(loop.model.parameters()))) == pytest.approx(0.05, rel=1e-3)

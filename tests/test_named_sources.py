"""Named sources: an objective registered outside the package that owns a module (a domain head) and reads
batches of unlabelled text (``sources: [{name: target, ...}]``) runs by config through a recipe; the source's
batches resume exactly; the combinations that cannot work fail at setup, naming the field."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hftransfer.data.mixing import LoaderBatches, WithSourceBatches
from hftransfer.errors import ConfigError
from hftransfer.toy import make_classification_examples

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

from tests.test_distributed import gloo_works  # noqa: E402,F401  (a fixture)
from tests.test_strategy_recipes import _argv  # noqa: E402

# The worked example of docs/extending.md ("an objective that owns a module and reads an unlabelled source"): a
# domain head on the first token's last hidden state learns to tell labelled from target text, and a gradient
# reversal makes the encoder work against it.
DOMAIN_PLUGIN = '''
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hftransfer.config import ObjectiveConfig
from hftransfer.objectives.base import Objective
from hftransfer.registry import register_objective


@dataclass
class DomainConfusionConfig(ObjectiveConfig):
    """Make the labelled and the target text look alike to a domain head."""

    name: str = "domain_confusion"
    weight: float = 0.1
    source: str = "target"
    """The named source of unlabelled target-domain text."""


class ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features):
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class DomainConfusion(Objective):
    name = "domain_confusion"
    needs_hidden_states = True

    def __init__(self, context):
        self.weight = context.objective.weight
        self.sources = (context.objective.source,)
        self.module = torch.nn.Linear(context.model.config.hidden_size, 1)

    def extend_outputs(self, outputs, module):
        def domain_logit(model_outputs):
            return module(ReverseGradient.apply(model_outputs.hidden_states[-1][:, 0])).squeeze(-1)

        outputs["domain_logits"] = (domain_logit(outputs), domain_logit(outputs["sources"][self.sources[0]]))

    def terms(self, model, batch, outputs, state):
        labelled, target = outputs["domain_logits"]
        logits = torch.cat([labelled, target])
        domains = torch.cat([torch.zeros_like(labelled), torch.ones_like(target)])
        return {"domain": self.weight * F.binary_cross_entropy_with_logits(logits, domains)}


register_objective("domain_confusion", config=DomainConfusionConfig, build=DomainConfusion, regulariser=True)
'''


@pytest.fixture()
def domain_setup(tmp_path, classification_files):
    plugin = tmp_path / "domain_plugin.py"
    plugin.write_text(DOMAIN_PLUGIN, encoding="utf-8")
    target = tmp_path / "target.txt"
    texts = [
        example["text"].replace("was very", "seemed") for example in make_classification_examples(40, seed=7)
    ]
    target.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return plugin, target, classification_files


def _domain_argv(tiny_model_dir, files, run_dir, plugin, target, *extra):
    return _argv(
        tiny_model_dir,
        files,
        run_dir,
        "task=sequence-classification",
        f"plugins=[{plugin}]",
        "objectives+=[{name: domain_confusion, weight: 0.5}]",
        f"sources=[{{name: target, data: {target}, batch_size: 4}}]",
        "train.log_every_steps=1",
        *extra,
    )


def test_an_outside_objective_reads_a_named_source_and_owns_a_module(tiny_model_dir, domain_setup, tmp_path):
    plugin, target, files = domain_setup
    run_dir = tmp_path / "run"
    metrics = finetune_classifier.main(
        _domain_argv(
            tiny_model_dir, files, run_dir, plugin, target, "train.max_steps=6", "train.save_every_steps=6"
        )
    )
    source = metrics["sources"]["target"]
    assert source["examples"] == len(set(target.read_text().split("\n")) - {""})  # repeated texts once
    assert source["batches"] == -(-source["features"] // 4)
    assert metrics["strategy"]["lr_groups"]["domain_confusion"] > 0  # the head trains in its own group
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    domain = [r["domain"] for r in records if r["split"] == "train"]
    assert len(domain) == 6 and all(0 < value < 10 for value in domain)
    exported = load_file(str(run_dir / "model" / "model.safetensors"))
    assert not any("owned" in key or "domain" in key for key in exported)
    checkpoint = load_file(str(run_dir / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert any(key.startswith("owned.domain_confusion.") for key in checkpoint)
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(run_dir / "model")  # a plain model


def test_the_source_batches_change_training_and_resume_exactly(tiny_model_dir, domain_setup, tmp_path):
    plugin, target, files = domain_setup
    common = ["train.max_steps=8", "train.save_every_steps=4", "train.keep_checkpoints=5", "data.test_size=0"]
    finetune_classifier.main(_domain_argv(tiny_model_dir, files, tmp_path / "a", plugin, target, *common))
    checkpoint = tmp_path / "a" / "checkpoints" / "step-00000004"
    resume = f"train.resume_from_checkpoint={checkpoint}"
    finetune_classifier.main(
        _domain_argv(tiny_model_dir, files, tmp_path / "b", plugin, target, *common, resume)
    )
    final_a = load_file(tmp_path / "a" / "checkpoints" / "step-00000008" / "model.safetensors")
    final_b = load_file(tmp_path / "b" / "checkpoints" / "step-00000008" / "model.safetensors")
    for name, value in final_a.items():
        torch.testing.assert_close(final_b[name], value, atol=1e-6, rtol=1e-5, msg=name)
    # without the objective (and its source) the encoder ends elsewhere: the reversed domain gradient reached it
    finetune_classifier.main(
        _argv(
            tiny_model_dir,
            files,
            tmp_path / "c",
            "task=sequence-classification",
            "train.log_every_steps=1",
            *common,
        )
    )
    plain = load_file(tmp_path / "c" / "checkpoints" / "step-00000008" / "model.safetensors")
    key = "bert.encoder.layer.0.output.dense.weight"
    assert not torch.allclose(plain[key], final_a["model." + key])  # the checkpoint holds the wrapped model


class _EpochLoader:
    """Batches of 0..n-1 in an order set by ``set_epoch``, like the prepared shuffling loaders."""

    def __init__(self, n, batch_size):
        self.n, self.batch_size, self.epoch = n, batch_size, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch))
        return iter({"x": order[i : i + self.batch_size]} for i in range(0, self.n, self.batch_size))


class _NoAccelerator:
    def skip_first_batches(self, loader, start):
        return list(loader)[start:]


def test_source_batches_resume_at_any_step_of_any_epoch():
    accelerator = _NoAccelerator()
    main = _EpochLoader(6, batch_size=2)
    sources = {"target": _EpochLoader(5, batch_size=2)}
    batches = WithSourceBatches(LoaderBatches(main, accelerator), sources, accelerator)
    whole = []
    for epoch in range(3):
        batches.set_epoch(epoch)
        whole.append([(b["x"].tolist(), b["sources"]["target"]["x"].tolist()) for b in batches])
    drawn = [target for epoch in whole for _, target in epoch]
    assert sorted(x for pair in drawn[:3] for x in pair) == [0, 1, 2, 3, 4]  # a full pass of the source first
    for epoch in range(3):
        for start in range(len(batches)):
            batches.set_epoch(epoch)
            resumed = [
                (b["x"].tolist(), b["sources"]["target"]["x"].tolist()) for b in batches.iterate(start)
            ]
            assert resumed == whole[epoch][start:], (epoch, start)


def test_sources_and_their_readers_must_match(tiny_model_dir, domain_setup, tmp_path):
    plugin, target, files = domain_setup
    base = _argv(tiny_model_dir, files, tmp_path / "x", "task=sequence-classification", f"plugins=[{plugin}]")
    with pytest.raises(ConfigError, match="reads the source 'target'"):
        finetune_classifier.main([*base, "objectives+=[{name: domain_confusion}]"])
    with pytest.raises(ConfigError, match="'target' is read by no objective"):
        finetune_classifier.main([*base, f"sources=[{{name: target, data: {target}}}]"])
    with pytest.raises(ConfigError, match="sources: two entries are named 'target'"):
        finetune_classifier.main(
            [*base, f"sources=[{{name: target, data: {target}}}, {{name: target, data: x}}]"]
        )


def test_frozen_keeps_the_encoder_in_the_model_when_an_objective_needs_its_forward_pass(
    tiny_model_dir, domain_setup, tmp_path
):
    # The feature cache would leave no encoder forward for the source's batches: frozen keeps the encoder, fixed,
    # inside the token model instead, and refuses the options of the feature-cache head, naming the objective.
    plugin, target, files = domain_setup
    extra = ["strategy.name=frozen", f"strategy.cache_dir={tmp_path / 'cache'}", "train.max_steps=3"]
    metrics = finetune_classifier.main(
        _domain_argv(tiny_model_dir, files, tmp_path / "f", plugin, target, *extra)
    )
    assert "feature_cache" not in metrics["strategy"] and not (tmp_path / "cache").exists()
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    exported = load_file(str(tmp_path / "f" / "model" / "model.safetensors"))
    key = "bert.encoder.layer.0.output.dense.weight"
    assert torch.equal(
        exported[key], initial[key.removeprefix("bert.")]
    )  # the pretrained encoder: a bare BertModel
    with pytest.raises(ConfigError, match="frozen with objectives: domain_confusion keeps the encoder fixed"):
        finetune_classifier.main(
            _domain_argv(tiny_model_dir, files, tmp_path / "g", plugin, target, *extra, "strategy.head=mlp")
        )


@pytest.mark.usefixtures("gloo_works")
def test_two_process_run_with_a_source_and_an_owned_module(tiny_model_dir, tmp_path):
    # DDP expects one forward per backward: the source's batch must run in the task batch's forward call.
    from hftransfer.toy import make_ner_examples, write_conll
    from tests.test_distributed import launch_or_fail

    plugin = tmp_path / "domain_plugin.py"
    plugin.write_text(DOMAIN_PLUGIN, encoding="utf-8")
    train = write_conll(tmp_path / "train.conll", make_ner_examples(24, seed=1))
    dev = write_conll(tmp_path / "dev.conll", make_ner_examples(8, seed=2))
    target = tmp_path / "target.txt"
    target.write_text(
        "\n".join(f"an unlabelled sentence number {i}" for i in range(12)) + "\n", encoding="utf-8"
    )
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_ip", "127.0.0.1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(ROOT / "recipes" / "finetune_ner.py"),
        f"model.name_or_path={tiny_model_dir}", f"data.train_file={train}", f"data.validation_file={dev}",
        "data.test_size=0", f"output_dir={run_dir}", "train.max_steps=4", "train.batch_size=4",
        "train.trackers=[]", "train.log_every_steps=1", f"plugins=[{plugin}]",
        "objectives+=[{name: domain_confusion, weight: 0.5}]", f"sources=[{{name: target, data: {target}}}]",
    ]  # fmt: skip
    launch_or_fail(command, tmp_path, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["num_processes"] == 2
    assert metrics["sources"]["target"]["examples"] == 12
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len([r["domain"] for r in records if r["split"] == "train"]) == 4

"""The distillation terms as registered objectives: each term against a hand computation on a tiny model, one
teacher pass per batch shared by the hidden-state and attention terms, the old ``distill.*_weight`` keys failing
with the new form while an older run directory's config.yaml still loads with the same meaning, and a run
without a teacher refusing an objective that reads one."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertConfig

from hftransfer.config import objective_config, parse_config, save_config
from hftransfer.data.batching import FeatureCollator
from hftransfer.data.features import tokenize_token_task
from hftransfer.distill.config import DistillRunConfig
from hftransfer.distill.losses import uniform_layer_map
from hftransfer.distill.teacher import Teacher, TeacherLogits
from hftransfer.distill.teaching import TeacherContext
from hftransfer.errors import ConfigError
from hftransfer.objectives.base import build_objectives
from hftransfer.objectives.owned import WithObjectiveModules
from hftransfer.registry import get_objective, register_objective
from tests.conftest import make_ner_examples

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "recipes" / "configs" / "minilm" / "distill_ner.yaml"
LABELS = ["O", "B-per", "I-per", "B-loc", "I-loc"]


def _model(tokenizer, hidden_size: int, seed: int) -> torch.nn.Module:
    """A 2-layer BERT tagger without dropout (so a second forward pass gives the same outputs)."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=20, num_labels=len(LABELS),
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        attn_implementation="eager")  # fmt: skip
    return AutoModelForTokenClassification.from_config(config)


@pytest.fixture(scope="module")
def setting(tiny_model_dir):
    """Teacher (width 32), student (width 24), the teacher's word-level logits and two student batches."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    features, _ = tokenize_token_task(
        Dataset.from_list(make_ner_examples(8, seed=5)),
        tokenizer,
        {label: i for i, label in enumerate(LABELS)},
        max_length=16,
    )
    collate = FeatureCollator(tokenizer)
    batches = [collate([features[i] for i in range(start, start + 4)]) for start in (0, 4)]
    teacher = _model(tokenizer, 32, seed=0).eval().requires_grad_(False)
    logits = TeacherLogits("token-classification", len(LABELS))
    for batch in batches:  # the teacher's logits at each word's first subword (same tokenizer)
        with torch.no_grad():
            out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for row, example_id in enumerate(batch["example_id"].tolist()):
            first = batch["word_index"][row] >= 0
            logits.per_example[example_id] = out[row][first]
    return types.SimpleNamespace(tokenizer=tokenizer, teacher=teacher, logits=logits, batches=batches)


def _objectives(setting, student, *specs: dict, outputs: tuple[str, ...] = ()):
    config = types.SimpleNamespace(objectives=[objective_config(spec) for spec in specs])
    context = TeacherContext(
        Teacher(setting.teacher, setting.tokenizer, list(range(len(LABELS))), "teacher"),
        setting.logits,
        shares_tokenizer=True,
        layer_map=uniform_layer_map(2, 2),
        forward_outputs=frozenset(outputs),
    )
    objectives = build_objectives(config, student, teacher=context)
    model = WithObjectiveModules(student, objectives.owners) if objectives.owners else student
    return objectives, model, context


def test_soft_term_is_t_squared_kl_to_the_teachers_softened_predictions(setting):
    student = _model(setting.tokenizer, 24, seed=1)
    objectives, model, _ = _objectives(
        setting, student, {"name": "task"}, {"name": "distill_soft", "weight": 0.3, "temperature": 3.0}
    )
    batch = setting.batches[0]
    _, terms = objectives(model, batch)
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = setting.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    first = batch["word_index"] >= 0
    p_teacher = torch.softmax(t[first] / 3.0, -1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(s[first] / 3.0, -1))).sum(-1)
    assert terms["loss_soft"].item() == pytest.approx(0.3 * 9.0 * kl.mean().item(), rel=1e-5)


def test_hidden_term_matches_projected_student_states_and_owns_the_projection(setting):
    student = _model(setting.tokenizer, 24, seed=1)
    objectives, model, _ = _objectives(
        setting,
        student,
        {"name": "task"},
        {"name": "distill_hidden", "weight": 2.0},
        outputs=("hidden_states",),
    )
    (owner,) = objectives.owners
    assert owner.name == "distill_hidden" and len(owner.module.maps) == 2  # one map per pair, 24 -> 32
    batch = setting.batches[0]
    _, terms = objectives(model, batch)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        s = student(**inputs, output_hidden_states=True).hidden_states
        t = setting.teacher(**inputs, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].bool()
        per_layer = [
            (owner.module.maps[i](s[layer]) - t[layer]).pow(2).mean(-1)[mask].mean()
            for i, layer in enumerate((1, 2))  # the uniform map of 2 -> 2 layers
        ]
    assert terms["loss_hidden"].item() == pytest.approx(2.0 * torch.stack(per_layer).mean().item(), rel=1e-5)
    terms["loss_hidden"].backward()
    assert owner.module.maps[0].weight.grad is not None  # the projection learns with the student


def test_attention_term_is_the_mse_of_attention_maps_over_real_token_pairs(setting):
    student = _model(setting.tokenizer, 32, seed=1)
    objectives, model, _ = _objectives(
        setting,
        student,
        {"name": "task"},
        {"name": "distill_attention", "weight": 0.5},
        outputs=("attentions",),
    )
    batch = setting.batches[1]
    _, terms = objectives(model, batch)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        s = student(**inputs, output_attentions=True).attentions
        t = setting.teacher(**inputs, output_attentions=True).attentions
    real = batch["attention_mask"].bool()
    pairs = (real[:, None, :, None] & real[:, None, None, :]).expand_as(s[0])  # [batch, heads, q, k]
    per_layer = [(s[i] - t[i]).pow(2)[pairs].mean() for i in (0, 1)]
    assert terms["loss_attention"].item() == pytest.approx(
        0.5 * torch.stack(per_layer).mean().item(), rel=1e-5
    )


def test_hidden_and_attention_terms_share_one_teacher_pass_per_batch(setting):
    student = _model(setting.tokenizer, 32, seed=1)
    objectives, model, context = _objectives(
        setting,
        student,
        {"name": "l2sp", "weight": 0.1},  # a regulariser listed first still adds up last
        {"name": "task"},
        {"name": "distill_soft"},
        {"name": "distill_hidden"},
        {"name": "distill_attention"},
        outputs=("hidden_states", "attentions"),
    )
    calls = []
    handle = setting.teacher.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        for batch in setting.batches:
            _, terms = objectives(model, batch)
    finally:
        handle.remove()
    assert len(calls) == context.forward_passes == len(setting.batches)
    assert list(terms) == ["loss_soft", "loss_hidden", "loss_attention", "penalty_l2sp"]


def test_registrations_declare_what_they_read_from_the_teacher():
    assert get_objective("distill_soft").teacher_outputs == ("logits",)
    assert get_objective("distill_hidden").needs_teacher and get_objective("distill_attention").needs_teacher
    assert not get_objective("task").needs_teacher and not get_objective("l2sp").needs_teacher
    with pytest.raises(ValueError, match="teacher_outputs"):
        register_objective("bad_teacher_reader", build=lambda context: None, teacher_outputs=("logit",))
    with pytest.raises(ConfigError, match=r"distill_soft.temperature must be > 0"):
        objective_config({"name": "distill_soft", "temperature": 0})


def test_a_run_without_a_teacher_refuses_an_objective_that_reads_one(tiny_model_dir, ner_files, tmp_path):
    sys.path.insert(0, str(ROOT / "recipes"))
    import finetune_ner

    argv = [f"model.name_or_path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", "train.trackers=[]",
            *[f"data.{split}_file={path}" for split, path in ner_files.items()],
            "objectives+=[{name: distill_soft}]"]  # fmt: skip
    with pytest.raises(ConfigError, match=r"objectives: distill_soft needs a teacher.*recipes/distill.py"):
        finetune_ner.main(argv)
    assert not list((tmp_path / "run").glob("checkpoints/*"))  # refused before any training


def test_old_distill_weight_keys_fail_naming_the_new_form(tmp_path):
    base = ["distill.teacher=runs/t"]
    cases = {
        "distill.soft_weight=0.7": r"objectives\+=\[\{name: distill_soft, weight: 0.7\}\] or "
        r"objectives.distill_soft.weight=0.7",
        "distill.hard_weight=1": r"objectives.task.weight=1",
        "distill.temperature=3": r"objectives.distill_soft.temperature=3",
        "distill.hidden_weight=1": r"objectives\+=\[\{name: distill_hidden, weight: 1\}\]",
        "distill.attention_weight=0": r"leave distill_attention out of objectives",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_config([*base, override], default_config=PRESET, schema=DistillRunConfig)
    user_file = tmp_path / "mine.yaml"  # a user's YAML with some of the old keys
    user_file.write_text(yaml.safe_dump({"distill": {"teacher": "runs/t", "soft_weight": 0.9}}))
    with pytest.raises(ConfigError, match=r"mine.yaml: distill.soft_weight moved.*distill_soft, weight: 0.9"):
        parse_config(["--config", str(user_file)], default_config=PRESET, schema=DistillRunConfig)


def _old_saved_config(tmp_path: Path, objectives: list[dict], **weights: float) -> Path:
    """A config.yaml as the previous version saved it: every distill field, the task objective at weight 1."""
    config = parse_config(["distill.teacher=runs/t"], default_config=PRESET, schema=DistillRunConfig)
    save_config(config, tmp_path / "new.yaml")
    content = yaml.safe_load((tmp_path / "new.yaml").read_text())
    old = {"hard_weight": 0.5, "soft_weight": 0.5, "temperature": 2.0, "hidden_weight": 0.0,
           "attention_weight": 0.0, **weights}  # fmt: skip
    distill = content["distill"]
    content["distill"] = {**{k: distill[k] for k in ("teacher", "teacher_revision", "student", "student_layers")},
                          **old, **{k: v for k, v in distill.items() if k not in old}}  # fmt: skip
    content["objectives"] = objectives
    path = tmp_path / f"old-{len(list(tmp_path.glob('old-*')))}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def test_an_older_run_directorys_config_loads_with_the_same_meaning(tmp_path):
    from hftransfer.config.sections import older_objectives
    from hftransfer.hub.card import describe_objectives

    def loaded(path: Path) -> list[tuple]:
        config = parse_config(["--config", str(path)], schema=DistillRunConfig)
        again = parse_config(["--config", str(path)], default_config=PRESET, schema=DistillRunConfig)
        assert again.objectives == config.objectives  # the recipe's preset does not change it
        return [(o.name, o.weight, getattr(o, "temperature", None)) for o in config.objectives]

    task = [{"name": "task", "weight": 1.0}]
    assert loaded(_old_saved_config(tmp_path, task)) == [("task", 0.5, None), ("distill_soft", 0.5, 2.0)]
    old = _old_saved_config(tmp_path, [*task, {"name": "l2sp", "weight": 0.01}], hard_weight=0.3, soft_weight=0.7,
                            temperature=3.0, hidden_weight=1.0)  # fmt: skip
    assert loaded(old) == [
        ("task", 0.3, None), ("distill_soft", 0.7, 3.0), ("distill_hidden", 1.0, None), ("l2sp", 0.01, None)
    ]  # fmt: skip
    hard_only = _old_saved_config(tmp_path, task, hard_weight=1.0, soft_weight=0.0)
    assert loaded(hard_only) == [("task", 1.0, None)]
    # the model card of such a run describes its distillation terms
    lines = describe_objectives(older_objectives(yaml.safe_load(old.read_text())))
    assert lines == [
        "cross-entropy on the labels (weight 0.3)",
        "distillation from the teacher's soft labels (T=3.0, weight 0.7)",
        "hidden-state matching with the teacher (MSE, weight 1.0)",
        "L2-SP 0.01",
    ]


def test_the_default_and_saved_objectives_of_a_distillation_run(tmp_path):
    # no preset: the schema's default
    config = parse_config(["distill.teacher=runs/t"], schema=DistillRunConfig)
    assert [(o.name, o.weight) for o in config.objectives] == [("task", 0.5), ("distill_soft", 0.5)]
    config = parse_config(
        ["distill.teacher=runs/t", "objectives+=[{name: distill_attention}]", "objectives.task.weight=2"],
        default_config=PRESET,
        schema=DistillRunConfig,
    )
    save_config(config, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert "soft_weight" not in saved["distill"] and saved["objectives"][1]["temperature"] == 2.0
    again = parse_config(["--config", str(tmp_path / "config.yaml")], schema=DistillRunConfig)
    assert again.objectives == config.objectives
    with pytest.raises(ConfigError, match="transfer_data has no gold labels.*distill_soft"):
        parse_config(["distill.teacher=runs/t", "distill.transfer_data=x.txt", "objectives=[task]"],
                     schema=DistillRunConfig)  # fmt: skip
    with pytest.raises(ConfigError, match="layer_map is set but no objective compares layers"):
        parse_config(["distill.teacher=runs/t", "distill.layer_map=[[1,1]]"], schema=DistillRunConfig)
    # a term that is off is one not listed
    with pytest.raises(ConfigError, match="distill_hidden.weight must be > 0"):
        parse_config(["distill.teacher=runs/t", "objectives+=[{name: distill_hidden, weight: 0}]"],
                     schema=DistillRunConfig)  # fmt: skip

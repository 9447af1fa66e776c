"""``hftransfer tune``: the search-space file and its errors, a study of trials on a tiny BERT (run directories,
trials.csv, best.yaml that the recipe parses), pruning, resuming (a killed trial re-queued, the count continued),
and the one-line message when optuna is missing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from hftransfer.cli import main
from hftransfer.errors import ConfigError
from hftransfer.tune.command import default_space
from hftransfer.tune.flows import recipe_flow
from hftransfer.tune.space import check_space, load_space, override
from tests.conftest import make_ner_examples, write_conll

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
NER_PRESET = ROOT / "recipes" / "configs" / "minilm" / "ner_full.yaml"
MEDIAN = "{type: median, startup_trials: 1, warmup_epochs: 1}"
SPACE = """
sampler: {seed: 0}
pruner: MEDIAN
params:
  train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
  strategy.head_lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
  train.batch_size: {type: categorical, choices: [16, 32]}
"""
GOOD = {"train.lr": 3.0e-3, "strategy.head_lr": 3.0e-3, "train.batch_size": 16}
BAD = {"train.lr": 1.0e-4, "strategy.head_lr": 1.0e-4, "train.batch_size": 16}


@pytest.fixture()
def toy(tiny_model_dir, tmp_path) -> dict:
    """Overrides for a run of 2 epochs of 2 steps on toy NER files, and a search space."""
    files = {
        split: write_conll(tmp_path / f"{split}.conll", make_ner_examples(n, seed=seed))
        for split, n, seed in (("train", 32, 1), ("dev", 16, 2), ("test", 16, 3))
    }
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("MEDIAN", MEDIAN))
    overrides = [
        f"model.name_or_path={tiny_model_dir}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['dev']}",
        f"data.test_file={files['test']}",
        "train.epochs=2",
        "train.trackers=[]",
        "train.log_every_steps=0",
    ]
    return {"space": space, "overrides": overrides, "study": tmp_path / "study"}


def tune(toy: dict, trials: int, *extra: str) -> int:
    command = ["tune", str(NER_PRESET), "--trials", str(trials), "--space", str(toy["space"])]
    return main([*command, "--study-dir", str(toy["study"]), *toy["overrides"], *extra])


def load_study(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(directory / "study.journal"))
    )
    return optuna.create_study(
        storage=storage, study_name="hftransfer-tune", direction="maximize", load_if_exists=True
    )


# --- the search-space file ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params: {train.lr: {type: float, low: 1, high: 0.1}}", "train.lr: low (1) must be below high"),
        (
            "params: {train.lr: {type: float, low: 0, high: 1, log: true}}",
            "train.lr: log: true needs low > 0",
        ),
        (
            "params: {train.lr: {type: gauss, low: 0, high: 1}}",
            "train.lr: expected {type: float|int|categorical",
        ),
        (
            "params: {train.lr: {type: float, low: 1e-5, high: 1e-3, lg: true}}",
            "train.lr: unknown field 'lg'",
        ),
        ("params: {train.epochs: {type: int, low: 1.5, high: 3}}", "train.epochs: low must be an integer"),
        ("params: {strategy.target_modules: {type: categorical, choices: [[query]]}}", "is not a scalar"),
        ("params: {output_dir: {type: categorical, choices: [a]}}", "output_dir: set by tune"),
        (
            "prunner: {type: median}\nparams: {train.lr: {type: float, low: 1, high: 2}}",
            "prunner: unknown setting",
        ),
        (
            "pruner: {type: hyperband}\nparams: {train.lr: {type: float, low: 1, high: 2}}",
            "pruner.type: expected",
        ),
        ("direction: up\nparams: {train.lr: {type: float, low: 1, high: 2}}", "direction: expected maximize"),
        ("metric: f1", "params: expected a mapping"),
        ("params: [", "not valid YAML"),
    ],
)
def test_bad_space_files_fail_naming_file_and_key(text, message, tmp_path):
    path = tmp_path / "bad.tune.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_space(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_space_keys_are_checked_against_the_recipe_config(tmp_path):
    flow = recipe_flow(NER_PRESET)
    argv = ["--config", str(NER_PRESET)]
    for text, message in [
        ("params: {train.lrr: {type: float, low: 1.0e-5, high: 1.0e-3}}", "train.lrr: 1e-05 is refused"),
        (
            "params: {strategy.r: {type: int, low: 4, high: 16}}",
            "strategy.r: 4 is refused",
        ),  # not a full field
        (
            "params: {train.batch_size: {type: categorical, choices: [16, big]}}",
            "train.batch_size: 'big' is refused",
        ),
    ]:
        path = tmp_path / "space.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="^" + str(path) + ": ") as error:
            check_space(load_space(path), flow.parse, argv)
        assert message in str(error.value)
    path.write_text("params: {train.lr: {type: float, low: 1.0e-5, high: 1.0e-3}}")
    with pytest.raises(ConfigError, match="train.lr: also set on the command line"):
        check_space(load_space(path), flow.parse, [*argv, "train.lr=1e-4"])


def test_the_shipped_space_validates_and_is_found_next_to_its_preset():
    space_path = default_space(NER_PRESET)
    assert space_path.parent == NER_PRESET.parent and space_path.name.startswith("ner_full.tune.")
    space = load_space(space_path)
    assert {
        "train.lr",
        "strategy.head_lr",
        "strategy.layer_lr_decay",
        "train.epochs",
        "train.batch_size",
    } <= set(space.params)
    check_space(space, recipe_flow(NER_PRESET).parse, ["--config", str(NER_PRESET)])


def test_default_space_names_the_file_it_looked_for(tmp_path):
    preset = tmp_path / "mine.yaml"
    with pytest.raises(ConfigError, match=r"mine.yaml: no search space next to it \(mine.tune.yaml\)"):
        default_space(preset)


def test_overrides_are_yaml_the_recipes_parse():
    assert override("train.lr", 1e-5) == "train.lr=1.0e-05"  # a dot: YAML 1.1 reads 1e-05 as a string
    assert override("train.batch_size", 32) == "train.batch_size=32"
    assert override("strategy.target_modules", "[query,value]") == "strategy.target_modules=[query,value]"
    assert override("model.head_bias_init", None) == "model.head_bias_init=null"


# --- studies -----------------------------------------------------------------------------------------------------


def test_study_writes_trials_and_best_preset_and_resumes_after_a_kill(toy, capsys):
    # Trials 0 and 1 get the same values: in one process, the second must score exactly as the first (seeds,
    # dropout, Accelerate state and logging do not leak from one trial into the next).
    toy["space"].write_text(SPACE.replace("MEDIAN", "{type: none}"))
    toy["overrides"].append("train.epochs=1")  # no pruning here: one epoch is enough
    study = load_study(toy["study"])
    study.enqueue_trial(GOOD)
    study.enqueue_trial(GOOD)
    assert tune(toy, 2) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((toy["study"] / "trials.csv").open()))
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "complete"), ("1", "complete")]
    assert rows[0]["value"] == rows[1]["value"] and float(rows[0]["value"]) > 0
    assert "validation f1" in out and "0*" in out and f"best: {toy['study'] / 'best.yaml'}" in out
    for number in (0, 1):
        run = toy["study"] / "trials" / str(number)
        assert (run / "config.yaml").is_file() and (run / "metrics.json").is_file()
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == GOOD["train.lr"]
    # the best trial keeps its model, the others their files only
    assert (toy["study"] / "trials" / "0" / "model").is_dir()
    assert not (toy["study"] / "trials" / "1" / "model").exists()

    best = toy["study"] / "best.yaml"
    assert best.read_text().startswith(f"# accelerate launch recipes/finetune_ner.py --config {best}\n")
    flow = recipe_flow(NER_PRESET)
    from_best = flow.parse(["--config", str(best)]).to_dict()
    trial_config = flow.parse(["--config", str(toy["study"] / "trials" / "0" / "config.yaml")]).to_dict()
    for config in (from_best, trial_config):
        config.pop("output_dir"), config.pop("overwrite_output_dir")
    assert from_best == trial_config
    assert yaml.safe_load(best.read_text())["strategy"] == {
        "name": "full",
        "head_lr": 3e-3,
        "layer_lr_decay": 1.0,
    }

    # A trial whose process was killed stays RUNNING in the storage; the next run marks it failed, runs its values
    # again, and counts on from the trials it already has.
    study = load_study(toy["study"])
    study.enqueue_trial({**GOOD, "train.lr": 1e-3})
    killed = study.ask()
    load_space(toy["space"]).suggest(killed)
    assert tune(toy, 3) == 0
    trials = load_study(toy["study"]).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[3].params == trials[2].params and trials[3].user_attrs["retry_of"] == 2
    assert len(list(csv.DictReader((toy["study"] / "trials.csv").open()))) == 4

    # Enough trials: nothing runs. Another override than the study started with: refused, naming it.
    assert tune(toy, 3) == 0 and len(load_study(toy["study"]).trials) == 4
    capsys.readouterr()
    assert tune(toy, 4, "train.warmup_ratio=0.0") == 2
    assert "holds a study with another overrides" in capsys.readouterr().err


def test_a_clearly_worse_trial_is_pruned_at_the_validation_that_pruned_it(toy, capsys):
    # The median pruner (1 startup trial, 1 warm-up epoch): a learning rate 30x too low trails the first trial at
    # epoch 1 and stops there instead of training its second epoch.
    study = load_study(toy["study"])
    study.enqueue_trial(GOOD)
    study.enqueue_trial(BAD)
    assert tune(toy, 2) == 0
    trials = load_study(toy["study"]).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert list(trials[0].intermediate_values) == [1000, 2000]  # reported at epochs 1 and 2, in 1/1000 epochs
    assert list(trials[1].intermediate_values) == [1000] and trials[1].user_attrs["pruned_at_epoch"] == 1.0
    assert trials[1].intermediate_values[1000] < trials[0].intermediate_values[1000]
    run = toy["study"] / "trials" / "1"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["split"] == "validation"] == [
        1.0
    ]  # no second epoch, no final eval
    assert not (run / "metrics.json").exists() and not (run / "model").exists()
    assert "pruned @1" in capsys.readouterr().out
    # A pruner that prunes everything: no finished trial, so no best.yaml to recommend.
    toy["space"].write_text(SPACE.replace("MEDIAN", "{type: threshold, lower: 2.0}"))
    other = {**toy, "study": toy["study"].with_name("all-pruned")}
    assert tune(other, 1) == 0
    assert [t.state.name for t in load_study(other["study"]).trials] == ["PRUNED"]
    assert not (other["study"] / "best.yaml").exists() and (other["study"] / "trials.csv").is_file()


def test_an_interrupted_trial_is_failed_and_queued_again(toy, monkeypatch, capsys):
    import hftransfer.tune.study as study_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "run_trial", interrupted)
    assert tune(toy, 2) == 130
    trials = load_study(toy["study"]).trials
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].system_attrs["fixed_params"] == trials[0].params and trials[1].user_attrs == {
        "retry_of": 0
    }
    assert "fail" in (toy["study"] / "trials.csv").read_text()


def test_missing_optuna_is_one_line_naming_the_extra(toy, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else find_spec(name, *a)
    )
    assert tune(toy, 1) == 2
    err = capsys.readouterr().err
    assert err == 'error: hyper-parameter search needs optuna: pip install "hftransfer[tune]"\n'
    assert not toy["study"].exists()

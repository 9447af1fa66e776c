"""Multi-label and regression heads (``data.problem_type``): reading, loss, threshold, metrics, every strategy,
exports that plain transformers loads, Predictor rows, the model card, and the flows that refuse them.

Data is made here: toy texts whose labels follow from their words (a person / a place / a positive word is named;
the number of positive minus negative words), so even the tiny BERT of ``conftest.py`` learns something.
"""

from __future__ import annotations

import json
import random
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, pipeline

from hftransfer.config import DataConfig, ModelConfig, parse_config
from hftransfer.config.problem import MULTI_LABEL, REGRESSION
from hftransfer.data.batching import FeatureCollator, count_items
from hftransfer.data.sources import load_task_data
from hftransfer.errors import ConfigError, DataError
from hftransfer.evaluation.inference import model_inputs, per_row_loss
from hftransfer.evaluation.metrics import regression_metrics
from hftransfer.evaluation.multilabel import choose_threshold, f1_scores, multilabel_metrics
from hftransfer.flow.layout import tokenize_task
from hftransfer.hub.card import CardFacts, build_card
from hftransfer.modeling.build import build_model, load_tokenizer
from hftransfer.objectives.task import summed_task_loss
from hftransfer.predict import Predictor
from hftransfer.strategies.feature_cache import encode_features, feature_cache_key
from hftransfer.utils import run_main
from tests.conftest import NEGATIVE, PERSONS, PLACES, POSITIVE, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_classifier  # noqa: E402

SEQ = "sequence-classification"


def multilabel_rows(n: int, seed: int) -> list[dict]:
    """``this alice in paris good today`` -> ``[person, place, positive]``; each label on 30% of the texts, a third of
    them have none (so the loss falls from the first steps, as the head's biases learn the labels' rarity)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, labels = ["this"], []
        if rng.random() < 0.3:
            words.append(rng.choice(PERSONS))
            labels.append("person")
        if rng.random() < 0.3:
            words += ["in", rng.choice(PLACES)]
            labels.append("place")
        if rng.random() < 0.3:
            words.append(rng.choice(POSITIVE))
            labels.append("positive")
        rows.append({"text": " ".join(words + ["today"]), "labels": labels})
    return rows


def regression_rows(n: int, seed: int) -> list[dict]:
    """``this film was good awful good`` -> 1.0 (positive words minus negative words)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive, negative = rng.randint(0, 3), rng.randint(0, 3)
        words = [rng.choice(POSITIVE) for _ in range(positive)] + [
            rng.choice(NEGATIVE) for _ in range(negative)
        ]
        rng.shuffle(words)
        rows.append({"text": " ".join(["this", "film", "was", *words]), "label": float(positive - negative)})
    return rows


def task_files(tmp_path: Path, kind: str) -> dict[str, Path]:
    make = multilabel_rows if kind == MULTI_LABEL else regression_rows
    sizes = {"train": (48, 1), "dev": (16, 2), "test": (16, 3)}
    return {
        split: write_jsonl(tmp_path / f"{split}.jsonl", make(n, seed)) for split, (n, seed) in sizes.items()
    }


def run_args(model_dir: Path, files: dict[str, Path], run_dir: Path, kind: str) -> list[str]:
    args = [
        f"model.name_or_path={model_dir}",
        f"output_dir={run_dir}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['dev']}",
        f"data.test_file={files['test']}",
        f"data.problem_type={kind}",
        "data.max_length=16",
        f"train.metric_for_best={'micro_f1' if kind == MULTI_LABEL else 'mse'}",
        "train.lr=5e-3",
        "train.batch_size=16",
        "train.warmup_ratio=0.0",
        "train.log_every_steps=1",
        "train.trackers=[]",
    ]
    return args + (["data.label_column=labels"] if kind == MULTI_LABEL else [])


def data_config(path: Path, **fields) -> DataConfig:
    return DataConfig(train_file=str(path), validation_size=0.0, test_size=0.0, **fields)


# ----------------------------------------------------------------------------------------------------- reading
def test_multilabel_lists_separators_and_empty_rows_are_read(tmp_path):
    jsonl = write_jsonl(
        tmp_path / "ml.jsonl",
        [
            {"text": "a b", "labels": ["x", "y"]},
            {"text": "c", "labels": []},
            {"text": "d", "labels": ["y", "y"]},
        ],
    )
    data = load_task_data(data_config(jsonl, problem_type=MULTI_LABEL, label_column="labels"), SEQ)
    assert data.label_names == ["x", "y"]
    assert data.splits["train"]["label"] == [["x", "y"], [], ["y"]]
    csv = tmp_path / "ml.csv"
    csv.write_text('text,tags\n"a, b",x|z\nc,\nd,z\n', encoding="utf-8")
    config = data_config(csv, problem_type=MULTI_LABEL, label_column="tags", label_separator="|")
    data = load_task_data(config, SEQ)
    assert data.splits["train"]["label"] == [["x", "z"], [], ["z"]] and data.label_names == ["x", "z"]
    # label_map renames inside the lists, drop_labels takes a label out of them (the rows stay)
    config = data_config(csv, problem_type=MULTI_LABEL, label_column="tags", label_separator="|",
                         label_map={"x": "ex"}, drop_labels=["z"])  # fmt: skip
    data = load_task_data(config, SEQ)
    assert data.splits["train"]["label"] == [["ex"], [], []] and data.label_names == ["ex"]


def test_reading_errors_name_the_file_and_line(tmp_path):
    csv = tmp_path / "reg.csv"
    csv.write_text("text,score\nfine,3.5\nbad,high\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"reg\.csv:3: column 'score' must hold a number .*'high'"):
        load_task_data(data_config(csv, problem_type=REGRESSION, label_column="score"), SEQ)
    jsonl = write_jsonl(
        tmp_path / "reg.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": float("nan")}]
    )
    with pytest.raises(DataError, match=r"reg\.jsonl:2: .* must be finite"):
        load_task_data(data_config(jsonl, problem_type=REGRESSION), SEQ)
    jsonl = write_jsonl(
        tmp_path / "ml.jsonl", [{"text": "a", "label": ["x"]}, {"text": "b", "label": {"x": 1}}]
    )
    with pytest.raises(DataError, match=r"ml\.jsonl:2: column 'label' must hold a list of labels"):
        load_task_data(data_config(jsonl, problem_type=MULTI_LABEL), SEQ)
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": "a", "label": ["x"]}, {"text": "b", "label": ["y"]}]
    )
    dev = write_jsonl(
        tmp_path / "dev.jsonl", [{"text": "a", "label": ["x"]}, {"text": "c", "label": ["x", "w"]}]
    )
    config = DataConfig(
        train_file=str(train), validation_file=str(dev), test_size=0.0, problem_type=MULTI_LABEL
    )
    with pytest.raises(DataError, match=r"dev\.jsonl:2: labels \['w'\] do not occur in the training data"):
        load_task_data(config, SEQ)
    numeric_text = write_jsonl(tmp_path / "ok.jsonl", [{"text": "a", "label": "2.5"}])
    data = load_task_data(data_config(numeric_text, problem_type=REGRESSION), SEQ)
    assert data.splits["train"]["label"] == [2.5] and data.label_names == ["label"]


def test_config_checks_name_the_field():
    with pytest.raises(ConfigError, match="data.label_separator='|' .* data.problem_type=multi_label"):
        DataConfig(train_file="x.csv", label_separator="|")
    with pytest.raises(ConfigError, match="data.label_map names class labels; data.problem_type=regression"):
        DataConfig(train_file="x.csv", problem_type=REGRESSION, label_map={"a": "b"})
    with pytest.raises(ConfigError, match="data.problem_type=regression is for task=sequence-classification"):
        parse_config(["data.train_file=x.conll", "data.problem_type=regression"])
    with pytest.raises(
        ConfigError, match="train.metric_for_best=accuracy is not reported with data.problem_type"
    ):
        parse_config([f"task={SEQ}", "data.train_file=x.csv", "data.problem_type=regression",
                      "train.metric_for_best=accuracy"])  # fmt: skip
    config = parse_config([f"task={SEQ}", "data.train_file=x.csv", "data.problem_type=regression"])
    assert config.metric_for_best() == "mse" and config.greater_is_better() is False
    config = parse_config([f"task={SEQ}", "data.train_file=x.csv", f"data.problem_type={MULTI_LABEL}"])
    assert config.metric_for_best() == "micro_f1" and config.greater_is_better() is True


# -------------------------------------------------------------------------------------- batches and the loss
@pytest.mark.parametrize("kind", [MULTI_LABEL, REGRESSION])
def test_batches_and_summed_loss_match_the_hf_models_own_loss(tiny_model_dir, tmp_path, kind):
    files = task_files(tmp_path, kind)
    config = data_config(
        files["train"], problem_type=kind, label_column="labels" if kind == MULTI_LABEL else "label"
    )
    data = load_task_data(config, SEQ)
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    features, _ = tokenize_task(data, tokenizer, SEQ, config)
    batch = FeatureCollator(tokenizer)([features["train"][i] for i in range(8)])
    labels = batch["labels"]
    assert labels.dtype == torch.float32
    assert labels.shape == ((8, len(data.label_names)) if kind == MULTI_LABEL else (8,))
    assert int(count_items(batch)) == labels.numel()
    torch.manual_seed(0)
    model = build_model(ModelConfig(name_or_path=str(tiny_model_dir)), SEQ, data.label_names, kind).eval()
    assert model.config.problem_type == kind
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
        theirs = model(
            **model_inputs(batch), labels=labels
        ).loss  # transformers' own problem_type loss (a mean)
        ours = summed_task_loss(logits, labels) / count_items(batch)
        rows, counts = per_row_loss(logits, labels)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(rows.sum() / counts.sum(), theirs)
    # a frozen encoder's cached features keep the float labels as they are
    store = encode_features(model, tokenizer, features["train"], layer=-1, task=SEQ)
    expected = torch.tensor(features["train"]["labels"], dtype=torch.float32)
    assert store.labels.dtype == torch.float32 and torch.equal(store.labels, expected)


def test_feature_cache_key_tells_float_labels_apart(tiny_model_dir):
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    model = build_model(ModelConfig(name_or_path=str(tiny_model_dir)), SEQ, ["label"], REGRESSION)
    base = {"input_ids": [[2, 6, 3]], "attention_mask": [[1, 1, 1]], "example_id": [0]}
    keys = {
        feature_cache_key(
            model,
            tokenizer,
            Dataset.from_dict({**base, "labels": [value]}),
            layer=-1,
            num_layers=1,
            pooling="mean",
            task=SEQ,
        )  # fmt: skip
        for value in (3.5, 3.7)
    }
    assert len(keys) == 2  # as integers both would be 3


# ------------------------------------------------------------------------------------- threshold and metrics
def test_threshold_chosen_on_validation_beats_a_fixed_bad_threshold():
    # An under-confident model: every gold label gets 0.3-0.4, every other 0.05-0.2. At 0.5 nothing is predicted.
    rng = np.random.default_rng(0)
    gold = rng.random((40, 4)) < 0.4
    probabilities = np.where(gold, rng.uniform(0.3, 0.4, gold.shape), rng.uniform(0.05, 0.2, gold.shape))
    chosen = choose_threshold(probabilities, gold)
    assert 0.2 < chosen <= 0.3
    names = ["a", "b", "c", "d"]
    labels = [[n for n, g in zip(names, row) if g] for row in gold]
    tuned = multilabel_metrics(probabilities, labels, names)  # threshold None: chosen on these rows
    fixed = multilabel_metrics(probabilities, labels, names, threshold=0.5)
    assert tuned["threshold"] == chosen and tuned["micro_f1"] == 1.0 and fixed["micro_f1"] == 0.0
    assert choose_threshold(probabilities, gold, "macro_f1") == chosen


def test_metrics_equal_hand_computed_values():
    # gold: {a}, {a, b}, {}; predicted at 0.5: {a}, {b}, {b} -> tp a=1, b=1; fp b=1; fn a=1
    probabilities = [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]
    metrics = multilabel_metrics(probabilities, [["a"], ["a", "b"], []], ["a", "b"], threshold=0.5)
    assert metrics["micro_precision"] == pytest.approx(2 / 3) and metrics["micro_recall"] == pytest.approx(
        2 / 3
    )
    assert metrics["micro_f1"] == pytest.approx(2 / 3)
    # F1(a) = 2*1 / (2*1 + 0 + 1) = 2/3; F1(b) = 2*1 / (2*1 + 1 + 0) = 2/3
    assert metrics["macro_f1"] == pytest.approx(2 / 3) and metrics["per_class/a/support"] == 2
    rng = np.random.default_rng(1)
    true, pred = rng.random((30, 5)) < 0.3, rng.random((30, 5)) < 0.3
    true[:, 4] = pred[:, 4] = False  # a label nobody has: sklearn's zero_division=0
    ours = f1_scores(true, pred)
    assert ours["micro_f1"] == pytest.approx(f1_score(true, pred, average="micro", zero_division=0))
    assert ours["macro_f1"] == pytest.approx(f1_score(true, pred, average="macro", zero_division=0))
    scores = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 5.0])
    assert scores["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert scores["pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1.5, 2, 2.5, 5])[0, 1])
    assert scores["spearman"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ training
def _train_records(run_dir: Path) -> list[dict]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [record for record in records if record["split"] == "train"]


@pytest.mark.parametrize("kind", [MULTI_LABEL, REGRESSION])
@pytest.mark.parametrize("strategy", ["full", "frozen", "lora"])
def test_training_exports_a_model_that_transformers_and_predictor_load(
    tiny_model_dir, tmp_path, kind, strategy
):
    files = task_files(tmp_path, kind)
    run_dir = tmp_path / "run"
    args = run_args(tiny_model_dir, files, run_dir, kind) + [f"strategy.name={strategy}", "train.max_steps=6"]
    if strategy == "frozen":  # a CLS-pooled MLP head exports as transformers' own sequence head
        args += [
            "strategy.head=mlp",
            "strategy.pooling=cls",
            "train.lr=2e-2",
            "strategy.cache_dir=" + str(tmp_path),
        ]
    metrics = finetune_classifier.main(args)
    losses = [record["loss"] for record in _train_records(run_dir)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    headline = (
        ("micro_f1", "macro_f1", "threshold") if kind == MULTI_LABEL else ("mse", "pearson", "spearman")
    )
    assert set(headline) <= set(metrics["test"]) and metrics["data"]["problem_type"] == kind
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["problem_type"] == kind
    if kind == MULTI_LABEL:  # the threshold of the best model, chosen on validation, used on test
        assert (
            config["multilabel_threshold"]
            == metrics["validation"]["threshold"]
            == metrics["test"]["threshold"]
        )
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert model.config.problem_type == kind
    assert model.config.num_labels == (3 if kind == MULTI_LABEL else 1)

    texts = ["this alice in paris good today", "this film was good good awful"]
    rows = Predictor(str(run_dir / "model"), cpu=True).predict(Dataset.from_dict({"text": texts})).rows
    if kind == MULTI_LABEL:
        assert set(rows[0]["scores"]) == {"person", "place", "positive"}
        assert rows[0]["labels"] == [
            n for n, p in rows[0]["scores"].items() if p >= config["multilabel_threshold"]
        ]
    else:
        assert set(rows[0]) == {"text", "value"} and isinstance(rows[0]["value"], float)
    if strategy == "lora":  # the adapter alone reloads with its problem type and threshold too
        adapter = Predictor(str(run_dir / "adapter"), cpu=True)
        assert adapter.problem_type == kind
        again = adapter.predict(Dataset.from_dict({"text": texts})).rows
        key = "scores" if kind == MULTI_LABEL else "value"
        assert again[1][key] == pytest.approx(rows[1][key], abs=1e-3)
    if strategy == "full":
        outputs = pipeline("text-classification", model=str(run_dir / "model"), top_k=None)([texts[0]])[0]
        if kind == MULTI_LABEL:  # pipeline applies a sigmoid per label, like Predictor
            assert {o["label"]: round(o["score"], 4) for o in outputs} == pytest.approx(
                rows[0]["scores"], abs=1e-3
            )
        else:  # and returns the number itself
            assert outputs[0]["score"] == pytest.approx(rows[0]["value"], abs=1e-4)


@pytest.mark.parametrize(
    "strategy, kind",
    [("freeze", MULTI_LABEL), ("gradual", REGRESSION), ("bitfit", REGRESSION), ("ia3", MULTI_LABEL)],
)
def test_other_strategies_train_and_keep_the_problem_type(tiny_model_dir, tmp_path, strategy, kind):
    run_dir = tmp_path / "run"
    args = run_args(tiny_model_dir, task_files(tmp_path, kind), run_dir, kind) + [f"strategy.name={strategy}"]
    args += ["strategy.freeze_layers=1"] if strategy == "freeze" else []
    metrics = finetune_classifier.main(args + ["train.max_steps=2"])
    assert metrics["data"]["problem_type"] == kind
    model = Predictor(str(run_dir / "model"), cpu=True)  # ia3: a merged model by default
    assert model.problem_type == kind


def test_labelled_file_is_scored_by_predict_file(tiny_model_dir, tmp_path):
    from hftransfer.predict import predict_file

    files = task_files(tmp_path, MULTI_LABEL)
    run_dir = tmp_path / "run"
    finetune_classifier.main(run_args(tiny_model_dir, files, run_dir, MULTI_LABEL) + ["train.max_steps=2"])
    predictions = predict_file(str(run_dir / "model"), str(files["test"]), str(tmp_path / "out.jsonl"),
                               data=DataConfig(train_file=str(files["test"]), label_column="labels"), cpu=True)  # fmt: skip
    rows = predictions.rows
    assert rows[0]["gold_labels"] == multilabel_rows(16, 3)[0]["labels"]
    names = ["person", "place", "positive"]
    expected = multilabel_metrics([[r["scores"][n] for n in names] for r in rows], [r["gold_labels"] for r in rows],
                                  names, threshold=json.loads((run_dir / "model" / "config.json").read_text())[
                                      "multilabel_threshold"])  # fmt: skip
    assert predictions.metrics["micro_f1"] == pytest.approx(expected["micro_f1"], abs=0.05)


# -------------------------------------------------------------------------------------------- card, refusals
@pytest.mark.parametrize("kind", [MULTI_LABEL, REGRESSION])
def test_model_card_says_the_problem_type_and_how_pipeline_reads_it(kind):
    scores = {"micro_f1": 0.7, "macro_f1": 0.6, "threshold": 0.35} if kind == MULTI_LABEL else {
        "mse": 0.1, "pearson": 0.8, "spearman": 0.75}  # fmt: skip
    facts = CardFacts(repo_id="me/model", task=SEQ, kind="model", config={"strategy": {"name": "full"}},
                      metrics={"validation": scores, "test": scores}, data={"dataset": "x", "problem_type": kind})  # fmt: skip
    card = str(build_card(facts))
    assert f"problem_type: {kind}" in card
    if kind == MULTI_LABEL:
        assert "top_k=None" in card and "multilabel_threshold` = 0.35" in card and "micro_f1" in card
    else:
        assert "pearson" in card and "mse" in card and "the predicted number" in card
    adapter = CardFacts(**{**facts.__dict__, "kind": "adapter", "label_names": ["a"]})
    assert f'problem_type="{kind}"' in str(build_card(adapter))


def test_multitask_and_distillation_refuse_with_one_error_line(capsys, tmp_path):
    # By path: benchmarks/ has modules of the same names, and whichever directory an earlier test put first on
    # sys.path would decide what a plain `import multitask` finds.
    distill = runpy.run_path(str(ROOT / "recipes" / "distill.py"))
    multitask = runpy.run_path(str(ROOT / "recipes" / "multitask.py"))

    data = {"train_file": "x.jsonl", "problem_type": REGRESSION}
    task = json.dumps({"name": "score", "task": SEQ, "data": data})
    with pytest.raises(SystemExit):
        run_main(lambda: multitask["main"]([f"tasks=[{task}]"]))
    line = capsys.readouterr().err.strip()
    assert (
        line.startswith("error: tasks.score.data.problem_type=regression: a multitask run")
        and "\n" not in line
    )
    with pytest.raises(SystemExit):
        run_main(lambda: distill["main"](["distill.teacher=somewhere", f"task={SEQ}", "data.train_file=x.jsonl",
                                       f"data.problem_type={MULTI_LABEL}", "train.metric_for_best=micro_f1"]))  # fmt: skip
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: data.problem_type={MULTI_LABEL}: distillation") and "\n" not in line

"""The transfer advisor's ranking: layer choices, the per-layer feature cache, labelled vectors, the validation probe
that picks a frozen layer, ``rank()`` with its table, JSON and plot, and the ``hftransfer rank`` command.

Layer selection is checked on tiny BERTs whose best layer is known by construction: an encoder layer whose output
LayerNorm has zero weight and bias outputs zeros whatever its input, so zeroing some layers leaves only the hidden
states below them carrying the words that decide the labels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModel, AutoTokenizer

from hftransfer.advisor.auto_layer import choose_feature_layer
from hftransfer.advisor.estimators import ESTIMATORS
from hftransfer.advisor.layers import LabelledVectors, LayerChoice, labelled_vectors, layer_choices
from hftransfer.advisor.ranking import (
    DEFAULT_ESTIMATORS,
    LayerScores,
    Ranking,
    limit_examples,
    outside_label,
    rank,
    sample_size,
    score_choices,
)
from hftransfer.advisor.report import PLOT_HINT, plot_ranking, save_ranking, table_lines
from hftransfer.cli import main
from hftransfer.config import parse_config
from hftransfer.data.features import tokenize_token_task
from hftransfer.data.sequence_features import tokenize_sequence_task
from hftransfer.data.sources import TaskData
from hftransfer.strategies.feature_cache import (
    FeatureStore,
    cached_layer_features,
    encode_features,
    encode_layer_features,
    feature_cache_key,
    feature_cache_keys,
)
from tests.conftest import (
    make_classification_examples,
    make_ner_examples,
    write_jsonl,
    write_tiny_bert,
)

TOKEN, SEQUENCE = "token-classification", "sequence-classification"
NER_LABELS = ["O", "B-loc", "I-loc", "B-per", "I-per"]
CLS_LABELS = ["negative", "positive"]
STORE_FIELDS = ("vectors", "offsets", "labels", "example_id", "word_index")


def zeroed_bert(directory: Path, layers: list[int], *, embeddings: bool = False) -> Path:
    """The tiny BERT of ``conftest.py`` (seed 0) with ``layers`` (0-based encoder layers) outputting zeros, and with
    ``embeddings`` its word embeddings and embedding LayerNorm zeroed too (every hidden state is then zero)."""
    write_tiny_bert(directory, seed=0)
    model = AutoModel.from_pretrained(directory)
    with torch.no_grad():
        for index in layers:
            norm = model.encoder.layer[index].output.LayerNorm
            norm.weight.zero_()
            norm.bias.zero_()
        if embeddings:
            model.embeddings.word_embeddings.weight.zero_()
            model.embeddings.LayerNorm.weight.zero_()
            model.embeddings.LayerNorm.bias.zero_()
    model.save_pretrained(directory)
    return directory


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return AutoModel.from_pretrained(tiny_model_dir).eval()


def _ner_features(tokenizer, n: int, seed: int, max_length: int = 32) -> Dataset:
    examples = Dataset.from_list(make_ner_examples(n, seed=seed))
    label2id = {label: i for i, label in enumerate(NER_LABELS)}
    features, _ = tokenize_token_task(examples, tokenizer, label2id, max_length=max_length, window_context=2)
    return features


def _sequence_features(tokenizer, n: int, seed: int) -> Dataset:
    examples = Dataset.from_list(make_classification_examples(n, seed=seed))
    features, _ = tokenize_sequence_task(
        examples, tokenizer, {label: i for i, label in enumerate(CLS_LABELS)}, max_length=32
    )
    return features


@pytest.fixture(scope="module")
def features(tokenizer) -> dict[str, Dataset]:
    """NER features in short windows (several rows per sentence, unlabelled context positions) and texts of
    different lengths (mean pooling over padding must not matter)."""
    ner = _ner_features(tokenizer, 12, seed=3, max_length=8)
    assert len(ner) > 12  # windows: some sentences became several rows
    texts = Dataset.from_list(make_classification_examples(10, seed=4))
    texts = texts.map(lambda row, i: {"text": row["text"] + " very" * (i % 3)}, with_indices=True)
    sequence, _ = tokenize_sequence_task(
        texts, tokenizer, {label: i for i, label in enumerate(CLS_LABELS)}, max_length=32
    )
    return {TOKEN: ner, SEQUENCE: sequence}


@pytest.fixture(scope="module")
def probe_data(tokenizer) -> dict[str, tuple[Dataset, Dataset]]:
    """``{task: (train, validation)}`` features of the toy tasks, whose labels follow from the words."""
    return {
        SEQUENCE: (_sequence_features(tokenizer, 64, 1), _sequence_features(tokenizer, 32, 2)),
        TOKEN: (_ner_features(tokenizer, 48, 1), _ner_features(tokenizer, 16, 2)),
    }


def _assert_same_store(a: FeatureStore, b: FeatureStore, atol: float = 1e-6) -> None:
    torch.testing.assert_close(a.vectors, b.vectors, atol=atol, rtol=0)
    for name in STORE_FIELDS[1:]:
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            assert torch.equal(left, right), name
    assert a.info == b.info


# --- 1. layer choices -------------------------------------------------------------------------------------------


def test_layer_choices_are_every_hidden_state_then_the_averages():
    six = layer_choices(6)
    assert [choice.name for choice in six] == [
        "emb",
        *(f"layer {i}" for i in range(1, 7)),
        "mean 1-6",
        "mean 3-6",
    ]
    assert six[0] == LayerChoice(0) and six[-2] == LayerChoice(6, 6) and six[-1] == LayerChoice(6, 4)
    assert list(LayerChoice(6, 4).members) == [3, 4, 5, 6] and list(LayerChoice(2).members) == [2]
    assert LayerChoice(0).as_strategy() == {"feature_layer": 0, "feature_layers": 1}
    assert LayerChoice(6, 4).as_strategy() == {"feature_layer": 6, "feature_layers": 4}
    # Two layers: the mean of all, but no top-four mean (it would reach below the embeddings).
    assert [choice.name for choice in layer_choices(2)] == ["emb", "layer 1", "layer 2", "mean 1-2"]
    assert [choice.name for choice in layer_choices(6, averages=False)] == [c.name for c in six[:7]]
    assert [choice.name for choice in layer_choices(1)] == [
        "emb",
        "layer 1",
    ]  # a mean of one layer is layer 1


def test_every_layer_choice_is_a_valid_frozen_strategy_setting():
    from hftransfer.strategies.feature_encoding import resolve_layer

    for total in (1, 2, 4, 6, 12):
        for choice in layer_choices(total):
            options = choice.as_strategy()
            # the frozen strategy accepts it, and it names this choice's last hidden state
            assert resolve_layer(options["feature_layer"], total, options["feature_layers"]) == choice.layer
            assert choice.members[0] >= 0 and choice.members[-1] <= total


# --- 2. one encoding for many layer choices, and the per-layer cache -------------------------------------------

CHOICES = [(0, 1), (1, 1), (2, 1), (2, 2), (-1, 1), (1, 2)]


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_layer_features_equal_encoding_each_choice_alone(encoder, tokenizer, features, task):
    data = features[task]
    assert len(data) > 8  # several batches
    together = encode_layer_features(encoder, tokenizer, data, choices=CHOICES, task=task, batch_size=8)
    assert len(together) == len(CHOICES)
    for (layer, num_layers), store in zip(CHOICES, together):
        alone = encode_features(
            encoder, tokenizer, data, layer=layer, num_layers=num_layers, task=task, batch_size=8
        )
        _assert_same_store(store, alone)
        assert store.info["layer"] == (2 if layer == -1 else layer)  # absolute
    # the choices really differ: a test comparing identical vectors would prove nothing
    assert not torch.allclose(together[0].vectors, together[2].vectors)
    assert not torch.allclose(together[2].vectors, together[3].vectors)


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_cached_layer_features_read_every_choice_back(encoder, tokenizer, features, task, tmp_path):
    data = features[task]
    options = {"cache_dir": tmp_path, "task": task, "batch_size": 8}
    first, hits = cached_layer_features(encoder, tokenizer, data, CHOICES, **options)
    assert hits == [False] * len(CHOICES)
    keys = feature_cache_keys(encoder, tokenizer, data, CHOICES, pooling="mean", task=task)
    assert [store.key for store in first] == keys
    # (2, 1) and (-1, 1) are one hidden state: one entry; every other choice has its own
    assert keys[2] == keys[4] and len(set(keys)) == len(CHOICES) - 1
    assert len(list(tmp_path.glob("*.safetensors"))) == len(set(keys))

    second, hits = cached_layer_features(encoder, tokenizer, data, CHOICES, **options)
    assert hits == [True] * len(CHOICES)
    for a, b in zip(first, second):
        _assert_same_store(a, b, atol=0)
        assert a.key == b.key

    # A new choice next to cached ones: only it is encoded, and it lands in its own place in the list.
    mixed, hits = cached_layer_features(encoder, tokenizer, data, [(1, 1), (0, 1), (1, 1)], **options)
    assert hits == [True, True, True]
    _assert_same_store(mixed[1], first[0], atol=0)
    top3 = [(0, 1), (2, 2), (2, 3)]  # (2, 3) = mean of emb, layer 1 and layer 2: not cached yet
    mixed, hits = cached_layer_features(encoder, tokenizer, data, top3, **options)
    assert hits == [True, True, False]
    _assert_same_store(mixed[0], first[0], atol=0)
    _assert_same_store(mixed[1], first[3], atol=0)
    direct = encode_features(encoder, tokenizer, data, layer=2, num_layers=3, task=task)
    _assert_same_store(mixed[2], direct)


def test_cache_keys_hash_the_absolute_layer(encoder, tokenizer, features):
    data = features[SEQUENCE]

    def key(**kwargs):
        return feature_cache_key(
            encoder,
            tokenizer,
            data,
            **{"layer": -1, "num_layers": 1, "pooling": "mean", "task": SEQUENCE} | kwargs,
        )

    last = key()
    assert last == key(layer=2)  # -1 is the absolute last index of a 2-layer encoder
    assert key(layer=-1, num_layers=2) == key(layer=2, num_layers=2)
    assert key(layer=-2) == key(layer=1)
    distinct = [last, key(layer=0), key(layer=1), key(num_layers=2), key(num_layers=3), key(pooling="cls")]
    assert len(set(distinct)) == len(distinct)
    assert feature_cache_keys(encoder, tokenizer, data, [(-1, 1), (0, 1)], pooling="mean", task=SEQUENCE) == [
        last,
        key(layer=0),
    ]


# --- 3. labelled vectors and the layer averages ----------------------------------------------------------------


@pytest.mark.parametrize("task", [TOKEN, SEQUENCE])
def test_a_mean_choice_equals_averaging_its_layers_and_encoding_it(encoder, tokenizer, features, task):
    data = features[task]
    stores = encode_layer_features(encoder, tokenizer, data, choices=[(i, 1) for i in range(3)], task=task)
    vectors = labelled_vectors(dict(enumerate(stores)))
    labelled = stores[0].labels != -100
    assert len(vectors.labels) == int(labelled.sum()) and (vectors.labels != -100).all()
    assert vectors.labels.tolist() == stores[0].labels[labelled].tolist()
    for index in range(3):
        np.testing.assert_array_equal(vectors.of(LayerChoice(index)), stores[index].vectors[labelled].numpy())
    for choice in (LayerChoice(2, 2), LayerChoice(2, 3), LayerChoice(1, 2)):
        averaged = vectors.of(choice)
        members = np.stack([vectors.vectors[i] for i in choice.members])
        np.testing.assert_allclose(averaged, members.mean(axis=0), atol=1e-6)
        direct = encode_features(
            encoder, tokenizer, data, layer=choice.layer, num_layers=choice.num_layers, task=task
        )
        np.testing.assert_allclose(averaged, direct.vectors[direct.labels != -100].numpy(), atol=1e-5)
        assert averaged.dtype == np.float32


def _synthetic_stores(labels: list, layers: int = 3) -> dict[int, FeatureStore]:
    """Stores whose vector at layer ``l``, item ``i`` is ``[100 * l + i, -i]``: every item identifiable."""
    n = len(labels)
    tensor = torch.tensor(labels)
    return {
        layer: FeatureStore(
            task=SEQUENCE,
            vectors=torch.stack([100.0 * layer + torch.arange(n), -torch.arange(n).float()], dim=1),
            offsets=torch.arange(n + 1),
            labels=tensor,
            example_id=torch.arange(n),
            info={"layer": layer},
        )
        for layer in range(layers)
    }


def test_labelled_vectors_drop_unlabelled_items_and_sample_the_same_items_at_every_layer():
    labels = [0, 1, -100, 1, 0, -100, 2, 2, 1, 0, 1, 2, 0, -100, 1, 0, 2, 1, 0, 1]
    vectors = labelled_vectors(_synthetic_stores(labels))
    kept = [i for i, label in enumerate(labels) if label != -100]
    assert vectors.labels.tolist() == [labels[i] for i in kept] and vectors.labels.dtype == np.int64
    assert vectors.vectors[1][:, 0].tolist() == [100.0 + i for i in kept]

    sample = labelled_vectors(_synthetic_stores(labels), max_items=6, seed=3)
    items = (sample.vectors[0][:, 0]).astype(int).tolist()
    assert len(items) == 6 and items == sorted(items) and set(items) <= set(kept)
    for layer in range(3):  # the same items at every layer, with their own labels
        assert (sample.vectors[layer][:, 0] - 100 * layer).astype(int).tolist() == items
    assert sample.labels.tolist() == [labels[i] for i in items]
    again = labelled_vectors(_synthetic_stores(labels), max_items=6, seed=3)
    np.testing.assert_array_equal(again.vectors[2], sample.vectors[2])
    other = labelled_vectors(_synthetic_stores(labels), max_items=6, seed=4)
    assert other.vectors[0][:, 0].tolist() != items  # the seed draws the sample
    assert len(labelled_vectors(_synthetic_stores(labels), max_items=100).labels) == len(kept)


def test_labelled_vectors_refuse_float_labels_and_mismatched_stores():
    with pytest.raises(ValueError, match="single-label classification"):
        labelled_vectors(_synthetic_stores([0.5, 1.5, 2.0, 3.0]))
    stores = _synthetic_stores([0, 1, 0, 1])
    stores[2].labels = torch.tensor([0, 1, 1, 1])
    with pytest.raises(ValueError, match="differ"):
        labelled_vectors(stores)


def test_limit_examples_samples_each_split_and_drops_the_test_split():
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"x": list(range(50))}),
            "validation": Dataset.from_dict({"x": list(range(8))}),
            "test": Dataset.from_dict({"x": list(range(30))}),
        }
    )
    data = TaskData(splits, ["a", "b"], {"source": "here"})
    limited = limit_examples(data, 20, seed=0)
    assert set(limited.splits) == {"train", "validation"}
    assert len(limited.splits["train"]) == 20 and len(set(limited.splits["train"]["x"])) == 20
    assert limited.splits["validation"]["x"] == list(range(8))  # small enough: kept whole, in order
    assert limited.label_names == ["a", "b"] and limited.report == {"source": "here"}
    assert limit_examples(data, 20, seed=0).splits["train"]["x"] == limited.splits["train"]["x"]
    assert limit_examples(data, 20, seed=1).splits["train"]["x"] != limited.splits["train"]["x"]
    assert len(limit_examples(data, None, seed=0).splits["train"]) == 50


def test_the_default_sample_is_500_or_half_the_training_set_but_at_least_250():
    assert sample_size(10_000, "auto") == 500
    assert sample_size(800, "auto") == 400  # half
    assert sample_size(490, "auto") == 250  # half would be under the floor
    assert sample_size(100, "auto") == 250  # then everything there is (limit_examples keeps all 100)
    assert sample_size(800, 600) == 600 and sample_size(800, None) is None  # as given
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"x": list(range(800))}),
            "validation": Dataset.from_dict({"x": list(range(900))}),
        }
    )
    limited = limit_examples(TaskData(splits, ["a"], {}), "auto", seed=0)
    assert (
        len(limited.splits["train"]) == 400 and len(limited.splits["validation"]) == 400
    )  # the train split sets it


def test_outside_label_is_the_o_tag_of_token_tasks_only():
    assert outside_label(TOKEN, NER_LABELS) == 0
    assert outside_label(TOKEN, ["B-per", "I-per", "O"]) == 2
    assert outside_label(TOKEN, ["B-per", "I-per"]) is None
    assert outside_label(SEQUENCE, ["O", "X"]) is None


def test_score_choices_rejects_unknown_estimators_and_gives_nan_probes_without_validation():
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    train = LabelledVectors(
        {0: rng.normal(size=(40, 4)), 1: np.eye(4)[labels] * 3 + rng.normal(size=(40, 4))}, labels
    )
    with pytest.raises(ValueError, match="unknown estimator.*bogus"):
        score_choices(train, None, [LayerChoice(0)], ["logme", "bogus"])
    scores = score_choices(train, None, [LayerChoice(0), LayerChoice(1)], DEFAULT_ESTIMATORS)
    assert set(scores[LayerChoice(1)]) == set(DEFAULT_ESTIMATORS) == set(ESTIMATORS)
    assert math.isnan(scores[LayerChoice(1)]["linear_probe"])
    for name in ("logme", "h_score", "knn"):  # layer 1 separates the classes, layer 0 is noise
        assert scores[LayerChoice(1)][name] > scores[LayerChoice(0)][name], name
    scored = score_choices(train, train, [LayerChoice(1)], ["linear_probe"])
    assert scored[LayerChoice(1)] == {"linear_probe": pytest.approx(1.0)}


# --- 4. the validation probe picks the layer that carries the labels -------------------------------------------


@pytest.fixture(scope="module")
def only_embeddings_dir(tmp_path_factory) -> Path:
    """Every encoder layer outputs zeros: only hidden state 0 (the embeddings) knows the words."""
    return zeroed_bert(tmp_path_factory.mktemp("only-emb"), [0, 1])


@pytest.fixture(scope="module")
def dead_top_dir(tmp_path_factory) -> Path:
    """The last encoder layer outputs zeros; the embeddings and layer 1 are intact."""
    return zeroed_bert(tmp_path_factory.mktemp("dead-top"), [1])


def test_zeroed_layers_really_output_zeros(only_embeddings_dir, dead_top_dir, tokenizer):
    inputs = tokenizer(
        ["alice lives in paris .", "this film was very good"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        states = AutoModel.from_pretrained(only_embeddings_dir)(
            **inputs, output_hidden_states=True
        ).hidden_states
        top = AutoModel.from_pretrained(dead_top_dir)(**inputs, output_hidden_states=True).hidden_states
    assert len(states) == 3
    assert not torch.allclose(states[0][0, 1], states[0][1, 1])  # the embeddings tell the words apart
    assert all(torch.count_nonzero(state) == 0 for state in states[1:])
    assert torch.count_nonzero(top[2]) == 0 and not torch.allclose(top[1][0, 1], top[1][1, 1])


@pytest.mark.parametrize("task", [SEQUENCE, TOKEN])
def test_choose_feature_layer_picks_the_embeddings_when_no_layer_carries_the_words(
    only_embeddings_dir, tokenizer, probe_data, task, tmp_path
):
    train, validation = probe_data[task]
    choice, report = choose_feature_layer(
        AutoModel.from_pretrained(only_embeddings_dir),
        tokenizer,
        train,
        validation,
        task=task,
        label_names=NER_LABELS if task == TOKEN else CLS_LABELS,
        pooling="mean" if task == SEQUENCE else None,
        cache_dir=str(tmp_path),
    )
    scores = report["scores"]
    assert choice == LayerChoice(0) and report["chosen"] == "emb"
    assert list(scores) == ["emb", "layer 1", "layer 2", "mean 1-2"]
    assert scores["emb"] >= 0.9
    assert all(score <= scores["emb"] - 0.4 for name, score in scores.items() if name != "emb"), scores
    if task == TOKEN:
        # constant features predict O everywhere; O is left out of the average, so no entity is found
        assert scores["layer 2"] == 0.0


@pytest.mark.parametrize("task", [SEQUENCE, TOKEN])
def test_choose_feature_layer_avoids_a_dead_top_layer_and_caches_the_chosen_mean(
    dead_top_dir, tokenizer, probe_data, task, tmp_path
):
    train, validation = probe_data[task]
    encoder = AutoModel.from_pretrained(dead_top_dir)
    pooling = "mean" if task == SEQUENCE else None
    choice, report = choose_feature_layer(
        encoder,
        tokenizer,
        train,
        validation,
        task=task,
        label_names=NER_LABELS if task == TOKEN else CLS_LABELS,
        pooling=pooling,
        cache_dir=str(tmp_path),
    )
    scores = report["scores"]
    assert choice != LayerChoice(2) and report["chosen"] == choice.name != "layer 2"
    assert scores[choice.name] >= scores["layer 2"] + 0.4, scores
    assert scores["layer 1"] >= scores["layer 2"] + 0.4, scores
    # emb, layer 1 and their mean all separate the toy classes; ties go to the later-listed choice
    assert scores["emb"] == scores["layer 1"] == scores["mean 1-2"] == 1.0, scores
    assert choice == LayerChoice(2, 2)
    # A chosen average is cached under its own key, so the frozen run that follows reads it instead of encoding.
    stores, hits = cached_layer_features(
        encoder,
        tokenizer,
        train,
        [(choice.layer, choice.num_layers)],
        cache_dir=tmp_path,
        pooling=pooling,
        task=task,
    )
    assert hits == [True]
    direct = encode_features(
        encoder,
        tokenizer,
        train,
        layer=choice.layer,
        num_layers=choice.num_layers,
        pooling=pooling,
        task=task,
    )
    torch.testing.assert_close(stores[0].vectors, direct.vectors, atol=1e-5, rtol=0)


# --- 5. rank(): encoders on disk, the table, ranking.json and the plot -----------------------------------------


@pytest.fixture(scope="module")
def rank_setup(tmp_path_factory) -> dict:
    """An intact tiny BERT, one whose every hidden state is zero, and toy sentiment files."""
    root = tmp_path_factory.mktemp("rank")
    files = {
        "train": write_jsonl(root / "train.jsonl", make_classification_examples(64, seed=1)),
        "validation": write_jsonl(root / "dev.jsonl", make_classification_examples(24, seed=2)),
        "test": write_jsonl(root / "test.jsonl", make_classification_examples(24, seed=3)),
    }
    good = write_tiny_bert(root / "good", seed=0)
    dead = zeroed_bert(root / "dead", [0, 1], embeddings=True)
    yaml = root / "rank.yaml"
    yaml.write_text(
        f"task: {SEQUENCE}\nmodel:\n  name_or_path: {good}\ndata:\n  train_file: {files['train']}\n"
        f"  validation_file: {files['validation']}\n  test_file: {files['test']}\n",
        encoding="utf-8",
    )
    return {"root": root, "files": files, "good": str(good), "dead": str(dead), "yaml": yaml}


@pytest.fixture(scope="module")
def ranking(rank_setup) -> Ranking:
    config = parse_config([], default_config=rank_setup["yaml"])
    return rank(config, [rank_setup["dead"], rank_setup["good"]], cache_dir=str(rank_setup["root"] / "cache"))


def test_rank_puts_the_informative_encoder_first_under_every_estimator(ranking, rank_setup):
    good, dead = rank_setup["good"], rank_setup["dead"]
    assert ranking.task == SEQUENCE and ranking.estimators == DEFAULT_ESTIMATORS
    assert ranking.encoders() == [dead, good]  # in the order given
    assert ranking.data == {"train": 64, "validation": 24}  # the test split is never read
    assert [(row.encoder, row.choice.name) for row in ranking.rows] == [
        (encoder, name) for encoder in (dead, good) for name in ("emb", "layer 1", "layer 2", "mean 1-2")
    ]
    assert set(ranking.seconds) == {dead, good}
    for estimator in DEFAULT_ESTIMATORS:
        assert ranking.ordered(estimator) == [good, dead], estimator
        scores = ranking.encoder_scores(estimator)
        assert scores[good] > scores[dead], estimator
        # the dead encoder's features are constant: every layer scores the same
        assert len({row.scores[estimator] for row in ranking.rows if row.encoder == dead}) == 1
    assert ranking.encoder_scores("linear_probe")[good] >= 0.9
    assert ranking.encoder_scores("h_score")[dead] == pytest.approx(0.0, abs=1e-9)


def test_ranking_to_dict_is_json_with_the_order_and_each_encoders_best_layer(ranking, rank_setup):
    data = json.loads(json.dumps(ranking.to_dict(), allow_nan=False))
    good, dead = rank_setup["good"], rank_setup["dead"]
    assert data["task"] == SEQUENCE and data["estimators"] == list(DEFAULT_ESTIMATORS)
    assert data["order"] == {name: [good, dead] for name in DEFAULT_ESTIMATORS}
    assert set(data["best"]) == set(DEFAULT_ESTIMATORS)
    for estimator, best in data["best"].items():
        assert best[good] == ranking.best(good, estimator).choice.name
        assert best[good] in {"emb", "layer 1", "layer 2", "mean 1-2"}
    assert len(data["rows"]) == 8
    row = data["rows"][-1]
    assert row["encoder"] == good and row["layer"] == "mean 1-2"
    assert row["feature_layer"] == 2 and row["feature_layers"] == 2
    assert set(DEFAULT_ESTIMATORS) <= set(row)
    assert data["data"] == {"train": 64, "validation": 24} and set(data["seconds"]) == {good, dead}


def _synthetic_ranking() -> Ranking:
    """Encoder ``x`` wins on logme, ``y`` on knn; ``y`` has no averaged choice and a NaN probe at layer 1."""
    ranking = Ranking(SEQUENCE, ("logme", "knn"))
    table = {
        "x": {
            LayerChoice(0): (1.0, 0.2),
            LayerChoice(1): (3.0, 0.1),
            LayerChoice(2): (2.0, 0.3),
            LayerChoice(2, 2): (2.5, 0.25),
        },
        "y": {LayerChoice(0): (0.5, 0.6), LayerChoice(1): (float("nan"), 0.9)},
    }
    for encoder, rows in table.items():
        for choice, (logme, knn) in rows.items():
            ranking.rows.append(LayerScores(encoder, choice, {"logme": logme, "knn": knn}))
    ranking.seconds = {"x": 1.0, "y": 2.0}
    return ranking


def test_ranking_best_and_aggregates_on_known_scores():
    ranking = _synthetic_ranking()
    assert ranking.best("x", "logme").choice == LayerChoice(1)
    assert ranking.best("y", "logme").choice == LayerChoice(0)  # the NaN is skipped, not chosen
    assert ranking.encoder_scores("logme") == {"x": 3.0, "y": 0.5}
    assert ranking.encoder_scores("knn", "last") == {"x": 0.3, "y": 0.9}
    assert ranking.encoder_scores("knn", "mean") == {"x": 0.25, "y": 0.9}  # y has one layer: no mean
    assert ranking.ordered("logme") == ["x", "y"] and ranking.ordered("knn") == ["y", "x"]
    with pytest.raises(ValueError, match="no finite"):
        Ranking(SEQUENCE, ("knn",), [LayerScores("z", LayerChoice(0), {"knn": float("nan")})]).best(
            "z", "knn"
        )


def test_table_lines_sort_by_the_chosen_estimator():
    ranking = _synthetic_ranking()

    def rows_of(lines):
        header = next(i for i, line in enumerate(lines) if line.startswith("encoder"))
        return [line.split() for line in lines[header + 1 :]]

    lines = table_lines(ranking)  # the first estimator by default
    assert lines[0].startswith("Encoders by logme") and lines[1].startswith("  1. x: layer 1 (logme 3.0000")
    assert lines[2].startswith("  2. y: emb (logme 0.5000")
    logme_column = [float(row[-2]) if row[-2] != "n/a" else -math.inf for row in rows_of(lines)]
    assert logme_column == sorted(logme_column, reverse=True) and rows_of(lines)[-1][-2] == "n/a"
    assert len(rows_of(lines)) == 6

    lines = table_lines(ranking, "knn", top=3)
    assert lines[0].startswith("Encoders by knn") and lines[1].startswith("  1. y: layer 1 (knn 0.9000")
    knn_column = [float(row[-1]) for row in rows_of(lines)]
    assert knn_column == [0.9, 0.6, 0.3]
    with pytest.raises(ValueError, match="cannot sort by 'h_score'"):
        table_lines(ranking, "h_score")


def test_save_ranking_writes_ranking_json(ranking, tmp_path):
    path = save_ranking(ranking, tmp_path / "out" / "nested")
    assert path == tmp_path / "out" / "nested" / "ranking.json"
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(ranking.to_dict()))


def test_plot_ranking_writes_a_png(ranking, tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_ranking(ranking, tmp_path / "plots" / "ranking.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    single = Ranking(SEQUENCE, ("knn",), [r for r in _synthetic_ranking().rows if r.encoder == "y"])
    for row in single.rows:
        row.scores = {"knn": row.scores["knn"]}
    assert plot_ranking(single, tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"  # one panel


def test_plot_ranking_without_matplotlib_says_how_to_install_it(ranking, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    with pytest.raises(ImportError, match="hftransfer\\[advisor\\]"):
        plot_ranking(ranking, tmp_path / "ranking.png")
    assert not (tmp_path / "ranking.png").exists() and "pip install" in PLOT_HINT


# --- 6. the command line ----------------------------------------------------------------------------------------


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--estimators", "logme", "bogus"], "--estimators bogus"),
        (["--estimators", "logme", "--sort-by", "knn"], "--sort-by knn: not among --estimators (logme)"),
        (["--max-examples", "3"], "--max-examples 3: expected at least 10"),
        (["--max-items", "0"], "--max-items 0"),
    ],
)
def test_rank_usage_errors_are_one_line(rank_setup, options, message, capsys):
    assert main(["rank", str(rank_setup["yaml"]), "--encoders", rank_setup["good"], *options]) == 2
    assert message in _one_error_line(capsys)


def test_rank_names_a_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "rank.yaml"
    assert main(["rank", str(missing), "--encoders", "x"]) == 2
    line = _one_error_line(capsys)
    assert str(missing) in line and "YAML" in line


def test_rank_command_prints_the_table_and_writes_json_and_plot(rank_setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HFTRANSFER_CACHE", str(rank_setup["root"] / "cache"))  # never ~/.cache
    good, dead = rank_setup["good"], rank_setup["dead"]
    out = tmp_path / "out"
    argv = ["rank", str(rank_setup["yaml"]), "--encoders", dead, good, "--out", str(out)]
    assert main([*argv, "--estimators", "knn", "linear_probe", "--sort-by", "linear_probe"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Encoders by linear_probe")
    assert lines[1].startswith(f"  1. {good}: ") and lines[2].startswith(f"  2. {dead}: ")
    header = next(line for line in lines if line.startswith("encoder"))
    assert header.split() == ["encoder", "layer", "knn", "linear_probe"]
    assert f"ranking: {out / 'ranking.json'}" in lines
    saved = json.loads((out / "ranking.json").read_text(encoding="utf-8"))
    assert saved["estimators"] == ["knn", "linear_probe"] and saved["order"]["linear_probe"] == [good, dead]
    assert all(set(row) >= {"knn", "linear_probe"} and "logme" not in row for row in saved["rows"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert any(line.startswith("plot: skipped") for line in lines)
    else:
        assert f"plot: {out / 'ranking.png'}" in lines
        assert (out / "ranking.png").read_bytes()[:4] == b"\x89PNG"


def test_rank_without_a_validation_split_fails_cleanly_or_ranks(rank_setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HFTRANSFER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    code = main(
        [
            "rank",
            str(rank_setup["yaml"]),
            "data.validation_file=null",
            "data.validation_size=0",
            "--encoders",
            rank_setup["good"],
            "--estimators",
            "logme",
            "linear_probe",
            "--out",
            str(out),
            "--no-plot",
        ]
    )
    captured = capsys.readouterr()
    if code == 2:  # refused, naming what is missing (log lines of the data loading may come first)
        last = [line for line in captured.err.splitlines() if line.strip()][-1]
        assert last.startswith("error: ") and "validation" in last, captured.err
    else:
        assert code == 0
        json.loads((out / "ranking.json").read_text(encoding="utf-8"), parse_constant=_no_nan)


def _no_nan(token: str):
    raise AssertionError(f"ranking.json holds {token}, which is not JSON")

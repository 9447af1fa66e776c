"""IOB2-constrained Viterbi decoding: only valid sequences, and the most probable of them (checked against an
exhaustive search over every tag sequence of short sentences)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hftransfer.evaluation.decoding import constrained_tags, iob2_constraints, viterbi

LABELS = ["O", "B-facility", "I-facility", "B-other", "I-other"]


def _valid(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_the_constraints_are_iob2():
    start, transition = iob2_constraints(LABELS)
    assert start.tolist() == [True, True, False, True, False]
    index = {label: i for i, label in enumerate(LABELS)}
    assert transition[index["B-facility"], index["I-facility"]]
    assert transition[index["I-facility"], index["I-facility"]]
    assert not transition[index["O"], index["I-facility"]]
    assert not transition[index["B-other"], index["I-facility"]]
    assert transition[index["I-other"], index["B-facility"]] and transition[index["I-other"], index["O"]]
    # Tags without a prefix (another scheme) are left alone.
    start, transition = iob2_constraints(["negative", "positive"])
    assert start.all() and transition.all()


def test_the_empire_state_building_is_one_entity():
    # Argmax per word: B-facility, I-other, I-facility (invalid: two entities of a kind each, one broken).
    probabilities = np.array(
        [
            [0.05, 0.80, 0.05, 0.05, 0.05],
            [0.05, 0.05, 0.40, 0.05, 0.45],
            [0.05, 0.05, 0.80, 0.05, 0.05],
        ]
    )
    tags = [LABELS[i] for i in constrained_tags(probabilities, LABELS)]
    assert tags == ["B-facility", "I-facility", "I-facility"]
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == ["B-facility", "I-other", "I-facility"]


@pytest.mark.parametrize("seed", range(25))
def test_viterbi_finds_the_best_valid_sequence(seed):
    rng = np.random.default_rng(seed)
    words = int(rng.integers(1, 5))
    log_probs = np.log(rng.dirichlet(np.ones(len(LABELS)) * 0.5, size=words))
    start, transition = iob2_constraints(LABELS)
    path = viterbi(log_probs, start, transition)
    assert _valid([LABELS[i] for i in path])
    best = max(
        (
            candidate
            for candidate in itertools.product(range(len(LABELS)), repeat=words)
            if _valid([LABELS[i] for i in candidate])
        ),
        key=lambda candidate: sum(log_probs[w, t] for w, t in enumerate(candidate)),
    )
    total = lambda p: sum(log_probs[w, t] for w, t in enumerate(p))  # noqa: E731
    assert total(path) == pytest.approx(total(best))


def test_valid_argmax_is_kept_and_edge_cases():
    probabilities = np.array(
        [[0.1, 0.7, 0.1, 0.05, 0.05], [0.1, 0.1, 0.6, 0.1, 0.1], [0.9, 0.025, 0.025, 0.025, 0.025]]
    )
    assert constrained_tags(probabilities, LABELS) == probabilities.argmax(axis=1).tolist()
    assert constrained_tags(np.zeros((0, len(LABELS))), LABELS) == []
    # A word whose only probable tag is forbidden still gets a valid one (zero probabilities are -inf, not NaN).
    assert constrained_tags(np.array([[0.0, 0.0, 1.0, 0.0, 0.0]]), LABELS) != [2]


def test_a_run_with_iob2_decoding_exports_it_and_predicts_valid_spans(tiny_model_dir, tmp_path):
    import json
    import sys
    from pathlib import Path

    from hftransfer.config import parse_config
    from hftransfer.errors import ConfigError
    from hftransfer.predict import predict_file
    from hftransfer.toy import make_ner_examples, write_conll

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
    import finetune_ner

    files = {
        s: write_conll(tmp_path / f"{s}.conll", make_ner_examples(n, seed=i))
        for i, (s, n) in enumerate([("train", 32), ("dev", 12), ("test", 24)])
    }
    run = tmp_path / "run"
    metrics = finetune_ner.main(
        [f"model.name_or_path={tiny_model_dir}", f"output_dir={run}", f"data.train_file={files['train']}",
         f"data.validation_file={files['dev']}", f"data.test_file={files['test']}", "train.epochs=1",
         "train.batch_size=8", "train.lr=1e-3", "train.trackers=[]", "model.decoding=iob2"]
    )  # fmt: skip
    assert 0.0 <= metrics["test"]["f1"] <= 1.0
    assert json.loads((run / "model" / "config.json").read_text())["hftransfer_decoding"] == "iob2"
    # A barely trained model: its argmax tags are far from valid IOB2, the decoded ones always are.
    decoded = predict_file(str(run), str(files["test"]), str(tmp_path / "a.jsonl"), cpu=True)
    assert all(_valid(row["tags"]) for row in decoded.rows)
    argmax = predict_file(
        str(run), str(files["test"]), str(tmp_path / "b.jsonl"), cpu=True, decoding="argmax"
    )
    assert not all(_valid(row["tags"]) for row in argmax.rows)  # so the decoding did change something
    from hftransfer.cli import main

    assert (
        main(
            [
                "predict",
                str(run),
                str(files["test"]),
                str(tmp_path / "c.jsonl"),
                "--cpu",
                "--decoding",
                "argmax",
            ]
        )
        == 0
    )
    assert [json.loads(line)["tags"] for line in (tmp_path / "c.jsonl").read_text().splitlines()] == [
        row["tags"] for row in argmax.rows
    ]
    with pytest.raises(ConfigError, match="model.decoding=iob2 is for token classification"):
        parse_config(["task=sequence-classification", "model.decoding=iob2", "data.dataset=rotten_tomatoes"])

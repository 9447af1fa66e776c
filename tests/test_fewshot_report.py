"""The few-shot benchmark's report (benchmarks/fewshot_report.py) from synthetic records: the pivots' means and
sampling counts, the setfit-vs-library ratios, the merge of records written by processes sharing a work dir."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fewshot  # noqa: E402 - benchmarks/ is not a package
import fewshot_report  # noqa: E402


def _record(method: str, sampling: int, test: float, wall: float, k: int = 8) -> dict:
    return {"dataset": "rt", "encoder": "minilm-l6", "k": k, "sampling": sampling, "method": method,
            "test": test, "macro_f1": test - 0.01, "wall_s": wall, "train_s": wall - 10.0}  # fmt: skip


def test_report_pivots_and_setfit_against_the_library(tmp_path, monkeypatch):
    monkeypatch.setattr(fewshot_report, "RESULTS", tmp_path)
    monkeypatch.setattr(fewshot_report, "pyplot", lambda: None)
    records = [
        *(_record("setfit_lr5", s, 0.60 + 0.02 * s, 20.0) for s in range(1, 6)),
        *(_record("setfit_lib", s, 0.58, 50.0) for s in range(1, 4)),
        _record("zeroshot", 0, 0.66, 15.0, k=0),
    ]
    fewshot_report.write_report(records, {"majority": {"rt": 0.578}}, list(fewshot.METHODS))
    text = (tmp_path / "fewshot.md").read_text()
    assert "| rt | minilm-l6 | 0 | majority class 0.5780; zero-shot 0.6600 |" in text
    # setfit_lr5: mean of 0.62..0.70 over 5 samplings (no bracket); the library: 3 samplings, bracketed.
    assert "| rt | minilm-l6 | 8 | 0.6600 ± 0.0316 | 0.5800 ± 0.0000 [3] |" in text
    assert "| rt | minilm-l6 | 8 | setfit_lr5 | 0.6600 ± 0.0316 | 0.5800 ± 0.0000 | 20.0 / 10.0 | 50.0 / 40.0 | 0.40 | 0.25 |" in text  # fmt: skip
    saved = json.loads((tmp_path / "fewshot.json").read_text())
    assert saved["records"] == records and {r["method"] for r in saved["rows"]} == {"setfit_lr5", "setfit_lib", "zeroshot"}  # fmt: skip


def test_processes_sharing_a_work_dir_keep_each_others_records(tmp_path):
    path = tmp_path / "records.jsonl"
    theirs = _record("frozen", 1, 0.5, 10.0)
    path.write_text(json.dumps(theirs) + "\n")
    mine = [_record("setfit_lr5", 1, 0.6, 20.0)]
    merged = fewshot.merged_records(path, mine)
    assert merged == [theirs, *mine]
    # A record of the same cell from this process replaces the one on disk.
    again = _record("frozen", 1, 0.55, 12.0)
    assert fewshot.merged_records(path, [again]) == [again]


@pytest.mark.parametrize(("method", "k"), [("protonet", 8), ("full", 16)])
def test_method_overrides_follow_k(method, k):
    argv = fewshot.method_argv(method, k, "rt")
    if method == "protonet":
        assert "strategy.k_shot=4" in argv and "strategy.queries=4" in argv
    else:
        assert "train.max_steps=50" in argv

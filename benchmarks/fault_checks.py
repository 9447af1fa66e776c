"""What the fault suite checks in a run directory: after a kill, that nothing is corrupted; after the resume, that
the run equals an uninterrupted one.

- After the kill (:func:`check_run_dir`): every ``checkpoints/step-*`` complete (the reference checkpoint's files,
  a readable ``trainer_state.json`` and model weights) or absent; ``model/`` loadable with
  ``AutoModelFor*.from_pretrained`` or absent (``adapter/``: complete or absent); ``metrics.json`` valid JSON or
  absent; every ``metrics.jsonl`` line valid JSON. A torn last line that the shim wrote itself (the ``log``
  boundary) is reported as tolerated, not as corruption: the library drops it on resume by design
  (``MetricsLog.truncate_after``), and the line it cut is the shim's doing.
- After the resume (:func:`compare_runs`): the weights of ``model/`` and of the last checkpoint equal the
  reference's (max abs difference over every tensor), ``metrics.json`` equal except :data:`TIMING_KEYS`,
  ``metrics.jsonl`` the same records in the same order, equal except :data:`TIMING_KEYS`; and
  (:func:`leftovers`) no temporaries of interrupted writes left behind.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

# Leaf keys measured with the wall clock or the OS (durations, rates, memory, the thread report): no two runs
# share them. Every other key of metrics.json and metrics.jsonl is a function of data, seed and step.
TIMING_KEYS = frozenset(
    {
        "seconds",
        "eval_seconds",
        "train_seconds",
        "runtime_seconds",
        "step_seconds",
        "seconds_per_epoch",
        "samples_per_second",
        "tokens_per_second",
        "peak_memory_mb",
        "rss_mb",
        "threads",
    }
)


def load_weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def checkpoint_problem(path: Path, expected_files: set[str]) -> str | None:
    """Why ``path`` is not a complete checkpoint (None when it is)."""
    names = {entry.name for entry in path.iterdir()}
    if expected_files - names:
        return f"missing {sorted(expected_files - names)}"
    empty = sorted(name for name in names if (path / name).is_file() and (path / name).stat().st_size == 0)
    if empty:
        return f"empty {empty}"
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        for weights in path.glob("model*.safetensors"):
            load_weights(weights)
    except Exception as error:  # noqa: BLE001 - any failure to read is the finding
        return f"unreadable: {type(error).__name__}: {str(error)[:120]}"
    return None


def check_run_dir(
    run_dir: Path, auto_class: str, checkpoint_files: set[str], torn_log_injected: bool = False
) -> tuple[list[str], list[str]]:
    """The corrupted states in ``run_dir`` (see the module docstring), and the tolerated ones.

    Args:
        run_dir: the run directory a killed run left.
        auto_class: the ``transformers`` auto class that must load ``model/`` (e.g.
            ``AutoModelForSequenceClassification``).
        checkpoint_files: the file names of a complete checkpoint (the reference run's).
        torn_log_injected: the fault itself cut the last ``metrics.jsonl`` line.

    Returns:
        ``(violations, tolerated)``: one line per finding.
    """
    import transformers

    transformers.utils.logging.set_verbosity_error()  # one load per trial: no load reports or progress bars
    transformers.utils.logging.disable_progress_bar()
    violations: list[str] = []
    tolerated: list[str] = []
    for path in sorted((run_dir / "checkpoints").glob("step-*")):
        problem = checkpoint_problem(path, checkpoint_files)
        if problem:
            violations.append(f"checkpoints/{path.name}: {problem}")
    model_dir = run_dir / "model"
    if model_dir.exists():
        try:
            getattr(transformers, auto_class).from_pretrained(str(model_dir))
        except Exception as error:  # noqa: BLE001
            violations.append(f"model/ does not load: {type(error).__name__}: {str(error)[:160]}")
    adapter_dir = run_dir / "adapter"
    if adapter_dir.exists():
        try:
            json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
            load_weights(adapter_dir / "adapter_model.safetensors")
        except Exception as error:  # noqa: BLE001
            violations.append(f"adapter/ incomplete: {type(error).__name__}: {str(error)[:160]}")
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        try:
            json.loads(metrics.read_text(encoding="utf-8"))
        except ValueError as error:
            violations.append(f"metrics.json invalid: {error}")
    log = run_dir / "metrics.jsonl"
    if log.exists():
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                json.loads(line)
            except ValueError:
                if torn_log_injected and number == len(lines):
                    tolerated.append(f"metrics.jsonl line {number}: torn by the injected fault")
                else:
                    violations.append(f"metrics.jsonl line {number} invalid: {line[:60]!r}")
    return violations, tolerated


def leftovers(run_dir: Path) -> list[str]:
    """Temporaries of interrupted writes still there after a run that completed (``.*.tmp``, ``.*.old``)."""
    found = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            found += [
                str(p.relative_to(run_dir))
                for p in folder.iterdir()
                if p.name.startswith(".") and p.name.endswith((".tmp", ".old"))
            ]
    return sorted(found)


def _normalise(value: Any, run_dir: str) -> Any:
    """Drop timing keys and spell the run directory ``<run>`` (metrics.json names files inside it)."""
    if isinstance(value, dict):
        return {key: _normalise(item, run_dir) for key, item in value.items() if key not in TIMING_KEYS}
    if isinstance(value, list):
        return [_normalise(item, run_dir) for item in value]
    if isinstance(value, str):
        return value.replace(run_dir, "<run>")
    return value


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changed(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    mine, theirs = _flat(mine), _flat(theirs)
    keys = sorted(set(mine) | set(theirs))
    return [
        f"{key}: {mine.get(key, '<absent>')!r:.24} vs {theirs.get(key, '<absent>')!r:.24}"
        for key in keys
        if mine.get(key, "<absent>") != theirs.get(key, "<absent>")
    ]


def _records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [
        _normalise(json.loads(line), str(run_dir))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def _label(record: dict[str, Any]) -> str:
    return f"{record.get('split')}@{record.get('step')}"


def compare_runs(run_dir: Path, reference_dir: Path) -> tuple[list[str], float | None]:
    """How a finished run differs from the reference (empty: equal), and the weights' max abs difference."""
    differences: list[str] = []
    max_diff: float | None = None
    last = sorted((reference_dir / "checkpoints").glob("step-*"))[-1:]
    pairs = [Path("model/model.safetensors")] + [
        p.relative_to(reference_dir) / "model.safetensors" for p in last
    ]
    for relative in pairs:
        if not (run_dir / relative).exists():
            differences.append(f"weights: {relative} missing")
            continue
        mine, theirs = load_weights(run_dir / relative), load_weights(reference_dir / relative)
        if set(mine) != set(theirs):
            differences.append(f"weights: {relative} holds other tensors")
            continue
        diff = max(float((mine[k].double() - theirs[k].double()).abs().max()) for k in theirs)
        max_diff = max(max_diff or 0.0, diff)
        if diff > 0:
            worst = max(theirs, key=lambda k: float((mine[k].double() - theirs[k].double()).abs().max()))
            differences.append(f"weights: {relative} max |diff| {diff:.3g} ({worst})")
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        differences.append("metrics.json: missing")
    else:
        mine = _normalise(json.loads(metrics.read_text(encoding="utf-8")), str(run_dir))
        theirs = _normalise(
            json.loads((reference_dir / "metrics.json").read_text(encoding="utf-8")), str(reference_dir)
        )
        differences += [f"metrics.json: {change}" for change in _changed(mine, theirs)]
    mine_log, their_log = _records(run_dir), _records(reference_dir)
    mine_labels, their_labels = [_label(r) for r in mine_log], [_label(r) for r in their_log]
    # Records are matched by (split, step) in order, so one extra or missing record is reported as such rather
    # than as every later record differing.
    matcher = difflib.SequenceMatcher(a=their_labels, b=mine_labels, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for offset in range(i2 - i1):
                mine_record, their_record = mine_log[j1 + offset], their_log[i1 + offset]
                if mine_record != their_record:
                    changes = "; ".join(_changed(mine_record, their_record))
                    differences.append(
                        f"metrics.jsonl: record {i1 + offset + 1} ({their_labels[i1 + offset]}): {changes}"
                    )
            continue
        where = f"after record {i1} ({their_labels[i1 - 1] if i1 else 'start'})"
        if j2 > j1:
            differences.append(f"metrics.jsonl: extra {mine_labels[j1:j2]} {where}")
        if i2 > i1:
            differences.append(f"metrics.jsonl: missing {their_labels[i1:i2]} {where}")
    return differences, max_diff

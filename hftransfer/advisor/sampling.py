"""Which examples the advisor encodes: a seeded sample of each split, small enough that ranking stays a small share
of one fine-tuning run."""

from __future__ import annotations

from hftransfer.data.sources import TaskData

# The default sample: at most DEFAULT_MAX_EXAMPLES, and at most half the training set unless that is under
# SAMPLE_FLOOR. Encoding is the advisor's cost, and fine-tuning makes about 3 x epochs passes over the whole
# training set, so half of it keeps ranking a small share of one fine-tuning run; LogME ranked the benchmark
# encoders the same from 250 examples up (benchmarks/results/advisor_sample_size.md).
DEFAULT_MAX_EXAMPLES, SAMPLE_FLOOR = 500, 250


def sample_size(train_examples: int, max_examples: int | str | None) -> int | None:
    """Examples per split that :func:`rank` encodes: ``max_examples`` as given, or for ``"auto"`` the default
    sample above; None: all."""
    if max_examples != "auto":
        return max_examples
    return min(DEFAULT_MAX_EXAMPLES, max(SAMPLE_FLOOR, train_examples // 2))


def limit_examples(data: TaskData, max_examples: int | str | None, seed: int) -> TaskData:
    """``data`` with at most ``max_examples`` examples in each split (a seeded sample; ``"auto"``: see
    :func:`sample_size`; the test split is dropped: ranking never reads it)."""
    limit = sample_size(len(data.splits["train"]) if "train" in data.splits else 0, max_examples)
    splits = {}
    for split, rows in data.splits.items():
        if split == "test":
            continue
        if limit is not None and len(rows) > limit:
            rows = rows.shuffle(seed=seed).select(range(limit))
        splits[split] = rows
    return TaskData(data.splits.__class__(splits), data.label_names, data.report)

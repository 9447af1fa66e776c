"""A ranking as people read it: a table on the console, ``ranking.json`` and a plot of every estimator by layer."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from hftransfer.advisor.ranking import Ranking
from hftransfer.utils import atomic_write, atomic_write_json

PLOT_HINT = 'the ranking plot needs matplotlib: pip install "hftransfer[advisor]"'
LOWER_NOTE = "higher is better for every estimator"


def _cell(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def table_lines(ranking: Ranking, sort_by: str | None = None, *, top: int | None = None) -> list[str]:
    """Encoders best first by ``sort_by`` (default: the first estimator), each encoder's best layer choice, then
    every encoder x layer row sorted by the same estimator."""
    key = sort_by or ranking.estimators[0]
    if key not in ranking.estimators:
        raise ValueError(f"cannot sort by {key!r}: scored {', '.join(ranking.estimators)}")
    width = max([len(name) for name in ranking.encoders()] + [7])
    header = f"{'encoder':<{width}}  {'layer':<10}" + "".join(f"  {name:>12}" for name in ranking.estimators)
    lines = [f"Encoders by {key} ({LOWER_NOTE}), each at its best layer choice:"]
    for place, encoder in enumerate(ranking.ordered(key), start=1):
        best = ranking.best(encoder, key)
        lines.append(
            f"  {place}. {encoder}: {best.choice.name} ({key} {_cell(best.scores[key])}; "
            f"{ranking.seconds.get(encoder, 0):.0f} s)"
        )
    lines += ["", header]
    rows = sorted(
        ranking.rows,
        key=lambda row: row.scores[key] if math.isfinite(row.scores[key]) else -math.inf,
        reverse=True,
    )
    for row in rows[:top] if top else rows:
        cells = "".join(f"  {_cell(row.scores[name]):>12}" for name in ranking.estimators)
        lines.append(f"{row.encoder:<{width}}  {row.choice.name:<10}{cells}")
    return lines


def save_ranking(ranking: Ranking, out_dir: str | Path) -> Path:
    """``out_dir/ranking.json`` (written atomically); returns its path."""
    path = Path(out_dir) / "ranking.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, ranking.to_dict())
    return path


def plot_ranking(ranking: Ranking, path: str | Path) -> Path:
    """One panel per estimator: its score by hidden state (0 = embeddings) for every encoder, with the layer
    averages as markers at the right. Raises ImportError (with the install command) without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError(PLOT_HINT)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    count = len(ranking.estimators)
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 3.6), squeeze=False)
    for ax, estimator in zip(axes[0], ranking.estimators):
        for encoder in ranking.encoders():
            rows = [row for row in ranking.rows if row.encoder == encoder]
            single = [row for row in rows if row.choice.num_layers == 1]
            # Relative depth on x, so a 3-layer and a 12-layer encoder share one axis.
            depth = max(row.choice.layer for row in single) or 1
            (line,) = ax.plot(
                [row.choice.layer / depth for row in single],
                [row.scores[estimator] for row in single],
                marker="o",
                markersize=3,
                label=encoder,
            )
            averaged = [row for row in rows if row.choice.num_layers > 1]
            ax.scatter(
                [1.08 + 0.04 * i for i in range(len(averaged))],
                [row.scores[estimator] for row in averaged],
                marker="D",
                color=line.get_color(),
            )
        ax.set(title=estimator, xlabel="relative depth (0 = embeddings; diamonds: layer means)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Transferability by layer ({ranking.task})")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path

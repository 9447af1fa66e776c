"""The few-shot benchmark's report: accuracy and macro-F1 pivots, hftransfer's setfit against the setfit library,
every cell, and the learning-curve plot (``benchmarks/results/fewshot.{json,md,png}``)."""

from __future__ import annotations

import json
import statistics

from runner import RESULTS, pyplot

from hftransfer.utils import atomic_write_text


def summarise(records: list[dict]) -> list[dict]:
    keys = sorted({(r["dataset"], r["encoder"], r["k"], r["method"]) for r in records})
    rows = []
    for dataset, encoder, k, method in keys:
        found = [
            r
            for r in records
            if (r["dataset"], r["encoder"], r["k"], r["method"]) == (dataset, encoder, k, method)
        ]
        tests = [r["test"] for r in found]
        macros = [r["macro_f1"] for r in found if r.get("macro_f1") is not None]
        rows.append(
            {
                "dataset": dataset,
                "encoder": encoder,
                "k": k,
                "method": method,
                "samplings": len(found),
                "test_mean": statistics.mean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                # over the samplings that recorded it (records from before it was recorded lack it)
                "macro_f1_samplings": len(macros),
                "macro_f1_mean": statistics.mean(macros) if macros else None,
                "macro_f1_std": statistics.stdev(macros) if len(macros) > 1 else 0.0,
                "wall_mean": statistics.mean(r["wall_s"] for r in found),
                "train_mean": statistics.mean(r["train_s"] for r in found),
            }
        )
    return rows


def _cell(rows: list[dict], dataset: str, encoder: str, k: int, method: str) -> dict | None:
    return next(
        (
            r
            for r in rows
            if (r["dataset"], r["encoder"], r["k"], r["method"]) == (dataset, encoder, k, method)
        ),
        None,
    )


def _pivot_rows(
    rows: list[dict], methods: list[str], dataset: str, encoder: str, metric: str, count: str
) -> list[str]:
    """One table row per K > 0 of ``dataset`` / ``encoder``: each method's ``metric`` mean ± std, with the number
    of samplings (``row[count]``) in brackets where it is not 5."""
    lines = []
    for k in sorted({r["k"] for r in rows if (r["dataset"], r["encoder"]) == (dataset, encoder) and r["k"]}):
        cells = []
        for method in methods:
            row = _cell(rows, dataset, encoder, k, method)
            if row is None or row[f"{metric}_mean"] is None:
                cells.append("")
                continue
            tag = "" if row[count] == 5 else f" [{row[count]}]"
            cells.append(f"{row[f'{metric}_mean']:.4f} ± {row[f'{metric}_std']:.4f}{tag}")
        lines.append(f"| {dataset} | {encoder} | {k} | " + " | ".join(cells) + " |")
    return lines


def write_report(records: list[dict], settings: dict, method_order: list[str]) -> None:
    """Write the results from ``records``; ``method_order``: the table columns' and legend's order."""
    rows = summarise(records)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        RESULTS / "fewshot.json",
        json.dumps({"settings": settings, "records": records, "rows": rows}, indent=1) + "\n",
    )
    majority = settings.get("majority", {})
    methods = [m for m in method_order if m != "zeroshot" and any(r["method"] == m for r in rows)]
    lines = [
        "# Few-shot learning curves",
        "",
        "`python benchmarks/fewshot.py` (one thread per process, two benchmark processes on the 2 cores). Test "
        "accuracy, mean ± std over the samplings of the K examples per class (the number of samplings in "
        "brackets where it is not 5); every method of a cell trained on the same texts. Zero-shot (K = 0) and "
        "the majority class are the baselines.",
        "",
        "## Accuracy",
        "",
        "| dataset | encoder | K | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for dataset, encoder in sorted({(r["dataset"], r["encoder"]) for r in rows}):
        zero = _cell(rows, dataset, encoder, 0, "zeroshot")
        if dataset in majority or zero:
            baseline = f"majority class {majority[dataset]:.4f}" if dataset in majority else ""
            if zero:
                baseline += ("; " if baseline else "") + f"zero-shot {zero['test_mean']:.4f}"
            lines.append(f"| {dataset} | {encoder} | 0 | {baseline} |" + " |" * (len(methods) - 1))
        lines += _pivot_rows(rows, methods, dataset, encoder, "test", "samplings")
    lines += ["", "## Macro-F1", "", "| dataset | encoder | K | " + " | ".join(methods) + " |"]
    lines.append("|---|---|---|" + "---|" * len(methods))
    for dataset, encoder in sorted({(r["dataset"], r["encoder"]) for r in rows}):
        zero = _cell(rows, dataset, encoder, 0, "zeroshot")
        if zero and zero["macro_f1_mean"] is not None:
            lines.append(
                f"| {dataset} | {encoder} | 0 | zero-shot {zero['macro_f1_mean']:.4f} |"
                + " |" * (len(methods) - 1)
            )
        lines += _pivot_rows(rows, methods, dataset, encoder, "macro_f1", "macro_f1_samplings")
    lines += [
        "",
        "## hftransfer's setfit against the setfit library",
        "",
        "Same texts, encoder and test split. Wall: the whole process (start-up, data, training, scoring the test "
        "split); train: wall without scoring the test split. Ratios are hftransfer / library (mean over samplings). "
        "The variants (`setfit_b5`: 5 pair epochs; `setfit_lr5`: pair stage at lr 5e-5; `setfit_proto`: head started "
        "at the prototypes) ran later, in a process of their own beside the main two: their wall times are from "
        "another load than the library's.",
        "",
        "| dataset | encoder | K | ours | ours: accuracy | library: accuracy | ours: wall / train s | library: wall / "
        "train s | wall ratio | train ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row["method"].startswith("setfit") or row["method"].startswith("setfit_lib"):
            continue
        # Every variant of ours against the library's defaults on the same texts (with descriptions: the same set)
        reference = "setfit_lib+desc" if "+desc" in row["method"] else "setfit_lib"
        library = _cell(rows, row["dataset"], row["encoder"], row["k"], reference)
        if library is None:
            continue
        lines.append(
            f"| {row['dataset']} | {row['encoder']} | {row['k']} | {row['method']} | "
            f"{row['test_mean']:.4f} ± {row['test_std']:.4f} | {library['test_mean']:.4f} ± {library['test_std']:.4f} | "
            f"{row['wall_mean']:.1f} / {row['train_mean']:.1f} | {library['wall_mean']:.1f} / {library['train_mean']:.1f} | "
            f"{row['wall_mean'] / library['wall_mean']:.2f} | {row['train_mean'] / library['train_mean']:.2f} |"
        )
    lines += [
        "",
        "## Every cell",
        "",
        "| dataset | encoder | K | method | samplings | test accuracy | wall s | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['encoder']} | {row['k']} | {row['method']} | {row['samplings']} | "
            f"{row['test_mean']:.4f} ± {row['test_std']:.4f} | {row['wall_mean']:.1f} | {row['train_mean']:.1f} |"
        )
    atomic_write_text(RESULTS / "fewshot.md", "\n".join(lines) + "\n")
    plot(rows, majority, method_order)


def plot(rows: list[dict], majority: dict[str, float], method_order: list[str]) -> None:
    plt = pyplot()
    if plt is None:
        return
    panels = sorted({(r["dataset"], r["encoder"]) for r in rows})
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (dataset, encoder) in zip(axes[0], panels):
        for zero in (r for r in rows if (r["dataset"], r["encoder"], r["k"]) == (dataset, encoder, 0)):
            ax.axhline(zero["test_mean"], color="grey", linestyle="--", label=f"{zero['method']} (K = 0)")
        if dataset in majority:
            ax.axhline(majority[dataset], color="black", linestyle=":", label="majority class")
        for method in method_order:
            points = sorted(
                (
                    r
                    for r in rows
                    if (r["dataset"], r["encoder"], r["method"]) == (dataset, encoder, method) and r["k"]
                ),
                key=lambda r: r["k"],
            )
            if points:
                ax.errorbar(
                    [r["k"] for r in points],
                    [r["test_mean"] for r in points],
                    yerr=[r["test_std"] for r in points],
                    marker="o",
                    capsize=3,
                    label=method,
                )
        ax.set_xscale("log", base=2)
        ax.set_title(f"{dataset} ({encoder})")
        ax.set_xlabel("examples per class (K)")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS / "fewshot.png", dpi=110)

"""Does the transfer advisor rank encoders as fine-tuning does? Estimator scores (``hftransfer rank``) against the
test score of full fine-tuning of each encoder, as Kendall's tau per task, and the advisor's cost against it.

    python benchmarks/advisor_ranking.py                                      # 3 encoders x 3 tasks, seed 1
    python benchmarks/advisor_ranking.py --tasks ner --encoders minilm-l6 minilm-l3 --work-dir /tmp/rank --resume

Protocol: for each task, ``rank`` scores every encoder x layer choice on the same training examples the
fine-tuning runs see (Rotten Tomatoes: its first 2,000 carved training snippets, to keep 109M-parameter runs
affordable on CPU), then each encoder is fully fine-tuned with the task's preset (``recipes/configs/minilm``) at the
encoder's learning rate (MiniLM presets' for the MiniLMs; 5e-5 for MPNet-base, as base-size BERTs are tuned;
MiniLM's 2e-4 is far too high for it). MPNet-base's NER head trains at 1e-3: at the encoder's 5e-5 a freshly
initialised 21-way head barely moves in WNUT's 600 steps and the run never leaves the all-``O`` plateau (test F1
0.079). Per estimator and per way of turning layer scores into one encoder score
(``best`` layer choice, ``last`` layer, ``mean`` of all layers), tau between estimator and fine-tuned test score.
Results: ``benchmarks/results/advisor_ranking.{json,md}``, saved after every step (``--resume`` keeps finished runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from runner import RESULTS, ROOT, run_or_resume

from hftransfer.utils import atomic_write_text

CONFIGS = ROOT / "recipes" / "configs" / "minilm"
ENCODERS = ["minilm-l6", "mpnet-base", "minilm-l3"]
# Per-encoder settings on top of the task's MiniLM preset.
ENCODER_SETTINGS = {
    "mpnet-base": {
        "ner": ["train.lr=5e-5", "strategy.head_lr=1e-3"],
        "sentiment": ["train.lr=5e-5"],
        "drugs": ["train.lr=5e-5"],
    }
}
TASKS = {
    "ner": {"recipe": "finetune_ner.py", "preset": "ner_full.yaml", "metric": "f1", "data": []},
    "sentiment": {
        "recipe": "finetune_classifier.py",
        "preset": "classifier_full.yaml",
        "metric": "accuracy",
        "data": ["data.max_train_samples=2000"],
    },
    "drugs": {
        "recipe": "finetune_classifier.py",
        "preset": "classifier_full.yaml",
        "metric": "macro_f1",
        # The domain-adaptation oracle's settings: 490 labelled reviews need more epochs than 6.8k snippets.
        "data": ["data.dataset=drug_reviews", "data.drop_labels=[neutral]", "data.test_size=0"],
        "train": ["train.epochs=5", "train.batch_size=16", "train.metric_for_best=macro_f1"],
    },
}
AGGREGATES = ("best", "last", "mean")


def rank_task(task: str, encoders: list[str], out: Path, resume: bool) -> dict:
    path = out / "ranking.json"
    if resume and path.is_file():
        return json.loads(path.read_text())
    from hftransfer.advisor.ranking import rank
    from hftransfer.advisor.report import save_ranking
    from hftransfer.config import parse_config

    spec = TASKS[task]
    config = parse_config(spec["data"], default_config=CONFIGS / spec["preset"])
    started = time.perf_counter()
    ranking = rank(config, encoders)  # the defaults users get: 1,000 examples per split
    payload = ranking.to_dict()
    payload["encoder_scores"] = {
        f"{estimator}/{aggregate}": ranking.encoder_scores(estimator, aggregate)
        for estimator in ranking.estimators
        for aggregate in AGGREGATES
    }
    payload["wall_s"] = round(time.perf_counter() - started, 1)
    save_ranking(ranking, out)  # ranking.json without the extras, then the full payload over it
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return payload


def finetune(task: str, encoder: str, seed: int, work: Path, resume: bool) -> dict:
    spec = TASKS[task]
    argv = [
        "--config",
        str(CONFIGS / spec["preset"]),
        f"model.name_or_path={encoder}",
        *spec["data"],
        *spec.get("train", []),
        *ENCODER_SETTINGS.get(encoder, {}).get(task, []),
        f"train.seed={seed}",
    ]
    metrics = run_or_resume(spec["recipe"], argv, work / task / f"{encoder}-seed{seed}", resume)
    split = "test" if "test" in metrics else "report"
    scores = metrics["test"] if "test" in metrics else metrics["validation"]
    return {"score": scores[spec["metric"]], "split": split, "wall_s": metrics["benchmark_wall_s"]}


def kendall(x: dict[str, float], y: dict[str, float]) -> float:
    from scipy.stats import kendalltau

    names = sorted(set(x) & set(y))
    return float(kendalltau([x[n] for n in names], [y[n] for n in names]).statistic)


def write(results: dict, settings: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    for entry in results.values():
        ranked = set(entry["ranking"]["order"][entry["ranking"]["estimators"][0]])
        if not ranked <= set(entry.get("finetuned", {})):
            continue  # tau over a subset of the ranked encoders would be another question
        fine = {encoder: r["score"] for encoder, r in entry["finetuned"].items()}
        entry["tau"] = {
            key: kendall(scores, fine) for key, scores in entry["ranking"]["encoder_scores"].items()
        }
        finetuning = sum(r["wall_s"] for r in entry["finetuned"].values())
        entry["cost_ratio"] = entry["ranking"]["wall_s"] / finetuning
        timings = entry["ranking"].get("timings") or {}
        if timings:  # one estimator's own cost: every encoder's encoding plus that estimator's scoring
            entry["cost_ratio_by_estimator"] = {
                estimator: sum(t["encode"] + t.get(estimator, 0.0) for t in timings.values()) / finetuning
                for estimator in entry["ranking"]["estimators"]
            }
    complete = [entry for entry in results.values() if "tau" in entry]
    if complete:
        for key in complete[0]["tau"]:
            summary[key] = statistics.mean(entry["tau"][key] for entry in complete)
    payload = {"settings": settings, "tasks": results, "mean_tau": summary}
    atomic_write_text(RESULTS / "advisor_ranking.json", json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Encoder ranking: transferability estimators vs full fine-tuning",
        "",
        "`python benchmarks/advisor_ranking.py` (one fine-tuning seed per encoder x task; CPU, 2 cores).",
        "",
        "| task | encoder | fine-tuned test | "
        + " | ".join(f"{e} (best layer)" for e in _estimators(results))
        + " |",
        "|---|---|---|" + "---|" * len(_estimators(results)),
    ]
    for task, entry in results.items():
        for encoder, r in entry.get("finetuned", {}).items():
            scores = [
                f"{entry['ranking']['encoder_scores'][f'{e}/best'].get(encoder, float('nan')):.4f}"
                for e in _estimators(results)
            ]
            lines.append(
                f"| {task} | {encoder} | {r['score']:.4f} ({r['wall_s']:.0f} s) | "
                + " | ".join(scores)
                + " |"
            )
    lines += ["", "Kendall's tau (estimator score vs fine-tuned test score), per task and mean:", ""]
    keys = list(summary)
    lines.append(
        "| estimator / layers | " + " | ".join(t for t, e in results.items() if "tau" in e) + " | mean |"
    )
    lines.append("|---" * (len(complete) + 2) + "|")
    for key in keys:
        cells = [f"{entry['tau'][key]:+.3f}" for entry in results.values() if "tau" in entry]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {summary[key]:+.3f} |")
    lines += ["", "Advisor cost (encoding + scoring every encoder x layer) / fine-tuning every encoder:", ""]
    for task, entry in results.items():
        if "cost_ratio" in entry:
            by_estimator = entry.get("cost_ratio_by_estimator") or {}
            alone = "; ".join(f"{name} alone {ratio:.1%}" for name, ratio in by_estimator.items())
            lines.append(
                f"- {task}: {entry['ranking']['wall_s']:.0f} s / "
                f"{sum(r['wall_s'] for r in entry['finetuned'].values()):.0f} s = {entry['cost_ratio']:.1%}"
                + (f" (encoding + {alone})" if alone else "")
            )
    atomic_write_text(RESULTS / "advisor_ranking.md", "\n".join(lines) + "\n")


def _estimators(results: dict) -> list[str]:
    for entry in results.values():
        return list(entry["ranking"]["estimators"])
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--encoders", nargs="+", default=ENCODERS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-advisor-ranking"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--rank-only", action="store_true", help="score the encoders, fine-tune none")
    args = parser.parse_args()
    work = Path(args.work_dir)
    settings = {"encoders": args.encoders, "seed": args.seed, "encoder_settings": ENCODER_SETTINGS}
    results: dict[str, dict] = {}
    for task in args.tasks:  # all rankings first: they are minutes, the fine-tuning runs hours
        results[task] = {"ranking": rank_task(task, args.encoders, work / task / "rank", args.resume)}
        print(task, "ranked in", results[task]["ranking"]["wall_s"], "s", flush=True)
        write(results, settings)
    if args.rank_only:
        return
    for (
        encoder
    ) in args.encoders:  # cheapest encoders first would also work; this order fills every task's table
        for task in args.tasks:
            results[task].setdefault("finetuned", {})[encoder] = finetune(
                task, encoder, args.seed, work, args.resume
            )
            print(task, encoder, results[task]["finetuned"][encoder], flush=True)
            write(results, settings)


if __name__ == "__main__":
    main()

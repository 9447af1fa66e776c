"""CPU inference speed: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, on a real encoder.

    python benchmarks/onnx_inference.py                          # MiniLM-L6 + a fresh 13-label NER head, WNUT-16
    python benchmarks/onnx_inference.py --run-dir runs/ner       # a fine-tuned run (its test split is checked too)
    python benchmarks/onnx_inference.py --quick                  # smoke run: few iterations, results not saved

The model is exported with ``hftransfer.export.onnx_export.export_onnx`` (both formats, with its checks) into the
work directory. Each backend then runs the model's forward pass alone on the same pre-tokenised inputs (tokenising
and post-processing cost the same whatever runs the model):

- **batch-1 latency**: the median over ``--latency-iters`` single sentences, taken in turn from the test split, each
  at its own length (what a request-at-a-time service sees);
- **batch-32 throughput**: sentences per second over batches of 32 consecutive test sentences, padded to the
  longest of each batch.

Every input is run once by every backend before timing (steady state: a service has seen every length before).
Both runtimes get the same intra-op thread count (``--threads``, default torch's: the physical cores); ONNX Runtime
runs one inter-op thread. The backends are measured in ``--rounds`` rounds, each in a rotated order, so a drift of
the machine's speed affects them alike. Run it on an idle machine: with another process on the cores, PyTorch's
OpenMP threads wait for each other at every op (batch-1 latency grows tenfold or more), ONNX Runtime's much less;
the load average before and after is recorded. Writes ``benchmarks/results/onnx_inference.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from runner import RESULTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hftransfer.export.onnx_check import compare_logits, summary_lines  # noqa: E402
from hftransfer.export.onnx_export import export_onnx, load_exportable, locate_model  # noqa: E402
from hftransfer.export.onnx_layout import ONNX_FILES  # noqa: E402
from hftransfer.onnx_predict import OnnxModel  # noqa: E402

WNUT16_LABELS = 13  # O + B-/I- of six entity types: the head size of a WNUT-16 model


def fresh_asset_model(work: Path) -> Path:
    """MiniLM-L6 (the packaged asset) with a seeded, untrained NER head, saved like a run's ``model/``."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from hftransfer.assets import resolve_model_name

    source = resolve_model_name("minilm-l6")
    torch.manual_seed(0)
    labels = {i: f"LABEL_{i}" for i in range(WNUT16_LABELS)}
    model = AutoModelForTokenClassification.from_pretrained(source, num_labels=len(labels), id2label=labels)
    model.save_pretrained(work / "model")
    AutoTokenizer.from_pretrained(source).save_pretrained(work / "model")
    return work / "model"


def sentences(run_dir: Path | None, task: str, count: int) -> list:
    """The first ``count`` test inputs: the run's test split, else WNUT-16's (packaged), as words or texts."""
    from hftransfer.config import DataConfig
    from hftransfer.data.sources import load_task_data
    from hftransfer.export.onnx_check import run_test_split

    test, _, _ = run_test_split(run_dir)
    if test is None:
        test = load_task_data(DataConfig(dataset="wnut16"), "token-classification").splits["test"]
        task = "token-classification"
    column = "tokens" if task == "token-classification" else "text"
    return [test[i][column] for i in range(min(count, len(test)))]


def encode(tokenizer, items: list, max_length: int) -> dict[str, torch.Tensor]:
    words = isinstance(items[0], list)
    return dict(
        tokenizer(
            items,
            is_split_into_words=words,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
    )


def run_model(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    with torch.inference_mode():
        model(**inputs)


def measure(models: dict, singles: list[dict], batches: list[dict], rounds: int) -> dict[str, dict]:
    latencies = {name: [] for name in models}
    batch_seconds = {name: 0.0 for name in models}
    names = list(models)
    for (
        model
    ) in models.values():  # warm-up: every shape once (allocator caches, kernel selection, ORT's plans)
        for inputs in singles + batches:
            run_model(model, inputs)
    for round_index in range(rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            model = models[name]
            for inputs in singles:
                started = time.perf_counter()
                run_model(model, inputs)
                latencies[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            for inputs in batches:
                run_model(model, inputs)
            batch_seconds[name] += time.perf_counter() - started
    examples = rounds * sum(len(batch["input_ids"]) for batch in batches)
    return {
        name: {
            "batch1_median_ms": round(1000 * statistics.median(latencies[name]), 3),
            "batch1_p90_ms": round(1000 * statistics.quantiles(latencies[name], n=10)[-1], 3),
            "batch32_sentences_per_s": round(examples / batch_seconds[name], 2),
        }
        for name in models
    }


def cpu_info() -> dict[str, object]:
    flags: set[str] = set()
    model = platform.processor()
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next(
            (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
            model,
        )
        flags = set(
            next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split()
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
    }


def markdown(result: dict) -> str:
    rows = result["backends"]
    eager = rows["pytorch"]
    lines = [
        f"# CPU inference: PyTorch eager vs ONNX Runtime ({result['model']}, this machine's CPU)",
        "",
        f"{result['machine']['cpu']}; AVX2 {result['machine']['avx2']}, AVX-512 {result['machine']['avx512f']}, "
        f"VNNI {result['machine']['vnni']}; {result['threads']} intra-op threads for both runtimes; torch "
        f"{result['versions']['torch']}, onnxruntime {result['versions']['onnxruntime']}. Forward pass only, same "
        f"pre-tokenised inputs; batch-1 over {result['latency_sentences']} test sentences (median), batch-32 over "
        f"{result['throughput_sentences']} sentences, {result['rounds']} rounds. Load average "
        f"{result['load_average_before']:.2f} before, {result['load_average_after']:.2f} after (other processes "
        "competing for the cores distort every number, PyTorch's with several threads most).",
        "",
        "| backend | batch-1 median ms | p90 ms | speed-up | batch-32 sentences/s | speed-up | max logit diff | argmax agree |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        agree = result["agreement"].get(name, {})
        lines.append(
            f"| {name} | {row['batch1_median_ms']:.2f} | {row['batch1_p90_ms']:.2f} | "
            f"{eager['batch1_median_ms'] / row['batch1_median_ms']:.2f}x | {row['batch32_sentences_per_s']:.1f} | "
            f"{row['batch32_sentences_per_s'] / eager['batch32_sentences_per_s']:.2f}x | "
            f"{agree.get('max_abs_diff', 0):.1e} | {agree.get('argmax_agreement', 1):.2%} |"
        )
    lines += ["", "Export checks:", "", *[f"- {line}" for line in result["export_summary"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    import onnxruntime
    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-dir", type=Path, help="a fine-tuned run (default: MiniLM-L6 with a fresh NER head)"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where the export goes (default: a temporary directory)"
    )
    parser.add_argument("--threads", type=int, help="intra-op threads of both runtimes (default: torch's)")
    parser.add_argument("--latency-iters", type=int, default=200, help="batch-1 sentences per round")
    parser.add_argument("--throughput-batches", type=int, default=8, help="batches of 32 per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few iterations, nothing saved to results/"
    )
    parser.add_argument("--out", type=Path, help="results directory (default: benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.latency_iters, args.throughput_batches, args.rounds = 5, 1, 1
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    source = args.run_dir or fresh_asset_model(work)
    report = export_onnx(source, output_dir=work / "onnx", check_examples=200 if args.quick else None)
    model_dir, run_dir = locate_model(source)
    eager, task, _ = load_exportable(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(work / "onnx")
    items = sentences(run_dir, task, max(args.latency_iters, 32 * args.throughput_batches))
    singles = [encode(tokenizer, [items[i % len(items)]], args.max_length) for i in range(args.latency_iters)]
    batches = [
        encode(tokenizer, items[i * 32 : (i + 1) * 32], args.max_length)
        for i in range(args.throughput_batches)
    ]
    models = {"pytorch": eager}
    for fmt in ("onnx", "onnx-int8"):
        models[fmt] = OnnxModel(work / "onnx" / ONNX_FILES[fmt], eager.config, threads=threads)
    result = {
        "model": str(args.run_dir or "minilm-l6 + fresh 13-label token head"),
        "task": task,
        "threads": threads,
        "machine": cpu_info(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "rounds": args.rounds,
        "latency_sentences": len(singles),
        "throughput_sentences": sum(len(b["input_ids"]) for b in batches),
        "load_average_before": os.getloadavg()[0],
        "backends": measure(models, singles, batches, args.rounds),
        "load_average_after": os.getloadavg()[0],
        "agreement": {fmt: compare_logits(eager, models[fmt], batches) for fmt in ("onnx", "onnx-int8")},
        "export_summary": summary_lines(report),
        "export": {
            k: report[k] for k in ("files", "quantization", "export_seconds", "passed") if k in report
        },
    }
    text = markdown(result)
    sys.stdout.write(text)
    out = args.out or (work if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx_inference.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "onnx_inference.md").write_text(text)
    sys.stdout.write(f"wrote {out / 'onnx_inference.md'} and .json\n")
    return result


if __name__ == "__main__":
    main()

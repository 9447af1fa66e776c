"""``hftransfer export``: a run's model to ONNX (fp32 and/or int8), checked against PyTorch.

    hftransfer export runs/ner                              # runs/ner/onnx/model.onnx + model-int8.onnx
    hftransfer export runs/clf --format onnx-int8 --check-examples 500
    hftransfer predict runs/ner/onnx tweets.txt tweets.preds.jsonl --backend onnx-int8

Only the ``onnx`` extra's presence is checked before the command's imports, so a missing extra is one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from hftransfer.export.onnx_layout import ONNX_FORMATS, require_onnx


def run_export(args: argparse.Namespace) -> int:
    require_onnx()  # before torch loads: one line naming the extra
    from hftransfer.export.onnx_check import summary_lines
    from hftransfer.export.onnx_export import export_onnx

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    report = export_onnx(
        args.run_dir,
        args.format or ONNX_FORMATS,
        output_dir=args.output,
        check=not args.no_check,
        check_examples=args.check_examples,
    )
    # The library has no print() (ruff T20); the command's output goes to stdout here.
    lines = [f"wrote {report['directory']}", *summary_lines(report)]
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def add_parser(commands: Any) -> None:
    """Register ``export`` on the top-level subcommands."""
    parser = commands.add_parser(
        "export",
        help="export a run's model to ONNX (fp32 / int8) for CPU inference",
        description="Write RUN_DIR/onnx/ (model.onnx and/or model-int8.onnx, config, tokenizer, "
        "onnx_export.json) and check it against PyTorch: logits on a sample; predictions and the metric on the "
        "run's test split. An export that fails a check is still written, and the output and onnx_export.json say "
        "what it lost. Predict with `hftransfer predict RUN_DIR/onnx ...`. Needs pip install 'hftransfer[onnx]'.",
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run directory, its model/, or a model directory"
    )
    parser.add_argument(
        "--format",
        action="append",
        choices=ONNX_FORMATS,
        help="onnx (fp32) or onnx-int8; repeat it for both (default: both)",
    )
    parser.add_argument("--output", metavar="DIR", help="export directory (default: RUN_DIR/onnx)")
    parser.add_argument("--no-check", action="store_true", help="export without comparing with PyTorch")
    parser.add_argument(
        "--check-examples", type=int, metavar="N", help="check on the first N test examples (default: all)"
    )
    parser.set_defaults(handler=run_export, parser=parser)

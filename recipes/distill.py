"""Teacher-student distillation for NER and text (pair) classification.

    # 1. a teacher: any fine-tuned model (a run directory of ours, a model directory or a Hub id)
    accelerate launch recipes/finetune_ner.py output_dir=runs/teacher-ner
    # 2. the student: by default the teacher's every other layer, trained on gold labels + the teacher's soft labels
    accelerate launch recipes/distill.py
    accelerate launch recipes/distill.py --config recipes/configs/minilm/distill_classifier.yaml
    accelerate launch recipes/distill.py distill.teacher=runs/teacher-ner-mpnet distill.student=pretrained \\
        model.name_or_path=minilm-l6          # a smaller pretrained encoder, another tokenizer: word-level KD

The loss terms are objectives, logged apart: ``task`` (gold labels), ``distill_soft`` (the teacher's softened
predictions; the preset's list has both at weight 0.5), ``distill_hidden`` and ``distill_attention``:

    accelerate launch recipes/distill.py 'objectives+=[{name: distill_hidden}, {name: distill_attention}]'

The student is exported like any fine-tuned model (``<run>/model``, ``pipeline`` loads it); ``metrics.json`` gets
a ``distill_report``: teacher vs student score, parameters and inference samples/s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hftransfer.config import parse_config
from hftransfer.distill.config import DistillRunConfig
from hftransfer.distill.report import compare_with_teacher
from hftransfer.distill.run import setup_distill
from hftransfer.finetune import evaluate_best, finish, train
from hftransfer.utils import run_main

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "minilm" / "distill_ner.yaml"


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_config(argv, default_config=DEFAULT_CONFIG, schema=DistillRunConfig)
    run = setup_distill(config)
    train(run)
    metrics = evaluate_best(run)
    compare_with_teacher(run)
    finish(run)
    return metrics


if __name__ == "__main__":
    run_main(main)

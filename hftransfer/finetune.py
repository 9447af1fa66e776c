"""Fine-tuning one task: the one run flow (``hftransfer.flow``) of a run whose config names one ``task``.

Recipes call the four steps in order::

    run = setup(config, recipe="finetune_ner")
    train(run)
    evaluate_best(run)
    finish(run)

Everything is written under ``run.run_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl`` (every log
record), ``metrics.json`` (final validation/test metrics), ``checkpoints/`` and ``model/`` (the best model with its
tokenizer, an ordinary Hugging Face model directory).
"""

from __future__ import annotations

from hftransfer.flow.core import Run, evaluate_best, finish, start_loop, train
from hftransfer.flow.layout import token_loaders, tokenize_task
from hftransfer.flow.setup import setup

__all__ = ["Run", "evaluate_best", "finish", "setup", "start_loop", "token_loaders", "tokenize_task", "train"]

"""Start-up cost: what every run and CLI call imports leaves out the heavy optional modules that only some runs use.

peft is imported where an adapter is built, saved, loaded, merged or exported; scikit-learn where density ratios are
estimated or a metric needs it. A module-level ``import peft`` (or a module that imports it, such as
``transformers.optimization``) on the common path puts seconds back on every run; these tests name the import that
crept back. Each check runs in a fresh interpreter, since this test session has imported peft long before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import recipe_argv, toy_classification_files, write_tiny_bert

ROOT = Path(__file__).resolve().parents[1]

# Imported only by the runs, commands and estimates that use them.
GUARDED = ("peft", "sklearn", "onnx", "onnxruntime", "optuna", "matplotlib", "mlflow", "tensorboard")

# Loads what a recipe run, `hftransfer predict` and the CLI import, without running anything.
COMMON_PATH = """
import importlib.util
import hftransfer
import hftransfer.cli
import hftransfer.finetune
import hftransfer.flow
import hftransfer.predict
from hftransfer.registry import get_strategy, strategy_names

for name in ("finetune_classifier", "finetune_ner"):
    spec = importlib.util.spec_from_file_location(name, f"recipes/{name}.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
# Every strategy registers by name, and its config builds, without its library.
assert {"lora", "ia3", "full", "frozen"} <= set(strategy_names())
get_strategy("lora").config(), get_strategy("ia3").config()
"""

# A full fine-tuning run of a few steps, saved model and metrics included.
FULL_RUN = """
import sys
sys.path.insert(0, "recipes")
import finetune_classifier
finetune_classifier.main(sys.argv[2:])
"""

REPORT = """
import json, sys
print(json.dumps({name: name in sys.modules for name in sys.argv[1].split(",")}))
"""


def _loaded(code: str, *args: str) -> list[str]:
    """The guarded modules in ``sys.modules`` after running ``code`` in a fresh interpreter at the repository root."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-c", code + REPORT, ",".join(GUARDED), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return sorted(name for name, present in loaded.items() if present)


def test_the_common_path_does_not_import_optional_libraries():
    assert _loaded(COMMON_PATH) == []


def test_a_full_fine_tuning_run_does_not_import_peft(tmp_path):
    model_dir = write_tiny_bert(tmp_path / "tiny-bert", seed=0)
    files = toy_classification_files(tmp_path)
    argv = recipe_argv(model_dir, files, tmp_path / "run", "train.max_steps=2", "train.eval_every_steps=2")
    loaded = _loaded(FULL_RUN, *argv)
    assert (tmp_path / "run" / "metrics.json").is_file()
    # Evaluating a classifier computes its metrics with scikit-learn; nothing else guarded is used.
    assert set(loaded) <= {"sklearn"}, loaded

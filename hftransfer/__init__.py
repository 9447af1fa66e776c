"""hftransfer: transfer learning for Hugging Face NLP encoders.

The recipes in ``recipes/`` wire these pieces; notebooks and user scripts can call them directly. Names are
imported on first use (PEP 562), so ``import hftransfer.assets`` or a ``--help`` does not pay for torch and
transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AssetError": "hftransfer.errors",
    "ConfigError": "hftransfer.errors",
    "DataConfig": "hftransfer.config",
    "DataError": "hftransfer.errors",
    "DiskFullError": "hftransfer.errors",
    "EncoderStrategyConfig": "hftransfer.config",
    "HFTransferError": "hftransfer.errors",
    "ModelConfig": "hftransfer.config",
    "MultitaskConfig": "hftransfer.multitask.config",
    "ObjectiveConfig": "hftransfer.config",
    "Predictor": "hftransfer.predict",
    "RunConfig": "hftransfer.config",
    "RunDirInUseError": "hftransfer.errors",
    "StrategyConfig": "hftransfer.config",
    "TaskData": "hftransfer.data.sources",
    "TrainConfig": "hftransfer.config",
    "TrainingLoop": "hftransfer.training.loop",
    "build_model": "hftransfer.modeling",
    "SourceConfig": "hftransfer.config",
    "evaluate_best": "hftransfer.flow",
    "finish": "hftransfer.flow",
    "load_config_file": "hftransfer.config",
    "load_task_data": "hftransfer.data.sources",
    "load_tokenizer": "hftransfer.modeling",
    "objective_config": "hftransfer.config",
    "parse_config": "hftransfer.config",
    "predict_file": "hftransfer.predict",
    "register_format": "hftransfer.data.formats",
    "register_objective": "hftransfer.registry",
    "register_strategy": "hftransfer.registry",
    "sequence_classification_metrics": "hftransfer.evaluation.metrics",
    "setup": "hftransfer.flow",
    "strategy_config": "hftransfer.config",
    "token_classification_metrics": "hftransfer.evaluation.metrics",
    "train": "hftransfer.flow",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hftransfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""hftransfer: transfer learning for Hugging Face NLP encoders.

The recipes in ``recipes/`` wire these pieces; notebooks and user scripts can call them directly.
"""

from hftransfer.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config_file, parse_config
from hftransfer.data.sources import TaskData, load_task_data
from hftransfer.errors import AssetError, ConfigError, DataError, HFTransferError
from hftransfer.evaluation.metrics import sequence_classification_metrics, token_classification_metrics
from hftransfer.finetune import evaluate_best, finish, setup, train
from hftransfer.modeling import build_model, load_tokenizer
from hftransfer.predict import Predictor, predict_file
from hftransfer.training.loop import TrainingLoop

__version__ = "0.1.0"

__all__ = [
    "AssetError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "HFTransferError",
    "ModelConfig",
    "Predictor",
    "RunConfig",
    "TaskData",
    "TrainConfig",
    "TrainingLoop",
    "build_model",
    "evaluate_best",
    "finish",
    "load_config_file",
    "load_task_data",
    "load_tokenizer",
    "parse_config",
    "predict_file",
    "sequence_classification_metrics",
    "setup",
    "token_classification_metrics",
    "train",
]

"""Typed run configuration: the dataclasses are the schema; YAML presets, the command line and ``--help`` are
derived from them.

* ``schema.py``: the core sections (model, data, train);
* ``plugins.py``: the bases of the strategy and objective configs that each registered method subclasses;
* ``run.py``: :class:`RunConfig` and the checks across sections; ``sources.py``: named sources of extra batches;
* ``sections.py`` and ``parse.py``: merging the sources and parsing them; ``help.py``: ``--help`` for the
  registered strategies and objectives.
"""

from hftransfer.config.parse import (
    build_parser,
    load_config_file,
    normalise_overrides,
    parse_config,
    save_config,
)
from hftransfer.config.plugins import (
    EncoderStrategyConfig,
    ObjectiveConfig,
    StrategyConfig,
    objective_config,
    strategy_config,
)
from hftransfer.config.run import RunConfig, check_hub_fields, resolve_plugins
from hftransfer.config.schema import DataConfig, DataFormat, ModelConfig, TaskType
from hftransfer.config.sources import SourceConfig
from hftransfer.config.train import TrainConfig

__all__ = [
    "DataConfig",
    "DataFormat",
    "EncoderStrategyConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "RunConfig",
    "SourceConfig",
    "StrategyConfig",
    "TaskType",
    "TrainConfig",
    "build_parser",
    "check_hub_fields",
    "load_config_file",
    "normalise_overrides",
    "objective_config",
    "parse_config",
    "resolve_plugins",
    "save_config",
    "strategy_config",
]

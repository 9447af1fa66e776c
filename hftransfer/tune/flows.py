"""Which recipe a study's trials run, as the two calls a recipe's ``main()`` starts with: parse its config (its
preset first, as ``accelerate launch recipes/X.py --config FILE`` does) and set the run up.

Trials run in-process so that the study can watch each validation and stop a trial there (pruning), which a
recipe run as a subprocess would hide. A little repetition of each recipe's two calls is the price; the rest of a
trial (``train``, ``evaluate_best``) is the shared flow.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigError


@dataclass(frozen=True)
class RecipeFlow:
    """How a recipe parses its config and sets its run up, without its ``main()``."""

    name: str
    """The recipe's name on the command line (``ner``, ``classifier``, ...; ``hftransfer train NAME``)."""
    script: Path
    """``recipes/<script>.py``; its stem is the run's recipe label (``finetune_ner``)."""
    default_config: Path | None
    """The recipe's own preset, loaded under the study's preset."""
    parse_with: Callable[[list[str], Path | None], Any]
    setup_with: Callable[[Any, str], Any]

    def parse(self, argv: list[str]) -> Any:
        """The validated config of ``argv`` (``--config PRESET`` and ``key=value`` overrides)."""
        return self.parse_with(argv, self.default_config)

    def setup(self, config: Any) -> Any:
        """The :class:`~hftransfer.flow.core.Run` of ``config``, ready to train."""
        return self.setup_with(config, self.script.stem)


def recipe_flow(config_path: Path, recipe: str | None = None) -> RecipeFlow:
    """The flow of ``recipe`` (a name from ``hftransfer train``), or of the recipe ``config_path`` is for.

    Raises:
        ConfigError: an unknown recipe, a config that names none, or no ``recipes/`` (an installed wheel).
    """
    from hftransfer.cli import RECIPES, recipe_for_config, recipes_dir

    name = recipe or recipe_for_config(config_path)
    if name not in _FLOWS:
        raise ConfigError(f"--recipe {name}: unknown recipe; use one of {', '.join(_FLOWS)}")
    script = recipes_dir() / RECIPES[name]
    parse_with, setup_with = _FLOWS[name]
    return RecipeFlow(name, script, _default_config(script), parse_with, setup_with)


def _default_config(script: Path) -> Path | None:
    """The recipe module's ``DEFAULT_CONFIG`` (imported, so it cannot drift from what the recipe loads)."""
    module_name = f"_hftransfer_recipe_{script.stem}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, script)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{script}: cannot load the recipe")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return getattr(module, "DEFAULT_CONFIG", None)


def _task_parser(task: str, other: str) -> Callable[[list[str], Path | None], Any]:
    def parse(argv: list[str], default: Path | None) -> Any:
        from hftransfer.config import parse_config

        config = parse_config(argv, default_config=default)
        if config.task != task:  # the check the recipe's main() makes
            raise ConfigError(f"task={config.task!r}: this recipe trains {task}; use --recipe {other}")
        return config

    return parse


def _parse_plain(argv: list[str], default: Path | None) -> Any:
    from hftransfer.config import parse_config

    return parse_config(argv, default_config=default)


def _parse_multitask(argv: list[str], default: Path | None) -> Any:
    from hftransfer.multitask.config import parse_multitask_config

    return parse_multitask_config(argv, default_config=default)


def _parse_distill(argv: list[str], default: Path | None) -> Any:
    from hftransfer.config import parse_config
    from hftransfer.distill.config import DistillRunConfig

    return parse_config(argv, default_config=default, schema=DistillRunConfig)


def _parse_pretrain(argv: list[str], default: Path | None) -> Any:
    from hftransfer.config import parse_config
    from hftransfer.pretrain.run import PretrainConfig

    return parse_config(argv, default_config=default, schema=PretrainConfig)


def _setup_plain(config: Any, recipe: str) -> Any:
    from hftransfer.flow import setup

    return setup(config, recipe=recipe)


def _setup_multitask(config: Any, recipe: str) -> Any:
    from hftransfer.multitask.run import setup

    return setup(config, recipe=recipe)


def _setup_distill(config: Any, recipe: str) -> Any:
    from hftransfer.distill.run import setup_distill

    return setup_distill(config, recipe=recipe)


def _setup_pretrain(config: Any, recipe: str) -> Any:
    from hftransfer.pretrain.run import setup

    return setup(config, recipe=recipe)


_FLOWS: dict[str, tuple[Callable[[list[str], Path | None], Any], Callable[[Any, str], Any]]] = {
    "ner": (_task_parser("token-classification", "classifier"), _setup_plain),
    "classifier": (_task_parser("sequence-classification", "ner"), _setup_plain),
    "multitask": (_parse_multitask, _setup_multitask),
    "distill": (_parse_distill, _setup_distill),
    "domain_adapt": (_parse_plain, _setup_plain),
    "pretrain_mlm": (_parse_pretrain, _setup_pretrain),
}

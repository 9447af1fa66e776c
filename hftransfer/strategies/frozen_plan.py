"""The frozen-encoder strategy as a run: encode every split once (from the feature cache when it can), then train
only a small head on the cached features with the same loop, metrics and best-model selection as fine-tuning."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from hftransfer.config import StrategyConfig
from hftransfer.errors import ConfigError
from hftransfer.registry import register_strategy
from hftransfer.strategies.base import StrategyContext, StrategyPlan, encoder_plan, finish_plan
from hftransfer.strategies.feature_cache import base_encoder, cached_features
from hftransfer.strategies.feature_data import build_feature_loaders
from hftransfer.strategies.frozen import HEAD_FILE, ProbeModel, build_feature_head
from hftransfer.strategies.frozen_export import export_frozen
from hftransfer.strategies.head_start import start_head
from hftransfer.strategies.layers import EncoderLayout, count_parameters
from hftransfer.training.disk import write_on_main
from hftransfer.training.optim import parameter_groups
from hftransfer.utils import atomic_directory

logger = logging.getLogger("hftransfer")


@dataclass
class FrozenConfig(StrategyConfig):
    """A fixed feature extractor: the encoder never changes; a head trains on its features (cached on disk)."""

    name: str = "frozen"
    head: Literal["linear", "mlp"] = "linear"
    """The trained head. ``mlp`` is one hidden layer with the architecture's own classifier activation (tanh for
    BERT/MPNet), so a CLS-pooled sequence head exports as the native HF head."""
    head_hidden_size: int | None = None
    """``head=mlp``: hidden width (default: the encoder's hidden size, required for a native export)."""
    feature_layer: int | Literal["auto"] = -1
    """Hidden-state index the features come from; 0 = embeddings, 1..L = encoder layers, negative counts from the
    top. Probing a lower layer exports a truncated encoder. ``auto``: every layer and the layer averages are probed
    on the validation split (a logistic regression on cached features) and the best one is used
    (``metrics.json`` -> ``strategy.feature_layer_auto`` holds every score)."""
    feature_layers: int = 1
    """Average the hidden states of this many layers ending at ``feature_layer``."""
    pooling: Literal["cls", "mean"] | None = None
    """Sequence tasks: ``cls`` (first token) or ``mean`` (mask-aware mean of tokens). Default ``mean``."""
    head_init: Literal["random", "prototypes", "descriptions"] = "random"
    """``prototypes``: start a linear head as the nearest-prototype classifier of the training features (each
    class's mean vector; weight imprinting), then train it as usual. Few-shot: the head starts where a prototypical
    network would classify. ``descriptions``: start it as the zero-shot classifier of ``data.label_template`` /
    ``data.label_descriptions`` (sequence classification; ``strategies/head_start.py``)."""
    cache_features: bool = True
    """Encode the data once and train the head from an on-disk cache."""
    cache_dir: str | None = None
    """Where the feature cache lives. Default ``$HFTRANSFER_CACHE`` or ``~/.cache/hftransfer/features``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.feature_layer == "auto" and self.feature_layers != 1:
            raise ConfigError(
                "strategy.feature_layer=auto chooses feature_layers too; leave feature_layers unset"
            )
        if self.feature_layers < 1:
            raise ConfigError(f"strategy.feature_layers must be >= 1, got {self.feature_layers}")
        if self.head_hidden_size is not None and (self.head != "mlp" or self.head_hidden_size < 1):
            raise ConfigError("strategy.head_hidden_size needs strategy.head=mlp and a positive size")
        if self.head_init not in ("random", "prototypes", "descriptions"):
            raise ConfigError(
                f"strategy.head_init must be random, prototypes or descriptions, got {self.head_init!r}"
            )
        if self.head_init != "random" and self.head != "linear":
            raise ConfigError(
                f"strategy.head_init={self.head_init} sets a linear head's weights; use strategy.head=linear"
            )


def build_frozen(context: StrategyContext) -> StrategyPlan:
    """Encode (or load cached) features of every split and build the head, its loaders and its export.

    Returns:
        The plan: its model is the head alone, and its training and evaluation loaders run over cached features
        rather than token ids. For a multitask model (several heads on one encoder), the token model itself with
        the encoder fixed (:func:`fixed_encoder_plan`).
    """
    if context.shared_encoder or context.encoder_forward:
        return fixed_encoder_plan(context)
    model, config, features = context.model, context.config, context.features
    tokenizer, accelerator, run_dir = context.tokenizer, context.accelerator, context.run_dir
    base_model_name_or_path = context.base_model_name_or_path
    strategy = config.strategy
    encoder = base_encoder(model).to(accelerator.device)
    cache_report: dict[str, Any] = {}
    stores = {}
    auto_report = None
    if strategy.feature_layer == "auto":
        with accelerator.main_process_first():
            auto_report = _choose_layer(context, encoder)
    # The main process fills the cache first; the others then read it instead of encoding again.
    with accelerator.main_process_first():
        for split, split_features in features.items():
            started = time.perf_counter()
            stores[split], hit = cached_features(
                encoder,
                tokenizer,
                split_features,
                cache_dir=strategy.cache_dir,
                layer=strategy.feature_layer,
                num_layers=strategy.feature_layers,
                pooling=strategy.pooling,
                task=config.task,
                batch_size=config.train.eval_batch_size,
                device=accelerator.device,
                use_cache=strategy.cache_features,
            )
            cache_report[split] = {
                "hit": hit,
                "key": stores[split].key,
                "seconds": round(time.perf_counter() - started, 2),
            }
    encoder.to("cpu")  # training the head needs only the cached features
    train_loader, eval_loaders = build_feature_loaders(
        stores["train"],
        {split: store for split, store in stores.items() if split != "train"},
        batch_size=config.train.batch_size,
        eval_batch_size=config.train.eval_batch_size,
        seed=config.train.seed,
        group_by_length=config.train.group_by_length,
    )
    head = build_feature_head(
        model.config,
        len(model.config.id2label),
        kind=strategy.head,
        head_hidden_size=strategy.head_hidden_size,
    )
    head_init = start_head(context, head, encoder, stores["train"])
    head_dir = run_dir / "head"

    def save_best(acc: Accelerator, trained: torch.nn.Module) -> None:
        state = {k: v.contiguous() for k, v in acc.get_state_dict(trained).items()}
        write_on_main(acc, "the best head", head_dir, lambda: _save_head(state, head_dir))

    def restore_best(acc: Accelerator, trained: torch.nn.Module) -> None:
        acc.unwrap_model(trained).load_state_dict(load_file(str(head_dir / HEAD_FILE)))

    def export(acc: Accelerator, trained: torch.nn.Module) -> dict[str, Any]:
        produced: dict[str, Any] = {}
        if acc.is_main_process:
            sample = features.get("validation", features["train"])
            produced = export_frozen(
                encoder,
                acc.unwrap_model(trained),
                tokenizer,
                run_dir / "model",
                name_or_path=base_model_name_or_path,
                task=config.task,
                layer=strategy.feature_layer,
                num_layers=strategy.feature_layers,
                pooling=strategy.pooling,
                id2label=dict(model.config.id2label),
                sample=sample.select(range(min(16, len(sample)))),
            )
            # setfit's and protonet's mean pooling is their design, not an option to change
            if not produced.get("pipeline") and strategy.name == "frozen":
                logger.warning(
                    "Frozen head exported as encoder + head (%s): load it with hftransfer's predict, not pipeline. "
                    "For a plain transformers model use head=linear for NER, or head=mlp pooling=cls for "
                    "sequence tasks, on a single layer.",
                    produced.get("reason"),
                )
        acc.wait_for_everyone()
        return produced

    def token_model(acc: Accelerator, trained: torch.nn.Module) -> torch.nn.Module:
        # The encoder went back to the CPU once the features were cached; the report sets need it again.
        return ProbeModel(
            encoder.to(acc.device),
            acc.unwrap_model(trained),
            layer=strategy.feature_layer,
            num_layers=strategy.feature_layers,
            pooling=strategy.pooling,
            task=config.task,
        ).eval()

    # The head is trained alone, but the fraction is reported against the model that is exported.
    head_count = count_parameters(head)["trainable"]
    total = count_parameters(encoder)["total"] + head_count
    report = {
        "name": "frozen",
        "head": strategy.head,
        "feature_layer": strategy.feature_layer,
        "feature_layers": strategy.feature_layers,
        "pooling": strategy.pooling,
        "feature_cache": cache_report,
        **({"feature_layer_auto": auto_report} if auto_report else {}),
        **({"head_init": head_init} if head_init else {}),
        "parameters": {"total": total, "trainable": head_count, "trainable_fraction": head_count / total},
    }
    groups = parameter_groups(head.named_parameters(), config.train.weight_decay)
    for group in groups:
        group["name"] = f"head/{group['name']}"
        group["lr"] = strategy.head_lr or config.train.lr
    report["lr_groups"] = {group["name"]: group["lr"] for group in groups}
    plan = StrategyPlan(
        head,
        groups,
        save_best=save_best,
        restore_best=restore_best,
        export=export,
        report=report,
        train_loader=train_loader,
        eval_loaders=eval_loaders,
        token_model=token_model,
    )
    return plan


def _choose_layer(context: StrategyContext, encoder: torch.nn.Module) -> dict[str, Any]:
    """Set ``strategy.feature_layer`` / ``feature_layers`` to the choice the validation probe scores best; returns
    the probe's report."""
    from hftransfer.advisor.auto_layer import choose_feature_layer

    config, features, strategy = context.config, context.features, context.config.strategy
    if "validation" not in features:
        raise ConfigError(
            "strategy.feature_layer=auto picks the layer on the validation split, and this data has none: give "
            "data.validation_file or a data.validation_size above 0"
        )
    if config.task == "sequence-classification" and config.data.problem_type != "single_label_classification":
        raise ConfigError(
            f"strategy.feature_layer=auto probes class labels; data.problem_type={config.data.problem_type} "
            "needs a fixed strategy.feature_layer"
        )
    choice, report = choose_feature_layer(
        encoder,
        context.tokenizer,
        features["train"],
        features["validation"],
        task=config.task,
        label_names=[context.model.config.id2label[i] for i in range(len(context.model.config.id2label))],
        pooling=strategy.pooling,
        cache_dir=strategy.cache_dir,
        use_cache=strategy.cache_features,
        batch_size=config.train.eval_batch_size,
        device=context.accelerator.device,
        seed=config.train.seed,
    )
    strategy.feature_layer, strategy.feature_layers = choice.layer, choice.num_layers
    return report


def _save_head(state: dict[str, torch.Tensor], head_dir: Path) -> None:
    with atomic_directory(head_dir, what="the best head") as tmp:
        save_file(state, str(tmp / HEAD_FILE))


def fixed_encoder_plan(context: StrategyContext) -> StrategyPlan:
    """The encoder fixed inside the token model, every task's own transformers head trained: what ``frozen``
    means where features cannot be cached (several tasks read one encoder; an objective needs the encoder's forward
    pass on the batch).

    Raises:
        ConfigError: a head option of the feature-cache form (they shape a head of our own, not the task's).
    """
    strategy = context.strategy
    defaults = FrozenConfig()
    # A sequence task's config fills in pooling=mean for the feature-cache head, so that value is no user choice.
    changed = [
        name
        for name in ("head", "head_hidden_size", "feature_layer", "feature_layers", "pooling", "head_init")
        if getattr(strategy, name) != getattr(defaults, name)
        and (name, getattr(strategy, name)) != ("pooling", "mean")
    ]
    if changed:
        where = "in a multitask run" if context.shared_encoder else f"with {context.encoder_forward}"
        raise ConfigError(
            f"strategy.name=frozen {where} keeps the encoder fixed in the token model and trains the task's own "
            f"transformers head on the last layer; strategy.{changed[0]} is an option of the feature-cache head "
            "(as are head, head_hidden_size, head_init, feature_layer, feature_layers and pooling)"
        )
    plan = encoder_plan(context)
    layout = EncoderLayout.of(plan.model)
    for name, param in plan.model.named_parameters():
        if not layout.is_head(name):
            param.requires_grad_(False)
    return finish_plan(plan, context)


def describe_frozen(strategy: dict, report: dict) -> str:
    return f"frozen encoder + {strategy.get('head')} head (layer {strategy.get('feature_layer')})"


register_strategy(
    "frozen", config=FrozenConfig, build=build_frozen, trains_encoder=False, describe=describe_frozen
)

"""Typed run configuration: the dataclasses are the schema, YAML presets and the CLI are derived from them.

Parsing is done by jsonargparse, so a wrong key, a wrong type or a value outside a ``Literal`` fails before any
work with a message that names the key. Cross-field checks live in ``__post_init__`` and raise
:class:`~hftransfer.errors.ConfigError` naming the field.

CLI overrides may be written torchtune-style (``train.lr=1e-4``) or argparse-style (``--train.lr=1e-4``).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hftransfer.errors import ConfigError

TaskType = Literal["token-classification", "sequence-classification"]
DataFormat = Literal["auto", "conll", "json", "jsonl", "csv", "tsv"]


@dataclass
class ModelConfig:
    """Which pretrained encoder to adapt."""

    name_or_path: str = "minilm-l6"
    """Hub model id, local directory, or an offline alias (``minilm-l6``)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); ignored for local directories."""
    trust_remote_code: bool = False
    """Allow custom modelling code from the model repository. Off unless you trust the repository."""
    attn_implementation: str | None = None
    """Attention kernel passed to ``from_pretrained`` (``sdpa``, ``eager``, ...). None (the default) lets
    transformers choose: PyTorch's fused ``scaled_dot_product_attention`` (SDPA) where the architecture has it (BERT,
    RoBERTa, ...), eager attention where it does not (MPNet). Naming one the architecture lacks is an error."""
    head_bias_init: Literal["default", "prior"] = "default"
    """``default``: a new head's bias starts at zero (transformers' initialisation). ``prior``: at the log frequencies
    of the training labels, so the head predicts the label prior from the first step and the encoder is not pushed
    to learn it. Use it when a fine-tuned NER model predicts ``O`` for every token: sentence-embedding encoders such
    as ``mpnet-base`` (all-mpnet-base-v2) collapse that way on WNUT-16 at the default start."""


@dataclass
class DataConfig:
    """Where the task data comes from and how it is tokenised."""

    dataset: str | None = None
    """Builtin offline name (``wnut16``, ``rotten_tomatoes``), a Hub dataset id, or one data file. Splits that it
    lacks are carved from its train split with ``split_seed``."""
    train_file: str | None = None
    """Training file (CoNLL, JSON/JSONL, CSV/TSV). When set it takes precedence and ``dataset`` is not used, so
    ``data.train_file=...`` on the command line replaces a preset's dataset."""
    validation_file: str | None = None
    """Validation file; carved from the training data when absent."""
    test_file: str | None = None
    """Test file; carved from the training data when absent (set ``test_size=0`` for no test split)."""
    format: DataFormat = "auto"
    """File format; ``auto`` picks it from the extension (.conll/.txt/.iob -> conll, .json, .jsonl, .csv, .tsv)."""
    hub_config: str | None = None
    """Configuration name of a Hub dataset."""
    tokens_column: str = "tokens"
    """Token-classification JSON/CSV/Hub column holding the list of words."""
    tags_column: str = "tags"
    """Token-classification JSON/CSV/Hub column holding the list of tags (strings, or ClassLabel ids on the Hub)."""
    text_column: str = "text"
    """Sequence-classification column holding the text."""
    text_pair_column: str | None = None
    """Second text column for sentence-pair classification (e.g. ``hypothesis``); None for single texts."""
    label_column: str = "label"
    """Sequence-classification column holding the label."""
    conll_token_column: int = 0
    """CoNLL column index of the word."""
    conll_tag_column: int = -1
    """CoNLL column index of the tag (-1 = last column)."""
    validation_size: float = 0.1
    """Fraction of all examples carved out for validation when no validation split is given."""
    test_size: float = 0.1
    """Fraction of all examples carved out for test when no test split is given (0 = no test split)."""
    split_seed: int = 0
    """Seed of the carving shuffle (stratified by label for classification)."""
    max_train_samples: int | None = None
    """Keep only the first N training examples (after carving); for quick experiments."""
    max_eval_samples: int | None = None
    """Keep only the first N validation and test examples."""
    max_length: int = 128
    """Maximum tokens per model input. Longer NER sentences are split into windows; longer texts are truncated."""
    label_all_subwords: bool = False
    """NER: label every subword of a word instead of only the first (the rest get -100)."""
    window_context: int = 16
    """NER: tokens of left context repeated at the start of each continuation window of a long sentence (at most
    half the window is used for context)."""

    def __post_init__(self) -> None:
        if self.dataset is None and self.train_file is None:
            raise ConfigError("data: set data.dataset (builtin name, Hub id or file) or data.train_file")
        for name in ("validation_size", "test_size"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1), got {value}")
        if self.validation_size + self.test_size >= 1.0:
            raise ConfigError("data.validation_size + data.test_size must be below 1")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be at least 8, got {self.max_length}")
        if self.window_context < 0:
            raise ConfigError(f"data.window_context must be >= 0, got {self.window_context}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be a positive count, got {value}")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: float = 3.0
    """Passes over the training data (fractions allowed). Ignored when ``max_steps`` is set."""
    max_steps: int | None = None
    """Total optimizer steps; overrides ``epochs``."""
    batch_size: int = 16
    """Examples per device per micro-batch."""
    eval_batch_size: int = 64
    """Examples per device per evaluation batch."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step. The loss is normalised over the whole accumulated batch, so k micro-batches
    of b examples give the same update as one batch of k*b."""
    lr: float = 5e-5
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay; never applied to biases and LayerNorm weights."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    warmup_ratio: float = 0.1
    """Fraction of the optimizer steps spent warming the LR up linearly from 0; it then decays linearly to 0."""
    warmup_steps: int | None = None
    """Warm-up steps; overrides ``warmup_ratio``."""
    torch_compile: bool = False
    """Compile the model's forward with ``torch.compile`` (dynamic shapes; worth it on GPU, not on a small CPU)."""
    compile_backend: str = "inductor"
    """``torch.compile`` backend (``inductor``; ``eager`` only traces, to check a model compiles)."""
    fused_optimizer: bool = True
    """Use torch's fused AdamW kernel where it exists for the device (CPU, CUDA): same update, far less overhead."""
    reuse_host_memory: bool = True
    """On CPU under glibc (Linux), keep freed blocks up to 1 GiB in the process for the next step instead of
    returning them to the system: autograd re-allocates the word-embedding gradient every step, and a fresh mapping
    costs a page fault per 4 KiB, every step (measured: docs/results.md). Memory freed during the run stays with
    the process."""
    fast_cpu_dropout: bool = True
    """On CPU, draw dropout masks four to a 64-bit random number (drop probability quantised to 1/65536, outputs
    rescaled exactly) instead of torch's one-element-at-a-time ``bernoulli_``, which runs on a single core off Intel
    CPUs and is a visible part of a MiniLM-L6 training step (measured: docs/results.md). Same expected output; masks
    differ from torch's dropout under the same seed. Off with ``torch_compile`` (the compiler draws its own masks) and on other devices."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value; None disables clipping."""
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    """``auto``: bf16 on GPUs that support it, else fp16 on GPU; fp32 on CPU (bf16 is much slower on AVX2 CPUs)."""
    seed: int = 42
    """Seed of model initialisation, data order and dropout."""
    eval_every_steps: int | None = None
    """Evaluate on the validation split every N optimizer steps (in addition to ``eval_every_epoch``)."""
    eval_every_epoch: bool = True
    """Evaluate at the end of each epoch."""
    metric_for_best: str | None = None
    """Validation metric that selects the best model and drives early stopping; default ``f1`` (NER, entity-level)
    or ``accuracy`` (classification). Any reported metric name works, e.g. ``macro_f1`` or ``loss``."""
    greater_is_better: bool | None = None
    """Direction of ``metric_for_best``; default: False for ``loss``, True otherwise."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement; None disables early stopping."""
    save_every_steps: int | None = None
    """Write a resumable checkpoint every N optimizer steps (also written at the end of every epoch when set)."""
    keep_checkpoints: int = 2
    """Number of most recent checkpoints kept on disk."""
    resume_from_checkpoint: str | None = None
    """``latest`` (newest checkpoint in output_dir) or a checkpoint directory: continue that run exactly."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding, faster); order is still random across groups."""
    log_every_steps: int = 10
    """Log the training loss and LR every N optimizer steps."""
    trackers: list[str] | None = None
    """Accelerate trackers (``tensorboard``, ``wandb``, ...). None: tensorboard when installed. [] disables."""
    num_workers: int = 0
    """DataLoader worker processes."""

    def __post_init__(self) -> None:
        positive = (
            "batch_size",
            "eval_batch_size",
            "grad_accum_steps",
            "log_every_steps",
            "keep_checkpoints",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every_steps", "save_every_steps", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name} must be >= 1 or null, got {value}")
        if self.max_steps is None and self.epochs <= 0:
            raise ConfigError(f"train.epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"train.max_grad_norm must be > 0 or null, got {self.max_grad_norm}")


# Fields that only one strategy reads: setting them under another strategy is a mistake worth reporting.
_STRATEGY_FIELDS = {
    "frozen": (
        "head",
        "head_hidden_size",
        "feature_layer",
        "feature_layers",
        "pooling",
        "cache_features",
        "cache_dir",
    ),
    "freeze": ("freeze_layers",),
    "gradual": ("unfreeze_every", "unfreeze_unit"),
    "lora": ("r", "alpha", "lora_dropout", "target_modules", "lora_export", "lora_pooler"),
}


@dataclass
class StrategyConfig:
    """What trains. ``name`` picks the parameters that change; the LR fields and the conservative penalties
    combine with every strategy that trains encoder weights (e.g. ``name=lora head_lr=1e-3``,
    ``name=freeze freeze_layers=3 l2sp_weight=0.01``). Fields that belong to another strategy must stay unset."""

    name: str = "full"
    """A registered strategy (``hftransfer.registry.strategy_names()``): ``full`` (every weight), ``frozen`` (encoder
    fixed, train a head on its features), ``freeze`` (embeddings and the bottom ``freeze_layers`` encoder layers
    fixed), ``gradual`` (ULMFiT gradual unfreezing from the top), ``lora`` (low-rank adapters via peft plus the new
    head), ``bitfit`` (bias terms and the head)."""

    # -- frozen encoder (fixed feature extractor)
    head: Literal["linear", "mlp"] | None = None
    """frozen: the trained head. Default ``linear``. ``mlp`` is one hidden layer with the architecture's own
    classifier activation (tanh for BERT/MPNet), so a CLS-pooled sequence head exports as the native HF head."""
    head_hidden_size: int | None = None
    """frozen, ``head=mlp``: hidden width (default: the encoder's hidden size, required for a native export)."""
    feature_layer: int | None = None
    """frozen: hidden-state index the features come from; 0 = embeddings, 1..L = encoder layers, negative counts
    from the top. Default -1 (last layer). Probing a lower layer exports a truncated encoder."""
    feature_layers: int | None = None
    """frozen: average the hidden states of this many layers ending at ``feature_layer``. Default 1."""
    pooling: Literal["cls", "mean"] | None = None
    """frozen, sequence tasks: ``cls`` (first token) or ``mean`` (mask-aware mean of tokens). Default ``mean``."""
    cache_features: bool | None = None
    """frozen: encode the data once and train the head from an on-disk cache. Default true."""
    cache_dir: str | None = None
    """frozen: where the feature cache lives. Default ``$HFTRANSFER_CACHE`` or ``~/.cache/hftransfer/features``."""

    # -- layer transfer
    freeze_layers: int | None = None
    """freeze: fix the embeddings and the bottom N encoder layers; negative N fixes all but the top |N|."""

    # -- gradual unfreezing
    unfreeze_every: int | None = None
    """gradual: unfreeze one more layer group (from the top) every this many ``unfreeze_unit``s. Default 1."""
    unfreeze_unit: Literal["epoch", "step"] | None = None
    """gradual: ``epoch`` or ``step``. Default ``epoch``."""

    # -- LoRA
    r: int | None = None
    """lora: adapter rank. Default 8."""
    alpha: float | None = None
    """lora: scaling numerator (the update is scaled by alpha / r). Default 2 * r."""
    lora_dropout: float | None = None
    """lora: dropout on the adapter input. Default 0, as in peft: on MiniLM-L6 NER, 0.1 scored the same within
    noise and cost more time per epoch and more memory (measured: docs/results.md)."""
    target_modules: list[str] | None = None
    """lora: module names to adapt; default per architecture (BERT ``query``/``value``, MPNet ``q``/``v``);
    ``[all-linear]`` adapts every linear layer of the encoder (the head is trained in full, not adapted)."""
    lora_pooler: Literal["train", "adapt"] | None = None
    """lora, sequence tasks: the encoder's pooler (which feeds BERT's classifier) is trained in full (``train``,
    default: sentence-transformers checkpoints never trained it for classification) or handled like any encoder
    linear layer (``adapt``: adapted when targeted, e.g. by ``[all-linear]``, else fixed), which keeps the trainable
    fraction near that of token tasks."""
    lora_export: Literal["adapter", "merged", "both"] | None = None
    """lora: what ``model/`` holds: the adapter alone (``adapter``), a plain merged model (``merged``), or the
    merged model in ``model/`` plus the adapter in ``adapter/`` (``both``, default)."""

    # -- learning rates (head_lr: every strategy; the others: strategies that train encoder weights)
    head_lr: float | None = None
    """LR of the new head(s); default ``train.lr``. Discriminative fine-tuning: a head LR above the encoder's.
    With ``name=frozen`` it is the LR of the head, the only thing that trains."""
    layer_lr_decay: float = 1.0
    """Layer-wise LR decay: the top encoder layer gets ``train.lr``, each layer below ``decay`` times the one
    above, the embeddings ``decay^(L)`` times it. 1.0 disables."""

    # -- conservative training
    l2sp_weight: float = 0.0
    """L2-SP: add ``weight * sum ||theta - theta_pretrained||^2`` over the trainable encoder weights."""
    drift_weight: float = 0.0
    """Output drift: add ``weight * distance(encoder(x), original_encoder(x))`` on every batch."""
    drift_distance: Literal["mse", "kl"] = "mse"
    """Output drift distance: ``mse`` between last hidden states (mean over tokens and units), or ``kl`` between
    the softmaxes of the two hidden states over the hidden units."""

    def __post_init__(self) -> None:
        from hftransfer.registry import get_strategy

        entry = get_strategy(self.name)  # an unknown name fails here, listing the registered ones
        for strategy, names in _STRATEGY_FIELDS.items():
            if strategy == self.name:
                continue
            for name in names:
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"strategy.{name} belongs to strategy.name={strategy}, but strategy.name={self.name}"
                    )
        if self.name == "frozen":
            self.head = self.head or "linear"
            self.feature_layer = -1 if self.feature_layer is None else self.feature_layer
            self.feature_layers = self.feature_layers or 1
            self.cache_features = True if self.cache_features is None else self.cache_features
            if self.feature_layers < 1:
                raise ConfigError(f"strategy.feature_layers must be >= 1, got {self.feature_layers}")
            if self.head_hidden_size is not None and (self.head != "mlp" or self.head_hidden_size < 1):
                raise ConfigError("strategy.head_hidden_size needs strategy.head=mlp and a positive size")
        if not entry.trains_encoder:
            trains_encoder = [
                name
                for name, value in (
                    ("layer_lr_decay", self.layer_lr_decay != 1.0 or None),
                    ("l2sp_weight", self.l2sp_weight or None),
                    ("drift_weight", self.drift_weight or None),
                )
                if value is not None
            ]
            if trains_encoder:
                raise ConfigError(
                    f"strategy.{trains_encoder[0]} needs encoder weights that train, but strategy.name={self.name} "
                    "keeps the encoder fixed (the head's LR is strategy.head_lr, default train.lr)"
                )
        if self.name == "freeze" and self.freeze_layers is None:
            raise ConfigError(
                "strategy.name=freeze needs strategy.freeze_layers=N (negative: all but the top |N|)"
            )
        if self.name == "gradual":
            self.unfreeze_every = self.unfreeze_every or 1
            self.unfreeze_unit = self.unfreeze_unit or "epoch"
            if self.unfreeze_every < 1:
                raise ConfigError(f"strategy.unfreeze_every must be >= 1, got {self.unfreeze_every}")
        if self.name == "lora":
            self.r = self.r or 8
            self.alpha = self.alpha if self.alpha is not None else 2.0 * self.r
            self.lora_dropout = 0.0 if self.lora_dropout is None else self.lora_dropout
            self.lora_export = self.lora_export or "both"
            self.lora_pooler = self.lora_pooler or "train"
            if self.r < 1:
                raise ConfigError(f"strategy.r must be >= 1, got {self.r}")
            if not 0.0 <= self.lora_dropout < 1.0:
                raise ConfigError(f"strategy.lora_dropout must be in [0, 1), got {self.lora_dropout}")
            if self.l2sp_weight:
                raise ConfigError(
                    "strategy.l2sp_weight with strategy.name=lora: LoRA never changes the pretrained weights, so "
                    "L2-SP has nothing to hold back (the adapter's scale is already set by strategy.r/alpha)"
                )
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError(f"strategy.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.head_lr is not None and self.head_lr <= 0:
            raise ConfigError(f"strategy.head_lr must be > 0, got {self.head_lr}")
        for name in ("l2sp_weight", "drift_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"strategy.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class RunConfig:
    """One fine-tuning run: task, model, data, training and where the run directory goes."""

    task: TaskType = "token-classification"
    """What is predicted: a tag per word (NER) or a label per text / text pair."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="wnut16"))
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    output_dir: str | None = None
    """Run directory. Default: ``runs/<task>-<timestamp>``. Reuse it with ``train.resume_from_checkpoint``."""
    overwrite_output_dir: bool = False
    """Allow starting a new run in a directory that already holds one (its checkpoints are removed)."""
    push_to_hub: bool = False
    """Publish the result (with a model card) to the Hugging Face Hub when the run ends. A failed push keeps the
    run's results; retry with ``hftransfer push <run_dir> --repo-id ...``."""
    hub_model_id: str | None = None
    """Hub repository ``user/name`` (or ``name`` under your account) that ``push_to_hub`` creates or updates."""
    hub_private: bool = False
    """Create the Hub repository as private."""
    hub_license: str = "apache-2.0"
    """License in the model card (the default encoders are Apache-2.0; check your data's terms too)."""

    def __post_init__(self) -> None:
        check_hub_fields(self)
        if self.task == "token-classification" and self.data.text_pair_column is not None:
            raise ConfigError(
                "data.text_pair_column is for sequence-classification; NER takes one token list"
            )
        if self.task == "token-classification" and self.strategy.pooling is not None:
            raise ConfigError(
                "strategy.pooling is for sequence tasks; NER classifies every word's own features"
            )
        if self.task == "sequence-classification" and self.strategy.name == "frozen":
            self.strategy.pooling = self.strategy.pooling or "mean"

    def metric_for_best(self) -> str:
        if self.train.metric_for_best:
            return self.train.metric_for_best
        return "f1" if self.task == "token-classification" else "accuracy"

    def greater_is_better(self) -> bool:
        if self.train.greater_is_better is not None:
            return self.train.greater_is_better
        return self.metric_for_best() != "loss"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_hub_fields(config: Any) -> None:
    """``push_to_hub`` needs a valid ``hub_model_id``; checked before training, not after it."""
    if config.push_to_hub and not config.hub_model_id:
        raise ConfigError("push_to_hub=true needs hub_model_id=<user>/<name>")
    if config.hub_model_id is not None:
        parts = config.hub_model_id.split("/")
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        if len(parts) > 2 or not all(part and set(part) <= allowed for part in parts):
            raise ConfigError(
                f"hub_model_id={config.hub_model_id!r} is not a Hub repository id (<user>/<name>: letters, digits, "
                "'-', '_', '.')"
            )


def normalise_overrides(argv: Sequence[str]) -> list[str]:
    """Accept torchtune-style ``key.sub=value`` as well as ``--key.sub=value``."""
    out = []
    for arg in argv:
        if not arg.startswith("-") and "=" in arg:
            out.append("--" + arg)
        else:
            out.append(arg)
    return out


def build_parser(default_config: str | Path | None = None, prog: str | None = None, schema: type = RunConfig):
    """The jsonargparse parser for ``schema`` (a config dataclass); ``default_config`` is a preset applied first."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog=prog,
        exit_on_error=False,
        default_config_files=[str(default_config)] if default_config else None,
        description="Options are key=value (or --key=value); --config FILE.yaml loads a preset first.",
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="YAML preset; later key=value options override it"
    )
    parser.add_class_arguments(schema, nested_key=None, fail_untyped=True)
    return parser


def parse_config(
    argv: Sequence[str] | None = None, default_config: str | Path | None = None, schema: type = RunConfig
) -> Any:
    """Parse a run config from a preset, ``--config`` files and overrides.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
        default_config: preset YAML loaded first (a recipe's default).
        schema: the config dataclass (:class:`RunConfig`, or ``MultitaskConfig`` for multitask runs).

    Returns:
        The validated ``schema`` instance.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a failed cross-field check; the message names it.
    """
    from jsonargparse import ArgumentError

    argv = normalise_overrides(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        argv, default_config = _replace_lists_whole(argv, default_config, schema, Path(tmp))
        parser = build_parser(default_config, prog=Path(sys.argv[0]).name, schema=schema)
        try:
            namespace = parser.parse_args(argv)
            init = parser.instantiate(namespace)
        except ArgumentError as err:
            raise ConfigError(f"config: {' '.join(str(err).split())}") from None
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(f"config: {err}") from None
    values = {f.name: getattr(init, f.name) for f in dataclasses.fields(schema)}
    return schema(**values)


def _dataclass_list_fields(schema: type) -> list[str]:
    """Top-level fields of ``schema`` typed as a list of dataclasses (a multitask run's ``tasks``)."""
    hints = typing.get_type_hints(schema)
    names = []
    for item in dataclasses.fields(schema):
        hint = hints[item.name]
        if typing.get_origin(hint) is list and all(
            dataclasses.is_dataclass(a) for a in typing.get_args(hint)
        ):
            names.append(item.name)
    return names


def _replace_lists_whole(
    argv: list[str], default_config: str | Path | None, schema: type, tmp: Path
) -> tuple[list[str], str | Path | None]:
    """Make a list of dataclasses set by a later source replace the one of an earlier source as a whole.

    jsonargparse parses such a list element by element on top of the list it already holds, so a preset's first
    task would lend its unset fields (a learning rate, a sampling weight, a data limit) to the first task of a
    ``--config`` file or of a ``tasks=[...]`` override. Earlier YAML sources that set a list a later source also
    sets are given to the parser as copies without it. ``tasks+=...`` (append) keeps the earlier list.
    """
    fields = _dataclass_list_fields(schema)
    if not fields:
        return argv, default_config
    # YAML sources in the order jsonargparse applies them, keyed by their argv index (-1: the preset).
    paths = {-1: Path(default_config)} if default_config else {}
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            paths[index] = Path(arg.split("=", 1)[1])
        elif arg == "--config" and index + 1 < len(argv):
            paths[index + 1] = Path(argv[index + 1])
    contents = {}
    for position, path in paths.items():
        content = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        contents[position] = content if isinstance(content, dict) else {}
    argv = list(argv)
    for name in fields:
        overridden = [i for i, arg in enumerate(argv) if arg.startswith((f"--{name}=", f"--{name}."))]
        set_at = [position for position, content in contents.items() if name in content] + overridden
        for position in set_at:
            if position == max(set_at) or position not in contents:
                continue
            contents[position].pop(name)
            copy = tmp / f"{position + 1}-{paths[position].name}"
            copy.write_text(yaml.safe_dump(contents[position], sort_keys=False), encoding="utf-8")
            if position == -1:
                default_config = copy
            elif argv[position].startswith("--config="):
                argv[position] = f"--config={copy}"
            else:
                argv[position] = str(copy)
    return argv, default_config


def load_config_file(path: str | Path) -> RunConfig:
    """Load and validate one YAML preset or a run directory's saved ``config.yaml``."""
    return parse_config(["--config", str(path)])


def save_config(config: Any, path: str | Path) -> None:
    """Write a resolved config (``RunConfig`` or ``MultitaskConfig``) as YAML that ``--config`` accepts back."""
    from hftransfer.utils import atomic_write_text

    data = config.to_dict()
    data["train"]["adam_betas"] = list(data["train"]["adam_betas"])
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))

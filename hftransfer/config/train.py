"""The ``train`` section of a run config: the optimisation loop's settings.

Its attribute docstrings are the ``--help`` text; cross-field checks live in ``__post_init__`` and raise
:class:`~hftransfer.errors.ConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hftransfer.config.checks import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    OPTIONAL_COUNT,
    POSITIVE,
    SEED,
    Range,
    check_fields,
    check_value,
)
from hftransfer.errors import ConfigError
from hftransfer.text_excerpt import excerpt

# Ranges of the numeric fields (checks.py); cross-field rules stay in __post_init__.
TRAIN_RANGES = {
    "max_steps": OPTIONAL_COUNT,
    "batch_size": COUNT,
    "eval_batch_size": COUNT,
    "grad_accum_steps": COUNT,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "adam_eps": POSITIVE,
    "warmup_ratio": FRACTION,
    "warmup_steps": Range(low=0, integer=True, optional=True),
    "max_grad_norm": Range(low=0, low_open=True, optional=True),
    "seed": SEED,
    "eval_every_steps": OPTIONAL_COUNT,
    "early_stopping_patience": OPTIONAL_COUNT,
    "save_every_steps": OPTIONAL_COUNT,
    "keep_checkpoints": COUNT,
    "log_every_steps": Range(low=0, integer=True),
    "num_workers": Range(low=0, integer=True),
    "cpu_threads": OPTIONAL_COUNT,
}


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
    """Validation metric that selects the best model and drives early stopping; default ``f1`` (NER, entity-level),
    ``accuracy`` (classification), ``micro_f1`` (multi-label) or ``mse`` (regression). Any reported metric name
    works, e.g. ``macro_f1``, ``spearman`` or ``loss``."""
    greater_is_better: bool | None = None
    """Direction of ``metric_for_best``; default: False for ``loss`` and ``mse``, True otherwise."""
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
    """Log the training loss and LR (console, ``metrics.jsonl``, trackers) every N optimizer steps. 0: only where the
    model is evaluated (``eval_every_steps``, the end of each epoch and of training; without a validation split,
    where it would be), averaged over the steps since the last record."""
    trackers: list[str] | None = None
    """Accelerate trackers: ``tensorboard``, ``mlflow`` (both in ``pip install 'hftransfer[tracking]'``; MLflow
    writes to ``<output_dir>/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set), ``wandb``, ... A named tracker that
    is not installed fails before training. None: tensorboard when installed. [] disables."""
    num_workers: int = 0
    """DataLoader worker processes."""
    cpu_threads: int | None = None
    """Threads each process computes with on CPU. None: the machine's physical cores shared by the local
    processes, unless you chose a count another way (an exported ``OMP_NUM_THREADS``, ``accelerate launch
    --num_cpu_threads_per_process N``); ``accelerate launch``'s own default of 1 is replaced. See
    ``hftransfer/training/threads.py``."""

    def __post_init__(self) -> None:
        check_fields("train", self, TRAIN_RANGES)
        # Epochs are ignored when max_steps is set, but a negative count is a mistake either way.
        check_value("train.epochs", self.epochs, POSITIVE if self.max_steps is None else NON_NEGATIVE)
        if not isinstance(self.adam_betas, (tuple, list)) or len(self.adam_betas) != 2:
            raise ConfigError(
                f"train.adam_betas must be two numbers [beta1, beta2], got {excerpt(self.adam_betas)}"
            )
        for index, beta in enumerate(self.adam_betas):
            check_value(f"train.adam_betas[{index}]", beta, FRACTION)

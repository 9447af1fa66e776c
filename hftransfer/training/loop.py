"""The one training loop every recipe runs (Accelerate: CPU, one GPU, DDP/FSDP/DeepSpeed through ``accelerate``).

Gradient accumulation is exact: the micro-batches of one optimizer step are fetched first, their labelled items
(tokens or examples) counted across all processes, and each micro-batch's *summed* loss is divided by that global
count. So k micro-batches of b examples produce the same gradient as one batch of k*b, even for token tasks whose
batches hold different numbers of labelled tokens. ``accelerator.accumulate`` cannot express this (it divides every
micro-batch loss by k and needs the last window of an epoch to be full), so the loop uses the primitive it is built
on, ``accelerator.no_sync``, to skip the gradient all-reduce on all but the last micro-batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftransfer.config import RunConfig
from hftransfer.errors import ConfigError
from hftransfer.evaluation.inference import IGNORE_INDEX, model_inputs
from hftransfer.objectives.task import summed_cross_entropy
from hftransfer.runs import current_rss_mb, peak_memory_mb
from hftransfer.training.checkpoint import load_checkpoint, save_checkpoint
from hftransfer.training.clipping import clip_gradients, end_deferred_clip
from hftransfer.training.fast_dropout import fast_cpu_dropout
from hftransfer.training.optim import adamw, build_optimizer, build_scheduler, scaled_learning_rate
from hftransfer.training.tracking import MetricsLog

logger = logging.getLogger("hftransfer")

# A loss function ``loss_fn(model, batch, state)`` returns the batch's loss *summed* over labelled items,
# optionally with named per-batch terms (already weighted: penalties such as ``penalty_l2sp``, distillation losses
# such as ``loss_soft``) that are added once per optimizer step and logged under their own names, apart from the
# summed loss. ``state`` is the loop state (step, epoch; the total is ``TrainingLoop.total_steps``).
# ``hftransfer.objectives.base.ObjectiveSet`` is the one every flow builds from ``config.objectives``.
LossFn = Callable[..., torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]]


def task_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], state: Any = None) -> torch.Tensor:
    """Cross-entropy *summed* over labelled items (tokens or examples); the loop normalises it."""
    return summed_cross_entropy(model(**model_inputs(batch)).logits, batch["labels"])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def count_items(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labelled items in a batch: tokens with a label for token tasks, examples for sequence tasks."""
    return (batch["labels"] != IGNORE_INDEX).sum()


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue exactly where it stopped; objectives and
    callbacks read it (a schedule over ``step / total_steps``)."""

    step: int = 0
    total_steps: int = 0
    """The run's optimizer steps (set by the loop; a resumed run keeps the current config's)."""
    epoch: int = 0
    batches_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    step_seconds: float = 0.0
    samples_seen: int = 0
    tokens_seen: int = 0
    padded_tokens_seen: int = 0


@dataclass
class FitResult:
    state: LoopState
    total_steps: int
    best_model_saved: bool


class TrainingLoop:
    """Optimise ``model`` on ``train_loader``; evaluate, keep the best model, checkpoint and resume.

    Args:
        accelerator: the run's accelerator.
        model: an unprepared model; it is prepared here together with its optimizer and loaders.
        train_loader / eval_loader: unprepared loaders (``eval_loader`` may be None: no validation split). Objects
            that are not DataLoaders pass through ``prepare`` untouched: a multitask run hands in its own batches
            (prepared per task) and a dict of prepared per-task evaluation loaders.
        evaluate: ``evaluate(model, prepared_eval_loader) -> metrics`` (called on every process).
        save_model: ``save_model(model)`` writes the current model as the run's exported model (every process).
        config: the run config; ``run_dir``: where checkpoints and logs go.
        loss_fn: summed loss of a batch (default: task cross-entropy), optionally with weighted penalties.
        param_groups: optimizer parameter groups (default: decay / no-decay over trainable parameters).
        on_step_start: called with the loop state before every optimizer step (e.g. gradual unfreezing).
        before_update: ``before_update(micro_batches) -> factor``, called just before each optimizer update;
            the factor multiplies every group's learning rate for that one update (e.g. a multitask run's per-task
            learning rate; the schedule itself is unchanged), and the call may set up the optimizer for the step.
        optimizer: a ready optimizer over ``model``'s parameters (default: AdamW over ``param_groups``).
    """

    def __init__(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        train_loader: DataLoader,
        eval_loader: DataLoader | None,
        *,
        evaluate: Callable[[torch.nn.Module, DataLoader], dict[str, Any]],
        save_model: Callable[[torch.nn.Module], None],
        config: RunConfig,
        run_dir: Path,
        loss_fn: LossFn = task_loss,
        param_groups: list[dict] | None = None,
        on_step_start: Callable[[LoopState], None] | None = None,
        before_update: Callable[[list[dict]], float] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.config = config
        self.train_config = config.train
        self.run_dir = Path(run_dir)
        self.evaluate_fn = evaluate
        self.save_model_fn = save_model
        self.loss_fn = loss_fn
        self.on_step_start = on_step_start
        self.before_update = before_update
        self.metric_name = config.metric_for_best()
        self.greater_is_better = config.greater_is_better()
        self.log = MetricsLog(accelerator, self.run_dir)
        self.state = LoopState()
        # Unpadded tokens not yet in the state, kept on the device so that counting them never waits for it.
        self._tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
        self.training_peak_memory: dict[str, float] | None = None  # set when fit() ends
        # Resident memory sampled when it is highest within a step (activations alive after the forward passes,
        # optimizer state after the update), and before training: their difference is what training itself needs,
        # which the process peak hides when loading the model and data peaked higher.
        self._rss_before_training: float | None = None
        self._rss_max_in_steps: float | None = None

        if optimizer is None:
            optimizer = (
                adamw(param_groups, self.train_config)
                if param_groups is not None
                else build_optimizer(model, self.train_config)
            )
        if eval_loader is not None:
            self.model, self.optimizer, self.train_loader, self.eval_loader = accelerator.prepare(
                model, optimizer, train_loader, eval_loader
            )
        else:
            self.model, self.optimizer, self.train_loader = accelerator.prepare(
                model, optimizer, train_loader
            )
            self.eval_loader = None
        if self.train_config.torch_compile:
            # Module.compile compiles in place: parameter names, saving and unwrapping stay as they were (a
            # torch.compile wrapper would prefix every state-dict key). Dynamic shapes: every batch has its own length.
            accelerator.unwrap_model(self.model, keep_torch_compile=False).compile(
                backend=self.train_config.compile_backend, dynamic=True
            )
        accum = self.train_config.grad_accum_steps
        self.steps_per_epoch = max(1, math.ceil(len(self.train_loader) / accum))
        if self.train_config.max_steps is not None:
            self.total_steps = self.train_config.max_steps
        else:
            self.total_steps = max(1, math.ceil(self.train_config.epochs * self.steps_per_epoch))
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.state.total_steps = self.total_steps
        # The schedule counts optimizer steps of this process, so it is stepped by hand rather than prepared
        # (a prepared scheduler steps once per process per call).
        self.scheduler = build_scheduler(self.optimizer, self.train_config, self.total_steps)
        accelerator.register_for_checkpointing(self.scheduler)

    # ----------------------------------------------------------------------------------------------- resume
    def resume(self, checkpoint: Path) -> None:
        """Load a checkpoint written by this loop; training then continues at its step with the same data order."""
        saved = load_checkpoint(self.accelerator, checkpoint)
        known = {field.name for field in dataclasses.fields(LoopState)}
        self.state = LoopState(**{key: value for key, value in saved.items() if key in known})
        self.state.total_steps = self.total_steps
        self.log.truncate_after(self.state.step)
        logger.info("Resumed from %s at step %d (epoch %d)", checkpoint, self.state.step, self.state.epoch)

    # ------------------------------------------------------------------------------------------------ train
    def fit(self) -> FitResult:
        """Train until ``total_steps`` or early stopping; returns the final loop state."""
        with self._dropout_masks():
            return self._fit()

    def _dropout_masks(self) -> AbstractContextManager:
        train = self.train_config
        if not train.fast_cpu_dropout or train.torch_compile or self.accelerator.device.type != "cpu":
            return nullcontext()
        return fast_cpu_dropout(self.accelerator.unwrap_model(self.model))

    def _fit(self) -> FitResult:
        state, accelerator = self.state, self.accelerator
        logger.info(
            "Training %d optimizer steps (%d per epoch, %d epochs), %d process(es), batch %d x accumulation %d",
            self.total_steps,
            self.steps_per_epoch,
            self.num_epochs,
            accelerator.num_processes,
            self.train_config.batch_size,
            self.train_config.grad_accum_steps,
        )
        progress = tqdm(
            total=self.total_steps,
            initial=state.step,
            desc="Training",
            disable=not accelerator.is_local_main_process,
        )
        self.model.train()
        self._running = torch.zeros(2, device=accelerator.device)  # [loss sum, items] since the last log
        self._penalties: dict[str, torch.Tensor] = {}  # penalty sums over the steps since the last log
        self._steps_since_log = 0
        self._last_eval_step = -1
        best_model_saved = False
        started = time.perf_counter()
        seconds_before = state.train_seconds
        self._rss_before_training = current_rss_mb()
        while state.step < self.total_steps and not state.stopped_early and state.epoch < self.num_epochs:
            self.train_loader.set_epoch(state.epoch)
            if hasattr(self.train_loader, "iterate"):
                # Multitask batches know where each task's loader stands at any step of the epoch.
                batches = self.train_loader.iterate(state.batches_in_epoch)
            elif state.batches_in_epoch:
                batches = iter(accelerator.skip_first_batches(self.train_loader, state.batches_in_epoch))
            else:
                batches = iter(self.train_loader)
            while state.step < self.total_steps:
                window = list(islice(batches, self.train_config.grad_accum_steps))
                if not window:
                    break
                if self.on_step_start is not None:
                    self.on_step_start(state)
                step_started = time.perf_counter()
                self._optimizer_step(window)
                state.step_seconds += time.perf_counter() - step_started
                state.step += 1
                state.batches_in_epoch += len(window)
                state.train_seconds = seconds_before + time.perf_counter() - started
                progress.update(1)
                if state.step % self.train_config.log_every_steps == 0:
                    self._log_train(progress)
                every = self.train_config.eval_every_steps
                if every and state.step % every == 0:
                    best_model_saved |= self._evaluate_and_select()
                if state.stopped_early:
                    break
                if (
                    self.train_config.save_every_steps
                    and state.step % self.train_config.save_every_steps == 0
                ):
                    self._save_checkpoint()
            if state.batches_in_epoch >= len(self.train_loader):
                state.epoch += 1
                state.batches_in_epoch = 0
                if self.train_config.eval_every_epoch and not state.stopped_early:
                    best_model_saved |= self._evaluate_and_select()
        if self._last_eval_step != state.step and not state.stopped_early and self.eval_loader is not None:
            best_model_saved |= self._evaluate_and_select()
        progress.close()
        state.train_seconds = seconds_before + time.perf_counter() - started
        # The process peak up to here (loading and evaluations included), before a final export adds its own.
        self.training_peak_memory = peak_memory_mb()
        if not best_model_saved and state.best_step is None:
            # No validation split: the exported model is the final one.
            self.save_model_fn(self.model)
            best_model_saved = True
        return FitResult(state=state, total_steps=self.total_steps, best_model_saved=best_model_saved)

    def _optimizer_step(self, window: list[dict[str, torch.Tensor]]) -> None:
        accelerator = self.accelerator
        items = torch.stack([count_items(batch) for batch in window]).sum()
        global_items = accelerator.reduce(items, reduction="sum") if accelerator.num_processes > 1 else items
        # DDP averages gradients over processes, so scaling by num_processes / global items gives the mean over all
        # labelled items of the accumulated global batch.
        scale = accelerator.num_processes / global_items.clamp(min=1).float()
        for index, batch in enumerate(window):
            last = index == len(window) - 1
            with nullcontext() if last else accelerator.no_sync(self.model):
                result = self.loss_fn(self.model, batch, self.state)
                loss_sum, penalties = result if isinstance(result, tuple) else (result, {})
                loss = loss_sum * scale
                for name, value in penalties.items():
                    # A penalty is per step: each of the window's micro-batches contributes its share.
                    share = value / len(window)
                    loss = loss + share
                    self._penalties[name] = self._penalties.get(name, 0.0) + share.detach().float()
                if last:
                    self._sample_rss()
                accelerator.backward(loss)
            self._running[0] += loss_sum.detach().float()
            self.state.samples_seen += batch["labels"].shape[0] * accelerator.num_processes
            if "attention_mask" in batch:  # cached-feature batches of frozen heads have no tokens
                self._tokens += batch["attention_mask"].sum()
                self.state.padded_tokens_seen += batch["attention_mask"].numel() * accelerator.num_processes
        self._running[1] += items
        self._steps_since_log += 1
        if self.train_config.max_grad_norm is not None:
            # On CPU with fused AdamW the rescaling happens inside the optimizer step (see training/clipping.py).
            self._grad_norm = clip_gradients(
                accelerator, self.model, self.optimizer, self.train_config.max_grad_norm
            )
        factor = self.before_update(window) if self.before_update is not None else 1.0
        try:
            with scaled_learning_rate(
                self.optimizer, factor
            ):  # the schedule's values return even if skipped (fp16)
                self.optimizer.step()
        finally:
            end_deferred_clip(self.optimizer)
        if not accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        self._sample_rss()
        self.optimizer.zero_grad(set_to_none=True)

    def _sample_rss(self) -> None:
        rss = current_rss_mb()
        if rss is not None:
            self._rss_max_in_steps = max(rss, self._rss_max_in_steps or 0.0)

    def _log_train(self, progress: tqdm) -> None:
        running = (
            self.accelerator.reduce(self._running, reduction="sum")
            if self.accelerator.num_processes > 1
            else self._running
        )
        loss_sum, items = running.tolist()  # the only host sync of the step, once per log interval
        self._running.zero_()
        self._sync_tokens()
        metrics = {"loss": loss_sum / max(items, 1), "lr": self.scheduler.get_last_lr()[0]}
        for name, total in self._penalties.items():
            # Mean over steps and processes of the weighted penalty, logged apart from the task loss.
            total = (
                self.accelerator.reduce(total, reduction="mean")
                if self.accelerator.num_processes > 1
                else total
            )
            metrics[name] = float(total) / max(self._steps_since_log, 1)
        self._penalties, self._steps_since_log = {}, 0
        if getattr(self, "_grad_norm", None) is not None:
            metrics["grad_norm"] = float(self._grad_norm)
        if self.state.train_seconds > 0:
            metrics["samples_per_second"] = self.state.samples_seen / self.state.train_seconds
        progress.set_postfix(loss=f"{metrics['loss']:.4f}")
        self.log.log("train", metrics, step=self.state.step, epoch=self.epoch_progress())

    def _sync_tokens(self) -> None:
        """Move the device-side token count into the loop state (a host sync: only at log and summary time)."""
        # This process's count times the processes (as for samples): no collective outside the logging one.
        self.state.tokens_seen += int(self._tokens) * self.accelerator.num_processes
        self._tokens.zero_()

    def summary(self) -> dict[str, Any]:
        """Steps, epochs, time and throughput of the training so far (the ``train`` entry of ``metrics.json``).

        ``runtime_seconds`` is the wall time of training including evaluations and saves; ``step_seconds`` only the
        optimizer steps (forward, backward, update). Tokens are real (unpadded) ones; ``padded_tokens`` is what the
        model computed on (the basis of achieved FLOP/s). ``peak_memory_mb`` is the process peak up to the end of
        training; ``rss_mb`` the resident memory before training and the most sampled inside the steps, whose
        difference (``growth_in_steps``) is what training adds: gradients, optimizer state, activations.
        """
        self._sync_tokens()
        state, epochs = self.state, self.epoch_progress()
        return {
            "steps": state.step,
            "epochs": round(epochs, 4),
            "runtime_seconds": round(state.train_seconds, 2),
            "step_seconds": round(state.step_seconds, 2),
            "samples": state.samples_seen,
            "tokens": state.tokens_seen,
            "padded_tokens": state.padded_tokens_seen,
            "samples_per_second": state.samples_seen / state.train_seconds if state.train_seconds else None,
            "tokens_per_second": state.tokens_seen / state.train_seconds if state.train_seconds else None,
            "seconds_per_epoch": round(state.train_seconds / epochs, 3) if epochs else None,
            "stopped_early": state.stopped_early,
            "num_processes": self.accelerator.num_processes,
            "peak_memory_mb": self.training_peak_memory,
            "rss_mb": {
                "before_training": _round(self._rss_before_training),
                "max_in_steps": _round(self._rss_max_in_steps),
                "growth_in_steps": _round(
                    self._rss_max_in_steps - self._rss_before_training
                    if self._rss_max_in_steps is not None and self._rss_before_training is not None
                    else None
                ),
            },
        }

    def epoch_progress(self) -> float:
        """Epochs done, with the fraction of the current one."""
        return self.state.epoch + self.state.batches_in_epoch / max(1, len(self.train_loader))

    # --------------------------------------------------------------------------------------- eval & select
    def _evaluate_and_select(self) -> bool:
        """Evaluate; save the model when it is the best so far. Returns True when it saved."""
        if self.eval_loader is None:
            return False
        state = self.state
        self._last_eval_step = state.step
        metrics = self.evaluate_fn(self.model, self.eval_loader)
        # Logged with the training time so far (earlier evaluations included) for time-to-target curves; kept out
        # of the metrics themselves, which metric_for_best chooses from.
        self.log.log(
            "validation",
            {**metrics, "train_seconds": round(state.train_seconds, 2)},
            step=state.step,
            epoch=self.epoch_progress(),
        )
        if self.metric_name not in metrics:
            available = ", ".join(sorted(k for k in metrics if not k.startswith("per_")))
            raise ConfigError(
                f"train.metric_for_best={self.metric_name!r} is not a reported metric; use one of: {available}"
            )
        value = float(metrics[self.metric_name])
        better = state.best_metric is None or (
            value > state.best_metric if self.greater_is_better else value < state.best_metric
        )
        if better:
            state.best_metric, state.best_step, state.evals_without_improvement = value, state.step, 0
            self.save_model_fn(self.model)
            logger.info("New best %s=%.4f at step %d: model saved", self.metric_name, value, state.step)
        else:
            state.evals_without_improvement += 1
            patience = self.train_config.early_stopping_patience
            if patience is not None and state.evals_without_improvement >= patience:
                state.stopped_early = True
                logger.info(
                    "Early stopping: %s did not improve for %d evaluations", self.metric_name, patience
                )
        self.model.train()
        return better

    def _save_checkpoint(self) -> None:
        self._sync_tokens()  # the count pending on the device belongs to the saved state
        path = save_checkpoint(
            self.accelerator,
            self.run_dir,
            self.state.step,
            dataclasses.asdict(self.state),
            self.train_config.keep_checkpoints,
        )
        logger.info("Checkpoint saved: %s", path)

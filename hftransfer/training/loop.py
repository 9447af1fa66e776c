"""The one training loop every recipe runs (Accelerate: CPU, one GPU, DDP/FSDP/DeepSpeed through ``accelerate``).

Gradient accumulation is exact: the micro-batches of one optimizer step are fetched first, their labelled items
(tokens or examples) counted across all processes, and each micro-batch's *summed* loss is divided by that global
count. So k micro-batches of b examples produce the same gradient as one batch of k*b, even for token tasks whose
batches hold different numbers of labelled tokens. ``accelerator.accumulate`` cannot express this (it divides every
micro-batch loss by k and needs the last window of an epoch to be full), so the loop uses the primitive it is built
on, ``accelerator.no_sync``, to skip the gradient all-reduce on all but the last micro-batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftransfer.config import RunConfig
from hftransfer.data.batching import count_items
from hftransfer.objectives.task import task_loss
from hftransfer.training.callbacks import Callback, FastCpuDropout, MemorySampler, StepHook
from hftransfer.training.checkpoint import load_checkpoint, save_checkpoint
from hftransfer.training.clipping import clip_gradients, end_deferred_clip
from hftransfer.training.meters import TrainMeter, loss_parts, step_budget, training_summary
from hftransfer.training.optim import build_scheduler, prepare_training, scaled_learning_rate
from hftransfer.training.selection import BestModelSelection
from hftransfer.training.state import LoopState, checkpoint_state, restore_state
from hftransfer.training.tracking import MetricsLog

logger = logging.getLogger("hftransfer")

# A loss function ``loss_fn(model, batch, state)`` returns the batch's loss *summed* over labelled items,
# optionally with named per-step terms (already weighted, logged under their names) and named values for the log
# alone: see objectives/base.py.
LossFn = Callable[..., torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class FitResult:
    state: LoopState
    total_steps: int
    best_model_saved: bool


class TrainingLoop:
    """Optimise ``model`` on ``train_loader``; evaluate, keep the best model, checkpoint and resume.

    Args:
        model, train_loader, eval_loader: unprepared (prepared here with the optimizer); ``eval_loader`` may be
            None (no validation). Objects that are not DataLoaders pass ``prepare`` untouched: mixed sources
            (:class:`~hftransfer.data.mixing.MixedBatches`) and dicts of prepared per-task evaluation loaders.
        evaluate: ``evaluate(model, prepared_eval_loader) -> metrics``; ``save_model(model)`` exports the current
            model (both called on every process). ``config``: the run config; ``run_dir``: checkpoints and logs.
        loss_fn: ``loss_fn(model, batch, state)``: summed loss, optionally with weighted per-step terms.
        param_groups: optimizer parameter groups (default: decay / no-decay over trainable parameters), or a
            ready ``optimizer`` over the model's parameters.
        on_step_start: called with the loop state before every optimizer step (e.g. gradual unfreezing);
            ``callbacks``: more :class:`~hftransfer.training.callbacks.Callback` objects (CPU dropout masks and
            memory sampling are always there).
        before_update: ``before_update(micro_batches) -> factor`` just before each update: the factor multiplies
            every group's learning rate for that update (a multitask run's per-task rate; the schedule is
            unchanged), and the call may set up the optimizer for the step.
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
        callbacks: list[Callback] | None = None,
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
        self.log = MetricsLog(accelerator, self.run_dir)
        self.selection = BestModelSelection(
            evaluate,
            save_model,
            config.metric_for_best(),
            config.greater_is_better(),
            config.train.early_stopping_patience,
            self.log,
        )
        self.state = LoopState()
        self.meter = TrainMeter(accelerator)
        self.memory = MemorySampler()
        self.callbacks: list[Callback] = [FastCpuDropout(), self.memory, *(callbacks or [])]
        self._active: list[Callback] = []  # the callbacks of the fit in progress
        self._progress: tqdm | None = None  # its bar

        self.model, self.optimizer, self.train_loader, self.eval_loader = prepare_training(
            accelerator, model, train_loader, eval_loader, self.train_config, param_groups, optimizer
        )
        self.steps_per_epoch, self.total_steps, self.num_epochs = step_budget(
            self.train_config, len(self.train_loader)
        )
        self.state.total_steps = self.total_steps
        # The schedule counts optimizer steps of this process, so it is stepped by hand rather than prepared
        # (a prepared scheduler steps once per process per call). Its state goes into trainer_state.json as JSON,
        # not through register_for_checkpointing, whose pickle accelerate loads with weights_only=False.
        self.scheduler = build_scheduler(self.optimizer, self.train_config, self.total_steps)

    # ----------------------------------------------------------------------------------------------- resume
    def resume(self, checkpoint: Path) -> None:
        """Load a checkpoint written by this loop; training then continues at its step with the same data order,
        and ``metrics.jsonl`` goes on as the uninterrupted run's would (records logged after the checkpoint are
        dropped, the first record after it averages the same steps)."""
        saved = load_checkpoint(self.accelerator, checkpoint)
        self.state = restore_state(saved, self.scheduler, self.meter, self.log, checkpoint)
        self.state.total_steps = self.total_steps
        logger.info("Resumed from %s at step %d (epoch %d)", checkpoint, self.state.step, self.state.epoch)

    # ------------------------------------------------------------------------------------------------ train
    def fit(self) -> FitResult:
        """Train until ``total_steps`` or early stopping; returns the final loop state."""
        hook = [StepHook(self.on_step_start)] if self.on_step_start is not None else []
        self._active = [*hook, *self.callbacks]
        self._notify("on_fit_start", self)
        try:
            return self._fit()
        except BaseException:
            self._end_callbacks()
            raise

    def _notify(self, hook: str, *args: Any) -> None:
        for callback in self._active:
            getattr(callback, hook)(*args)

    def _end_callbacks(self) -> None:
        active, self._active = self._active, []
        for callback in active:
            callback.on_fit_end(self.state)

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
        self._progress = progress = tqdm(
            total=self.total_steps,
            initial=state.step,
            desc="Training",
            disable=not accelerator.is_local_main_process,
        )
        log_every = self.train_config.log_every_steps  # 0: with each evaluation instead
        self.model.train()
        best_model_saved = False
        started = time.perf_counter()
        seconds_before = state.train_seconds
        while state.step < self.total_steps and not state.stopped_early and state.epoch < self.num_epochs:
            self.train_loader.set_epoch(state.epoch)
            batches = self.train_loader.iterate(state.batches_in_epoch)
            while state.step < self.total_steps:
                window = list(islice(batches, self.train_config.grad_accum_steps))
                if not window:
                    break
                self._notify("on_step_start", state)
                step_started = time.perf_counter()
                self._optimizer_step(window)
                state.step_seconds += time.perf_counter() - step_started
                state.step += 1
                state.batches_in_epoch += len(window)
                state.train_seconds = seconds_before + time.perf_counter() - started
                progress.update(1)
                if log_every and state.step % log_every == 0:
                    self._log_train()
                every = self.train_config.eval_every_steps
                if every and state.step % every == 0:
                    best_model_saved |= self._evaluate_and_select()
                if state.stopped_early:
                    break
                save_every = self.train_config.save_every_steps
                # A step that ends the epoch is saved once, after the epoch's evaluation (below).
                ends_epoch = state.batches_in_epoch >= len(self.train_loader)
                if save_every and state.step % save_every == 0 and not ends_epoch:
                    self._save_checkpoint()
            if state.batches_in_epoch >= len(self.train_loader):
                state.epoch += 1
                state.batches_in_epoch = 0
                if self.train_config.eval_every_epoch and not state.stopped_early:
                    best_model_saved |= self._evaluate_and_select()
                if self.train_config.save_every_steps and not state.stopped_early:
                    self._save_checkpoint()  # documented: with save_every_steps, at the end of every epoch too
        if state.last_eval_step != state.step and not state.stopped_early:
            best_model_saved |= self._evaluate_and_select()
        progress.close()
        state.train_seconds = seconds_before + time.perf_counter() - started
        self._end_callbacks()
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
            last, self.state.micro_batch = index == len(window) - 1, index
            with nullcontext() if last else accelerator.no_sync(self.model):
                loss_sum, penalties, logged = loss_parts(self.loss_fn(self.model, batch, self.state))
                loss = loss_sum * scale
                for name, value in logged.items():  # for the log alone (a domain classifier's accuracy)
                    self.meter.add_term(name, value / len(window))
                for name, value in penalties.items():
                    # A penalty is per step: each of the window's micro-batches contributes its share.
                    share = value / len(window)
                    loss = loss + share
                    self.meter.add_term(name, share)
                if last:
                    self._notify("before_last_backward")
                accelerator.backward(loss)
            self.meter.add_batch(batch, loss_sum, self.state)
        self.meter.end_step(items)
        if self.train_config.max_grad_norm is not None:
            # On CPU with fused AdamW the rescaling happens inside the optimizer step (see training/clipping.py).
            self.meter.grad_norm = clip_gradients(
                accelerator, self.model, self.optimizer, self.train_config.max_grad_norm
            )
        factor = self.before_update(window) if self.before_update is not None else 1.0
        try:  # the schedule's values return even if the step is skipped (fp16)
            with scaled_learning_rate(self.optimizer, factor):
                self.optimizer.step()
        finally:
            end_deferred_clip(self.optimizer)
        if not accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        self._notify("on_step_end", self.state)
        self.optimizer.zero_grad(set_to_none=True)

    def _log_train(self) -> None:
        metrics = self.meter.log_metrics(self.state, self.scheduler.get_last_lr()[0])
        self._progress.set_postfix(loss=f"{metrics['loss']:.4f}")
        self.log.log("train", metrics, step=self.state.step, epoch=self.epoch_progress())

    def summary(self) -> dict[str, Any]:
        """The ``train`` entry of ``metrics.json`` (see :func:`~hftransfer.training.meters.training_summary`)."""
        self.meter.sync_tokens(self.state)
        return training_summary(
            self.state, self.epoch_progress(), self.accelerator.num_processes, self.memory
        )

    def epoch_progress(self) -> float:
        """Epochs done, with the fraction of the current one."""
        return self.state.epoch + self.state.batches_in_epoch / max(1, len(self.train_loader))

    # --------------------------------------------------------------------------------------- eval & select
    def _evaluate_and_select(self) -> bool:
        """Evaluate; save the model when it is the best so far. Returns True when it saved."""
        if not self.train_config.log_every_steps and self.meter.steps:
            self._log_train()  # log_every_steps=0: the training loss of the steps since the last evaluation
        if self.eval_loader is None:
            return False
        self.state.last_eval_step = self.state.step
        better = self.selection.evaluate(self.model, self.eval_loader, self.state, self.epoch_progress())
        self._notify("on_evaluate", self.state)
        self.model.train()
        return better

    def _save_checkpoint(self) -> None:
        state = checkpoint_state(self.state, self.scheduler, self.meter, self.log)
        path = save_checkpoint(
            self.accelerator, self.run_dir, self.state.step, state, self.train_config.keep_checkpoints
        )
        logger.info("Checkpoint saved: %s", path)

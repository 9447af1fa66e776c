"""The loop's bookkeeping: what it counts between logs (loss, per-step terms, tokens), its step budget, best-model
selection and early stopping, and the training summary of ``metrics.json``.

Counts stay on the device between logs: reading one is a host sync, which the loop does only once per log interval
(and at checkpoints and the summary).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from accelerate import Accelerator

from hftransfer.data.batching import batch_tokens
from hftransfer.errors import ConfigError

logger = logging.getLogger("hftransfer")


class TrainMeter:
    """Sums of the summed loss, labelled items and weighted per-step terms since the last log, and tokens seen."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)  # not yet in the state
        self.grad_norm: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        self.running = torch.zeros(2, device=self.accelerator.device)  # [loss sum, items]
        self.terms: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add_term(self, name: str, share: torch.Tensor) -> None:
        self.terms[name] = self.terms.get(name, 0.0) + share.detach().float()

    def add_batch(self, batch: dict[str, torch.Tensor], loss_sum: torch.Tensor, state: Any) -> None:
        processes = self.accelerator.num_processes
        self.running[0] += loss_sum.detach().float()
        state.samples_seen += batch["labels"].shape[0] * processes
        real, padded = batch_tokens(batch)
        self.tokens += real
        state.padded_tokens_seen += padded * processes

    def state_dict(self) -> dict[str, Any]:
        """The sums since the last log as JSON, for a checkpoint: with them the first record of a resumed run
        averages the same steps as the uninterrupted run's, bit for bit. Every process's sums are kept (they are
        reduced only at log time), so this is a collective: call it on every process."""
        return {
            "running": self._rows(self.running),  # [processes][loss sum, items]
            "terms": {name: [row[0] for row in self._rows(total)] for name, total in self.terms.items()},
            "steps": self.steps,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s sums (this process's row; exact on the same number of processes)."""
        device = self.accelerator.device
        self.running = torch.tensor(self._mine(saved["running"], "sum"), dtype=torch.float32, device=device)
        self.terms = {
            name: torch.tensor(
                self._mine([[v] for v in values], "mean")[0], dtype=torch.float32, device=device
            )
            for name, values in saved["terms"].items()
        }
        self.steps = int(saved["steps"])

    def _rows(self, value: torch.Tensor) -> list[list[float]]:
        rows = value.detach().float().reshape(1, -1)
        if self.accelerator.num_processes > 1:
            rows = self.accelerator.gather(rows)  # [processes, values]
        return rows.tolist()  # float32 values are exact as Python floats and in JSON

    def _mine(self, rows: list[list[float]], reduction: str) -> list[float]:
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        if len(rows) == processes:
            return rows[rank]
        # Resumed on another number of processes (the data order differs anyway): keep the reduced value the log
        # computes, as a sum on the main process (loss, items) or a mean on every process (terms).
        totals = [sum(column) for column in zip(*rows)]
        if reduction == "mean":
            return [total / len(rows) for total in totals]
        return totals if rank == 0 else [0.0] * len(totals)

    def end_step(self, items: torch.Tensor) -> None:
        self.running[1] += items
        self.steps += 1

    def sync_tokens(self, state: Any) -> None:
        """Move the device-side token count into the loop state (a host sync: only at log and summary time)."""
        # This process's count times the processes (as for samples): no collective outside the logging one.
        state.tokens_seen += int(self.tokens) * self.accelerator.num_processes
        self.tokens.zero_()

    def log_metrics(self, state: Any, lr: float) -> dict[str, float]:
        """The ``train`` record of the interval since the last log; starts the next interval."""
        accelerator = self.accelerator
        running = (
            accelerator.reduce(self.running, reduction="sum")
            if accelerator.num_processes > 1
            else self.running
        )
        loss_sum, items = running.tolist()  # the only host sync of the step, once per log interval
        self.sync_tokens(state)
        metrics = {"loss": loss_sum / max(items, 1), "lr": lr}
        for name, total in self.terms.items():
            # Mean over steps and processes of the weighted term, logged apart from the task loss.
            total = accelerator.reduce(total, reduction="mean") if accelerator.num_processes > 1 else total
            metrics[name] = float(total) / max(self.steps, 1)
        self.reset()
        if self.grad_norm is not None:
            metrics["grad_norm"] = float(self.grad_norm)
        if state.train_seconds > 0:
            metrics["samples_per_second"] = state.samples_seen / state.train_seconds
        return metrics


def loss_parts(result: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A loss function's result as (summed loss, per-step terms, values for the log alone)."""
    if not isinstance(result, tuple):
        return result, {}, {}
    return (*result, {})[:3]


def training_summary(state: Any, epochs: float, num_processes: int, memory: Any) -> dict[str, Any]:
    """Steps, epochs, time and throughput of the training so far (the ``train`` entry of ``metrics.json``).

    ``runtime_seconds`` is the wall time of training including evaluations and saves; ``step_seconds`` only the
    optimizer steps (forward, backward, update). Tokens are real (unpadded) ones; ``padded_tokens`` is what the
    model computed on (the basis of achieved FLOP/s). ``peak_memory_mb`` is the process peak up to the end of
    training; ``rss_mb`` the resident memory before training and the most sampled inside the steps, whose
    difference (``growth_in_steps``) is what training adds: gradients, optimizer state, activations.
    """
    seconds = state.train_seconds
    return {
        "steps": state.step,
        "epochs": round(epochs, 4),
        "runtime_seconds": round(seconds, 2),
        "step_seconds": round(state.step_seconds, 2),
        "samples": state.samples_seen,
        "tokens": state.tokens_seen,
        "padded_tokens": state.padded_tokens_seen,
        "samples_per_second": state.samples_seen / seconds if seconds else None,
        "tokens_per_second": state.tokens_seen / seconds if seconds else None,
        "seconds_per_epoch": round(seconds / epochs, 3) if epochs else None,
        "stopped_early": state.stopped_early,
        "num_processes": num_processes,
        "peak_memory_mb": memory.peak_at_end,
        "rss_mb": memory.report(),
    }


def step_budget(train: Any, batches_per_epoch: int) -> tuple[int, int, int]:
    """Optimizer steps per epoch, in all (``train.max_steps``, else ``train.epochs`` worth) and epochs begun."""
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / train.grad_accum_steps))
    if train.max_steps is not None:
        total = train.max_steps
    else:
        total = max(1, math.ceil(train.epochs * steps_per_epoch))
    return steps_per_epoch, total, math.ceil(total / steps_per_epoch)


def record_evaluation(
    state: Any, metrics: dict[str, Any], metric: str, greater_is_better: bool, patience: int | None
) -> bool:
    """Record a validation result in the loop state: the best so far (True: save the model) or one more
    evaluation without improvement, which stops training after ``patience`` of them.

    Raises:
        ConfigError: ``metric`` (``train.metric_for_best``) is not among the reported metrics.
    """
    if metric not in metrics:
        available = ", ".join(sorted(k for k in metrics if not k.startswith("per_")))
        raise ConfigError(
            f"train.metric_for_best={metric!r} is not a reported metric; use one of: {available}"
        )
    value = float(metrics[metric])
    best = state.best_metric
    # A NaN best (a correlation of constant early predictions) is beaten by any number; a NaN never beats one.
    if (
        best is None
        or (value > best if greater_is_better else value < best)
        or (math.isnan(best) and not math.isnan(value))
    ):
        state.best_metric, state.best_step, state.evals_without_improvement = value, state.step, 0
        return True
    state.evals_without_improvement += 1
    if patience is not None and state.evals_without_improvement >= patience:
        state.stopped_early = True
        logger.info("Early stopping: %s did not improve for %d evaluations", metric, patience)
    return False

"""Conservative training: keep the adapted encoder close to the pretrained one.

* **L2-SP** (Li et al., 2018, "Explicit inductive bias for transfer learning"): ``sum ||theta - theta_0||^2`` over
  the encoder's weights, theta_0 the pretrained starting point (not zero, as plain weight decay would pull to).
* **Output drift**: the distance between the current encoder's last hidden states and those of a frozen copy of
  the original encoder on the same batch (a feature-level variant of LwF / "learning without forgetting").

Each returns the *unweighted* penalty of a batch; :class:`~hftransfer.objectives.task.TaskObjective` weights it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from hftransfer.strategies.layers import EncoderLayout


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DDP / torch.compile wrappers keep the real module here; the names must match the snapshot's.
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)


class L2SP:
    """``sum ||theta - theta_pretrained||^2`` over encoder parameters (head excluded: it has no pretrained value).

    The snapshot is taken when this object is created, so create it before training (and before loading a
    checkpoint to resume: the reference must stay the *pretrained* weights).
    """

    name = "l2sp"

    def __init__(self, model: torch.nn.Module) -> None:
        layout = EncoderLayout.of(model)
        self.reference = {
            name: param.detach().clone()
            for name, param in model.named_parameters()
            if not layout.is_head(name)
        }

    def __call__(self, model: torch.nn.Module, batch: dict, outputs) -> torch.Tensor:
        total = None
        for name, param in _unwrap(model).named_parameters():
            reference = self.reference.get(name)
            if reference is None or not param.requires_grad:
                continue
            if reference.device != param.device:
                reference = self.reference[name] = reference.to(param.device)
            term = (param.float() - reference.float()).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros((), device=batch["input_ids"].device)
        return total


class OutputDrift:
    """Distance between the encoder's last hidden states and a frozen original encoder's, over real tokens.

    ``mse``: mean over tokens of the mean squared difference over hidden units. ``kl``: mean over tokens of
    ``KL(softmax(original) || softmax(current))`` over the hidden units, a scale-free alternative.
    """

    name = "drift"
    needs_hidden_states = True

    def __init__(self, model: torch.nn.Module, distance: str = "mse") -> None:
        base = getattr(model, "get_base_model", lambda: model)()
        # A multitask model keeps its one shared encoder as ``encoder``; a transformers model under its prefix.
        encoder = base.encoder if hasattr(base, "task_models") else getattr(base, base.base_model_prefix)
        self.original = copy.deepcopy(encoder).eval()
        self.original.requires_grad_(False)
        self.distance = distance

    def __call__(self, model: torch.nn.Module, batch: dict, outputs) -> torch.Tensor:
        current = outputs.hidden_states[-1].float()
        device = current.device
        if next(self.original.parameters()).device != device:
            self.original.to(device)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        with torch.no_grad():
            original = self.original(**inputs).last_hidden_state.float()
        mask = batch["attention_mask"].to(current.dtype)  # [batch, seq]
        if self.distance == "mse":
            per_token = (current - original).pow(2).mean(dim=-1)
        else:
            per_token = F.kl_div(
                current.log_softmax(dim=-1), original.log_softmax(dim=-1), log_target=True, reduction="none"
            ).sum(dim=-1)
        return (per_token * mask).sum() / mask.sum().clamp(min=1)

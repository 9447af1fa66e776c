"""A masked-language-model head for an encoder checkpoint that has none, and the masked LM as the loop trains it.

The packaged encoders (all-MiniLM-L6-v2, all-mpnet-base-v2) are sentence encoders saved without their MLM head.
:func:`build_masked_lm` loads them with ``AutoModelForMaskedLM`` (``BertForMaskedLM``, ``MPNetForMaskedLM``, ...):
the encoder's weights come from the checkpoint, the head's transform and bias start from transformers'
initialisation, and its decoder is *tied* to the word embeddings (one tensor, trained by both uses), so the only new
weights are a hidden x hidden transform and a bias. A run says so in its log and in ``metrics.json``.

The encoder checkpoint's pooler has no place in a masked LM, but the classifiers fine-tuned later use it (BERT's
sequence classifier reads the pooled ``[CLS]``): it is carried unchanged into the exported model so that a
fine-tuning run from the export starts from the checkpoint's pooler rather than a new one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from hftransfer.assets import resolve_model_name
from hftransfer.config import ModelConfig
from hftransfer.errors import ConfigError
from hftransfer.pretrain.masking import IGNORE_INDEX

logger = logging.getLogger("hftransfer")


def build_masked_lm(config: ModelConfig) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The checkpoint of ``config.name_or_path`` as a masked LM, with its decoder tied to the word embeddings.

    Returns:
        The model and a report: ``class``, ``head`` (``new`` or ``from the checkpoint``), ``new_weights`` (the head
        weights the checkpoint lacked) and ``tied`` (decoder and word embeddings are one tensor).

    Raises:
        ConfigError: the checkpoint cannot be loaded, or its model type has no masked-LM class in transformers.
    """
    name = resolve_model_name(config.name_or_path)
    options: dict[str, Any] = {"revision": config.revision, "trust_remote_code": config.trust_remote_code}
    try:
        model_config = AutoConfig.from_pretrained(name, **options)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.name_or_path={config.name_or_path!r} could not be loaded: {' '.join(str(err).split())[:300]}"
        ) from None
    if model_config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.trust_remote_code:
        raise ConfigError(
            f"model.name_or_path={config.name_or_path!r} is a {model_config.model_type!r} model, which has no "
            "masked-LM class in transformers (AutoModelForMaskedLM); use an encoder of the BERT, MPNet, RoBERTa "
            "or another masked-LM family"
        )
    if config.attn_implementation:
        options["attn_implementation"] = config.attn_implementation
    model, info = AutoModelForMaskedLM.from_pretrained(name, output_loading_info=True, **options)
    head = head_module_name(model)
    new = sorted(key for key in info["missing_keys"] if head is None or key.startswith(f"{head}."))
    decoder, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if decoder is not None and decoder.weight is not embeddings.weight and new:
        # A new decoder would be a vocab x hidden matrix learned from nothing; the word embeddings already are one.
        model.config.tie_word_embeddings = True
        model.tie_weights()
    tied = decoder is not None and model.get_output_embeddings().weight is embeddings.weight
    report = {
        "class": type(model).__name__,
        "head": "new" if new else "from the checkpoint",
        "new_weights": new,
        "tied": tied,
    }
    if new:
        logger.info(
            "MLM head of %s: NEW (the checkpoint has none; transformers' load report lists it as MISSING): %s "
            "start from scratch; the decoder is %s",
            config.name_or_path,
            ", ".join(new),
            "TIED to the word embeddings (one tensor)" if tied else "NOT tied to the word embeddings",
        )
    return model, report


def head_module_name(model: PreTrainedModel) -> str | None:
    """The name of the child module that maps hidden states to vocabulary logits (``cls`` for BERT, ``lm_head``
    for MPNet and RoBERTa), or None when the head is spread over several children (DistilBERT)."""
    decoder = model.get_output_embeddings()
    owners = [
        name
        for name, child in model.named_children()
        if child is not model.base_model and any(module is decoder for module in child.modules())
    ]
    return owners[0] if len(owners) == 1 and getattr(model, owners[0]) is not decoder else None


def carried_weights(name: str, model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The checkpoint's pooler weights under the masked LM's prefix (``bert.pooler.dense.weight``), read from a
    local directory's safetensors; empty when there are none or the checkpoint is not a local directory."""
    directory = Path(name)
    prefix = model.base_model_prefix
    own = set(model.state_dict())
    carried: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("model*.safetensors")) if directory.is_dir() else []:
        with safe_open(str(path), framework="pt") as handle:
            for key in list(handle.keys()):
                if key.startswith("pooler.") or key.startswith(f"{prefix}.pooler."):
                    renamed = f"{prefix}.{key.removeprefix(f'{prefix}.')}"
                    if renamed not in own:
                        carried[renamed] = handle.get_tensor(key)
    return carried


@dataclass
class HeadParts:
    """A prediction head's transform (dense -> activation -> LayerNorm) and output bias."""

    dense: nn.Linear
    activation: Callable[[torch.Tensor], torch.Tensor]
    norm: nn.LayerNorm
    bias: torch.Tensor


def prediction_head_parts(model: PreTrainedModel) -> HeadParts:
    """The transform and bias of a masked LM's head: BERT's ``cls.predictions`` or RoBERTa / MPNet's ``lm_head``.

    Raises:
        ConfigError: a head of another layout.
    """
    name = head_module_name(model)
    head = getattr(model, name) if name else None
    head = getattr(head, "predictions", head)  # BERT: cls.predictions holds transform, decoder and bias
    if hasattr(head, "transform"):
        transform = head.transform
        return HeadParts(transform.dense, transform.transform_act_fn, transform.LayerNorm, head.bias)
    if hasattr(head, "dense") and hasattr(head, "layer_norm"):
        return HeadParts(head.dense, F.gelu, head.layer_norm, head.bias)
    raise ConfigError(
        f"{type(model).__name__}: its MLM head is not laid out like BERT's (cls.predictions) or RoBERTa's "
        "(lm_head), which the mlm objective rebuilds; use an encoder of those families"
    )


class MaskedTokenPredictor(nn.Module):
    """A masked LM that computes vocabulary logits at the predicted positions only.

    The vocabulary projection costs as much as a small encoder when applied to every token; only the ~15% of tokens
    with a label need it. ``forward(labels=..., **inputs)`` returns ``(logits [predicted, vocab], targets
    [predicted])``. The masked LM stays a submodule (``masked_lm``), so saving and exporting see it whole.
    """

    def __init__(self, masked_lm: PreTrainedModel) -> None:
        super().__init__()
        self.masked_lm = masked_lm
        # By name, not as a second submodule: the checkpoint would hold the head's tensors twice.
        self.head_name = head_module_name(masked_lm)

    @property
    def config(self) -> Any:
        return self.masked_lm.config

    def forward(self, labels: torch.Tensor, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predicted = labels != IGNORE_INDEX  # [batch, seq]
        if self.head_name is None:  # a head spread over several modules: the model's own forward
            return self.masked_lm(**inputs).logits[predicted], labels[predicted]
        hidden = self.masked_lm.base_model(**inputs).last_hidden_state  # [batch, seq, hidden]
        logits = getattr(self.masked_lm, self.head_name)(hidden[predicted])  # [predicted, vocab]
        return logits, labels[predicted]


def masked_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], state: Any = None) -> torch.Tensor:
    """Cross-entropy summed over the predicted tokens (the loop divides by their number in the step)."""
    logits, targets = model(**batch)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def mlm_evaluator(accelerator: Accelerator) -> Any:
    """``evaluate(model, loader, split) -> {loss, perplexity, masked_tokens}`` over all processes."""

    def evaluate(model: torch.nn.Module, loader: Any, split: str = "validation") -> dict[str, Any]:
        model.eval()
        totals = torch.zeros(2, device=accelerator.device)  # [summed loss, predicted tokens]
        with torch.no_grad():
            for batch in loader:
                logits, targets = model(**batch)
                losses = F.cross_entropy(logits.float(), targets, reduction="none")
                predicted = batch["labels"] != IGNORE_INDEX
                rows = predicted.nonzero(as_tuple=True)[0]
                # Per row, so that gather_for_metrics can drop the rows a process repeated to even out batches.
                per_row = torch.zeros(len(predicted), device=losses.device).index_add_(0, rows, losses)
                per_row, counts = accelerator.gather_for_metrics((per_row, predicted.sum(dim=1)))
                totals += torch.stack([per_row.sum(), counts.sum().float()])
        loss_sum, count = totals.tolist()
        loss = loss_sum / max(count, 1.0)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "masked_tokens": int(count)}

    return evaluate

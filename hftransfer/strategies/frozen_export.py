"""Export a trained frozen-encoder head so that it predicts exactly as it was trained.

Where an ordinary Hugging Face model computes the same logits (a linear token head, or a one-hidden-layer CLS head
with the architecture's own activation), the export *is* that model. Every other combination is exported as the
encoder plus ``head.safetensors``/``head_config.json`` and reloaded with :func:`load_probe`: an approximate native
model would silently predict differently. Both kinds are reloaded and compared with the live model before the
directory appears.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES

from hftransfer.data.batching import FeatureCollator
from hftransfer.strategies.feature_cache import base_encoder, resolve_layer
from hftransfer.strategies.frozen import (
    HEAD_CONFIG_FILE,
    HEAD_FILE,
    NATIVE_SEQUENCE_HEADS,
    FeatureHead,
    ProbeModel,
)
from hftransfer.utils import atomic_directory

logger = logging.getLogger(__name__)


def _native_obstacle(
    task: str, head: FeatureHead, config: PretrainedConfig, num_layers: int, pooling: str | None
) -> str | None:
    """Why no ordinary HF model computes exactly these logits; None when one does."""
    if num_layers > 1:
        return f"feature_layers={num_layers} averages hidden states, which no HF classification model does"
    if task == "token-classification":
        if head.kind != "linear":
            return "an MLP head on tokens has no AutoModelForTokenClassification equivalent (one Linear)"
        if config.model_type not in MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES:
            return f"model_type {config.model_type!r} has no AutoModelForTokenClassification"
        return None
    native = NATIVE_SEQUENCE_HEADS.get(config.model_type)
    if head.kind != "mlp":
        return "a linear head on pooled features: HF sequence heads are dense+activation+Linear"
    if pooling != "cls":
        return f"pooling={pooling}: HF sequence heads read the first token"
    if native is None:
        return f"no known native sequence head for model_type {config.model_type!r}"
    if head.head_hidden_size != config.hidden_size or head.activation_name != native[2]:
        return f"the native head is {config.hidden_size} wide with {native[2]}; this one differs"
    return None


def _copy_encoder(target: nn.Module, source: nn.Module, keep_layers: int) -> None:
    """Load ``source``'s weights of its bottom ``keep_layers`` layers into ``target`` (missing pooler allowed)."""
    layer_of = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
    state = {
        name: tensor
        for name, tensor in source.state_dict().items()
        if not (m := layer_of.search(name)) or int(m.group(1)) < keep_layers
    }
    missing, unexpected = target.load_state_dict(state, strict=False)
    # The pooler is optional on both sides (BertModel has one, BertForTokenClassification not); it is never read
    # by a token head, and a native BERT sequence head overwrites it.
    wrong = [name for name in missing + unexpected if not name.startswith("pooler.")]
    if wrong:
        raise RuntimeError(f"encoder weights do not fit the export model: {wrong[:5]}")


def _copy_linear(target: nn.Module, source: nn.Linear) -> None:
    if not isinstance(target, nn.Linear) or target.weight.shape != source.weight.shape:
        raise RuntimeError(f"cannot copy a {tuple(source.weight.shape)} Linear into {target}")
    with torch.no_grad():
        target.weight.copy_(source.weight)
        target.bias.copy_(source.bias)


def _native_model(
    config: PretrainedConfig, base: nn.Module, head: FeatureHead, task: str, id2label: dict[int, str]
) -> nn.Module:
    """The AutoModelFor*Classification that computes exactly ``head(encoder_features(base))``."""
    config.id2label, config.label2id = id2label, {label: i for i, label in id2label.items()}
    token = task == "token-classification"
    model = (AutoModelForTokenClassification if token else AutoModelForSequenceClassification).from_config(
        config
    )
    _copy_encoder(model.base_model, base, config.num_hidden_layers)
    if token:
        _copy_linear(model.classifier, head.classifier)
    else:
        first, second, _ = NATIVE_SEQUENCE_HEADS[config.model_type]
        _copy_linear(model.get_submodule(first), head.dense)
        _copy_linear(model.get_submodule(second), head.classifier)
    return model


def _logit_difference(
    model: nn.Module, probe: ProbeModel, tokenizer: PreTrainedTokenizerBase, sample: Dataset
):
    rows = [sample[i] for i in range(min(8, len(sample)))]
    batch = FeatureCollator(tokenizer)(rows)
    accepted = inspect.signature(model.forward).parameters
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    device = next(probe.parameters()).device
    with torch.inference_mode():
        ours = probe(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()
        theirs = model(**{k: v for k, v in inputs.items() if k in accepted}).logits.float().cpu()
    if ours.dim() == 3:  # compare real tokens only
        mask = inputs["attention_mask"].bool()
        ours, theirs = ours[mask], theirs[mask]
    return float((ours - theirs).abs().max())


def export_frozen(
    encoder: nn.Module,
    head: FeatureHead,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | Path,
    *,
    name_or_path: str,
    task: str,
    layer: int,
    num_layers: int = 1,
    pooling: str | None = None,
    id2label: dict[int, str],
    sample: Dataset,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Write the trained probe to ``directory`` (atomically) as a native HF model when exact, else encoder+head.

    The weights come from the live ``encoder`` (the frozen strategy never changes it, so they equal those of
    ``name_or_path``, which is only recorded); this works offline and with aliases. A lower ``layer`` keeps only the
    encoder layers below it (a truncated encoder: same logits, less compute). Call it on the main process only.

    Args:
        sample: tokenised features; up to 8 rows are run through the reloaded export and the live model.
        tolerance: largest accepted ``|logits difference|``.

    Returns:
        ``{"kind": "native" | "encoder+head", "pipeline", "truncated_to_layer", "reason", "max_abs_diff"}``.

    Raises:
        RuntimeError: the reloaded export does not reproduce the live model's logits within ``tolerance``.
    """
    base = base_encoder(encoder)
    total = base.config.num_hidden_layers
    index = resolve_layer(layer, total, num_layers)
    truncated = index if index < total else None
    if truncated is not None:
        logger.warning(
            "feature_layer=%d: the export keeps only the bottom %d of %d encoder layers", layer, index, total
        )
    id2label = {int(i): label for i, label in id2label.items()}
    probe = ProbeModel(
        base, head, layer=index, num_layers=num_layers, pooling=pooling, task=task, id2label=id2label
    )
    obstacle = _native_obstacle(task, head, base.config, num_layers, pooling)
    config = copy.deepcopy(base.config)
    config.num_hidden_layers = index
    was_training = head.training
    probe.eval()
    try:
        with atomic_directory(directory, what="the exported model") as tmp:
            if obstacle is None:
                model = _native_model(config, base, head, task, id2label)
            else:
                model = AutoModel.from_config(config)
                _copy_encoder(model, base, index)
            model.to(base.dtype).save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            if obstacle is None:
                reloaded = type(model).from_pretrained(tmp)
            else:
                save_file(
                    {k: v.contiguous() for k, v in head.state_dict().items()}, str(Path(tmp) / HEAD_FILE)
                )
                head_config = (
                    head.head_config()
                    | {
                        "task": task,
                        "feature_layer": index,  # absolute: the last layer of the saved, possibly truncated, encoder
                        "feature_layers": num_layers,
                        "pooling": pooling,
                        "id2label": id2label,
                        "name_or_path": name_or_path,
                        "truncated_to_layer": truncated,
                    }
                )
                (Path(tmp) / HEAD_CONFIG_FILE).write_text(json.dumps(head_config, indent=2) + "\n")
                reloaded = load_probe(tmp)
            diff = _logit_difference(reloaded, probe, tokenizer, sample)
            if not diff < tolerance:
                raise RuntimeError(
                    f"the exported model's logits differ from the trained model's by {diff:.2e}"
                )
    finally:
        head.train(was_training)
    native = obstacle is None
    return {
        "kind": "native" if native else "encoder+head",
        "pipeline": native,
        "truncated_to_layer": truncated,
        "reason": "an ordinary HF model computes exactly these logits" if native else obstacle,
        "max_abs_diff": diff,
        "name_or_path": name_or_path,
    }


def load_probe(directory: str | Path) -> ProbeModel:
    """Rebuild the :class:`ProbeModel` of an ``encoder+head`` export (see :func:`export_frozen`)."""
    directory = Path(directory)
    config = json.loads((directory / HEAD_CONFIG_FILE).read_text())
    head = FeatureHead(
        config["hidden_size"],
        config["num_labels"],
        kind=config["head"],
        head_hidden_size=config["head_hidden_size"],
        activation=config["activation"],
        dropout=config["dropout"],
    )
    head.load_state_dict(load_file(directory / HEAD_FILE))
    encoder = AutoModel.from_pretrained(directory)
    probe = ProbeModel(
        encoder,
        head,
        layer=config["feature_layer"],
        num_layers=config["feature_layers"],
        pooling=config["pooling"],
        task=config["task"],
        id2label=config["id2label"],
    )
    return probe.eval()

"""Load a tokenizer and an ``AutoModelFor{Token,Sequence}Classification`` with the task's label maps.

Models stay plain Hugging Face models so that ``save_pretrained`` output loads anywhere (``pipeline`` included).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hftransfer.assets import ENCODERS, resolve_model_name
from hftransfer.config import ModelConfig
from hftransfer.errors import ConfigError

logger = logging.getLogger(__name__)

AUTO_MODELS = {
    "token-classification": AutoModelForTokenClassification,
    "sequence-classification": AutoModelForSequenceClassification,
}


def _not_found(name: str, err: Exception) -> ConfigError:
    where = "a local directory" if Path(name).exists() else "an existing local directory"
    return ConfigError(
        f"model.name_or_path={name!r} could not be loaded: it is not {where} with a model, not an offline alias "
        f"({', '.join(ENCODERS)}), and the Hub did not provide it (offline? HF_HUB_OFFLINE is set to "
        f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}). Reason: {' '.join(str(err).split())[:300]}"
    )


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    """The fast tokenizer of ``config.name_or_path`` (alias, Hub id or directory).

    Raises:
        ConfigError: the tokenizer cannot be found locally or on the Hub.
    """
    name = resolve_model_name(config.name_or_path)
    try:
        return AutoTokenizer.from_pretrained(
            name, revision=config.revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise _not_found(config.name_or_path, err) from None


def build_model(config: ModelConfig, task: str, label_names: Sequence[str]) -> PreTrainedModel:
    """A pretrained encoder with a (new) classification head for ``label_names``.

    Args:
        config: which checkpoint and how to load it.
        task: ``token-classification`` or ``sequence-classification``.
        label_names: label of each class id; stored as ``id2label``/``label2id`` in the model config.

    Raises:
        ConfigError: the checkpoint cannot be found or loaded.
    """
    name = resolve_model_name(config.name_or_path)
    id2label = dict(enumerate(label_names))
    kwargs = {}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    try:
        return AUTO_MODELS[task].from_pretrained(
            name,
            revision=config.revision,
            trust_remote_code=config.trust_remote_code,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={label: index for index, label in id2label.items()},
            # A checkpoint fine-tuned for another label set has a head of another size: start a new head.
            ignore_mismatched_sizes=True,
            **kwargs,
        )
    except ValueError as err:
        message = " ".join(str(err).split())
        if config.attn_implementation and (
            "attn_implementation" in message or "attention implementation" in message
        ):
            reason = re.split(r"\.\s", message)[0]  # transformers' first sentence; the rest is a how-to
            raise ConfigError(
                f"model.attn_implementation={config.attn_implementation!r} is not available for "
                f"{config.name_or_path!r} ({reason}). Set model.attn_implementation=null (transformers picks SDPA "
                "where the architecture has it, else eager) or =eager."
            ) from None
        raise _not_found(config.name_or_path, err) from None
    except OSError as err:
        raise _not_found(config.name_or_path, err) from None


def model_max_length(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> int:
    """Largest input length both the tokenizer and the position embeddings accept."""
    limits = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    # Some configs reserve position ids (RoBERTa/MPNet offset by 2); stay safely inside them.
    offset = (
        2
        if getattr(model.config, "model_type", "") in {"roberta", "mpnet", "xlm-roberta", "camembert"}
        else 0
    )
    usable = [
        limit - offset if i == 0 else limit for i, limit in enumerate(limits) if limit and limit < 10**6
    ]
    return min(usable) if usable else 512

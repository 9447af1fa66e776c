"""Load a tokenizer and an ``AutoModelFor{Token,Sequence}Classification`` with the task's label maps.

Models stay plain Hugging Face models so that ``save_pretrained`` output loads anywhere (``pipeline`` included).
Transformers' multi-line load report, printed on every run because the head is always new, is replaced by one log
line naming the weights that start from scratch (:func:`without_load_report`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
from hftransfer.config.problem import MULTI_LABEL, SINGLE_LABEL
from hftransfer.errors import ConfigError
from hftransfer.modeling.source_model import model_directory, replace_foreign_head

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
    name = resolve_model_name(model_directory(config.name_or_path))
    try:
        return AutoTokenizer.from_pretrained(
            name, revision=config.revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise _not_found(config.name_or_path, err) from None


def build_model(
    config: ModelConfig, task: str, label_names: Sequence[str], problem_type: str = SINGLE_LABEL
) -> PreTrainedModel:
    """A pretrained encoder with a (new) classification head for ``label_names``.

    Args:
        config: which checkpoint and how to load it.
        task: ``token-classification`` or ``sequence-classification``.
        label_names: label of each class id (a regression head's one output); stored as ``id2label``/``label2id``
            in the model config.
        problem_type: of a sequence task; a multi-label or regression one is written into the model config
            (``config.problem_type``: the HF model's own loss and ``pipeline`` follow it), with the multi-label
            decision threshold (``multilabel_threshold``, 0.5 until validation chooses one). A single-label
            config is left as transformers makes it.

    Raises:
        ConfigError: the checkpoint cannot be found or loaded.
    """
    name = resolve_model_name(model_directory(config.name_or_path))
    id2label = dict(enumerate(label_names))
    kwargs = {}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if problem_type != SINGLE_LABEL:
        kwargs["problem_type"] = problem_type
    try:
        with without_load_report():
            model, info = AUTO_MODELS[task].from_pretrained(
                name,
                revision=config.revision,
                trust_remote_code=config.trust_remote_code,
                num_labels=len(label_names),
                id2label=id2label,
                label2id={label: index for index, label in id2label.items()},
                # A checkpoint fine-tuned for another label set has a head of another size: start a new head.
                ignore_mismatched_sizes=True,
                output_loading_info=True,
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
    log_new_weights(model, config.name_or_path, info)
    # A head fine-tuned for other classes is not kept just because its size fits (two binary tasks).
    replace_foreign_head(model, name, label_names)
    if problem_type == MULTI_LABEL:
        from hftransfer.evaluation.multilabel import DEFAULT_THRESHOLD, THRESHOLD_KEY

        setattr(model.config, THRESHOLD_KEY, DEFAULT_THRESHOLD)
    return model


@contextmanager
def without_load_report() -> Iterator[None]:
    """Hold back transformers' load report (a ``from_pretrained`` call inside the block); every other record of
    its loader still goes out. When the load fails, the report is emitted after all: it says why."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if record.funcName == "log_state_dict_report" or "LOAD REPORT" in str(record.msg):
            held.append(record)
            return False
        return True

    loader = logging.getLogger("transformers.modeling_utils")
    loader.addFilter(hold)
    try:
        yield
    except BaseException:
        loader.removeFilter(hold)
        for record in held:
            loader.handle(record)
        raise
    finally:
        loader.removeFilter(hold)


def log_new_weights(model: PreTrainedModel, source: str, info: dict) -> None:
    """One line for what transformers' load report said: the weights that start from scratch (missing from the
    checkpoint, or re-initialised for another size) and how many checkpoint weights went unused."""
    new = sorted(info.get("missing_keys") or [])
    resized = sorted(key for key, *_ in info.get("mismatched_keys") or [])
    unused = sorted(info.get("unexpected_keys") or [])
    if not new and not resized:
        logger.info("%s: every weight loaded from %s", type(model).__name__, source)
        return
    parts = [f"new weights, randomly initialised: {', '.join(new)}"] if new else []
    if resized:
        parts.append(f"re-initialised for another size: {', '.join(resized)}")
    if unused:
        parts.append(
            f"{len(unused)} checkpoint weight(s) unused ({', '.join(unused[:4])}{', ...' * (len(unused) > 4)})"
        )
    logger.info("%s from %s: %s", type(model).__name__, source, "; ".join(parts))


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

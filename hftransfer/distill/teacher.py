"""Teacher predictions computed once per dataset and looked up per student batch, at the word level.

Teacher and student may tokenise differently (another vocabulary, other subword splits, other windows), so token
positions cannot be compared. Words can: every feature row carries ``example_id`` and, per token, the
``word_index`` of the word whose first subword it is. The teacher is run over *its own* features of the same
examples; its logits are kept per (example, word) for token tasks and per example for sequence tasks, and then
placed at the student's first-subword positions. A word the teacher never saw means the two tokenisations do not
describe the same words; that is an error, never a silent skip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hftransfer.assets import resolve_model_name
from hftransfer.data.batching import FeatureCollator, build_eval_dataloader
from hftransfer.errors import ConfigError, DataError
from hftransfer.evaluation.inference import model_inputs
from hftransfer.modeling.build import AUTO_MODELS
from hftransfer.utils import atomic_write

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class TeacherLogits:
    """``per_example[example_id]``: ``[words, labels]`` (token tasks) or ``[labels]`` (sequence tasks), on CPU."""

    task: str
    num_labels: int
    per_example: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class Teacher:
    """A loaded teacher: frozen, in eval mode, with its tokenizer and where its label ids sit in the task's order
    (``label_order[i]`` = the teacher's id of the task's label ``i``)."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    label_order: list[int]
    source: str

    @property
    def is_transformers_model(self) -> bool:
        return isinstance(self.model, PreTrainedModel)


def resolve_teacher(spec: str) -> str:
    """The model directory or Hub id that ``distill.teacher`` names; a run directory of ours means its ``model/``."""
    path = Path(resolve_model_name(spec))
    if path.is_dir() and (path / "config.yaml").is_file() and (path / "model").is_dir():
        return str(path / "model")
    return str(path) if path.exists() else spec


def load_teacher(spec: str, task: str, label_names: Sequence[str], revision: str | None = None) -> Teacher:
    """Load the teacher named by ``spec`` (see :func:`resolve_teacher`), frozen and in eval mode.

    An adapter teacher (of any peft method that merges, such as LoRA) is merged into a plain model (the same
    function, and faster to run).

    Raises:
        ConfigError: nothing loadable there, a teacher for another task, or labels other than the task's.
    """
    from hftransfer.export.peft_adapter import can_merge, merge_adapter
    from hftransfer.loading import load_for_prediction

    source = resolve_teacher(spec)
    if Path(source).exists():
        model, teacher_task = load_for_prediction(source)
    else:  # a Hub id
        teacher_task = task
        try:
            model = AUTO_MODELS[task].from_pretrained(source, revision=revision)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"distill.teacher={spec!r} is not a directory (relative to {Path.cwd()}), and loading it as a "
                "Hub id failed; train a teacher first (e.g. recipes/finetune_ner.py output_dir=runs/teacher-ner) "
                f"or point to one ({' '.join(str(err).split())[:160]})"
            ) from None
    if teacher_task != task:
        raise ConfigError(f"distill.teacher={spec!r} is a {teacher_task} model, but the task is {task}")
    if can_merge(model):
        model = merge_adapter(model)
    model.eval().requires_grad_(False)
    id2label = model.config.id2label  # frozen-head exports (ProbeModel) carry a config with the labels too
    teacher_names = [id2label[i] if i in id2label else id2label[str(i)] for i in range(len(id2label))]
    if sorted(teacher_names) != sorted(label_names):
        raise ConfigError(
            f"distill.teacher={spec!r} predicts labels {teacher_names}, but the task's labels are {list(label_names)}: "
            "the teacher must be fine-tuned on the same label set"
        )
    tokenizer = AutoTokenizer.from_pretrained(source, revision=None if Path(source).exists() else revision)
    return Teacher(model, tokenizer, [teacher_names.index(name) for name in label_names], source)


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers turn every text into the same ids (same normaliser, splitter, vocabulary, specials)."""
    if a.is_fast and b.is_fast:
        return (
            a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str() and a.padding_side == b.padding_side
        )
    return a.get_vocab() == b.get_vocab() and type(a) is type(b)


@torch.inference_mode()
def collect_teacher_logits(
    teacher: torch.nn.Module,
    loader: DataLoader,
    task: str,
    device: torch.device,
    label_order: Sequence[int] | None = None,
) -> TeacherLogits:
    """Run the (frozen, eval-mode) teacher over every row of ``loader`` (its own features of the dataset).

    ``label_order`` reorders the teacher's label columns into the task's order.
    """
    teacher.eval()
    words: dict[int, dict[int, torch.Tensor]] = {}
    order = None if label_order is None else torch.as_tensor(list(label_order))
    result = TeacherLogits(
        task, len(label_order) if label_order is not None else int(teacher.config.num_labels)
    )
    for batch in loader:
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        logits = teacher(**inputs).logits.float().cpu()
        if order is not None:
            logits = logits[..., order]
        for row, example_id in enumerate(batch["example_id"].tolist()):
            if task == "sequence-classification":
                result.per_example[example_id] = logits[row]
                continue
            columns = (batch["word_index"][row] >= 0).nonzero().flatten().tolist()
            per_word = words.setdefault(example_id, {})
            for column in columns:
                per_word[int(batch["word_index"][row, column])] = logits[row, column]
    for example_id, per_word in words.items():
        count = max(per_word) + 1
        if len(per_word) != count:
            raise DataError(
                f"teacher features of example {example_id} miss words {sorted(set(range(count)) - set(per_word))[:5]}"
            )
        result.per_example[example_id] = torch.stack([per_word[i] for i in range(count)])
    return result


def aligned_teacher_logits(
    teacher: TeacherLogits, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits placed like the student's logits, and the mask of positions (or rows) that have them.

    Returns:
        ``([batch, seq, labels], [batch, seq] bool)`` for token tasks (first-subword positions of the student's
        windows) or ``([batch, labels], [batch] bool)`` for sequence tasks.

    Raises:
        DataError: an example or word of the student batch has no teacher prediction (different data, or
            tokenisations that do not split the text into the same words).
    """
    example_ids = batch["example_id"].tolist()
    missing = [e for e in example_ids if e not in teacher.per_example]
    if missing:
        raise DataError(f"no teacher prediction for examples {missing[:5]}: teacher and student data differ")
    if teacher.task == "sequence-classification":
        logits = torch.stack([teacher.per_example[e] for e in example_ids])
        return logits.to(batch["example_id"].device), torch.ones(
            len(example_ids), dtype=torch.bool, device=logits.device
        )
    word_index = batch["word_index"]
    logits = torch.zeros(*word_index.shape, teacher.num_labels)
    mask = word_index >= 0
    for row, example_id in enumerate(example_ids):
        columns = mask[row].nonzero().flatten()
        indices = word_index[row, columns].cpu()
        table = teacher.per_example[example_id]
        if len(indices) and int(indices.max()) >= len(table):
            raise DataError(
                f"example {example_id}: the student sees word {int(indices.max())} but the teacher only "
                f"{len(table)} words; word-level distillation needs both tokenizers to split the text into the same "
                "words (pre-split NER tokens are)"
            )
        logits[row, columns.cpu()] = table[indices]
    return logits.to(word_index.device), mask


def teacher_cache_key(teacher: Teacher, features: Dataset, task: str) -> str:
    """sha256 of the teacher's weights, its label order and its tokenised view of the data."""
    from hftransfer.strategies.feature_cache import hash_features, hash_state

    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, "task": task, "order": teacher.label_order}).encode())
    hash_state(digest, teacher.model)
    hash_features(digest, features)
    return digest.hexdigest()


def default_teacher_cache_dir() -> Path:
    """``$HFTRANSFER_CACHE/teacher`` or ``~/.cache/hftransfer/teacher``."""
    root = os.environ.get("HFTRANSFER_CACHE")
    return Path(root) / "teacher" if root else Path.home() / ".cache" / "hftransfer" / "teacher"


def _save(logits: TeacherLogits, path: Path, key: str) -> None:
    ids = sorted(logits.per_example)
    tables = [logits.per_example[i].reshape(-1, logits.num_labels) for i in ids]
    tensors = {
        "example_id": torch.tensor(ids, dtype=torch.long),
        "offsets": torch.tensor([0] + [len(t) for t in tables], dtype=torch.long).cumsum(0),
        "logits": torch.cat(tables) if tables else torch.zeros(0, logits.num_labels),
    }
    # Readers see the old file or the whole new one.
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"key": key, "task": logits.task}))


def _load(path: Path, key: str) -> TeacherLogits | None:
    if not path.is_file():
        return None
    try:
        with safe_open(path, "pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("key") != key:
            raise ValueError("written for another key")
        tensors = load_file(path)
        offsets, table = tensors["offsets"].tolist(), tensors["logits"]
        result = TeacherLogits(meta["task"], table.shape[1])
        for row, example_id in enumerate(tensors["example_id"].tolist()):
            chunk = table[offsets[row] : offsets[row + 1]]
            result.per_example[example_id] = chunk[0] if meta["task"] == "sequence-classification" else chunk
        return result
    except Exception as err:  # a damaged cache means "recompute", never a crash
        logger.warning("teacher cache %s is unreadable (%s); recomputing", path, err)
        return None


def cached_teacher_logits(
    teacher: Teacher,
    features: Dataset,
    task: str,
    device: torch.device,
    *,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> tuple[TeacherLogits, bool]:
    """The teacher's logits for every example of ``features`` (tokenised with the teacher's tokenizer), from the
    on-disk cache when ``use_cache`` and present. Returns ``(logits, hit)``; in multi-process runs call it under
    ``accelerator.main_process_first()`` so that one process computes and the others read."""
    key = path = None
    if use_cache:
        key = teacher_cache_key(teacher, features, task)
        path = Path(cache_dir or default_teacher_cache_dir()) / f"{key}.safetensors"
        if (cached := _load(path, key)) is not None:
            logger.info("teacher cache hit: %s", path)
            return cached, True
    teacher.model.to(device)
    loader = build_eval_dataloader(features, FeatureCollator(teacher.tokenizer), batch_size=batch_size)
    logits = collect_teacher_logits(teacher.model, loader, task, device, teacher.label_order)
    if path is not None:
        _save(logits, path, key)
        logger.info("teacher predictions cached: %s", path)
    return logits, False

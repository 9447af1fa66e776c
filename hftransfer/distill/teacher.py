"""Teacher predictions computed once per dataset and looked up per student batch, at the word level.

Teacher and student may tokenise differently (another vocabulary, other subword splits, other windows), so token
positions cannot be compared. Words can: every feature row carries ``example_id`` and, per token, the
``word_index`` of the word whose first subword it is. The teacher is run over *its own* features of the same
examples; its logits are kept per (example, word) for token tasks and per example for sequence tasks, and then
placed at the student's first-subword positions. A word the teacher never saw means the two tokenisations do not
describe the same words; that is an error, never a silent skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from hftransfer.errors import DataError
from hftransfer.evaluation.inference import model_inputs


@dataclass
class TeacherLogits:
    """``per_example[example_id]``: ``[words, labels]`` (token tasks) or ``[labels]`` (sequence tasks), on CPU."""

    task: str
    num_labels: int
    per_example: dict[int, torch.Tensor] = field(default_factory=dict)


@torch.inference_mode()
def collect_teacher_logits(
    teacher: torch.nn.Module, loader: DataLoader, task: str, device: torch.device
) -> TeacherLogits:
    """Run the (frozen, eval-mode) teacher over every row of ``loader`` (its own features of the dataset)."""
    teacher.eval()
    words: dict[int, dict[int, torch.Tensor]] = {}
    result = TeacherLogits(task, int(teacher.config.num_labels))
    for batch in loader:
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        logits = teacher(**inputs).logits.float().cpu()
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

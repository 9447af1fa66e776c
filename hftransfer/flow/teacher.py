"""What a run with a teacher adds to the one setup (:func:`~hftransfer.flow.setup.setup`).

Distillation is objectives plus a teacher: the objectives that read one (``distill_soft``, ``distill_hidden``,
``distill_attention``) get what :meth:`TeacherSetup.teach` returns as their ``context.teacher``. The setup calls the
hooks in this order: :meth:`~TeacherSetup.load` (after the data), :meth:`~TeacherSetup.build_student` (None: the
run's own model), :meth:`~TeacherSetup.check` (teacher and student can be compared), :meth:`~TeacherSetup.teach`
(after tokenising; before the objectives are built). ``hftransfer.distill.run.DistillTeacher`` is the one in the
package.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.data.sources import TaskData


class TeacherSetup(Protocol):
    teacher: Any
    """The loaded teacher (set by :meth:`load`)."""
    report: dict[str, Any]
    """What the run's ``metrics.json`` records about the teacher (set by :meth:`teach`)."""

    def load(self, config: Any, data: TaskData) -> None: ...

    def build_student(
        self, config: Any, data: TaskData
    ) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str] | None: ...

    def check(self, config: Any, student: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> None: ...

    def teach(
        self,
        config: Any,
        accelerator: Accelerator,
        data: TaskData,
        tokenizer: PreTrainedTokenizerBase,
        features: dict[str, Dataset],
        report: dict[str, Any],
    ) -> Any:
        """Label the training data (``features["train"]`` may be replaced, e.g. extended by a transfer set) and
        return what the objectives read as ``context.teacher``."""
        ...

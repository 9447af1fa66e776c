"""What a distillation run's teacher provides to the objectives that read it (``ObjectiveContext.teacher``).

* ``logits``: the teacher's predictions on the training (and transfer) features, computed once before training
  (and cached on disk), per example and word: :func:`~hftransfer.distill.teacher.aligned_teacher_logits` places
  them like a student batch's logits.
* :meth:`TeacherContext.forward`: the frozen teacher run on the student's batch (hidden states and attention maps
  are compared position by position, so the student shares the teacher's tokenizer). Several objectives read the
  same pass (hidden states and attention maps), so it runs once per batch and returns exactly the outputs the
  run's objectives declared (``teacher_outputs`` of their registrations).
* :meth:`TeacherContext.forward_examples`: the teacher's hidden states on *its own* tokenisation of the batch's
  examples, for objectives that compare whole examples or words rather than positions (relational KD), so any
  student tokenizer works; with the teacher's tokenizer it is the pass above.
* ``layer_map``: the student -> teacher layer pairs that the hidden-state and attention objectives share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hftransfer.data.batching import FeatureCollator
from hftransfer.distill.teacher import Teacher, TeacherLogits
from hftransfer.errors import DataError
from hftransfer.evaluation.inference import model_inputs


@dataclass
class TeacherContext:
    """The teacher of a distillation run, its predictions and what its forward pass returns."""

    teacher: Teacher
    """The loaded teacher: frozen, in eval mode, on the run's device."""
    logits: TeacherLogits | None = None
    """Its predictions per training (and transfer) example, in the task's label order."""
    shares_tokenizer: bool = False
    """Whether the student tokenises exactly like the teacher (positions then compare one to one)."""
    layer_map: list[tuple[int, int]] = field(default_factory=list)
    """``(student, teacher)`` hidden-state indices (0 = embeddings; attention maps use layers 1..L)."""
    forward_outputs: frozenset[str] = frozenset()
    """What :meth:`forward` asks the teacher for: ``hidden_states``, ``attentions``, ``example_states``."""
    features: Any = None
    """The teacher's own features (``example_id``, ``word_index``) of the training (and transfer) examples, where
    the student tokenises otherwise and an objective reads ``example_states``."""
    forward_passes: int = 0
    """Teacher forward passes run so far (one per student batch that an objective read it on)."""
    _last: tuple[Any, Any, Any] | None = field(default=None, repr=False)
    _rows: dict[int, list[int]] | None = field(default=None, repr=False)

    @property
    def model(self) -> torch.nn.Module:
        return self.teacher.model

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        """The teacher's outputs on the student's ``batch`` (no gradients), computed once per batch.

        The batch and its ``input_ids`` tensor are kept with the result: holding them means no later batch can
        be a new object at the same address, so an identity check is safe.
        """
        last = self._last
        if last is not None and last[0] is batch and last[1] is batch["input_ids"]:
            return last[2]
        with torch.no_grad():
            outputs = self.teacher.model(
                **model_inputs(batch),
                output_hidden_states=bool({"hidden_states", "example_states"} & self.forward_outputs),
                output_attentions="attentions" in self.forward_outputs,
            )
        self._last = (batch, batch["input_ids"], outputs)
        self.forward_passes += 1
        return outputs

    def forward_examples(self, batch: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
        """The teacher's outputs (with hidden states) on its own features of the examples in the student's
        ``batch``, and the teacher batch they came from (its ``example_id``, ``word_index``, ``attention_mask``
        place them); the student's batch itself when both tokenise alike."""
        if self.features is None:
            return self.forward(batch), batch
        if self._rows is None:  # feature rows (windows) per example, indexed once
            self._rows = {}
            for row, example_id in enumerate(self.features["example_id"]):
                self._rows.setdefault(example_id, []).append(row)
        example_ids = list(dict.fromkeys(batch["example_id"].tolist()))
        missing = [e for e in example_ids if e not in self._rows]
        if missing:
            raise DataError(
                f"the teacher has no features of examples {missing[:5]}: teacher and student data differ"
            )
        rows = [row for e in example_ids for row in self._rows[e]]
        teacher_batch = FeatureCollator(self.teacher.tokenizer)([self.features[row] for row in rows])
        device = next(self.model.parameters()).device
        teacher_batch = {name: value.to(device) for name, value in teacher_batch.items()}
        with torch.no_grad():
            outputs = self.model(**model_inputs(teacher_batch), output_hidden_states=True)
        self.forward_passes += 1
        return outputs, teacher_batch

    def require(self, name: str, output: str) -> None:
        """Fail early when the objective ``name`` reads an ``output`` this context does not provide.

        Raises:
            ValueError: a flow that prepared the teacher without it (a wiring error, not a user's).
        """
        provided = self.logits is not None if output == "logits" else output in self.forward_outputs
        if not provided:
            raise ValueError(f"objective {name} reads the teacher's {output}, which this run did not prepare")

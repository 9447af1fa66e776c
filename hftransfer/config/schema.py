"""The core sections of a run config: the model and the data (the training loop's is ``train.py``).

Each dataclass is the schema of one section; its attribute docstrings are the ``--help`` text. Cross-field checks
live in ``__post_init__`` and raise :class:`~hftransfer.errors.ConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hftransfer.config.checks import (
    FRACTION,
    OPTIONAL_COUNT,
    SEED,
    Range,
    check_fields,
)
from hftransfer.config.data_checks import check_label_fields, check_long_text_fields
from hftransfer.config.problem import SINGLE_LABEL, ProblemType
from hftransfer.data.label_descriptions import check_description_fields
from hftransfer.errors import ConfigError

# Ranges of the numeric fields (checks.py); cross-field rules stay in __post_init__.
DATA_RANGES = {
    "validation_size": FRACTION,
    "test_size": FRACTION,
    "split_seed": SEED,
    "max_train_samples": OPTIONAL_COUNT,
    "max_eval_samples": OPTIONAL_COUNT,
    "train_per_class": OPTIONAL_COUNT,
    "sample_seed": SEED,
    # Room for the special tokens and a few words per window; the model's own limit is checked once it is loaded.
    "max_length": Range(low=8, integer=True),
    "window_context": Range(low=0, integer=True),
    "conll_token_column": Range(integer=True),  # negative counts from the end, as in Python
    "conll_tag_column": Range(integer=True),
}

TaskType = Literal["token-classification", "sequence-classification"]
DataFormat = str  # "auto" or a registered format (hftransfer/data/formats.py), checked when a file is read


@dataclass
class ModelConfig:
    """Which pretrained encoder to adapt."""

    name_or_path: str = "minilm-l6"
    """Hub model id, local directory, or an offline alias (``minilm-l6``)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); ignored for local directories."""
    trust_remote_code: bool = False
    """Allow custom modelling code from the model repository. Off unless you trust the repository."""
    attn_implementation: str | None = None
    """Attention kernel passed to ``from_pretrained`` (``sdpa``, ``eager``, ...). None (the default) lets
    transformers choose: PyTorch's fused ``scaled_dot_product_attention`` (SDPA) where the architecture has it (BERT,
    RoBERTa, ...), eager attention where it does not (MPNet). Naming one the architecture lacks is an error."""
    head_bias_init: Literal["default", "prior"] = "default"
    """``default``: a new head's bias starts at zero (transformers' initialisation). ``prior``: at the log frequencies
    of the training labels, so the head predicts the label prior from the first step and the encoder is not pushed
    to learn it. Use it when a fine-tuned NER model predicts ``O`` for every token: sentence-embedding encoders such
    as ``mpnet-base`` (all-mpnet-base-v2) collapse that way on WNUT-16 at the default start."""
    decoding: Literal["argmax", "iob2"] = "argmax"
    """How a token model's word tags are chosen in evaluation and prediction: ``argmax`` per word (what transformers'
    ``pipeline`` does), or ``iob2``: the most probable valid IOB2 sequence (Viterbi over the word probabilities; no
    ``I-X`` after ``O`` or ``B-Y``). Saved in the exported config (``hftransfer_decoding``), so ``Predictor`` and
    ``hftransfer predict`` decode the same way; ``pipeline`` still takes the argmax. A ``head=crf`` model decodes
    with its CRF instead (leave this at ``argmax``)."""
    head: Literal["linear", "crf"] = "linear"
    """Token classification: ``linear``, the transformers model's own classifier, trained with per-token
    cross-entropy; or ``crf``: a linear-chain CRF on that classifier's logits over each sentence's words, with
    learned start / transition / end scores (IOB2-invalid moves masked), trained with the CRF's negative
    log-likelihood (the ``task`` objective) and decoded with Viterbi in evaluation, ``Predictor`` and ``hftransfer
    predict``. ``model/`` stays a plain transformers model (``pipeline`` takes its logits' argmax) with the scores
    beside it in ``crf.safetensors`` and ``hftransfer_decoding: crf`` in its config."""


@dataclass
class DataConfig:
    """Where the task data comes from and how it is tokenised."""

    dataset: str | None = None
    """Builtin offline name (``wnut16``, ``rotten_tomatoes``, ``drug_reviews``), a Hub dataset id, or one data file.
    Splits that it lacks are carved from its train split with ``split_seed``."""
    train_file: str | None = None
    """Training file (CoNLL, JSON/JSONL, CSV/TSV). When set it takes precedence and ``dataset`` is not used, so
    ``data.train_file=...`` on the command line replaces a preset's dataset."""
    validation_file: str | None = None
    """Validation file; carved from the training data when absent."""
    test_file: str | None = None
    """Test file; carved from the training data when absent (set ``test_size=0`` for no test split)."""
    format: DataFormat = "auto"
    """File format: ``auto`` picks it from the extension (.conll/.txt/.iob/.bio -> conll, .json, .jsonl, .csv,
    .tsv), or a registered format's name (``conll``, ``json``, ``jsonl``, ``csv``, ``tsv``, or one a plugin
    registers: ``hftransfer/data/formats.py``)."""
    hub_config: str | None = None
    """Configuration name of a Hub dataset."""
    tokens_column: str = "tokens"
    """Token-classification JSON/CSV/Hub column holding the list of words."""
    tags_column: str = "tags"
    """Token-classification JSON/CSV/Hub column holding the list of tags (strings, or ClassLabel ids on the Hub)."""
    text_column: str = "text"
    """Sequence-classification column holding the text."""
    text_pair_column: str | None = None
    """Second text column for sentence-pair classification (e.g. ``hypothesis``); None for single texts."""
    label_column: str = "label"
    """Sequence-classification column holding the label (a list of labels, or a number, as ``problem_type`` says)."""
    problem_type: ProblemType = SINGLE_LABEL
    """Sequence classification: ``single_label_classification`` (one class per text), ``multi_label_classification``
    (a list of labels per text, possibly empty; a sigmoid per label, threshold chosen on validation) or
    ``regression`` (a number per text; MSE). Saved as the exported model's ``config.problem_type``."""
    label_separator: str | None = None
    """Multi-label CSV/TSV: what separates the labels in one cell (``"|"`` for ``sports|politics``); JSON labels
    are lists. Without it a cell holds one label."""
    conll_token_column: int = 0
    """CoNLL column index of the word."""
    conll_tag_column: int = -1
    """CoNLL column index of the tag (-1 = last column)."""
    validation_size: float = 0.1
    """Fraction of all examples carved out for validation when no validation split is given."""
    test_size: float = 0.1
    """Fraction of all examples carved out for test when no test split is given (0 = no test split)."""
    split_seed: int = 0
    """Seed of the carving shuffle (stratified by label for classification)."""
    max_train_samples: int | None = None
    """Keep only the first N training examples (after carving); for quick experiments."""
    max_eval_samples: int | None = None
    """Keep only the first N validation and test examples."""
    train_per_class: int | None = None
    """Few-shot: keep K training examples of each class, drawn with ``sample_seed`` (NER: sentences until every
    entity type occurs in K of them). Applied after carving and before ``max_train_samples``."""
    sample_seed: int = 0
    """Seed of the ``train_per_class`` draw: another seed, another sampling of the same size."""
    label_descriptions: dict[str, str | list[str]] | None = None
    """Few-shot: texts describing each label (``{positive: "This review is positive.", negative: [...]}``), added to
    the training data as examples of their label, together weighing as much as the label's own examples."""
    label_template: str | None = None
    """Few-shot: describe each label by its name in this template (``"This review is {label}."``): for every label,
    or for those ``label_descriptions`` leaves out."""
    max_length: int = 128
    """Maximum tokens per model input. Longer NER sentences are split into windows; longer texts are truncated or
    split into windows, as ``long_texts`` says."""
    label_all_subwords: bool = False
    """NER: label every subword of a word instead of only the first (the rest get -100)."""
    window_context: int = 16
    """Tokens repeated from the previous window at the start of each continuation window (at most half the window):
    NER's left context of a long sentence; with ``long_texts=window``, the overlap of a long text's windows (the
    tokenizer's ``stride``)."""
    long_texts: Literal["truncate", "window"] = "truncate"
    """Sequence classification, texts longer than ``max_length``: ``truncate`` keeps their first ``max_length``
    tokens (a warning gives the share cut); ``window`` splits them into overlapping windows (pairs: the first text
    only, the second repeated whole in each window). Training reads each window as an example with its text's
    label; evaluation and prediction aggregate the windows' logits into one prediction per text
    (``window_aggregation``). NER always windows long sentences."""
    window_aggregation: Literal["mean", "max"] = "mean"
    """``long_texts=window``: how a text's window logits become one: their ``mean``, or their per-label ``max``
    (single- and multi-label; regression takes the mean)."""
    invalid_rows: Literal["error", "skip"] = "error"
    """Rows with no text (empty or whitespace only, null, no words) or, in labelled data, an empty or null label:
    ``error`` stops the run at the first, naming its ``file:line``; ``skip`` leaves them out, counts them in the
    data report (``dropped``) and logs the first few ``file:line``."""
    label_map: dict[str, str] | None = None
    """Rename labels after reading, in every split (``{fresh: positive, rotten: negative}``), so that two datasets
    share label names; labels not named keep theirs, and two may become one. NER: keys and values are entity types
    (``{person: PER}`` renames ``B-person``/``I-person``); the value ``O`` drops the type's entities. Builtin
    ``rotten_tomatoes`` then has its file's labels ``fresh``/``rotten`` (``positive``/``negative`` without a map)."""
    drop_labels: list[str] = field(default_factory=list)
    """Sequence classification: leave out the rows with these labels (named after ``label_map``), in every split,
    e.g. ``[neutral]`` for a positive/negative task; the data report counts them."""

    def __post_init__(self) -> None:
        if self.dataset is None and self.train_file is None:
            raise ConfigError("data: set data.dataset (builtin name, Hub id or file) or data.train_file")
        check_fields("data", self, DATA_RANGES)
        if self.validation_size + self.test_size >= 1.0:
            raise ConfigError("data.validation_size + data.test_size must be below 1")
        check_label_fields(self)
        check_long_text_fields(self)
        check_description_fields(self)
        if self.train_per_class is not None and self.problem_type != SINGLE_LABEL:
            raise ConfigError(
                f"data.train_per_class draws K examples of each class; data.problem_type={self.problem_type} has "
                "no one class per text (use max_train_samples)"
            )

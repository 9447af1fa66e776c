"""Model cards for what a run publishes: Hub metadata (``library_name``, ``base_model``, ``datasets``,
``pipeline_tag``, ``license``, metrics as ``model-index``) and a body that says how the model was made.

Everything comes from the run directory (``config.yaml``, ``metrics.json``, ``command.json``), so a card written
at the end of a run and one written later by ``hftransfer push`` are the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hftransfer.assets import ALL_ASSETS, ENCODERS
from hftransfer.config.plugins import default_objectives
from hftransfer.config.problem import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from hftransfer.config.sections import older_objectives
from hftransfer.errors import ConfigError
from hftransfer.hub.card_notes import decoding_line, label_shift_note
from hftransfer.registry import get_objective, get_strategy

PIPELINE_TAGS = {
    "token-classification": "token-classification",
    "sequence-classification": "text-classification",
}
HEADLINE = {
    "token-classification": ("f1", "precision", "recall"),
    "sequence-classification": ("accuracy", "macro_f1"),
    MULTI_LABEL: ("micro_f1", "macro_f1"),
    REGRESSION: ("mse", "pearson", "spearman"),
}
# What a multi-label or regression head is, and how pipeline's output reads (it applies a sigmoid per label to a
# multi-label model and returns the number itself for regression).
PROBLEM_LINES = {
    MULTI_LABEL: (
        "multi-label classification (`problem_type: multi_label_classification`): any number of labels per text, "
        "a sigmoid per label; a label is predicted when its score reaches `config.multilabel_threshold` = {threshold}"
        " (chosen on the validation split)",
        ", top_k=None)  # every label's sigmoid score",
    ),
    REGRESSION: (
        "regression (`problem_type: regression`): a number per text, trained with mean squared error",
        ")  # {'label': ..., 'score': <the predicted number>}",
    ),
}


@dataclass
class CardFacts:
    """What one published model is: read from the run directory, one per task for a multitask run."""

    repo_id: str
    task: str  # token-classification / sequence-classification
    kind: str  # "model", "adapter" (a peft adapter alone), "merged" (one merged), "student", "multitask task"
    config: dict[str, Any]
    metrics: dict[str, Any]  # {"validation": {...}, "test": {...}} of this model
    data: dict[str, Any]  # the task's data config
    data_report: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    command: dict[str, Any] = field(default_factory=dict)
    task_name: str | None = None  # multitask: the task's name
    license: str = "apache-2.0"
    distill_report: dict[str, Any] | None = None  # distillation: teacher vs student
    strategy_report: dict[str, Any] = field(
        default_factory=dict
    )  # metrics.json "strategy": what the run resolved
    label_names: list[str] = field(default_factory=list)  # in id order: the adapter usage passes them


def base_model_id(name_or_path: str | None) -> str | None:
    """A Hub id for the card's ``base_model``: aliases map to their Hub twin; local paths are not Hub ids."""
    if not name_or_path:
        return None
    if name_or_path in ENCODERS:
        return ENCODERS[name_or_path].hub_id
    if Path(name_or_path).exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        return None
    return name_or_path


def dataset_name(data: dict[str, Any]) -> str:
    """The data's name as the card shows it: a builtin or Hub dataset name, else the training file's name."""
    if data.get("train_file"):
        return Path(data["train_file"]).name
    return str(data.get("dataset"))


def describe_strategy(strategy: dict[str, Any], report: dict[str, Any]) -> str:
    """The registered strategy's own one-line description; a strategy this process does not know (registered by a
    module that is not imported here) or that has no description is named as it is."""
    name = strategy.get("name", "full")
    try:
        entry = get_strategy(name)
    except ConfigError:
        return f"strategy {name}"
    return entry.describe(strategy, report) if entry.describe is not None else f"strategy {name}"


def describe_objectives(objectives: list[dict[str, Any]]) -> list[str]:
    """What the loss adds to the task's own: each registered objective's description (the task loss at weight 1,
    the default, goes without saying)."""
    default = [dataclasses.asdict(objective) for objective in default_objectives()]
    out = []
    for objective in objectives:
        name = objective.get("name")
        # an older config.yaml lacks fields added since (task.label_smoothing): their defaults fill in
        if any(objective.items() <= entry.items() for entry in default):
            continue
        try:
            entry = get_objective(name)
        except ConfigError:
            out.append(f"objective {name}")
            continue
        out.append(entry.describe(objective) if entry.describe is not None else f"objective {name}")
    return out


def _strategy_line(facts: CardFacts) -> str:
    strategy = facts.config.get("strategy", {})
    fraction = facts.parameters.get("trainable_fraction")
    trainable = (
        f"{facts.parameters['trainable']:,} of {facts.parameters['total']:,} parameters trained ({100 * fraction:.3g}%)"
        if fraction
        else ""
    )
    details = describe_strategy(strategy, facts.strategy_report)
    extras = []
    if strategy.get("layer_lr_decay", 1.0) != 1.0:
        extras.append(f"layer-wise LR decay {strategy['layer_lr_decay']}")
    # A config.yaml of an older distillation run holds its loss weights in ``distill``: read as the objectives.
    extras += describe_objectives(older_objectives(facts.config) or facts.config.get("objectives") or [])
    extras += label_shift_note(facts.config)
    return "; ".join(part for part in (details, *extras, trainable) if part)


def problem_type(facts: CardFacts) -> str:
    """The problem type of a sequence task (single-label unless its data section says otherwise)."""
    return facts.data.get("problem_type") or SINGLE_LABEL


def headline(facts: CardFacts) -> tuple[str, ...]:
    """The metrics the card shows, the first the headline: the task's, or a multi-label/regression head's."""
    return HEADLINE.get(problem_type(facts), HEADLINE[facts.task])


def _metrics_table(facts: CardFacts) -> str:
    names = [n for n in headline(facts) if any(n in facts.metrics.get(s, {}) for s in ("validation", "test"))]
    rows = ["| split | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for split in ("validation", "test"):
        if split in facts.metrics:
            values = [facts.metrics[split].get(n) for n in names]
            rows.append(f"| {split} | " + " | ".join("" if v is None else f"{v:.4f}" for v in values) + " |")
    return "\n".join(rows)


def _splits_line(facts: CardFacts) -> str:
    splits = facts.data_report.get("splits", {})
    sizes = ", ".join(f"{split} {entry.get('examples')}" for split, entry in splits.items())
    carving = ""
    if not facts.data.get("validation_file") or not facts.data.get("test_file"):
        carving = (
            f" (splits carved from the source with seed {facts.data.get('split_seed')}: validation "
            f"{facts.data.get('validation_size')}, test {facts.data.get('test_size')})"
        )
    builtin = ALL_ASSETS.get(str(facts.data.get("dataset")))
    source = f"; {builtin.description}" if builtin is not None and not facts.data.get("train_file") else ""
    return f"{dataset_name(facts.data)}{source}: {sizes}{carving}"


def _distill_section(facts: CardFacts) -> str:
    report = facts.distill_report
    if not report:
        return ""
    metric = headline(facts)[0]
    rows = [
        f"| {who} | {report[who]['metrics'][metric]:.4f} | {report[who]['parameters'] / 1e6:.1f}M | "
        f"{report[who].get('samples_per_second', float('nan')):.0f} |"
        for who in ("teacher", "student")
    ]
    return (
        f"## Teacher vs student ({report['split']} split, batch {report['batch_size']}, {report['device']})\n\n"
        f"| model | {metric} | parameters | inference samples/s |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
    )


def build_card(facts: CardFacts) -> ModelCard:
    """The model card (``README.md``) of one published model."""
    base = base_model_id(facts.config.get("model", {}).get("name_or_path"))
    pipeline_tag = PIPELINE_TAGS[facts.task]
    metric = headline(facts)[0]
    problem, threshold = problem_type(facts), facts.metrics.get("validation", {}).get("threshold", 0.5)
    kind, pipeline_note = PROBLEM_LINES.get(problem, ("", ")"))
    kind = f": {kind.format(threshold=threshold)}" if kind else ""
    data_name = dataset_name(facts.data)
    eval_results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=data_name,
            dataset_name=data_name,
            dataset_split=split,
            metric_type=name,
            metric_value=round(float(facts.metrics[split][name]), 4),
        )
        for split in ("test", "validation")
        if split in facts.metrics
        for name in headline(facts)
        if name in facts.metrics[split]
    ]
    tags = ["hftransfer", facts.config.get("strategy", {}).get("name", "full")]
    if facts.kind == "student":
        tags.append("distillation")
    if facts.task_name is not None:
        tags.append("multitask")
    card_data = ModelCardData(
        library_name="peft" if facts.kind == "adapter" else "transformers",
        base_model=base,
        datasets=[data_name],
        pipeline_tag=pipeline_tag,
        license=facts.license,
        tags=tags,
        model_name=facts.repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    config_yaml = yaml.safe_dump(facts.config, sort_keys=False)
    # The resolved config travels in the repository, so this command needs nothing but the repo and hftransfer.
    from_repo = f"accelerate launch recipes/{facts.command.get('recipe', '<recipe>')}.py --config hftransfer_config.yaml"
    typed = facts.command.get("command")
    note = (
        f"\n(the command as typed; `{from_repo}` repeats it from this repository's files)\n" if typed else ""
    )
    what = {
        "model": "a fine-tuned model",
        "merged": "a fine-tuned model (a peft adapter merged into the encoder)",
        "adapter": "a peft adapter (with the trained head) for the base model below",
        "student": "a distilled student model",
        "multitask task": f"the `{facts.task_name}` task of a multitask model (one shared encoder, one head per task)",
    }[facts.kind]
    distill = facts.config.get("distill")
    teacher = (
        f"\n- **Teacher**: `{Path(str(distill['teacher'])).name}` ({distill.get('student')} student)"
        if distill
        else ""
    )
    # An adapter repository holds no config.json: the base model is built from the Hub with the label maps given
    # here, otherwise it would get a 2-label head that the adapter's trained head cannot load into.
    usage = (
        "from peft import AutoPeftModelFor{auto}\n\nid2label = {id2label}\n"
        'model = AutoPeftModelFor{auto}.from_pretrained(\n    "{repo}", id2label=id2label, '
        "label2id={{label: i for i, label in id2label.items()}}{problem}\n)"
        if facts.kind == "adapter"
        else 'from transformers import pipeline\npredict = pipeline("{tag}", model="{repo}"{agg}\n'
    ).format(
        problem="" if problem == SINGLE_LABEL else f', problem_type="{problem}"',
        id2label=dict(enumerate(facts.label_names)),
        auto="TokenClassification" if facts.task == "token-classification" else "SequenceClassification",
        repo=facts.repo_id,
        tag=pipeline_tag,
        agg=(', aggregation_strategy="simple")' if facts.task == "token-classification" else pipeline_note),
    )
    body = f"""
# {facts.repo_id.split("/")[-1]}

This is {what}, trained with hftransfer for {facts.task.replace("-", " ")}{kind}.

- **Base model**: `{base or facts.config.get("model", {}).get("name_or_path")}`{teacher}
- **Strategy**: {_strategy_line(facts)}
- **Data**: {_splits_line(facts)}
- **Best-model metric**: {metric} on validation{decoding_line(facts.task, facts.config)}

## Results

{_metrics_table(facts)}

{_distill_section(facts)}## Usage

```python
{usage.strip()}
```

## Training configuration

```yaml
{config_yaml.strip()}
```

## Reproduce

```bash
{typed or from_repo}
```
{note}"""
    # Assembled here rather than through a jinja template: the body quotes YAML and code that jinja would parse.
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")

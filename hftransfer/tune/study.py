"""A study: optuna's storage in the study directory, the trials run one after another, and what the directory
holds after each (``trials.csv``, ``best.yaml``, the best trial's model).

    <study_dir>/study.journal    optuna's storage: re-running the command continues the study
    <study_dir>/trials/<n>/      trial n's run directory (config.yaml, metrics.jsonl, metrics.json when finished)
    <study_dir>/trials.csv       one row per trial: state, value, seconds, parameters
    <study_dir>/best.yaml        the preset merged with the best parameters (``--config`` of the recipe)

Storage is optuna's journal file rather than SQLite: one append-only file, which a killed process leaves
readable, and no database schema to migrate between optuna versions. One process works on a study at a time (it
holds ``<study_dir>/.lock``), so a trial still marked running when the study opens is one whose process died: it
is marked failed and its parameters are queued to run again.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigError
from hftransfer.training.run_lock import RunLock
from hftransfer.tune.flows import RecipeFlow
from hftransfer.tune.preset import write_best_preset
from hftransfer.tune.report import trial_rows, write_trials_csv
from hftransfer.tune.space import SearchSpace, check_space, override
from hftransfer.tune.trial import STEPS_PER_EPOCH, run_trial

logger = logging.getLogger("hftransfer")

STUDY_NAME = "hftransfer-tune"
# Set for every trial: its own run directory, and nothing published or exported from a trial.
TRIAL_ONLY_KEYS = ("output_dir", "overwrite_output_dir", "train.resume_from_checkpoint")


@dataclass
class TuneRequest:
    """What ``hftransfer tune`` was asked for."""

    config: Path
    flow: RecipeFlow
    space: SearchSpace
    trials: int
    study_dir: Path
    overrides: list[str] = field(default_factory=list)
    keep_models: bool = False

    def base_argv(self) -> list[str]:
        """The config every trial starts from: the preset, the command line's overrides, the space's settings."""
        return ["--config", str(self.config), *self.overrides, *self.space.overrides()]


@dataclass
class TuneResult:
    study: Any
    metric: str
    rows: list[dict[str, Any]]
    """One per trial (:func:`~hftransfer.tune.report.trial_rows`), as in ``trials.csv``."""
    best_trial: int | None
    best_preset: Path | None


def run_study(request: TuneRequest) -> TuneResult:
    """Run trials until the study holds ``request.trials`` finished ones (complete or pruned).

    Raises:
        ConfigError: a bad override or space key (before any trial), a study directory that holds another study or
            is in use; whatever a trial raises (the trial is marked failed, the outputs are written first).
    """
    import optuna

    for token in request.overrides:
        key = token.removeprefix("--").split("=", 1)[0]
        if key in TRIAL_ONLY_KEYS:
            raise ConfigError(
                f"{key}: tune sets it for every trial (their run directories go under --study-dir)"
            )
    base_config = request.flow.parse(request.base_argv())
    check_space(request.space, request.flow.parse, request.base_argv())
    trial_extra = _trial_only_overrides(base_config)
    direction = "maximize" if base_config.greater_is_better() else "minimize"
    metric = base_config.metric_for_best()
    if request.space.metric and metric != request.space.metric:  # a selection rule of the run's own decides
        raise request.space.fail("metric", f"the run selects its model by {metric!r}, not by this metric")

    request.study_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(request.study_dir)
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the runs log enough; the study says its own
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(request.study_dir / "study.journal"))
        )
        study = optuna.create_study(
            storage=storage,
            study_name=STUDY_NAME,
            direction=direction,
            pruner=build_pruner(request.space.pruner),
            load_if_exists=True,
        )
        _check_same_study(study, request)
        _requeue_interrupted(study)
        study.sampler = build_sampler(request.space.sampler, len(study.trials), request.trials)
        while len(_finished(study)) < request.trials:
            _one_trial(study, request, trial_extra, metric)
        return _write_outputs(study, request, metric)
    finally:
        lock.release()


def _one_trial(study: Any, request: TuneRequest, trial_extra: list[str], metric: str) -> None:
    import optuna

    trial = study.ask()
    params = request.space.suggest(trial)
    run_dir = request.study_dir / "trials" / str(trial.number)
    logger.info(
        "Trial %d starts (%d of %d finished): %s",
        trial.number,
        len(_finished(study)),
        request.trials,
        ", ".join(override(key, value) for key, value in params.items()),
    )
    argv = [*request.base_argv(), *(override(k, v) for k, v in params.items()), f"output_dir={run_dir}"]
    try:
        result = run_trial(request.flow, [*argv, *trial_extra], trial)
    except BaseException as err:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if isinstance(err, KeyboardInterrupt):  # the next run of the command tries these parameters first
            study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
        _write_outputs(study, request, metric)
        raise
    trial.set_user_attr("seconds", round(result.seconds, 1))
    if result.pruned_at_epoch is not None:
        trial.set_user_attr("pruned_at_epoch", result.pruned_at_epoch)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, result.value)
    best = f"trial {study.best_trial.number}, {study.best_value:.4f}" if _complete(study) else "none finished"
    logger.info(
        "Trial %d %s: validation %s=%.4f in %.0f s (best so far: %s)",
        trial.number,
        "pruned" if result.pruned_at_epoch is not None else "finished",
        metric,
        result.value if result.value is not None else float("nan"),
        result.seconds,
        best,
    )
    if not request.keep_models:
        _keep_best_model(study, request.study_dir)
    _write_outputs(study, request, metric)


def build_sampler(settings: dict[str, Any], trials_so_far: int, budget: int) -> Any:
    """TPE (default) or random search. The seed is offset by the trials the study already holds: a resumed study
    otherwise draws the first session's random start again. TPE's random start defaults to half the budget, at
    most optuna's 10, so a small budget still gets model-guided trials."""
    import optuna

    seed = settings.get("seed", 0)
    seed = None if seed is None else seed + trials_so_far
    if settings.get("type", "tpe") == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = settings.get("startup_trials", min(10, max(2, budget // 2)))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def build_pruner(settings: dict[str, Any]) -> Any:
    """The median pruner by default: after ``startup_trials`` (2) finished trials, a trial whose best validation
    score is below theirs at the same point of training stops; never before ``warmup_epochs`` (1) of training,
    whose scores say little (a first epoch's warm-up and a learning rate still high)."""
    import optuna

    kind = settings.get("type", "median")
    warmup = round(settings.get("warmup_epochs", 1.0) * STEPS_PER_EPOCH)
    startup = settings.get("startup_trials", 2)
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "threshold":
        return optuna.pruners.ThresholdPruner(
            settings.get("lower"), settings.get("upper"), n_warmup_steps=warmup
        )
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(
            settings.get("percentile", 25.0), n_startup_trials=startup, n_warmup_steps=warmup
        )
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)


def _finished(study: Any) -> list[Any]:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def _trial_only_overrides(config: Any) -> list[str]:
    """A trial reuses its directory if the study was reset, and publishes or exports nothing (``best.yaml``
    keeps what the command line asked for)."""
    extra = ["overwrite_output_dir=true"]
    if getattr(config, "push_to_hub", False):
        extra.append("push_to_hub=false")
    if getattr(config, "export_onnx", None):
        extra.append("export_onnx=[]")
    return extra


def _lock(study_dir: Path) -> RunLock:
    # The lock class of run directories, held outside its registry: starting a trial's run releases the locks
    # the registry holds for this process, and the study's must outlive its trials.
    lock = RunLock(study_dir)
    holder = lock.try_acquire()
    if holder is not None:
        raise ConfigError(
            f"{study_dir}: another tune process works on this study (pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')} since {holder.get('started', '?')}); wait for it or stop it"
        )
    return lock


def _check_same_study(study: Any, request: TuneRequest) -> None:
    """A study continues only with what it started with (another preset, override or space would mix trials that
    cannot be compared); the number of trials may change."""
    identity = {
        "recipe": request.flow.name,
        "config": str(request.config.resolve()),
        "overrides": list(request.overrides),
        "space": request.space.summary(),
    }
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        return
    changed = [key for key in identity if stored.get(key) != identity[key]]
    if changed:
        raise ConfigError(
            f"{request.study_dir} holds a study with another {' and '.join(changed)} (it was: "
            f"{', '.join(f'{k}={stored.get(k)!r}' for k in changed)}); continue it with the same ones, or choose "
            "another --study-dir"
        )


def _requeue_interrupted(study: Any) -> None:
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # We hold the study's lock, so the process that ran it is gone (killed, out of memory, ...).
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        logger.warning("Trial %d was interrupted: marked failed, its parameters queued again", trial.number)


def _keep_best_model(study: Any, study_dir: Path) -> None:
    """Trials other than the best keep their files (config, metrics) but not their directories (model/,
    adapter/, checkpoints/, ...); logs/ stays for the trackers' curves."""
    best = study.best_trial.number if _complete(study) else None
    for trial in study.get_trials(deepcopy=False):
        run_dir = study_dir / "trials" / str(trial.number)
        if trial.number == best or not run_dir.is_dir():
            continue
        for child in run_dir.iterdir():
            if child.is_dir() and child.name != "logs":
                shutil.rmtree(child, ignore_errors=True)


def _complete(study: Any) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _write_outputs(study: Any, request: TuneRequest, metric: str) -> TuneResult:
    rows = trial_rows(study, list(request.space.params))
    write_trials_csv(request.study_dir / "trials.csv", rows)
    best_preset, best = None, None
    if _complete(study):
        best = study.best_trial
        best_preset = request.study_dir / "best.yaml"
        write_best_preset(
            best_preset,
            request.flow,
            request.config,
            [*request.overrides, *request.space.overrides()],
            best.params,
            header=(
                f"The best of {len(_finished(study))} trials of `hftransfer tune {request.config}`: trial "
                f"{best.number}, validation {metric} = {best.value:.4f}.",
                f"Searched with {request.space.path}.",
            ),
        )
    return TuneResult(study, metric, rows, best.number if best else None, best_preset)

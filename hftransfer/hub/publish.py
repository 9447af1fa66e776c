"""Publish a finished run to the Hugging Face Hub: stage one folder per repository (weights, tokenizer, label maps,
model card, the resolved config), then create the repository and upload the folder.

Staging needs no network and is what ``--dry-run`` stops after; the upload is the single network boundary
(``HfApi.create_repo`` + ``HfApi.upload_folder``). The token comes from the usual places (``HF_TOKEN``, ``hf auth
login``) through ``huggingface_hub.get_token`` and is never logged or written; a failed push leaves the run and the
staged folder in place and says how to retry.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hftransfer.errors import HFTransferError
from hftransfer.export.peft_adapter import ADAPTER_META, is_adapter_directory
from hftransfer.hub import WHAT
from hftransfer.hub.card import CardFacts, base_model_id, build_card
from hftransfer.utils import atomic_directory

logger = logging.getLogger(__name__)


class HubError(HFTransferError):
    """Publishing failed (no token, no network, refused); the run's files are untouched."""


@dataclass
class StagedRepo:
    """A folder ready for upload and the repository it goes to (``url`` once pushed)."""

    repo_id: str
    folder: Path
    kind: str
    url: str | None = None


def _read(run_dir: Path, name: str, required: bool = True) -> Any:
    path = run_dir / name
    if not path.is_file():
        if required:
            raise HubError(
                f"{run_dir} is not a finished run directory: {name} is missing (publish after the run has ended)"
            )
        return {}
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)


def _single_source(
    run_dir: Path, config: dict[str, Any], metrics: dict[str, Any], what: str
) -> tuple[Path, str]:
    """The directory to publish for a single-task (or distillation) run, and its kind, decided from what the run
    holds (for any adapter strategy): an adapter directory in ``adapter/`` or ``model/``, and whether the run's
    export (``metrics.json``) merged an adapter into the plain model in ``model/``."""
    model, adapter = run_dir / "model", run_dir / "adapter"
    strategy = config.get("strategy", {}).get("name", "full")
    merged = "merged" in (metrics.get("export") or {})
    if what == "adapter":
        for candidate in (adapter, model):
            if is_adapter_directory(candidate):
                return candidate, "adapter"
        raise HubError(
            f"{run_dir}: the adapter was not kept (the run exported the merged model only); use --what merged"
            if merged
            else f"{run_dir}: no adapter to publish (strategy.name={strategy}); use --what model"
        )
    if what in ("model", "merged") and is_adapter_directory(model):
        raise HubError(
            f"{run_dir}: model/ holds the adapter alone (the run exported no merged model); publish it with "
            "--what adapter"
        )
    if what == "merged" and not merged:
        raise HubError(
            f"{run_dir}: --what merged is for runs that merged an adapter into the encoder; this one "
            f"(strategy.name={strategy}) did not"
        )
    if not model.is_dir():
        raise HubError(f"{run_dir}: no model/ directory to publish")
    if is_adapter_directory(model):
        return model, "adapter"
    if "distill" in config:
        return model, "student"
    return model, "merged" if merged else "model"


def _stage_folder(source: Path, target: Path, card_facts: CardFacts, run_dir: Path) -> None:
    with atomic_directory(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if card_facts.kind == "adapter":
            _point_adapter_at_hub_base(tmp, card_facts.config["model"]["name_or_path"])
        (tmp / "README.md").write_text(str(build_card(card_facts)), encoding="utf-8")
        shutil.copyfile(run_dir / "config.yaml", tmp / "hftransfer_config.yaml")


def _point_adapter_at_hub_base(folder: Path, name_or_path: str) -> None:
    """Make the adapter name its base by Hub id (an offline alias was saved as a local site-packages path, which
    means nothing on another machine); a base that is only a local directory stays as it was."""
    hub_id = base_model_id(name_or_path)
    if hub_id is None:
        return
    for name in ("adapter_config.json", ADAPTER_META):
        path = folder / name
        if path.is_file():
            info = json.loads(path.read_text(encoding="utf-8"))
            info["base_model_name_or_path"] = hub_id
            path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def stage_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    what: str = "auto",
    staging_dir: str | Path | None = None,
    license: str | None = None,
) -> list[StagedRepo]:
    """Write the folder(s) to upload under ``staging_dir`` (default ``<run_dir>/hub``); no network.

    A multitask run stages every task as its own repository ``<repo_id>-<task>``.

    Raises:
        HubError: not a finished run, or nothing of the requested kind (``what``) in it.
    """
    if what not in WHAT:
        raise HubError(f"what={what!r}: choose one of {', '.join(WHAT)}")
    run_dir = Path(run_dir)
    config, metrics = _read(run_dir, "config.yaml"), _read(run_dir, "metrics.json")
    command = _read(run_dir, "command.json", required=False)
    staging = Path(staging_dir) if staging_dir is not None else run_dir / "hub"
    license = license or config.get("hub_license") or "apache-2.0"
    parameters = metrics.get("parameters") or metrics.get("strategy", {}).get("parameters", {})
    staged = []
    if "tasks" in config:  # multitask: one repository per task
        if what not in ("auto", "model"):
            raise HubError("a multitask run publishes each task as a full model; use --what auto")
        for spec in config["tasks"]:
            name = spec["name"]
            source = run_dir / "model" / name
            if not source.is_dir():
                raise HubError(f"{run_dir}: model/{name} is missing; the run did not export task {name!r}")
            facts = CardFacts(
                repo_id=f"{repo_id}-{name}",
                task=spec["task"],
                kind="multitask task",
                config=config,
                metrics={s: metrics[s]["tasks"][name] for s in ("validation", "test") if s in metrics},
                data=spec["data"],
                data_report=metrics.get("data", {}).get(name, {}),
                parameters=parameters,
                command=command,
                task_name=name,
                license=license,
                strategy_report=metrics.get("strategy", {}),
            )
            _stage_folder(source, staging / facts.repo_id.split("/")[-1], facts, run_dir)
            staged.append(StagedRepo(facts.repo_id, staging / facts.repo_id.split("/")[-1], facts.kind))
        return staged
    source, kind = _single_source(run_dir, config, metrics, what)
    facts = CardFacts(
        repo_id=repo_id,
        task=config["task"],
        kind=kind,
        config=config,
        metrics={s: metrics[s] for s in ("validation", "test") if s in metrics},
        data=config["data"],
        data_report=metrics.get("data", {}),
        parameters=parameters,
        command=command,
        license=license,
        distill_report=metrics.get("distill_report"),
        strategy_report=metrics.get("strategy", {}),
        label_names=metrics.get("label_names", []),
    )
    target = staging / repo_id.split("/")[-1]
    _stage_folder(source, target, facts, run_dir)
    return [StagedRepo(repo_id, target, kind)]


def push_staged(
    staged: list[StagedRepo],
    *,
    private: bool = False,
    api: Any = None,
    token: str | None = None,
    retry: str = "",
) -> list[StagedRepo]:
    """Create each repository (if needed) and upload its folder; fills in ``url``.

    Raises:
        HubError: no token, or the Hub refused or could not be reached (the message never contains the token).
    """
    from huggingface_hub import HfApi, get_token

    token = token if token is not None else get_token()
    folders = ", ".join(str(repo.folder) for repo in staged)
    if not token:
        raise HubError(
            f"no Hugging Face token: set HF_TOKEN or run `hf auth login`; staged in {folders}{retry}"
        )
    api = api if api is not None else HfApi()
    for repo in staged:
        try:
            url = api.create_repo(repo.repo_id, token=token, private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo.repo_id,
                folder_path=str(repo.folder),
                token=token,
                commit_message="Upload with hftransfer",
            )
        except Exception as err:  # network, auth, permissions: all end the push the same way
            reason = " ".join(str(err).split()).replace(token, "***")[:300]
            raise HubError(
                f"pushing {repo.folder} to {repo.repo_id} failed ({type(err).__name__}: {reason}){retry}"
            ) from None
        repo.url = str(url)
        logger.info("Pushed %s to %s", repo.folder, repo.url)
    return staged


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    what: str = "auto",
    dry_run: bool = False,
    staging_dir: str | Path | None = None,
    api: Any = None,
    token: str | None = None,
    license: str | None = None,
) -> list[StagedRepo]:
    """Stage and (unless ``dry_run``) push a finished run; see :func:`stage_run` and :func:`push_staged`."""
    staged = stage_run(run_dir, repo_id, what=what, staging_dir=staging_dir, license=license)
    if dry_run:
        for repo in staged:
            logger.info("Staged %s for %s (dry run: nothing uploaded)", repo.folder, repo.repo_id)
        return staged
    retry = f"; retry with: hftransfer push {run_dir} --repo-id {repo_id}" + (" --private" if private else "")
    return push_staged(staged, private=private, api=api, token=token, retry=retry)


def push_after_run(run_dir: Path, config: Any) -> dict[str, Any]:
    """The end-of-run push of a recipe (``push_to_hub=true``): never raises, returns what happened for
    ``metrics.json``; a failure is logged as one error line with the retry command."""
    try:
        staged = push_run(
            run_dir, config.hub_model_id, private=config.hub_private, license=config.hub_license
        )
    except HubError as err:
        logger.error("Hub push failed; the run's results are kept. %s", err)
        return {"pushed": False, "error": str(err)}
    return {"pushed": True, "repos": {repo.repo_id: repo.url for repo in staged}}

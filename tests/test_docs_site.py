"""The documentation site builds with ``mkdocs build --strict`` (mkdocs.yml, docs/hooks.py, docs/gen_reference.py):
the generated references hold what the code defines, and a dead link or anchor fails the build."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("material", reason="the docs extra is not installed: pip install -e '.[docs]'")

from mkdocs.commands.build import build  # noqa: E402
from mkdocs.config import load_config  # noqa: E402
from mkdocs.exceptions import Abort  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _build(root: Path, site_dir: Path) -> None:
    """``mkdocs build --strict`` in this process, so the second build reuses the first one's imports."""
    build(load_config(config_file=str(root / "mkdocs.yml"), site_dir=str(site_dir), strict=True))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    _build(ROOT, site_dir)
    return site_dir


def _page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text(encoding="utf-8")


def test_every_page_is_built(site: Path):
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert (site / page.stem / "index.html").is_file(), page.name
    assert "Five minutes with hftransfer" in (site / "index.html").read_text(encoding="utf-8")  # the README
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        tutorial = _page(site, f"tutorials/{notebook.stem}")
        assert "highlight" in tutorial and "```" not in tutorial  # code cells as rendered Python blocks
        assert (site / "repo" / "notebooks" / notebook.name).is_file()  # linked from its tutorial page
    # Repository files the pages link to come along: docs/distributed.md links the accelerate configs.
    assert (site / "repo" / "recipes" / "accelerate" / "fsdp2.yaml").is_file()


def test_references_are_generated_from_the_code(site: Path):
    from hftransfer.registry import objective_names, strategy_names

    config = _page(site, "reference/configuration")
    for key in ("train.lr", "train.log_every_steps", "data.label_map", "strategy.r", "strategy.head_lr",
                "objectives.drift.distance", "distill.teacher", "tasks[].loss_weight", "mlm.mask_probability"):  # fmt: skip
        assert f"<code>{key}</code>" in config, key
    for name in strategy_names():
        assert f'id="strategy-{name}"' in config, name
    for name in objective_names():
        assert f'id="objective-{name}"' in config, name
    api = _page(site, "reference/api")
    import hftransfer

    for name in hftransfer.__all__:
        assert f'id="{name.lower()}"' in api, name
    assert "Predictor.predict" in api and "token-classification" in api


def test_a_dead_link_fails_the_build(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # A copy of the docs beside links to the rest of the repository, so the hooks find the README, the notebooks
    # and the files pages link to as they do at the root; one page gets three dead links.
    root = tmp_path / "repo"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in ("docs", "mkdocs.yml") and not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", root / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    page = root / "docs" / "methods.md"
    dead = ["no_such_page.md", "running.md#no-such-heading", "../recipes/no_such_recipe.py"]
    page.write_text(page.read_text(encoding="utf-8") + "".join(f"\n[dead]({link})\n" for link in dead))
    with (
        caplog.at_level(logging.WARNING, logger="mkdocs"),
        pytest.raises(Abort, match="3 warnings in strict mode"),
    ):
        _build(root, tmp_path / "site")
    for link in dead:
        assert link.split("#")[-1] in caplog.text, link

"""The notebooks in notebooks/: each runs top to bottom in small mode (toy model and data, seconds) and writes its
figures; the committed files carry no outputs and define nothing reusable."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
ipykernel_kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
# The PNG files each notebook writes; in small mode they land in its run directory.
FIGURES = {
    "01_quickstart_ner": ["quickstart_per_type_f1.png"],
    "02_comparing_strategies": ["strategies.png"],
    "03_what_to_transfer": ["layer_probe.png", "distillation.png"],
}


def test_the_notebooks_are_there():
    assert {path.stem for path in NOTEBOOKS} == set(FIGURES)


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A ``python3`` kernelspec for this interpreter in a temporary JUPYTER_PATH (so a fresh CI machine needs no
    ``ipykernel install`` and the notebooks run in the environment under test), small mode, a headless matplotlib."""
    prefix = tmp_path_factory.mktemp("jupyter")
    ipykernel_kernelspec.install(kernel_name="python3", prefix=str(prefix))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        patch.setenv("HFTRANSFER_NOTEBOOK_MODE", "small")
        patch.setenv("HFTRANSFER_NOTEBOOK_RUNS", str(prefix / "runs"))  # not into the checkout
        patch.setenv("MPLBACKEND", "Agg")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TOKENIZERS_PARALLELISM", "false")
        patch.setenv(
            "OMP_NUM_THREADS", "1"
        )  # toy models: threads only add overhead (and stall on a busy machine)
        yield prefix / "runs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_small_mode(path, kernel_env):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},  # run from notebooks/, as Jupyter would
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any failure
    elapsed = time.perf_counter() - started

    run_dir = kernel_env / "small" / path.stem
    for name in FIGURES[path.stem]:
        figure = run_dir / name
        assert figure.is_file(), f"{path.name} did not write {figure}"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    print(f"{path.name}: {elapsed:.1f} s", file=sys.stderr)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_committed_notebook_is_stripped_and_defines_nothing(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert (
        notebook.cells[0].cell_type == "markdown"
        and "HFTRANSFER_NOTEBOOK_MODE=small" in notebook.cells[0].source
    )
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert 'os.environ.get("HFTRANSFER_NOTEBOOK_MODE", "full") == "small"' in code[0].source
    for index, cell in enumerate(code):
        assert cell.outputs == [], f"{path.name}: code cell {index} has outputs (strip them)"
        assert cell.execution_count is None, f"{path.name}: code cell {index} has an execution count"
        definitions = [
            node.name
            for node in ast.walk(ast.parse(cell.source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        assert not definitions, (
            f"{path.name}: code cell {index} defines {definitions}; use hftransfer instead"
        )

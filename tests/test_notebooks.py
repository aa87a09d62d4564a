"""Every notebook in notebooks/ runs end to end without an error.

Each ``notebooks/*.ipynb`` is read into memory and executed there with nbclient on the "python3"
kernel (the interpreter running pytest), with a 300 s limit per cell. The working directory is the
notebooks folder, as when a reader opens the notebook in Jupyter, so relative paths in a notebook
are relative to notebooks/. The committed files are never written: outputs stay in the in-memory
copy. New notebooks are picked up automatically; an empty or missing folder fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb")) if NOTEBOOKS_DIR.is_dir() else []
CELL_TIMEOUT_S = 300
KERNEL = "python3"


def test_notebooks_folder_has_notebooks():
    assert NOTEBOOKS, f"No notebooks found in {NOTEBOOKS_DIR}; the walkthroughs (*.ipynb) belong there."


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch):
    import nbclient  # the dev extra installs both; a missing one is a failure, not a skip
    import nbformat
    from nbclient.exceptions import CellExecutionError

    # The kernel inherits these. One BLAS/OpenMP thread unless the caller chose otherwise: the suite
    # runs two test workers on two cores, and a kernel spinning a second thread against them costs
    # far more than it computes.
    for var, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg",
                       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(var, os.environ.get(var, value))
    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(  # the kernel is stopped at once after the last cell (no graceful wait: ~1 s each)
        nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL, allow_errors=False, shutdown_kernel="immediate",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed while executing a cell:\n{e}", pytrace=False)
    assert path.read_bytes() == before, f"Executing {path.name} changed the committed file."

"""Controlled experiments that train many small models and store their histories under ``assets/experiments``.

Run from the repository root: ``python -m experiments.bio list`` (see `experiments.bio`). Nothing in
`interp`, `patching` or `probes` imports from here; the figures read only the stored JSON.
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str | None:
    """The checkout's HEAD commit, recorded in every stored run (None outside a git work tree)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None

"""Separate virtual environments for peers that cannot sit beside this project (auto-circuit and
SAELens need TransformerLens < 4): built once under ``.cache/``, rebuilt when their pins change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class SetupError(RuntimeError):
    """A peer's environment could not be built or run; the message holds the command and its error."""


def run_step(cmd: list[str], what: str) -> None:
    """Run ``cmd``; on failure raise `SetupError` with the command and the end of its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in (proc.stderr + proc.stdout).splitlines() if "WARNING: Location" not in line]
        raise SetupError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(errors[-25:]))


def ensure_venv(venv: Path, pins: list[list[str]], import_check: str, peer: str) -> Path:
    """The venv's python, building the venv with ``pins`` (one ``pip install`` per group, in order)
    if it is missing or was built with other pins, then checking that ``import_check`` runs."""
    python, stamp = venv / "bin" / "python", venv / "pins.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == pins:
        return python
    print(f"building {venv} for {peer} (once; a few minutes) ...", flush=True)
    # The venv module of this interpreter's base Python (a venv made from inside a venv gets the base one).
    run_step([sys.executable, "-m", "venv", "--clear", str(venv)], "creating the venv")
    for group in pins:
        run_step([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *group], "pip install")
    run_step([str(python), "-c", import_check], f"importing {peer}")
    stamp.write_text(json.dumps(pins))
    return python

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


def write_block(path: Path, markers: tuple[str, str], title: str, lines: list[str]) -> Path:
    """Put ``lines`` between the two ``markers`` of the markdown file ``path`` (created with ``title``
    if missing); the hand-written text around them stays."""
    start, end = markers
    text = path.read_text() if path.exists() else f"# {title}\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail)
    return path

"""The shipped small models: ``list_models()``, ``load_model(name)``.

Each lives in ``assets/models/NAME/`` (``model.safetensors``, ``model.json``, ``tokenizer/``,
``checkpoints/step_*.safetensors``) and is rebuilt by ``interp train NAME``. They are found, in
order: under ``$INTERP_ASSETS`` when it is set; in a checkout, in the repository's top-level
``assets/``; in an installed wheel, in ``interp/_assets/`` (the same files, mapped there at build
time by ``setup.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from interp.errors import LoadError


def checkout_dir() -> Path | None:
    """The repository root when ``interp`` is imported from a checkout (a clone, or an editable
    install of one), else ``None`` (an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "assets").is_dir() else None


def assets_dir() -> Path:
    """Where the shipped models are read from: ``$INTERP_ASSETS``, else the checkout's ``assets/``,
    else the copy installed with the package (``interp/_assets``)."""
    env = os.environ.get("INTERP_ASSETS")
    if env:
        return Path(env)
    root = checkout_dir()
    return root / "assets" if root is not None else Path(__file__).resolve().parent / "_assets"


def models_dir() -> Path:
    """``assets_dir() / "models"``: one folder per shipped model."""
    return assets_dir() / "models"


def list_names() -> list[str]:
    root = models_dir()
    return sorted(p.name for p in root.iterdir() if (p / "model.json").exists()) if root.exists() else []


@dataclass(frozen=True)
class ModelCard:
    """What `list_models` reports about a shipped model."""

    name: str
    task: str
    n_params: int
    size_mb: float
    metrics: dict
    checkpoints: int

    def line(self) -> str:
        metrics = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items())
        return f"{self.name:<14} {self.task:<10} {self.n_params:>9,d} params {self.size_mb:6.2f} MB  {self.checkpoints:>2} ckpts  {metrics}"


def model_dir(name: str | Path) -> Path:
    """The directory of shipped model ``name``; a directory saved by ``interp train --out DIR``
    (one holding ``model.json``) is accepted too, so its checkpoints load the same way."""
    if Path(name).is_dir() and (Path(name) / "model.json").exists():
        return Path(name)
    path = models_dir() / str(name)
    if not (path / "model.json").exists():
        from interp.errors import closest

        raise LoadError(f"No shipped model {name!r}.{closest(name, list_names())} Shipped: {', '.join(list_names()) or 'none'}.")
    return path


def card(name: str) -> ModelCard:
    path = model_dir(name)
    info = json.loads((path / "model.json").read_text())
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    ckpts = len(list((path / "checkpoints").glob("step_*.safetensors"))) if (path / "checkpoints").exists() else 0
    return ModelCard(name, info.get("task", "?"), int(info.get("n_params", 0)), size / 2**20, info.get("metrics", {}), ckpts)


def list_models() -> list[ModelCard]:
    """Every shipped model with its task, size and measured accuracy."""
    return [card(n) for n in list_names()]


def load_model(name: str | Path, step: int | None = None):
    """A shipped model; ``step`` loads that training checkpoint instead of the final weights."""
    from interp.models import load_native_dir, load_weights

    model = load_native_dir(model_dir(name))
    if step is not None:
        file = model_dir(name) / "checkpoints" / f"step_{step:06d}.safetensors"
        if not file.exists():
            raise LoadError(f"{name} has no checkpoint at step {step}; it has steps {checkpoint_steps(name)}.")
        load_weights(model, file)
    return model


def checkpoint_steps(name: str | Path) -> list[int]:
    """The training steps at which ``name`` has a shipped checkpoint, ascending."""
    folder = model_dir(name) / "checkpoints"
    return sorted(int(f.stem.split("_")[1]) for f in folder.glob("step_*.safetensors")) if folder.exists() else []

"""The binding experiment of issue 19 (part 4), drawn from stored records only (no model is loaded).

``python -m experiments.binding run NAME`` stores one JSON per attempt under
``assets/experiments/binding/`` (settings, held-out accuracy per context size every 50 steps, and for
an attempt that left the 1/k plateau, Gur-Arieh et al.'s mechanism shares by layer);
``python -m experiments.binding shares MODEL`` stores a shipped model's shares as ``MODEL.shares.json``.
The figure draws every attempt's learning curve, then the positional / lexical / reflexive shares by
layer of ``binding-4l`` beside those of the model the experiment found (if any).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from interp import zoo
from interp.errors import InputError
from interp.figures.base import FigureResult, register, save

SIZES = (2, 3, 4, 5)
OUTCOMES = {"positional": ("tab:red", "s-"), "lexical": ("tab:green", "o-"), "reflexive": ("tab:blue", "v-"),
            "base": ("tab:gray", "^--"), "other": ("k", "x:")}
REFERENCE = "binding-4l"


def records_dir() -> Path:
    """Where the stored records are read from: ``assets/experiments/binding`` (under `interp.zoo.assets_dir`)."""
    return zoo.assets_dir() / "experiments" / "binding"


def load_attempts(directory: str | Path | None = None) -> list[dict]:
    """Every stored attempt record (``NAME.json``, not ``*.shares.json``) in ``directory``, sorted by name."""
    folder = Path(directory) if directory is not None else records_dir()
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"), key=lambda p: p.stem)
            if not p.name.endswith(".shares.json")]


def load_shares(name: str, directory: str | Path | None = None) -> dict | None:
    """The stored shares record ``NAME.shares.json`` of a model, or None."""
    path = (Path(directory) if directory is not None else records_dir()) / f"{name}.shares.json"
    return json.loads(path.read_text()) if path.exists() else None


def mean_accuracy(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(steps [t], accuracy [t])``: held-out accuracy averaged over context sizes 2..5."""
    steps = np.array([row["step"] for row in record["history"]])
    acc = np.array([np.mean([row[f"acc_{k}"] for k in SIZES]) for row in record["history"]])
    return steps, acc


def found_models(records: list[dict], directory: str | Path | None = None) -> list[tuple[str, dict]]:
    """The models to set beside binding-4l, as ``(name, shares)``: every ``*.shares.json`` other than
    binding-4l's (a shipped model of the experiment), then every attempt that left the plateau and was
    measured (unless a shipped model has the same shares: it reproduces that attempt), in the order of ``records``."""
    folder = Path(directory) if directory is not None else records_dir()
    found = []
    for path in sorted(folder.glob("*.shares.json"), key=lambda p: p.name.removesuffix(".shares.json")) if folder.is_dir() else []:
        record = json.loads(path.read_text())
        if record.get("model") != REFERENCE:
            found.append((record["model"], record))
    shipped = [shares["shares"] for _, shares in found]
    found += [(r["name"], r["shares"]) for r in records
              if r.get("left_plateau") and r.get("shares") and r["shares"]["shares"] not in shipped]  # an attempt a shipped model reproduces: once
    return found


def _shares_panel(ax, shares: dict, title: str) -> dict[str, float]:
    x = np.arange(len(shares["sites"]))
    numbers = {}
    for name, (color, style) in OUTCOMES.items():
        values = np.asarray(shares["shares"][name])
        ax.plot(x, values, style, color=color, lw=2 if name in ("positional", "lexical", "reflexive") else 1, label=name)
        numbers.update({f"{name}_{i}": float(v) for i, v in enumerate(values)})
    ax.set_xticks(x, shares["sites"], fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("residual stream at the query position")
    ax.set_ylabel(f"share of interchanges ({'/'.join(map(str, shares['sizes']))} pairs)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return numbers


@register
def binding_mechanisms(out_dir: str | Path | None = None, records: str | Path | None = None) -> FigureResult:
    """Learning curves of every binding attempt, and positional / lexical / reflexive shares by layer
    (Gur-Arieh et al. 2025) of binding-4l and of the experiment's model, from stored records."""
    attempts = load_attempts(records)
    reference = load_shares(REFERENCE, records)
    if not attempts or reference is None:
        raise InputError(
            f"binding_mechanisms draws stored records, and {records or records_dir()} lacks "
            f"{'attempt records' if not attempts else REFERENCE + '.shares.json'}: run "
            "`python -m experiments.binding run NAME` and `python -m experiments.binding shares binding-4l` first."
        )
    found = found_models(attempts, records)
    n_panels = 2 + max(1, len(found))
    ncols = min(n_panels, 3)
    nrows = -(-n_panels // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(5.8 * ncols, 4.6 * nrows), constrained_layout=True, squeeze=False)
    axes = grid.flatten()
    for ax in axes[n_panels:]:
        ax.set_axis_off()
    ax = axes[0]
    numbers: dict[str, float] = {}
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for i, r in enumerate(attempts):
        steps, acc = mean_accuracy(r)
        left = r.get("plateau_exit_step")
        label = f"{r['name']} ({'left at ' + str(left) if left is not None else 'plateau'})"
        ax.plot(steps, acc, color=colors[i % 10], lw=1.5, label=label)
        if left is not None:
            ax.axvline(left, color=colors[i % 10], ls=":", lw=1)
        numbers[f"final_{r['name']}"] = float(acc[-1])
    ax.axhline(np.mean([1 / k for k in SIZES]), color="k", ls="--", lw=1, label="chance among the context's entities")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy (mean over 2-5 pairs)")
    ax.set_title("binding attempts (entity-first and other layouts)", fontsize=10)
    ax.legend(fontsize=6.5, loc="upper left")
    numbers.update({f"{REFERENCE}_{k}": v for k, v in _shares_panel(axes[1], reference, f"{REFERENCE} (attribute-first)").items()})
    if not found:
        axes[2].text(0.5, 0.5, "no attempt left the 1/k plateau", ha="center", va="center", transform=axes[2].transAxes)
        axes[2].set_axis_off()
        caption_model = "no attempt left the plateau"
    for i, (name, shares) in enumerate(found):
        drawn = _shares_panel(axes[2 + i], shares, f"{name} ({shares.get('layout', '')})")
        numbers.update({f"{name}_{k}": v for k, v in drawn.items()})
        if i == 0:
            numbers.update({f"found_{k}": v for k, v in drawn.items()})
    if found:
        caption_model = ", ".join(name for name, _ in found)
    fig.suptitle("Binding: which training lets a model leave the 1/k plateau, and how it then retrieves", fontsize=11)
    paths = save(fig, "binding_mechanisms", out_dir)
    return FigureResult("binding_mechanisms", paths, numbers,
                        caption=f"Learning curves of {len(attempts)} binding attempts; mechanism shares of {REFERENCE} and of {caption_model}.")

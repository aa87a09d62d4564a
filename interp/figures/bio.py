"""Figures of the biography experiment (issue 19), drawn from the stored run histories only.

Each run of ``python -m experiments.bio run NAME`` stores one JSON under
``assets/experiments/bio/`` (see `experiments.bio`): its settings, evaluation history and causal
traces. These figures read those files (no model is loaded or trained, a few seconds each) and
recompute the two summary numbers with the task's own definitions, `interp.tasks.bio.rome_ratio`
and `interp.tasks.bio.plateau`, one panel per axis of the experiment (number of individuals, depth
at fixed parameters, data design, frequencies).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from interp import zoo
from interp.figures.base import FigureResult, register, save
from interp.tasks.bio import plateau, rome_ratio

AXES = ("individuals", "depth", "design", "frequencies")
AXIS_TITLES = {"individuals": "number of individuals", "depth": "depth at ~fixed parameters",
               "design": "data design", "frequencies": "frequencies of individuals"}
DESIGN_ORDER = ("templates", "bio", "profile", "profile-qa", "pronouns", "qa", "qa-pronouns", "qa-before")


def runs_dir() -> Path:
    """Where the stored runs are read from: ``assets/experiments/bio`` (under `interp.zoo.assets_dir`)."""
    return zoo.assets_dir() / "experiments" / "bio"


def load_runs(directory: str | Path | None = None) -> list[dict]:
    """Every stored run record (``*.json``) in ``directory`` (default `runs_dir`), sorted by name."""
    folder = Path(directory) if directory is not None else runs_dir()
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def final_trace(record: dict, form: str = "bio") -> dict | None:
    """The run's causal trace of ``form`` ("bio" or "question") at its last traced step, or None."""
    traces = [t for t in record.get("traces", []) if t["form"] == form]
    return max(traces, key=lambda t: t["step"]) if traces else None


def run_numbers(record: dict) -> dict[str, float]:
    """ROME ratios (biography prompt; question about held-out individuals where trained with questions;
    pronoun sentence where trained with pronouns), plateau numbers, final recall and the name-token
    probe (``probe_best``: best-layer
    accuracy averaged over relations; ``probe_chance``) of one stored run, from its record."""
    out: dict[str, float] = {}
    for form in ("bio", "question", "pronoun"):
        t = final_trace(record, form)
        if t is not None:
            mlp = t["groups"]["mlp"]
            out[f"rome_ratio_{form}"] = rome_ratio(mlp["last subject token"], mlp["last token"])
            out[f"rome_ratio_{form}_layer0"] = rome_ratio(mlp["last subject token"], mlp["last token"], include_layer0=True)
    p = plateau(record["history"], record["no_knowledge_loss"])
    out.update({k: float(v) for k, v in p.items() if k != "baseline"})
    out["censored"] = float(p["plateau_end"] == record["history"][-1]["step"])
    probe = record.get("probe") or {}
    measured = [r for r, acc in probe.get("accuracy", {}).items() if acc]
    if measured:  # best layer per relation, averaged over relations; and the same for chance
        out["probe_best"] = float(np.mean([max(probe["accuracy"][r]) for r in measured]))
        out["probe_chance"] = float(np.mean([probe["chance"][r] for r in measured]))
    final = record["final"]
    for key in ("bio_recall", "qa_recall_seen", "qa_recall_unseen"):
        if key in final:
            out[key] = float(final[key])
    return out


def _members(runs: list[dict], axis: str) -> list[dict]:
    chosen = [r for r in runs if axis in r.get("axes", [])]

    def key(r):
        if axis == "individuals":
            return (r["task"]["n_individuals"],)
        if axis == "depth":
            return (r["model"]["n_layers"],)
        if axis == "design":
            label = r["labels"][axis]
            return (DESIGN_ORDER.index(label) if label in DESIGN_ORDER else len(DESIGN_ORDER), label)
        return (r["task"]["n_individuals"], r["task"]["frequencies"] != "uniform")

    return sorted(chosen, key=key)


def _panels(records: list[dict], title: str, ylabel: str, draw, keep=lambda numbers: True, categorical: bool = True):
    """A figure with one panel per axis of the experiment: the stored runs on that axis (sorted, only
    those whose `run_numbers` pass ``keep``) drawn by ``draw(ax, x, runs, numbers, axis)``, the run
    labels as x ticks (``categorical``), one legend below the panels."""
    fig, axes = plt.subplots(1, len(AXES), figsize=(16, 3.9), constrained_layout=True)
    fig.suptitle(title, fontsize=11)
    for ax, axis in zip(axes, AXES, strict=True):
        members = [r for r in _members(records, axis) if keep(run_numbers(r))]
        ax.set_title(AXIS_TITLES[axis], fontsize=10)
        if not members:
            ax.text(0.5, 0.5, "no stored run on this axis yet\n(python -m experiments.bio list)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        x = np.arange(len(members))
        draw(ax, x, members, [run_numbers(r) for r in members], axis)
        if categorical:
            ax.set_xticks(x, [r["labels"][axis] for r in members], rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.8, max(len(members), 3) - 0.2)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 6), fontsize=8, bbox_to_anchor=(0.5, -0.1))
            break
    return fig


def _best(numbers: dict[str, float], suffix: str) -> tuple[str, float] | None:
    """The run with the largest measured ``NAME{suffix}`` number, or None."""
    measured = {k.removesuffix(suffix): v for k, v in numbers.items() if k.endswith(suffix) and not math.isnan(v)}
    return max(measured.items(), key=lambda kv: kv[1]) if measured else None


@register
def bio_rome_ratio(out_dir: str | Path | None = None, runs: str | Path | None = None) -> FigureResult:
    """The ROME ratio (last subject token's early-to-middle MLP effect ÷ the last token's largest MLP
    effect) of every stored biography run, against each axis of the experiment."""
    records = load_runs(runs)

    def draw(ax, x, members, vals, axis):
        ax.bar(x, [v.get("rome_ratio_bio", math.nan) for v in vals], color="tab:blue", width=0.6, label="biography prompt")
        ax.plot(x, [v.get("rome_ratio_bio_layer0", math.nan) for v in vals], "o", mfc="none", color="tab:blue",
                label="… with layer 0's MLP")
        ax.plot(x, [v.get("rome_ratio_question", math.nan) for v in vals], "D", color="tab:orange",
                label="question, held-out individuals")
        ax.plot(x, [v.get("rome_ratio_pronoun", math.nan) for v in vals], "s", color="tab:green",
                label="pronoun sentence (name far away)")
        ax.axhline(1.0, ls="--", lw=0.8, color="gray")

    fig = _panels(records, "ROME ratio: MLP restoration at the last name token (layers 1 .. L/2) ÷ at the last token "
                  "(causal trace, noise 3σ on the name, final weights)", "ROME ratio (dashed: 1)", draw)
    numbers = {f"{r['name']}_rome_ratio": run_numbers(r).get("rome_ratio_bio", math.nan) for r in records}
    caption = ("Meng et al. 2022 find the largest MLP effects at the last subject token in early-middle layers; "
               "a ratio above 1 (dashed) would show that route. ")
    best = _best(numbers, "_rome_ratio")
    caption += (f"Over {len(records)} stored runs the largest ratio is {best[1]:.3f} ({best[0]})." if best else
                "No stored run has a measured ratio yet (a run that recalls nothing has none).")
    return FigureResult("bio_rome_ratio", save(fig, "bio_rome_ratio", out_dir), numbers, caption)


@register
def bio_plateau(out_dir: str | Path | None = None, runs: str | Path | None = None) -> FigureResult:
    """Plateau length (steps with the attribute loss within 10% of the no-knowledge loss) and the
    step where biography recall reaches 0.5, of every stored run, against each axis."""
    records = load_runs(runs)

    def draw(ax, x, members, vals, axis):
        bars = ax.bar(x, [v["plateau_steps"] for v in vals], color="tab:green", width=0.6, label="plateau (steps)")
        for bar, v in zip(bars, vals, strict=True):
            if v["censored"]:
                bar.set_hatch("//")
        half = [v["recall_half_step"] for v in vals]
        ax.plot(x, half, "D", color="tab:red", label="recall 0.5 reached")
        never = [i for i, h in enumerate(half) if math.isnan(h)]
        ax.plot(x[never], [members[i]["history"][-1]["step"] for i in never], "x", color="tab:red", ms=9,
                label="recall 0.5 never reached")

    fig = _panels(records, "Plateau: steps with the attribute loss within 10% of the no-knowledge loss "
                  "(hatched: still there at the last step); ◆ recall 0.5", "training steps", draw)
    numbers = {}
    for r in records:
        n = run_numbers(r)
        numbers[f"{r['name']}_plateau_steps"], numbers[f"{r['name']}_recall_half_step"] = n["plateau_steps"], n["recall_half_step"]
    caption = "Zucchet et al. 2025 report a plateau that grows with the number of individuals and shrinks with imbalanced frequencies. "
    best = _best(numbers, "_plateau_steps")
    caption += (f"Longest measured plateau: {best[1]:.0f} steps ({best[0]}), over {len(records)} stored runs." if best
                else "No run is stored yet.")
    return FigureResult("bio_plateau", save(fig, "bio_plateau", out_dir), numbers, caption)


@register
def bio_learning_curves(out_dir: str | Path | None = None, runs: str | Path | None = None) -> FigureResult:
    """Recall over training of every stored run: on biographies (solid) and on questions about
    individuals never seen in question form (dashed, runs trained with questions), one panel per axis."""
    records = load_runs(runs)

    def draw(ax, x, members, vals, axis):
        for k, r in enumerate(members):
            steps = np.array([h["step"] for h in r["history"]])
            color = plt.cm.viridis(k / max(1, len(members) - 1))
            ax.plot(steps, [h["bio_recall"] for h in r["history"]], color=color, label=r["labels"][axis])
            if r["task"]["question_share"] > 0:
                ax.plot(steps, [h.get("qa_recall_unseen", math.nan) for h in r["history"]], ls="--", color=color)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training step")
        ax.legend(fontsize=7)

    fig = _panels(records, "Recall over training (evaluation subset): biographies (solid), questions about held-out "
                  "individuals (dashed)", "top-1 recall of attributes", draw, categorical=False)
    fig.legends.clear()  # each panel has its own legend (the runs differ by panel)
    numbers = {f"{r['name']}_final_bio_recall": float(r["final"]["bio_recall"]) for r in records}
    caption = (f"Learning curves of {len(records)} stored runs; a plateau shows as a flat stretch near chance "
               "before recall rises.") if records else "No run is stored yet."
    return FigureResult("bio_learning_curves", save(fig, "bio_learning_curves", out_dir), numbers, caption)


@register
def bio_name_probe(out_dir: str | Path | None = None, runs: str | Path | None = None) -> FigureResult:
    """Allen-Zhu & Li's test of storage at the name: linear-probe accuracy of the attributes at the
    last name token (best layer, cross-validated over individuals, mean over relations) against
    chance, for every stored run that has probes, against each axis."""
    records = load_runs(runs)

    def draw(ax, x, members, vals, axis):
        ax.bar(x, [v["probe_best"] for v in vals], color="tab:purple", width=0.6, label="probe accuracy")
        ax.plot(x, [v["probe_chance"] for v in vals], "_", ms=20, mew=2, color="black", label="chance (majority value)")
        ax.plot(x, [v["bio_recall"] for v in vals], "o", color="tab:red", label="bio recall (the model)")
        ax.set_ylim(0, 1.02)

    fig = _panels(records, "Attributes decodable at the last name token of '<bos> first last' "
                  "(linear probe, 5-fold over individuals, best layer, mean over relations)", "accuracy", draw,
                  keep=lambda n: "probe_best" in n)
    numbers = {}
    for r in records:
        n = run_numbers(r)
        if "probe_best" in n:
            numbers[f"{r['name']}_probe_best"], numbers[f"{r['name']}_probe_chance"] = n["probe_best"], n["probe_chance"]
    caption = ("Allen-Zhu & Li (Physics of LMs 3.1) find attributes linearly decodable at the name when biographies vary "
               "in sentence order and phrasing. ")
    best = _best(numbers, "_probe_best")
    caption += (f"Highest probe accuracy over {len(numbers) // 2} probed runs: {best[1]:.2f} ({best[0]}; chance "
                f"{numbers[best[0] + '_probe_chance']:.2f})." if best else "No stored run has probes yet.")
    return FigureResult("bio_name_probe", save(fig, "bio_name_probe", out_dir), numbers, caption)

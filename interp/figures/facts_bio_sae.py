"""Figure of the facts-bio-sae card: what the SAE at facts-bio's name finds, against the probes.

The numbers come from the card's measurements (`interp.circuits.facts_bio_sae.feature_table`) on the
shipped SAE (``assets/sae/facts-bio-L3``) and the shipped facts-bio weights.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from interp.figures.base import FigureResult, register, save
from interp.figures.base import subject_of as _subject
from interp.models import HookedModel

NAME = "facts-bio"


@register
def facts_bio_sae(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """Two panels: per attribute, the best features' mean precision and recall (each value's best
    feature chosen on the even individuals, scored on the odd ones) beside the probe's macro precision
    and recall on the same split, with chance; and every value's best feature as a point (precision,
    recall)."""
    from interp.circuits import facts_bio_sae as card

    s = _subject(model)
    table = card.feature_table(s)
    n = card.measure_features(s)
    relations = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    x = np.arange(len(relations))
    bars = [("feature precision", [n[f"{r}_precision"] for r in relations], "tab:blue", None),
            ("feature recall", [n[f"{r}_recall"] for r in relations], "tab:cyan", None),
            ("probe precision", [table[r]["probe_precision"] for r in relations], "tab:gray", None),
            ("probe recall", [table[r]["probe_recall"] for r in relations], "silver", None)]
    width = 0.2
    for i, (label, values, color, _) in enumerate(bars):
        axes[0].bar(x + (i - 1.5) * width, values, width, label=label, color=color)
    axes[0].scatter(x, [n[f"{r}_chance"] for r in relations], marker="_", s=400, color="k", zorder=3, label="chance (value share)")
    axes[0].set_xticks(x, [r.replace("_", " ") for r in relations])
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("mean over the attribute's values (odd individuals)")
    axes[0].set_title("best SAE feature per value vs a linear probe, at the name", fontsize=10)
    axes[0].legend(fontsize=8, ncol=2)
    for r, color in zip(relations, ("tab:red", "tab:green", "tab:purple", "tab:orange"), strict=False):
        vals = table[r]["values"].values()
        axes[1].scatter([v["recall"] for v in vals], [v["precision"] for v in vals], s=14, alpha=0.7, color=color,
                        label=r.replace("_", " "))
    axes[1].axhline(0.5, color="k", lw=0.6, ls=":")
    axes[1].axvline(0.5, color="k", lw=0.6, ls=":")
    axes[1].set_xlim(-0.02, 1.02)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("recall (holders it fires for)")
    axes[1].set_ylabel("precision (its firings that are holders)")
    axes[1].set_title(f"each value's best feature ({n['values_monosemantic']:.0f} of {n['values']:.0f} in the top-right box)", fontsize=10)
    axes[1].legend(fontsize=8)
    fig.suptitle("facts-bio: a 512-latent TopK SAE at the last name token after block 3", fontsize=11)
    numbers = {k: v for k, v in n.items() if not k.endswith("_chance")}
    mean_f1 = np.mean([n[f"{r}_f1"] for r in relations])
    probe_f1 = np.mean([n[f"{r}_probe_f1"] for r in relations])
    return FigureResult(
        "facts_bio_sae", save(fig, "facts_bio_sae", out_dir), numbers,
        f"SAEs on large models find features for single cities or companies (Templeton et al. 2024). At {NAME}'s name, where "
        f"linear probes read every attribute (F1 {probe_f1:.2f} on held-out individuals), the best SAE feature of a value "
        f"reaches a mean F1 of {mean_f1:.2f} (chance about 0.03): far above chance, far from a feature per value; "
        f"{n['values_monosemantic']:.0f} of {n['values']:.0f} values have a feature with precision and recall ≥ 0.5.",
    )

"""Figure of the ``smollm2-agreement`` card: where DAS finds the subject's number (Arora et al. 2024, CausalGym).

Drawn from the stored sweep (`interp.circuits.smollm2_agreement.sweep_file`, written by
``python -m interp.circuits.smollm2_agreement --measure``): IIA on held-out nouns by layer at the
subject token and at the last token, DAS beside the mean-difference, PCA and random directions.
No model is loaded: the figure takes a second.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from interp.figures.base import FigureResult, register, save

NAME = "smollm2-135m"
STYLES = {"das": dict(color="tab:red", marker="o", label="DAS (1-D, warm start)"),
          "mean_diff": dict(color="tab:blue", marker="s", ls="--", label="mean difference"),
          "pca": dict(color="tab:green", marker="^", ls=":", label="PCA (1st component)"),
          "random": dict(color="tab:gray", marker="x", ls=":", label="random direction")}


@register
def smollm2_agreement_das(out_dir: str | Path | None = None, model: str = NAME) -> FigureResult:
    """IIA (held-out nouns; dev pairs dotted for DAS) by layer at the subject token and at the last token."""
    from interp.circuits import smollm2_agreement as card

    sweep = card.stored()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True, sharey=True)
    titles = {2: "subject token (position 2)", 6: "last token (the attractor, position 6)"}
    for ax, pos in zip(axes, card.SWEEP_POSITIONS, strict=True):
        cells = [c for c in sweep["cells"] if c["pos"] == pos]
        layers = [c["layer"] for c in cells]
        for method, style in STYLES.items():
            ax.plot(layers, [c["held_out"][method] for c in cells], **style)
        ax.plot(layers, [c["dev"]["das"] for c in cells], color="tab:red", lw=0.8, ls=":", label="DAS on development pairs")
        ax.set_title(titles.get(pos, f"position {pos}"), fontsize=10)
        ax.set_xlabel("layer (resid_post)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("IIA (is / are), held-out nouns")
    axes[0].legend(fontsize=8)
    best = card.best_cell(sweep)
    fig.suptitle(f"{NAME}: the subject's number in 'The {{subject}} next to the {{attractor}}' (CausalGym agreement)",
                 fontsize=11)
    numbers = {f"{method}_L{c['layer']}_P{c['pos']}": c["held_out"][method] for c in sweep["cells"] for method in STYLES}
    return FigureResult(
        "smollm2_agreement_das", save(fig, "smollm2_agreement_das", out_dir), numbers,
        f"CausalGym (Arora et al. 2024) locates linguistic variables with DAS and compares it with directions read without "
        f"interventions. In {NAME} the best cell (chosen on development pairs) is layer {best['layer']}, position "
        f"{best['pos']}: DAS IIA {best['held_out']['das']:.2f} on held-out nouns, mean difference "
        f"{best['held_out']['mean_diff']:.2f}, PCA {best['held_out']['pca']:.2f}, random {best['held_out']['random']:.2f}.",
    )

"""Figures of ``facts-bio`` (fact recall learnt from biographies) beside ``facts-4l``: where causal
tracing finds the facts (Meng et al. 2022), where probes decode them (Allen-Zhu & Li 2023), and
how recall and the attention to the name form during training (Zucchet et al. 2025).

The numbers come from the same measurements as the facts-bio card (`interp.circuits.facts_bio`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from interp.figures.base import FigureResult, register, save
from interp.figures.base import subject_of as _subject
from interp.models import HookedModel

NAME, PEER = "facts-bio", "facts-4l"


@register
def facts_bio_trace(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """Three panels, facts-bio beside facts-4l: MLP indirect effects by layer at the last subject
    token and at the last token; attention indirect effects at the last token; probe accuracy for
    the attributes at the last subject (name) token by site."""
    from interp.circuits import facts as peer_card
    from interp.circuits import facts_bio as card

    s, peer = _subject(model), _subject(PEER)
    ours, theirs = card.traces(s), peer_card._by_group(peer)
    probe = card.name_probes(s)
    relations = [r for r, a in probe["accuracy"].items() if a is not None]
    our_probe = np.mean([probe["accuracy"][r] for r in relations], axis=0)
    peer_probe = card.facts_4l_probe(s)
    their_probe = [peer_probe[f"subject_{i}"] for i in range(len(our_probe))]
    layers = np.arange(len(ours["mlp"][card.LAST]))
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9), constrained_layout=True)
    styles = {NAME: dict(color="tab:blue"), PEER: dict(color="tab:gray")}
    for label, groups in ((NAME, ours), (PEER, theirs)):
        axes[0].plot(layers, groups["mlp"][card.LAST_SUBJECT], marker="o", label=f"{label}: last subject token", **styles[label])
        axes[0].plot(layers, groups["mlp"][card.LAST], marker="s", ls="--", label=f"{label}: last token", **styles[label])
        axes[1].plot(layers, groups["attn"][card.LAST], marker="s", ls="--", label=label, **styles[label])
    sites = ["embed", *(f"out {i}" for i in layers)]
    axes[2].plot(sites, our_probe, marker="o", label=f"{NAME}: {len(relations)} relations (mean)", **styles[NAME])
    axes[2].plot(sites, their_probe, marker="o", label=f"{PEER}: city", **styles[PEER])
    axes[2].axhline(max(probe["chance"][r] for r in relations), color="k", lw=0.8, ls=":", label="chance (largest)")
    titles = ("MLP restored (average indirect effect)", "attention restored at the last token", "probe at the last subject token")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[:2]:
        ax.set_xticks(layers)
        ax.set_xlabel("layer")
        ax.set_ylabel("Δp(answer)")
    axes[2].set_ylabel("accuracy (5-fold over individuals)")
    axes[2].set_ylim(0, 1.02)
    fig.suptitle(f"{NAME} (biographies with a profile sentence) vs {PEER} (templated facts): where the facts are", fontsize=11)
    mlp, attn = card.measure_mlp_site(s), card.measure_attention_site(s)
    numbers = {**{f"mlp_{k}": v for k, v in mlp.items()}, **{f"attn_{k}": v for k, v in attn.items()},
               **{f"probe_{site}": float(v) for site, v in zip(sites, our_probe, strict=True)}}
    return FigureResult(
        "facts_bio_trace", save(fig, "facts_bio_trace", out_dir), numbers,
        f"Meng et al. 2022 find enrichment at the last subject token by early-middle MLPs and extraction by attention at the "
        f"last token later. In {NAME} the subject's MLPs peak at layer {int(mlp['subject_peak_layer'])} "
        f"({mlp['subject_peak']:.2f}) and the last token's attention at layer {int(attn['peak_layer'])} ({attn['peak']:.2f}); "
        f"the attributes are decodable at the name (probe {our_probe.max():.2f} vs {max(their_probe):.2f} in {PEER}), "
        f"whose MLP effects sit at the last token in every layer.",
    )


@register
def facts_bio_dynamics(out_dir: str | Path | None = None, model: str = NAME) -> FigureResult:
    """Training of facts-bio: attribute loss against the no-knowledge level, recall in biographies and
    in questions (trained and held-out individuals), and the extraction layer's attention from the
    last token to the name at each shipped checkpoint."""
    from interp.circuits import facts_bio as card

    s = _subject(model)
    history = card.history_of(s)
    steps, curve, layer = card.attention_curve(s)
    numbers = card.measure_dynamics(s)
    x = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.9), constrained_layout=True)
    axes[0].plot(x, [h["attribute_loss"] for h in history], color="tab:red", label="attribute loss (nats)")
    axes[0].axhline(numbers["baseline"], color="tab:red", ls=":", lw=1, label="no-knowledge level")
    axes[0].set_ylabel("loss")
    axes[0].set_xlabel("step")
    twin = axes[0].twinx()
    for key, label, color in (("bio_recall", "recall in biographies", "tab:blue"), ("qa_recall_seen", "questions, trained individuals", "tab:green"),
                              ("qa_recall_unseen", "questions, held-out individuals", "tab:olive")):
        if key in history[0]:
            twin.plot(x, [h[key] for h in history], color=color, label=label)
    twin.set_ylabel("top-1 recall")
    twin.set_ylim(0, 1.02)
    lines = axes[0].get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    axes[0].legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    axes[0].set_title("loss and recall (evaluated every 50 steps on 256 individuals)", fontsize=10)
    axes[1].plot(steps, curve, marker="o", color="tab:purple", label=f"layer {layer}: attention to the name (best head)")
    axes[1].plot(x, [h["bio_recall"] for h in history], color="tab:blue", alpha=0.6, label="recall in biographies")
    axes[1].axvline(numbers["attention_half_step"], color="tab:purple", ls=":", lw=1, label="half of the attention's rise")
    axes[1].axvline(numbers["recall_half_step"], color="tab:blue", ls=":", lw=1, label="recall 0.5")
    axes[1].set_xscale("symlog", linthresh=50)
    axes[1].set_xlim(0, steps[-1])
    axes[1].set_xlabel("step (checkpoints)")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8)
    axes[1].set_title("the last token's attention to the name forms before recall", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{NAME}: training dynamics (Zucchet et al. 2025)", fontsize=11)
    return FigureResult(
        "facts_bio_dynamics", save(fig, "facts_bio_dynamics", out_dir), numbers,
        f"Zucchet et al. 2025: recall follows a plateau during which the attention-based recall circuit forms. In {NAME} "
        f"the loss sits near the no-knowledge level for {numbers['plateau_steps']:.0f} steps; layer {layer}'s attention to "
        f"the name is half-formed by step {numbers['attention_half_step']:.0f}, recall passes 0.5 at step "
        f"{numbers['recall_half_step']:.0f}.",
    )

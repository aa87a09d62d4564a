"""Figures of the ``smollm2-induction`` card: induction heads in a pretrained model (Olsson et al. 2022).

Head detector scores of every head on held-out repeated word tokens, the loss by position with the
induction heads mean-ablated beside random heads, and K-composition scores of the previous-token →
induction head pairs against random head pairs (Elhage et al. 2021). The numbers are the card's
measurements (`interp.circuits.smollm2_induction`), shared through one `Subject` inside `reproduce`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from interp.figures.base import FigureResult, register, save
from interp.figures.base import subject_of as _subject
from interp.models import HookedModel

NAME = "smollm2-135m"


@register
def smollm2_induction_heads(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """Previous-token and induction scores of all 270 heads (layer × head) on held-out sequences."""
    from interp.circuits import smollm2_induction as card

    s = _subject(model)
    scores = card._scores(s, "held_out")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    for ax, key, title in ((axes[0], "prev", "previous-token score"), (axes[1], "induction", "induction score")):
        image = ax.imshow(scores[key].numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(s.model.n_heads))
        ax.set_yticks(range(0, s.model.n_layers, 5))
        for a, h in card.heads_at_least(scores[key], card.MARKED):
            ax.text(h, a, f"{float(scores[key][a, h]):.2f}", ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"{NAME}: attention-head detectors on {card.N_HELD_OUT} held-out sequences BOS r r (|r| = {card.HALF} "
                 f"word tokens)", fontsize=11)
    prev, ind = card.measure_previous_token_heads(s), card.measure_induction_heads(s)
    numbers = {**{f"prev_{k}": v for k, v in prev.items()}, **{f"induction_{k}": v for k, v in ind.items()}}
    return FigureResult(
        "smollm2_induction_heads", save(fig, "smollm2_induction_heads", out_dir), numbers,
        f"Olsson et al. 2022 find previous-token and induction heads in every multi-layer transformer. In {NAME} "
        f"{int(prev['n_marked'])} heads score ≥ {card.MARKED} as previous-token heads (best L{int(prev['best_layer'])}"
        f"H{int(prev['best_head'])}, {prev['best_score']:.2f}) and {int(ind['n_marked'])} as induction heads (best "
        f"L{int(ind['best_layer'])}H{int(ind['best_head'])}, {ind['best_score']:.2f}); every head scoring ≥ "
        f"{card.INDUCTION_SET} as an induction head sits in layer {ind['first_layer']:.0f} or later.",
    )


@torch.no_grad()
def _loss_by_position(model, tokens, heads) -> np.ndarray:
    """Mean next-token loss at each position, with ``heads`` mean-ablated (none: clean)."""
    from interp.circuits.smollm2_induction import mean_ablation_losses  # noqa: F401  (same edit as the claim)
    from interp.interventions import Replace
    from interp.sites import Site

    def nll(logits):
        return -logits[:, :-1].float().log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0].mean(0).numpy()

    if not heads:
        return nll(model(tokens))
    layers = sorted({a for a, _ in heads})
    _, cache = model.run_with_cache(tokens, [Site("z", a) for a in layers])
    edits = {Site("z", a, head=h): Replace(cache[Site("z", a)][:, :, h].mean(0, keepdim=True).expand_as(cache[Site("z", a)][:, :, h]))
             for a, h in heads}
    with model.edit(edits):
        return nll(model(tokens))


@register
def smollm2_induction_ablation(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """Loss at each position of the held-out sequences: clean, induction heads mean-ablated, and as
    many random heads (first control draw) mean-ablated."""
    from interp.circuits import smollm2_induction as card

    s = _subject(model)
    chosen = card.chosen_heads(s)
    control = card.control_sets(s.model.n_layers, s.model.n_heads, chosen["induction"] + chosen["prev_weak"],
                                len(chosen["induction"]), card.N_CONTROL_DRAWS)[0]
    tokens = card._held_out(s)
    curves = {"clean": _loss_by_position(s.model, tokens, []),
              f"{len(chosen['induction'])} induction heads ablated": _loss_by_position(s.model, tokens, chosen["induction"]),
              f"{len(control)} random heads ablated": _loss_by_position(s.model, tokens, control)}
    numbers = card.measure_ablation(s)
    fig, ax = plt.subplots(figsize=(9, 4), constrained_layout=True)
    x = np.arange(1, tokens.shape[1])
    for (label, curve), style in zip(curves.items(), ({"color": "k"}, {"color": "tab:red"}, {"color": "tab:gray", "ls": "--"}), strict=True):
        ax.plot(x, curve, marker=".", label=label, **style)
    ax.axvline(card.HALF + 0.5, color="k", lw=0.8, ls=":")
    ax.text(card.HALF / 2, ax.get_ylim()[1] * 0.95, "first copy", ha="center", fontsize=9)
    ax.text(1.5 * card.HALF, ax.get_ylim()[1] * 0.95, "repeated copy", ha="center", fontsize=9)
    ax.set_xlabel("position of the predicted token")
    ax.set_ylabel("loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left")
    ax.set_title(f"{NAME}: mean-ablating the induction heads ({', '.join(card.name(h) for h in chosen['induction'])})",
                 fontsize=9)
    return FigureResult(
        "smollm2_induction_ablation", save(fig, "smollm2_induction_ablation", out_dir), numbers,
        f"In-context gain (first-half loss − repeated-half loss) {numbers['gain_clean']:.2f} nats; mean-ablating the "
        f"{int(numbers['n_heads'])} induction heads removes {100 * numbers['removed']:.0f}% of it, as many random heads "
        f"{100 * numbers['control_removed_mean']:.1f}% on average.",
    )


@register
def smollm2_induction_composition(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """K-composition scores: random head pairs (histogram) against each induction head's best
    previous-token sender, with the same pairs' Q-composition; and the key path in the forward pass
    (the induction score with the previous-token heads ablated, through the keys or the queries alone)."""
    from interp.circuits import smollm2_induction as card

    s = _subject(model)
    m, chosen = s.model, card.chosen_heads(s)
    mats = s.memo("head_matrices", lambda: card.head_matrices(m))
    random_k = card.composition_score_pairs(mats, card.random_pairs(m.n_layers, m.n_heads, card.N_RANDOM_PAIRS)).numpy()
    pairs = []
    for receiver in chosen["induction"]:
        senders = [p for p in chosen["prev"] if p[0] < receiver[0]]
        if senders:
            k = card.composition_score_pairs(mats, [(p, receiver) for p in senders])
            pairs.append((senders[int(k.argmax())], receiver))
    k_scores = card.composition_score_pairs(mats, pairs).numpy() if pairs else np.zeros(0)
    q_scores = card.composition_score_pairs(mats, pairs, "Q").numpy() if pairs else np.zeros(0)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4), constrained_layout=True, gridspec_kw={"width_ratios": [1, 1.4, 0.7]})
    axes[0].hist(random_k, bins=40, color="tab:gray", alpha=0.7, label=f"{card.N_RANDOM_PAIRS} random head pairs (K)")
    for v in k_scores:
        axes[0].axvline(v, color="tab:red", lw=1)
    axes[0].axvline(np.quantile(random_k, 0.99), color="k", ls=":", label="random pairs' 99th percentile")
    axes[0].set_xlabel("K-composition score")
    axes[0].set_ylabel("pairs")
    axes[0].legend(fontsize=8)
    axes[0].set_title("red: each induction head's best previous-token sender", fontsize=9)
    labels = [f"{card.name(p)}→{card.name(r)}" for p, r in pairs]
    x = np.arange(len(pairs))
    axes[1].bar(x - 0.2, k_scores, 0.4, color="tab:red", label="K-composition")
    axes[1].bar(x + 0.2, q_scores, 0.4, color="tab:blue", label="Q-composition")
    axes[1].axhline(random_k.mean(), color="k", ls="--", lw=1, label="random pairs (mean)")
    axes[1].set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    axes[1].legend(fontsize=8)
    axes[1].set_ylabel("composition score")
    path = card.measure_key_path(s)
    runs = {"clean": path["clean"], "prev-token\nheads ablated": path["ablated"], "keys from\nablated run": path["keys"],
            "queries from\nablated run": path["queries"]}
    axes[2].bar(range(4), list(runs.values()), color=["k", "tab:gray", "tab:red", "tab:blue"])
    axes[2].set_xticks(range(4), list(runs), fontsize=7)
    axes[2].set_ylabel("induction heads' mean induction score")
    axes[2].set_title("the forward pass: keys carry the effect", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{NAME}: previous-token heads compose with the induction heads' keys (weights: grouped-query, RMSNorm "
                 f"folded, rotary left out; right: held-out sequences)", fontsize=10)
    numbers = {**card.measure_k_composition(s), **{f"key_path_{k}": v for k, v in path.items()}}
    return FigureResult(
        "smollm2_induction_composition", save(fig, "smollm2_induction_composition", out_dir), numbers,
        f"Elhage et al. 2021: an induction head reads the previous-token head's output through its keys. Each induction "
        f"head's best previous-token sender composes at {numbers['prev_k_mean']:.3f} on average, {numbers['ratio']:.1f} × "
        f"the random pairs' mean; the same pairs through the queries {numbers['prev_q_mean']:.3f}. Ablating the previous-token "
        f"heads lowers the induction score {path['clean']:.2f} → {path['ablated']:.2f}; the keys alone carry "
        f"{100 * path['key_share']:.0f}% of that drop, the queries {100 * path['query_share']:.0f}%.",
    )

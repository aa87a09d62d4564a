"""Figures of the induction model: its training curves and its heads' attention patterns."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from interp import zoo
from interp.figures.base import FigureResult, register, save
from interp.heads import attention_patterns, induction_scores, previous_token_scores
from interp.models import HookedModel
from interp.tasks.induction import repeated_tokens

NAME = "induction-2l"


@register
def induction_training(out_dir: str | Path | None = None, model: str = NAME) -> FigureResult:
    """Loss and accuracy on the first and the repeated half of ``BOS r r`` against training step."""
    history = json.loads((zoo.model_dir(model) / "history.json").read_text())["history"]
    steps = np.array([h["step"] for h in history])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for key, label, colour in [("first_half", "first half (unpredictable)", "tab:gray"), ("repeated_half", "repeated half (induction)", "tab:blue")]:
        ax_loss.plot(steps, [h[f"loss_{key}"] for h in history], label=label, color=colour)
        ax_acc.plot(steps, [h[f"acc_{key}"] for h in history], label=label, color=colour)
    ax_loss.axhline(np.log(63), ls="--", color="k", lw=0.8, label="uniform guess, ln 63")
    chance = 1 / 63
    ax_acc.axhline(chance, ls="--", color="k", lw=0.8, label="chance, 1/63")
    for ax, ylabel in [(ax_loss, "next-token loss (nats)"), (ax_acc, "top-1 accuracy")]:
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    ax_acc.set_ylim(0, 1.02)
    fig.suptitle(f"{model}: in-context learning appears abruptly (sequences BOS r r, |r| = 23)", fontsize=12)
    final = history[-1]
    jump = int(steps[np.argmax(np.diff([h["acc_repeated_half"] for h in history])) + 1])
    return FigureResult(
        "induction_training", save(fig, "induction_training", out_dir),
        {"final_acc_repeated_half": final["acc_repeated_half"], "final_acc_first_half": final["acc_first_half"], "steepest_rise_step": float(jump)},
        "Loss and accuracy on held-out repeated random sequences during training. The repeated half "
        "becomes predictable in a short window of steps, while the first half stays at chance.",
    )


@register
def induction_attention(out_dir: str | Path | None = None, model: str | HookedModel = NAME, half: int = 12, seed: int = 0) -> FigureResult:
    """Every head's attention pattern on one ``BOS r r`` sequence, with previous-token and induction scores."""
    m = zoo.load_model(model) if isinstance(model, str) else model
    tokens = repeated_tokens(1, half, m.d_vocab, seed=seed)
    patterns = attention_patterns(m, tokens)[:, :, 0]  # [layer head q k]
    many = attention_patterns(m, repeated_tokens(100, half, m.d_vocab, seed=seed + 1))
    prev, ind = previous_token_scores(many), induction_scores(many, half)
    labels = m.to_str_tokens(tokens[0])
    fig, axes = plt.subplots(m.n_layers, m.n_heads, figsize=(3.2 * m.n_heads, 3.4 * m.n_layers), constrained_layout=True)
    axes = np.atleast_2d(axes)
    for layer in range(m.n_layers):
        for head in range(m.n_heads):
            ax = axes[layer, head]
            im = ax.imshow(patterns[layer, head].numpy(), cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"L{layer}H{head}  prev {prev[layer, head]:.2f}  ind {ind[layer, head]:.2f}", fontsize=9)
            ticks = np.arange(len(labels))
            ax.set_xticks(ticks[::2], labels[::2], rotation=90, fontsize=6)
            ax.set_yticks(ticks[::2], labels[::2], fontsize=6)
            if head == 0:
                ax.set_ylabel("query token")
            if layer == m.n_layers - 1:
                ax.set_xlabel("key token")
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle(f"Attention patterns of {getattr(m, 'name', 'model')} on a repeated random sequence (scores: mean over 100 sequences)", fontsize=11)
    numbers = {f"prev_token_L{a}H{h}": float(prev[a, h]) for a in range(m.n_layers) for h in range(m.n_heads)}
    numbers |= {f"induction_L{a}H{h}": float(ind[a, h]) for a in range(m.n_layers) for h in range(m.n_heads)}
    best_prev = divmod(int(prev.argmax()), m.n_heads)
    best_ind = divmod(int(ind.argmax()), m.n_heads)
    return FigureResult(
        "induction_attention", save(fig, "induction_attention", out_dir), numbers,
        f"Attention patterns of every head on one repeated random sequence. Strongest previous-token "
        f"head: L{best_prev[0]}H{best_prev[1]} ({prev.max():.2f}); strongest induction head: "
        f"L{best_ind[0]}H{best_ind[1]} ({ind.max():.2f}).",
    )




def checkpoint_scores(model: str = NAME, half: int = 20, n: int = 100, seed: int = 11) -> dict[str, np.ndarray]:
    """Per shipped checkpoint: the best induction and previous-token head scores and the
    in-context-learning score (loss on the repeated half minus loss on the first half)."""
    from interp.tasks.induction import induction_metrics

    tokens = repeated_tokens(n, half, 64, seed=seed)
    steps = zoo.checkpoint_steps(model)
    rows = []
    for step in steps:
        m = zoo.load_model(model, step=step)
        patterns = attention_patterns(m, tokens)
        metrics = induction_metrics(m, tokens, half)
        rows.append((induction_scores(patterns, half).max().item(), previous_token_scores(patterns).max().item(), metrics["icl_score"]))
    arr = np.array(rows)
    return {"step": np.array(steps), "induction": arr[:, 0], "prev_token": arr[:, 1], "icl": arr[:, 2]}


@register
def induction_phase_change(out_dir: str | Path | None = None, model: str = NAME) -> FigureResult:
    """Olsson et al. 2022: induction-head score and in-context-learning score change together."""
    s = checkpoint_scores(model)
    steps = np.maximum(s["step"], 1)
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    ax.plot(steps, s["induction"], "o-", color="tab:blue", label="best induction-head score")
    ax.plot(steps, s["prev_token"], "s-", color="tab:green", label="best previous-token score")
    ax.set_xscale("log")
    ax.set_xlabel("training step (log scale; step 0 drawn at 1)")
    ax.set_ylabel("attention score (0-1)")
    ax.set_ylim(0, 1.02)
    twin = ax.twinx()
    twin.plot(steps, s["icl"], "^--", color="tab:red", label="ICL score (right axis)")
    twin.set_ylabel("ICL score: loss(repeated) - loss(first half), nats")
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="center left", fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_title(f"{model}: induction heads form as in-context learning appears\n(scores from the shipped checkpoints, repeated random tokens)", fontsize=11)
    # The window where each quantity makes half of its total change.
    def half_way(values: np.ndarray) -> float:
        target = values[0] + 0.5 * (values[-1] - values[0])
        crossed = np.nonzero((values - target) * np.sign(values[-1] - values[0]) >= 0)[0]
        return float(s["step"][crossed[0]])

    numbers = {"induction_half_step": half_way(s["induction"]), "icl_half_step": half_way(s["icl"]),
               "final_induction": float(s["induction"][-1]), "final_icl": float(s["icl"][-1])}
    return FigureResult(
        "induction_phase_change", save(fig, "induction_phase_change", out_dir), numbers,
        "Olsson et al. 2022 report that induction heads and in-context learning appear together in a "
        f"phase change. In our checkpoints the induction score passes half its final value at step "
        f"{numbers['induction_half_step']:.0f} and the ICL score at step {numbers['icl_half_step']:.0f}.",
    )


@register
def induction_head_scores(out_dir: str | Path | None = None, model: str | HookedModel = NAME, half: int = 20, seed: int = 12) -> FigureResult:
    """Elhage et al. 2021: previous-token, induction and duplicate-token scores of every head."""
    from interp.heads import duplicate_token_scores

    m = zoo.load_model(model) if isinstance(model, str) else model
    patterns = attention_patterns(m, repeated_tokens(100, half, m.d_vocab, seed=seed))
    grids = {"previous-token": previous_token_scores(patterns), "induction": induction_scores(patterns, half),
             "duplicate-token": duplicate_token_scores(patterns, half)}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    for ax, (name, grid) in zip(axes, grids.items(), strict=True):
        im = ax.imshow(grid.numpy(), cmap="Blues", vmin=0, vmax=1)
        for (layer, head), value in np.ndenumerate(grid.numpy()):
            ax.text(head, layer, f"{value:.2f}", ha="center", va="center", fontsize=9, color="white" if value > 0.6 else "black")
        ax.set_title(f"{name} score")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(m.n_heads))
        ax.set_yticks(range(m.n_layers))
    fig.colorbar(im, ax=axes, shrink=0.8, label="mean attention on the target token")
    fig.suptitle(f"Head scores of {getattr(m, 'name', 'model')} on 100 repeated random sequences (|r| = {half})", fontsize=11)
    numbers = {f"{name}_L{layer}H{head}": float(v) for name, g in grids.items() for (layer, head), v in np.ndenumerate(g.numpy())}
    return FigureResult(
        "induction_head_scores", save(fig, "induction_head_scores", out_dir), numbers,
        "Elhage et al. 2021: a previous-token head in layer 0 composes with induction heads in layer 1. "
        "Each cell is a head's mean attention on the detector's target token.",
    )


@register
def induction_circuit(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """The induction card's evidence: K-composition, head ablations and path patching, in three panels."""
    from interp.circuits import Subject
    from interp.circuits import induction as card
    from interp.heads import composition_scores

    m = zoo.load_model(model) if isinstance(model, str) else model
    subject = Subject(m)
    kcomp = composition_scores(m, "K")[0, :, 1, :].numpy()
    ablation = card.measure_ablation(subject)
    path = card.measure_key_path(subject)
    prev = card._names(card._marked(card._scores(subject)["prev"]))
    ind = card._names(card._marked(card._scores(subject)["induction"]))

    fig, (ax_k, ax_a, ax_p) = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True, gridspec_kw={"wspace": 0.08})
    im = ax_k.imshow(kcomp, cmap="Blues", vmin=0)
    for (i, j), v in np.ndenumerate(kcomp):
        ax_k.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=9, color="white" if v > 0.6 * kcomp.max() else "black")
    ax_k.set_xticks(range(m.n_heads), [f"L1H{h}" for h in range(m.n_heads)])
    ax_k.set_yticks(range(m.n_heads), [f"L0H{h}" for h in range(m.n_heads)])
    ax_k.set_xlabel("receiver head (layer 1, its keys)")
    ax_k.set_ylabel("sender head (layer 0)")
    ax_k.set_title("K-composition score")
    fig.colorbar(im, ax=ax_k, shrink=0.8, label="score (0-1)")

    bars = {"none": ablation["ratio_clean"],
            f"induction\nheads ({int(ablation['n_induction'])})": ablation["ratio_induction_ablated"],
            f"prev-token\nheads ({int(ablation['n_prev'])})": ablation["ratio_prev_ablated"],
            f"unmarked\nheads ({int(ablation['n_other'])})": ablation["ratio_other_ablated"]}
    ax_a.bar(range(len(bars)), list(bars.values()), color=["tab:gray", "tab:red", "tab:orange", "tab:blue"])
    ax_a.set_xticks(range(len(bars)), list(bars), fontsize=9)
    ax_a.axhline(0.8, ls="--", color="k", lw=0.8, label="within 20% of first-half loss")
    ax_a.axhline(1.0, ls=":", color="k", lw=0.8)
    ax_a.set_ylabel("loss(repeated half) / loss(first half)")
    ax_a.set_xlabel("heads mean-ablated")
    ax_a.set_title("Ablation: which heads does induction need?")
    ax_a.legend(fontsize=8, loc="upper right")

    parts = {"all paths\n(total)": path["total"], "into induction\nkeys": path["k"], "into induction\nqueries": path["q"],
             "into induction\nvalues": path["v"]}
    ax_p.bar(range(len(parts)), list(parts.values()), color=["tab:gray", "tab:red", "tab:blue", "tab:green"])
    ax_p.set_xticks(range(len(parts)), list(parts), fontsize=9)
    ax_p.axhline(0, color="k", lw=0.8)
    ax_p.set_ylabel("Δ log p(answer) when patched (nats)")
    ax_p.set_xlabel("path from the previous-token heads")
    ax_p.set_title("Path patching (noising)")
    fig.suptitle(f"{getattr(m, 'name', 'model')}: the previous-token heads feed the induction heads' keys", fontsize=12)
    numbers = {"kcomp_max": float(kcomp.max()), **{f"ablation_{k}": float(v) for k, v in ablation.items()},
               **{f"path_{k}": float(v) for k, v in path.items()}}
    return FigureResult(
        "induction_circuit", save(fig, "induction_circuit", out_dir), numbers,
        "Elhage et al. 2021: induction heads read, through their keys, what previous-token heads wrote. "
        f"Mean-ablating the induction heads ({ind}) brings the repeated-half loss to "
        f"{ablation['ratio_induction_ablated']:.2f} × the first-half loss, ablating the previous-token heads ({prev}) to "
        f"{ablation['ratio_prev_ablated']:.2f} ×; the path into the induction heads' keys carries "
        f"{100 * path['share_k']:.0f}% of the previous-token heads' effect.",
    )

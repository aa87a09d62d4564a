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



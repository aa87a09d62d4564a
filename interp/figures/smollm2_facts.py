"""Figures of fact recall in SmolLM2-135M (Meng et al. 2022) and beside ``facts-bio``.

The traces come from the card's stored measurement (``assets/cards/smollm2-facts/held_out.json``,
made by ``python -m interp.circuits.smollm2_facts --measure``), so they draw in seconds; the probe
curve and facts-bio's traces are measured (the card's own functions, `interp.circuits.smollm2_facts`
and `interp.circuits.facts_bio`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from interp.figures.base import FigureResult, register, save
from interp.figures.base import subject_of as _subject
from interp.models import HookedModel

NAME, PEER = "smollm2-135m", "facts-bio"


def _mean_and_error(data: dict, kind: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the stored facts and its standard error, by layer."""
    values = np.array([f["effects"][kind][where] for f in data["facts"]])
    return values.mean(0), values.std(0, ddof=1) / np.sqrt(len(values))


@register
def smollm2_facts_trace(out_dir: str | Path | None = None) -> FigureResult:
    """Meng et al. 2022 Figure 2 on SmolLM2-135M: average indirect effects by layer of restoring the MLPs
    (window 6) at the last subject token and at the last token, and attention at the last token."""
    from interp.circuits import smollm2_facts as card

    data = card.stored()
    layers = np.arange(data["n_layers"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.9), constrained_layout=True, sharey=True)
    lines = (("mlp", card.LAST_SUBJECT, "MLPs at the last subject token", "tab:green", "-"),
             ("mlp", card.LAST, "MLPs at the last token", "tab:green", "--"),
             ("resid", card.LAST_SUBJECT, "residual at the last subject token", "tab:purple", ":"))
    for kind, where, label, color, style in lines:
        mean, err = _mean_and_error(data, kind, where)
        axes[0].plot(layers, mean, color=color, ls=style, marker="o", ms=3, label=label)
        axes[0].fill_between(layers, mean - err, mean + err, color=color, alpha=0.15)
    mean, err = _mean_and_error(data, "attn", card.LAST)
    axes[1].plot(layers, mean, color="tab:red", marker="o", ms=3, label="attention at the last token")
    axes[1].fill_between(layers, mean - err, mean + err, color="tab:red", alpha=0.15)
    for ax, title in zip(axes, ("enrichment: MLPs", "extraction: attention"), strict=True):
        ax.axvline(data["n_layers"] / 2 - 0.5, color="k", lw=0.8, ls=":")
        ax.set_xlabel(f"layer (centre of a {data['window']}-layer window for MLP / attention)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("average indirect effect Δp(answer) ± s.e.")
    subject_mlp = card.mean_effect(data, "mlp", card.LAST_SUBJECT)
    fig.suptitle(f"SmolLM2-135M: causal tracing of {len(data['facts'])} held-out known facts "
                 f"(noise {data['noise']:g}σ on the subject, {data['samples']} samples each)", fontsize=11)
    numbers = {f"{k}_{w.replace(' ', '_')}_L{layer}": float(v) for k, w, *_ in (*lines, ("attn", card.LAST))
               for layer, v in enumerate(_mean_and_error(data, k, w)[0])}
    return FigureResult(
        "smollm2_facts_trace", save(fig, "smollm2_facts_trace", out_dir), numbers,
        f"Meng et al. 2022 find MLP effects at the last subject token in early-middle layers and attention effects at the "
        f"last token later. In SmolLM2-135M the subject's MLPs peak at layer {int(subject_mlp.argmax())} ({subject_mlp.max():.3f}) "
        f"and the last token's attention at layer {int(np.argmax(mean))} ({mean.max():.3f}).",
    )


@register
def smollm2_facts_severed(out_dir: str | Path | None = None) -> FigureResult:
    """Meng et al. 2022 Figure 3 on SmolLM2-135M: the residual stream restored at the last subject token,
    plain and with that token's MLPs in every later layer frozen at their corrupted values."""
    from interp.circuits import smollm2_facts as card

    data = card.stored()
    layers = np.array(data["severed_layers"])
    plain = card.mean_effect(data, "resid", card.LAST_SUBJECT)[layers]
    cut = card.mean_severed(data, "mlp")
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    ax.bar(layers - 0.4, plain, width=0.8, color="tab:purple", label="residual restored")
    ax.bar(layers + 0.4, cut, width=0.8, color="tab:green", label="... with the later MLPs at this token severed")
    ax.set_xticks(layers)
    ax.set_xlabel("layer of the restored residual state (last subject token)")
    ax.set_ylabel("average indirect effect Δp(answer)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(0, 1.3 * max(plain.max(), cut.max()))
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"SmolLM2-135M: severing the MLP path ({len(data['facts'])} held-out facts)", fontsize=10)
    numbers = {f"plain_L{int(layer)}": float(p) for layer, p in zip(layers, plain, strict=True)}
    numbers |= {f"severed_L{int(layer)}": float(c) for layer, c in zip(layers, cut, strict=True)}
    return FigureResult(
        "smollm2_facts_severed", save(fig, "smollm2_facts_severed", out_dir), numbers,
        f"Meng et al. 2022: with the MLPs severed, early residual states at the last subject token lose most of their "
        f"effect. In SmolLM2-135M the mean over layers {int(layers[0])}-{int(layers[-1])} goes from {plain.mean():.4f} "
        f"to {cut.mean():.4f}.",
    )


@register
def smollm2_facts_vs_bio(out_dir: str | Path | None = None, peer: str | HookedModel = PEER) -> FigureResult:
    """The two stages in SmolLM2-135M (30 layers, stored trace) beside facts-bio (4 layers, its card's
    trace), on a relative depth axis (layer centre / number of layers)."""
    from interp.circuits import facts_bio
    from interp.circuits import smollm2_facts as card

    data = card.stored()
    theirs = facts_bio.traces(_subject(peer))
    L, L_bio = data["n_layers"], len(theirs["mlp"][facts_bio.LAST])
    x, x_bio = (np.arange(L) + 0.5) / L, (np.arange(L_bio) + 0.5) / L_bio
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.9), constrained_layout=True)
    ours_mlp = card.mean_effect(data, "mlp", card.LAST_SUBJECT)
    ours_attn = card.mean_effect(data, "attn", card.LAST)
    for ax, ours, bio, title in ((axes[0], ours_mlp, theirs["mlp"][facts_bio.LAST_SUBJECT], "MLPs at the last subject token"),
                                 (axes[1], ours_attn, theirs["attn"][facts_bio.LAST], "attention at the last token")):
        ax.plot(x, ours / max(ours.max(), 1e-9), marker="o", ms=3, color="tab:blue", label=f"SmolLM2-135M (peak {ours.max():.3f})")
        ax.plot(x_bio, bio / max(bio.max(), 1e-9), marker="s", color="tab:gray", label=f"{PEER} (peak {bio.max():.3f})")
        ax.axvline(0.5, color="k", lw=0.8, ls=":")
        ax.set_xlim(0, 1)
        ax.set_xlabel("relative depth (layer centre / layers)")
        ax.set_ylabel("indirect effect / its peak")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("ROME's two stages in a pretrained 30-layer model and in a 4-layer model trained on biographies", fontsize=11)
    numbers = {"smollm2_mlp_peak_depth": float(x[ours_mlp.argmax()]), "smollm2_attn_peak_depth": float(x[ours_attn.argmax()]),
               "bio_mlp_peak_depth": float(x_bio[np.argmax(theirs["mlp"][facts_bio.LAST_SUBJECT])]),
               "bio_attn_peak_depth": float(x_bio[np.argmax(theirs["attn"][facts_bio.LAST])])}
    return FigureResult(
        "smollm2_facts_vs_bio", save(fig, "smollm2_facts_vs_bio", out_dir), numbers,
        "Enrichment before extraction in both models: the subject's MLPs peak at relative depth "
        f"{numbers['smollm2_mlp_peak_depth']:.2f} (SmolLM2) and {numbers['bio_mlp_peak_depth']:.2f} ({PEER}), attention at "
        f"the last token at {numbers['smollm2_attn_peak_depth']:.2f} and {numbers['bio_attn_peak_depth']:.2f}.",
    )


@register
def smollm2_facts_probe(out_dir: str | Path | None = None, model: str | HookedModel = NAME) -> FigureResult:
    """A linear probe for the subject's country at its last token, by layer (every second block),
    trained on the training subjects and scored on the held-out ones."""
    from interp.circuits import smollm2_facts as card

    s = _subject(model)
    layers = list(range(0, s.model.n_layers, 2)) + ([card.PROBE_LAYER] if card.PROBE_LAYER % 2 else [])
    p = card.probe_accuracy(s.model, sorted(layers))
    labels = ["embed", *(str(layer) for layer in p["sites"][1:])]
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    ax.plot(range(len(labels)), p["accuracy"], marker="o", color="tab:blue", label="country probe (held-out subjects)")
    ax.axhline(p["majority"], color="k", lw=0.8, ls=":", label=f"majority country ({p['majority']:.2f})")
    ax.axvline(labels.index(str(card.PROBE_LAYER)), color="tab:orange", lw=0.8, ls="--", label="the card's site")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("residual stream after block")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"SmolLM2-135M: the country at the last token of `<bos> Subject` ({p['n_train']} training, "
                 f"{p['n_test']} held-out subjects, {p['n_classes']} countries)", fontsize=10)
    numbers = {f"probe_{label}": float(a) for label, a in zip(labels, p["accuracy"], strict=True)}
    return FigureResult(
        "smollm2_facts_probe", save(fig, "smollm2_facts_probe", out_dir), numbers,
        f"The country of a held-out subject is linearly decodable at its last token: best {max(p['accuracy']):.2f} "
        f"(embeddings {p['accuracy'][0]:.2f}, majority {p['majority']:.2f}).",
    )

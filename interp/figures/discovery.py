"""Figures of automatic circuit discovery (`patching.discovery`): faithfulness curves on the three
shipped models, and the circuit discovered in induction-2l."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from interp.circuits import discovered
from interp.figures.base import FigureResult, register, save, subject_of


def _cases():
    """(model, title, prompts of the card's ``discovered`` claim, memo key) per shipped model."""
    from interp.circuits import facts as facts_card
    from interp.circuits.binding import DISCOVERY_SEED, DISCOVERY_SIZE
    from interp.circuits.induction import N_DISCOVERY, key_path_prompts
    from interp.tasks import binding

    return [
        ("induction-2l", "induction-2l (key-path prompts)", lambda s: key_path_prompts(N_DISCOVERY, s.model.d_vocab), "induction_key_path"),
        ("facts-4l", "facts-4l (born_in, 50 subjects)", facts_card._discovery_prompts, "facts"),
        ("binding-4l", "binding-4l (3 pairs, 50 prompts)",
         lambda s: binding.binding_prompts(50, DISCOVERY_SIZE, seed=DISCOVERY_SEED), "binding"),
    ]


@register
def discovery_faithfulness(out_dir: str | Path | None = None) -> FigureResult:
    """Faithfulness of the top-k circuits by EAP, EAP-IG and exact edge scores against k, per shipped model."""
    from patching import discovery, logit_diff

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    numbers = {}
    for ax, (model, title, make, key) in zip(axes, _cases(), strict=True):
        s = subject_of(model)
        prompts = make(s)
        d = discovered(s, prompts, key)
        scores = [d["scores"][m] for m in discovery.METHODS]
        n = scores[0].graph.n_edges
        ks = sorted({round(n * f) for f in (0, 0.02, 0.05, 0.1, 0.15, 0.3, 0.4, 0.6, 0.8, 1.0)} | {n // 5})
        curve = discovery.faithfulness_curve(s.model, prompts, logit_diff, scores, ks=ks)
        discovery.plot_faithfulness_curve(curve, ax=ax, title=f"{title}: {n} edges")
        ax.set_ylim(-0.1, 1.15)
        for method, part in curve.groupby("method"):
            at = part[part["k"] == n // 5]["faithfulness"]
            numbers[f"{model} {method} faithfulness at 20%"] = float(at.iloc[0])
        for m in ("eap", "eap_ig"):
            numbers[f"{model} spearman {m} vs exact"] = d["spearman"][m]
    fig.suptitle("Faithfulness of top-k edge circuits (0 = every edge patched to corrupted, 1 = clean)", fontsize=12)
    return FigureResult(
        "discovery_faithfulness", save(fig, "discovery_faithfulness", out_dir), numbers,
        "Faithfulness (logit difference normalised, 0 corrupted, 1 clean) of the circuit of the k edges of largest "
        "|score| by EAP, EAP-IG (5 steps) and exact edge patching, on each card's discovery prompts. Exact and EAP-IG "
        "circuits need about 20% of the edges for 0.9 in induction-2l and facts-4l, about 6% in binding-4l; EAP lags on "
        "induction-2l's key-path prompts.",
    )


@register
def discovery_induction_circuit(out_dir: str | Path | None = None) -> FigureResult:
    """The top-20% exact-score circuit of induction-2l on the key-path prompts."""
    from patching import discovery, logit_diff

    model, title, make, key = _cases()[0]
    s = subject_of(model)
    prompts = make(s)
    exact = discovered(s, prompts, key)["scores"]["exact"]
    circuit = exact.circuit(k=exact.graph.n_edges // 5)
    value = float(discovery.faithfulness(s.model, prompts, logit_diff, [circuit])[0])
    fig = circuit.draw(title=f"induction-2l: top {circuit.n_edges} of {exact.graph.n_edges} edges by exact edge patching "
                             f"(faithfulness {value:.2f})")
    fig.set_size_inches(9, 3.6)
    kinds = [name.rsplit(".", 1)[-1] for name in circuit.edge_names if "->" in name]
    return FigureResult(
        "discovery_induction_circuit", save(fig, "discovery_induction_circuit", out_dir),
        {"edges": float(circuit.n_edges), "faithfulness": value, "key_edges": float(sum(k == "k" for k in kinds))},
        "The circuit discovered in induction-2l on the key-path prompts (the token before the answer's first copy "
        "corrupted): the previous-token heads read the embeddings (values) and write into the induction heads' keys "
        "(K-composition), and the induction heads write the answer to the logits. Edge width: |exact score|.",
    )

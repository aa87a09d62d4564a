"""Figures of the smollm2-ioi card: the IOI circuit in SmolLM2-135M (Wang et al. 2022), measured on
held-out templates.

Drawn in seconds from the card's stored sweeps (`interp.circuits.smollm2_ioi.STORED`, made by
``python -m interp.circuits.smollm2_ioi --measure``); no model is loaded.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from interp.figures.base import FigureResult, register, save

ROLES = {  # role -> (heads, colour), from the card module
    "S-suppression": ("S_SUPPRESSOR", "tab:red"),
    "name mover": ("NAME_MOVERS", "tab:blue"),
    "negative name mover": ("NEGATIVE_NAME_MOVER", "tab:purple"),
    "S-inhibition": ("S_INHIBITION", "tab:orange"),
    "duplicate / induction": ("DUPLICATE_INDUCTION", "tab:green"),
}


def _roles() -> dict[tuple[int, int], tuple[str, str]]:
    """head -> (role, colour) of the card's hand-found heads."""
    from interp.circuits import smollm2_ioi as card

    out = {}
    for role, (attr, colour) in ROLES.items():
        heads = getattr(card, attr)
        for head in [heads] if isinstance(heads[0], int) else heads:
            out[tuple(head)] = (role, colour)
    return out


def _heatmap(ax, values: np.ndarray, title: str, cmap: str = "RdBu", mark: bool = True, label: str = ""):
    bound = float(np.abs(values).max()) or 1.0
    im = ax.imshow(values.T, aspect="auto", cmap=cmap, vmin=-bound, vmax=bound, origin="lower")
    ax.set_xlabel("layer")
    ax.set_ylabel("head")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(0, values.shape[0], 5))
    ax.set_yticks(range(values.shape[1]))
    if mark:
        for (layer, head), (_, colour) in _roles().items():
            if layer < values.shape[0]:
                ax.add_patch(plt.Rectangle((layer - 0.5, head - 0.5), 1, 1, fill=False, ec=colour, lw=1.6))
    ax.figure.colorbar(im, ax=ax, shrink=0.85, label=label)


@register
def smollm2_ioi_heads(out_dir: str | Path | None = None) -> FigureResult:
    """Every head of SmolLM2-135M on the held-out IOI templates: patching effect (z from the ABC
    run), direct effect on the logit difference, OV copying (positive minus negative share), and
    the late heads' attention from END to the IO against S, coloured by role."""
    from interp.circuits import smollm2_ioi as card

    st = card.stored()
    z, direct = np.array(st["z"]), np.array(st["direct"])
    copying = np.array(st["copying"]["positive"]) - np.array(st["copying"]["negative"])
    attention = np.array(st["end_attention"])  # [layer head (io s1 s2)]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2), constrained_layout=True)
    _heatmap(axes[0], z, "patching effect (z from ABC; Δ logit difference)", label="Δ logit diff")
    _heatmap(axes[1], direct, "direct effect on logit diff IO − S at END", label="logit diff")
    _heatmap(axes[2], copying, "OV copying: positive − negative share of names", cmap="PuOr", label="share")
    roles = _roles()
    ax = axes[3]
    late = [(layer, h) for layer in range(20, z.shape[0]) for h in range(z.shape[1])]
    for layer, h in late:
        role, colour = roles.get((layer, h), ("", "0.75"))
        x, y = attention[layer, h, 0], attention[layer, h, 1] + attention[layer, h, 2]
        ax.scatter([x], [y], s=30 + 60 * abs(direct[layer, h]), c=colour, edgecolors="k" if role else "none", zorder=3 if role else 2)
        if role or abs(direct[layer, h]) > 0.3:
            ax.annotate(f"L{layer}H{h}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("attention END → IO")
    ax.set_ylabel("attention END → S (S1 + S2)")
    ax.set_title("heads of layers 20-29 (size: |direct effect|)", fontsize=9)
    for role, (_, colour) in ROLES.items():
        ax.scatter([], [], c=colour, edgecolors="k", label=role)
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"SmolLM2-135M, IOI on held-out templates ({st['prompts']['n']} prompts; clean logit difference "
                 f"{st['clean_logit_diff']:.2f}); boxes: the card's hand-found heads", fontsize=11)
    top = tuple(st["z_top"][0])
    numbers = {"clean_logit_diff": st["clean_logit_diff"], "top_patching_layer": float(top[0]), "top_patching_head": float(top[1]),
               "top_patching_effect": float(z[top]), "L23H3_direct": float(direct[23, 3]), "L24H4_direct": float(direct[24, 4])}
    return FigureResult(
        "smollm2_ioi_heads", save(fig, "smollm2_ioi_heads", out_dir), numbers,
        f"Wang et al. 2022 find name movers that attend from the end to the indirect object and copy it. In SmolLM2-135M "
        f"the head with the largest patching effect, L{top[0]}H{top[1]} ({z[top]:.2f}), attends to the repeated subject "
        f"and copies it negatively (direct effect {direct[23, 3]:+.2f}): it suppresses S. Name movers in layer 23 attend "
        f"to the IO and copy it; L24H4 does the same with the opposite sign (direct effect {direct[24, 4]:+.2f}).",
    )


def _bars(ax, sweep: dict[str, float], title: str, k: int = 15):
    """The ``k`` senders of largest |path effect|, as horizontal bars coloured by the card's roles."""
    roles = {f"L{layer}H{h}": colour for (layer, h), (_, colour) in _roles().items()}
    top = sorted(sweep, key=lambda name: -abs(sweep[name]))[:k][::-1]
    ax.barh(range(len(top)), [sweep[n] for n in top], color=[roles.get(n, "0.7") for n in top])
    ax.set_yticks(range(len(top)), top, fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("Δ logit difference through the path")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)


@register
def smollm2_ioi_paths(out_dir: str | Path | None = None) -> FigureResult:
    """Path patching (noising, ABC) from the earlier heads of largest patching effect into the late
    heads' queries at END (the S-inhibition heads) and into the S-inhibition heads' values (duplicate
    and induction heads), beside every head's attention from S2 to S1 and to the token after S1."""
    from interp.circuits import smollm2_ioi as card

    st = card.stored()
    queries, values = st["path_queries"], st["path_values"]
    s2 = np.array(st["s2_attention"])  # [layer head (S1, S1+1)]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6), constrained_layout=True)
    receivers = ", ".join(card.label(h) for h in card.QUERY_RECEIVERS)
    _bars(axes[0], queries, f"senders → queries at END of {receivers}")
    _bars(axes[1], values, "senders → values of the S-inhibition heads' key-value heads")
    score = np.maximum(s2[..., 0], s2[..., 1])[:20]
    im = axes[2].imshow(score.T, aspect="auto", cmap="Greens", vmin=0, vmax=1, origin="lower")
    for (layer, head), (_, colour) in _roles().items():
        if layer < 20:
            axes[2].add_patch(plt.Rectangle((layer - 0.5, head - 0.5), 1, 1, fill=False, ec=colour, lw=1.6))
    axes[2].set_title("attention S2 → S1 or S1+1 (the larger), layers 0-19", fontsize=9)
    axes[2].set_xlabel("layer")
    axes[2].set_ylabel("head")
    fig.colorbar(im, ax=axes[2], shrink=0.85)
    from matplotlib.patches import Patch

    axes[0].legend(handles=[Patch(color=colour, label=role) for role, (_, colour) in ROLES.items()], fontsize=7, loc="lower left")
    fig.suptitle(f"SmolLM2-135M: which heads feed the name movers' queries and the S-inhibition heads' values "
                 f"(path patching, {st['path_prompts']} held-out prompts, the {st['path_senders']} heads of largest "
                 f"patching effect tried)", fontsize=11)
    numbers = {f"{card.label(h)}_path_queries": queries.get(card.label(h), float("nan")) for h in card.S_INHIBITION}
    numbers |= {f"{card.label(h)}_path_values": values.get(card.label(h), float("nan")) for h in card.DUPLICATE_INDUCTION}
    return FigureResult(
        "smollm2_ioi_paths", save(fig, "smollm2_ioi_paths", out_dir), numbers,
        "Wang et al.'s S-inhibition heads steer the name movers' queries, and duplicate-token and induction heads feed "
        "the S-inhibition heads' values. Path patching on SmolLM2-135M's held-out prompts asks the same two questions; "
        "in grouped-query attention a value receiver is a key-value head shared by three query heads.",
    )


def _edge_nodes(edge: str) -> list[tuple[str, int | None, int | None]]:
    """``(kind, layer, index)`` of an edge's two ends: ``head`` (query head), ``kv`` (a key or value
    receiver: a key-value head, shared by three query heads), ``mlp``, ``input`` or ``logits``."""
    out = []
    for part in edge.split(" -> "):
        bits = part.split(".")
        if bits[0].startswith("a") and len(bits) >= 2:
            kind = "kv" if len(bits) == 3 and bits[2] in ("k", "v") else "head"
            out.append((kind, int(bits[0][1:]), int(bits[1][1:])))
        elif bits[0].startswith("m"):
            out.append(("mlp", int(bits[0][1:]), None))
        else:
            out.append((bits[0], None, None))
    return out


@register
def smollm2_ioi_circuit(out_dir: str | Path | None = None, edges: int = 100) -> FigureResult:
    """EAP-IG on SmolLM2-135M: the faithfulness of its top-k circuits, and the circuit of its top
    ``edges`` edges drawn by layer (heads coloured by the role the card gives them)."""
    from interp.circuits import smollm2_ioi as card

    st = card.stored()["eap_ig"]
    fig, (ax_f, ax_c) = plt.subplots(1, 2, figsize=(18, 5), constrained_layout=True, gridspec_kw={"width_ratios": [1, 2.6]})
    ks = np.array(st["curve_k"], dtype=float)
    ax_f.plot(np.maximum(ks, 1), st["curve"], marker="o", color="tab:blue", label="EAP-IG top-k")
    ax_f.set_xscale("log")
    ax_f.axhline(1, color="0.6", ls="--", lw=0.8)
    ax_f.axhline(0, color="0.6", ls=":", lw=0.8)
    ax_f.set_xlabel(f"edges kept (of {st['n_edges']:,}; k = 0 drawn at 1)")
    ax_f.set_ylabel("faithfulness (0 ABC run, 1 clean)")
    ax_f.set_title("faithfulness of EAP-IG's top-k circuits", fontsize=10)
    ax_f.grid(alpha=0.3)
    roles = _roles()
    top = st["top_edges"][:edges]
    weight = max(abs(s) for _, s in top)
    n_layers = 30

    def where(node):
        kind, layer, head = node
        if kind == "head":
            return 2 * layer + 1, head
        if kind == "kv":  # beside the middle query head it serves
            return 2 * layer + 1.35, 3 * head + 1
        if kind == "mlp":
            return 2 * layer + 2, -1
        return (0, -1) if kind == "input" else (2 * n_layers + 1, -1)

    nodes = set()
    for edge, score in top:
        u, v = _edge_nodes(edge)
        (x0, y0), (x1, y1) = where(u), where(v)
        ax_c.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="-|>", lw=0.4 + 2.5 * abs(score) / weight,
                      color="tab:red" if score < 0 else "tab:blue", alpha=0.55, shrinkA=4, shrinkB=4))
        nodes |= {u, v}
    for node in nodes:
        x, y = where(node)
        role, colour = roles.get((node[1], node[2]), ("", "white")) if node[0] == "head" else ("", "0.85")
        ax_c.scatter([x], [y], s=120, c=colour, edgecolors="k", zorder=3)
        name = {"head": f"L{node[1]}H{node[2]}", "kv": f"L{node[1]}kv{node[2]}", "mlp": f"MLP{node[1]}"}.get(node[0], node[0])
        ax_c.annotate(name, (x, y), fontsize=6, xytext=(0, 6), textcoords="offset points", ha="center")
    for role, (_, colour) in ROLES.items():
        ax_c.scatter([], [], c=colour, edgecolors="k", label=role)
    ax_c.plot([], [], color="tab:red", label="edge whose patching lowers the logit difference")
    ax_c.plot([], [], color="tab:blue", label="edge whose patching raises it")
    ax_c.legend(fontsize=7, loc="upper left")
    ax_c.set_xticks([2 * layer + 1 for layer in range(0, n_layers, 5)], [f"L{layer}" for layer in range(0, n_layers, 5)])
    ax_c.set_yticks(range(-1, 9), ["MLP / input / logits"] + [f"H{h}" for h in range(9)])
    ax_c.set_title(f"EAP-IG's top {edges} edges (width: |score|; kv: a key-value head's key or value input)", fontsize=10)
    ax_c.set_xlim(-1, 2 * n_layers + 2)
    touched = {(n[1], n[2]) for n in nodes if n[0] == "head"}  # senders and query receivers (as the card counts)
    numbers = {"hand_found_touched": float(len(touched & set(roles))), "heads_touched": float(len(touched)),
               "faithfulness_at_1000": float(dict(zip(st["curve_k"], st["curve"], strict=True)).get(1000, float("nan")))}
    return FigureResult(
        "smollm2_ioi_circuit", save(fig, "smollm2_ioi_circuit", out_dir), numbers,
        f"Automatic discovery (EAP-IG, Hanna et al. 2024) on {card.EAP_PROMPTS} held-out prompts: its top {edges} edges touch "
        f"{len(touched & set(roles))} of the {len(roles)} hand-found heads; the faithfulness curve shows how many edges keep "
        f"the clean logit difference.",
    )

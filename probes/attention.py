"""Attention views: where each head looks, as self-contained HTML in Jupyter and a figure elsewhere.

    view = attention_view(model, tokens, layers=[1], heads=[0, 2])
    view                      # in Jupyter: one query x key grid per head, hover a cell for its weight
    view.figure()             # the same grids as a matplotlib Figure (scripts, papers)
    view.patterns             # [head query key] the values shown, with view.labels ["L1H0", ...]
    view.circuitsvis()        # CircuitsVis's interactive view, if the `vis` extra is installed

The HTML carries its data and styles inline and fetches nothing, so it renders in an offline or
air-gapped notebook and in a saved ``.ipynb`` / exported HTML file. CircuitsVis draws a richer
widget but loads its JavaScript from a CDN when the cell is displayed, so it is offered, not used
by default.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InputError
from interp.sites import Site


@dataclass
class AttentionView:
    """Attention patterns of chosen heads on one prompt.

    ``patterns`` ``[head query key]`` (CPU, float32), ``labels`` (``"L{layer}H{head}"`` per head),
    ``tokens`` (one string per position).
    """

    patterns: Float[Tensor, "head query key"]
    labels: list[str]
    tokens: list[str]

    def __repr__(self) -> str:
        return f"AttentionView(heads={self.labels}, tokens={len(self.tokens)})"

    def html(self, cell: int = 18) -> str:
        """Self-contained HTML: one grid per head (rows = queries, columns = keys), the weight as the
        cell's shade and in its tooltip; each grid's ``data-pattern`` attribute holds its values as JSON."""
        toks = [html.escape(t) for t in self.tokens]
        parts = ['<div class="interp-attention" style="display:flex;flex-wrap:wrap;gap:18px;font:11px sans-serif">']
        for label, pattern in zip(self.labels, self.patterns, strict=True):
            values = [[round(float(v), 6) for v in row] for row in pattern]
            data = html.escape(json.dumps(values), quote=True)
            parts.append(f'<div><div style="font-weight:bold;margin-bottom:4px">{html.escape(label)}</div>'
                         f'<table data-head="{html.escape(label)}" data-pattern="{data}" '
                         f'style="border-collapse:collapse;table-layout:fixed">')
            parts.append("<tr><td></td>" + "".join(
                f'<td style="width:{cell}px;height:60px;vertical-align:bottom;writing-mode:vertical-rl;'
                f'transform:rotate(180deg);padding:0">{t}</td>' for t in toks) + "</tr>")
            for q, row in enumerate(values):
                cells = "".join(
                    f'<td title="{toks[q]} → {toks[k]}: {v:.3f}" style="width:{cell}px;height:{cell}px;padding:0;'
                    f'background:rgba(33,102,172,{v:.3f});border:1px solid #eee"></td>' for k, v in enumerate(row))
                parts.append(f'<tr><td style="text-align:right;padding-right:4px;white-space:nowrap">{toks[q]}</td>{cells}</tr>')
            parts.append("</table></div>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.html()

    def figure(self, cols: int = 4):
        """The grids as a matplotlib Figure, token strings on both axes."""
        import matplotlib.pyplot as plt

        n = len(self.labels)
        cols = min(cols, n)
        rows = (n + cols - 1) // cols
        size = max(2.5, 0.28 * len(self.tokens) + 1.2)
        fig, grid = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
        for i, ax in enumerate(grid.flat):
            if i >= n:
                ax.axis("off")
                continue
            ax.imshow(self.patterns[i].numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
            ax.set_title(self.labels[i])
            ax.set_xticks(range(len(self.tokens)), self.tokens, rotation=90, fontsize=7)
            ax.set_yticks(range(len(self.tokens)), self.tokens, fontsize=7)
            ax.set_xlabel("key")
            ax.set_ylabel("query")
        fig.tight_layout()
        return fig

    def circuitsvis(self):
        """CircuitsVis's `attention_patterns` widget for these heads (needs ``pip install circuitsvis``,
        the `vis` extra; it loads its JavaScript from a CDN when displayed)."""
        try:
            import circuitsvis as cv
        except ImportError:
            raise InputError("circuitsvis is not installed; `pip install circuitsvis` (or the project's `vis` extra), "
                             "or use the self-contained view this object shows by itself.") from None
        return cv.attention.attention_patterns(tokens=self.tokens, attention=self.patterns)  # heads in `labels` order


def _choose(values: Sequence[int] | int | None, n: int, what: str) -> list[int]:
    if values is None:
        return list(range(n))
    chosen = [values] if isinstance(values, int) else list(values)
    for v in chosen:
        if not isinstance(v, int) or isinstance(v, bool) or not -n <= v < n:
            raise InputError(f"{what} {v!r} is out of range: this model has {n} {what}s (0 to {n - 1}).")
    if not chosen:
        raise InputError(f"No {what}s chosen; give at least one, or None for all.")
    return [v % n for v in chosen]


@torch.no_grad()
def attention_view(model, tokens, layers: Sequence[int] | int | None = None, heads: Sequence[int] | int | None = None,
                   prompt: int = 0) -> AttentionView:
    """The attention patterns of ``heads`` (default all) in ``layers`` (default all) on one prompt.

    ``tokens``: ``[batch pos]`` ids or text(s); ``prompt`` picks the row shown. Returns an
    `AttentionView`: displayed as HTML in Jupyter, ``.figure()`` for matplotlib.
    """
    from probes.lens import _as_tokens, _str_tokens

    if "pattern" not in model.supported_kinds:
        raise InputError("This model's backend does not expose attention patterns (site kind 'pattern').")
    tokens = _as_tokens(model, tokens)
    if not isinstance(prompt, int) or isinstance(prompt, bool) or not -tokens.shape[0] <= prompt < tokens.shape[0]:
        raise InputError(f"prompt={prompt!r} is out of range for {tokens.shape[0]} prompt(s).")
    layer_list = _choose(layers, model.n_layers, "layer")
    head_list = _choose(heads, model.n_heads, "head")
    row = tokens[prompt : prompt + 1] if prompt >= 0 else tokens[prompt:][:1]
    sites = [Site("pattern", layer) for layer in layer_list]
    _, cache = model.run_with_cache(row, sites)
    patterns = torch.stack([cache[s][0, h].float().cpu() for s in sites for h in head_list])
    labels = [f"L{layer}H{h}" for layer in layer_list for h in head_list]
    strings = _str_tokens(model, row)
    return AttentionView(patterns, labels, strings[0] if strings else [str(int(t)) for t in row[0]])

"""Attention views: where each head looks, as one self-contained interactive page, and as a figure.

    view = attention_view(model, tokens)          # every head of every layer (default), one prompt
    view                                          # in Jupyter: pick a layer and a head, hover tokens
    view.save("attention.html")                   # the same page as a standalone file
    view.figure(heads=["L3H2", "L5H0"])           # chosen grids as a matplotlib Figure; figure(layer=3)
    view.patterns, view.labels, view.tokens       # [head query key] values, "L{layer}H{head}", strings
    view.circuitsvis()                            # CircuitsVis's widget, if the `vis` extra is installed

The page carries the patterns once, as bytes (each weight rounded to a multiple of 1/255; the
causal lower triangle only, when the upper one is empty) in base64 inside a JSON ``<script>``, and
draws them with inline JavaScript: a layer and a head ``<select>``, thumbnails of all heads of the
layer, the chosen head's query x key grid on a canvas with the tokens on both axes, and two token
strips: hover a token (or a grid cell) to see where it attends and what attends to it, with the
weights in tooltips and a readout line. A 30-layer x 9-head view of 24 tokens weighs about 0.2 MB.
Nothing is fetched, so it renders offline, in a saved ``.ipynb`` (once trusted) and as a file;
each rendering has its own id, so several views share a notebook page. CircuitsVis draws a richer
widget but loads its JavaScript from a CDN, so it is offered, not used by default.
"""

from __future__ import annotations

import base64
import html
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InputError
from interp.sites import Site

FIGURE_MAX_HEADS = 32  # one figure of more grids than this is unreadable; choose heads or a layer
_LABEL = re.compile(r"L(\d+)H(\d+)")


@dataclass
class AttentionView:
    """Attention patterns of chosen heads on one prompt.

        view = attention_view(model, "The capital of France is", layers=[3, 4])
        view.save("attention.html")           # or display(view) in Jupyter
        view.figure(layer=3)                  # matplotlib

    ``patterns`` ``[head query key]`` (CPU, float32), ``labels`` (``"L{layer}H{head}"`` per head),
    ``tokens`` (one string per position).
    """

    patterns: Float[Tensor, "head query key"]
    labels: list[str]
    tokens: list[str]

    def __repr__(self) -> str:
        heads = (repr(self.labels) if len(self.labels) <= 8
                 else f"{len(self.labels)} ({self.labels[0]} ... {self.labels[-1]})")
        return f"AttentionView(heads={heads}, tokens={len(self.tokens)})"

    def html(self, cell: int = 18) -> str:
        """Self-contained HTML fragment (inline data, style and script; nothing fetched).

        ``cell``: the largest grid cell in pixels (long prompts get smaller cells). The patterns
        sit in a ``<script type="application/json" class="ia-data">`` (see `encode`); each call
        gives the fragment a fresh id, so the same view can be shown twice on one page.
        """
        return self._fragment(cell=cell, standalone=False)

    def _repr_html_(self) -> str:
        return self.html()

    def save(self, path: str | Path, cell: int = 18) -> Path:
        """Write the view as a standalone ``<!doctype html>`` page and return its path.

        The saved page also reads its first selection from the URL: ``attention.html?layer=3&head=2&pos=5``
        (or ``#layer=3&head=2``) opens head L3H2 with position 5 hovered.
        """
        path = Path(path)
        title = html.escape(f"Attention: {len(self.labels)} heads, {len(self.tokens)} tokens")
        page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>\n<body>\n'
                f'{self._fragment(cell=cell, standalone=True)}\n</body></html>\n')
        path.write_text(page, encoding="utf-8")
        return path

    def encode(self) -> dict:
        """The page's data as a JSON-ready dict (what the page's JSON ``<script>`` holds).

        ``data`` is base64 of ``uint8`` weights ``round(255 * w)``, head after head; with
        ``encoding == "uint8-tril"`` each head holds only rows ``q`` of keys ``0..q`` (the causal
        lower triangle, row after row), with ``"uint8"`` the full ``query x key`` grid. ``groups``
        lists the layers and, per layer, the heads (``index`` into ``labels``).
        """
        n_heads, n_query, n_key = self._check()
        quantised = torch.round(torch.nan_to_num(self.patterns.float()).clamp(0.0, 1.0) * 255).to(torch.uint8)
        triangle = n_query == n_key and not bool(torch.triu(quantised, diagonal=1).any())
        if triangle:
            rows, cols = torch.tril_indices(n_query, n_key)
            flat = quantised[:, rows, cols]
        else:
            flat = quantised.reshape(n_heads, -1)
        return {
            "version": 1, "shape": [n_heads, n_query, n_key], "labels": list(self.labels),
            "tokens": list(self.tokens), "groups": _groups(self.labels),
            "encoding": "uint8-tril" if triangle else "uint8", "scale": 255,
            "data": base64.b64encode(flat.contiguous().numpy().tobytes()).decode("ascii"),
        }

    def figure(self, heads: Sequence[str | int] | str | int | None = None, layer: int | None = None, cols: int = 4):
        """Chosen grids as a matplotlib Figure, token strings on both axes.

        ``heads``: labels (``"L3H2"``) or indices into ``labels``; ``layer``: all heads of that
        layer; neither: every head, allowed up to `FIGURE_MAX_HEADS` (use the HTML view for more).
        """
        import matplotlib.pyplot as plt

        chosen = self._figure_heads(heads, layer)
        n = len(chosen)
        cols = max(1, min(cols, n))
        rows = (n + cols - 1) // cols
        size = max(2.5, 0.28 * len(self.tokens) + 1.2)
        ticks = [_mpl_text(t) for t in self.tokens]
        fig, grid = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
        for i, ax in enumerate(grid.flat):
            if i >= n:
                ax.axis("off")
                continue
            ax.imshow(self.patterns[chosen[i]].numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
            ax.set_title(self.labels[chosen[i]])
            ax.set_xticks(range(len(ticks)), ticks, rotation=90, fontsize=7)
            ax.set_yticks(range(len(ticks)), ticks, fontsize=7)
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

    # -- internals ---------------------------------------------------------------------------------

    def _check(self) -> tuple[int, int, int]:
        if self.patterns.ndim != 3:
            raise InputError(f"patterns must be [head query key]; got shape {tuple(self.patterns.shape)}.")
        n_heads, n_query, n_key = self.patterns.shape
        if len(self.labels) != n_heads:
            raise InputError(f"{len(self.labels)} labels for {n_heads} heads; give one label per head.")
        if len(self.tokens) != n_key or n_query != n_key:
            raise InputError(f"{len(self.tokens)} tokens for patterns of {n_query} queries x {n_key} keys; "
                             "give one token string per position.")
        return n_heads, n_query, n_key

    def _figure_heads(self, heads, layer) -> list[int]:
        if heads is not None and layer is not None:
            raise InputError("Give heads or layer to figure(), not both.")
        if layer is not None:
            chosen = [i for i, label in enumerate(self.labels)
                      if (m := _LABEL.fullmatch(label)) and int(m.group(1)) == layer]
            if not chosen:
                raise InputError(f"layer={layer!r}: no head of this view is in that layer (heads: {self._span()}).")
            return chosen
        if heads is None:
            if len(self.labels) > FIGURE_MAX_HEADS:
                raise InputError(
                    f"This view holds {len(self.labels)} heads, too many grids for one figure (at most "
                    f"{FIGURE_MAX_HEADS}); choose some with figure(heads=['L3H2', ...]) or figure(layer=3), "
                    "or browse them all in the HTML view (display it, or view.save('attention.html')).")
            return list(range(len(self.labels)))
        chosen = []
        for h in [heads] if isinstance(heads, (str, int)) else list(heads):
            if isinstance(h, str) and h in self.labels:
                chosen.append(self.labels.index(h))
            elif isinstance(h, int) and not isinstance(h, bool) and -len(self.labels) <= h < len(self.labels):
                chosen.append(h % len(self.labels))
            else:
                raise InputError(f"head {h!r} is not in this view: give labels ({self._span()}) or indices "
                                 f"0 to {len(self.labels) - 1}.")
        if not chosen:
            raise InputError("No heads chosen for the figure; give at least one label, or None for all.")
        return chosen

    def _span(self) -> str:
        return ", ".join(self.labels) if len(self.labels) <= 6 else f"{self.labels[0]} ... {self.labels[-1]}"

    def _fragment(self, cell: int, standalone: bool) -> str:
        if not isinstance(cell, int) or isinstance(cell, bool) or cell < 2:
            raise InputError(f"cell={cell!r}: give the largest grid cell size in pixels, an int >= 2.")
        spec = self.encode()
        spec.update(cell=cell, standalone=standalone)
        root = f"interp-attn-{uuid.uuid4().hex}"
        # JSON in a <script> is raw text: no HTML entities there, so "<", ">" and "&" become JSON escapes
        # (a token "</script>" cannot end the element) and JSON.parse gives back the exact strings.
        data = json.dumps(spec, ensure_ascii=False, separators=(",", ":"))
        data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        n_heads, n_tokens = len(self.labels), len(self.tokens)
        return (
            f'<div id="{root}" class="interp-attention" data-heads="{n_heads}" data-tokens="{n_tokens}">'
            f"<style>{_CSS.replace('#ROOT', '#' + root)}</style>"
            f'<div class="ia-nojs">Attention view of {n_heads} heads x {n_tokens} tokens: drawing it needs '
            "JavaScript. In Jupyter, trust the notebook (File &gt; Trust Notebook) and re-run the cell; or "
            "write the page with <code>view.save(\"attention.html\")</code> and open it in a browser.</div>"
            f"{_SKELETON}"
            f'<script type="application/json" class="ia-data">{data}</script>'
            f"<script>{_JS.replace('__ROOT__', root)}</script></div>"
        )


def _groups(labels: list[str]) -> list[dict]:
    """Heads grouped by layer for the page's selects (one group of all heads if labels are not L{l}H{h})."""
    matches = [_LABEL.fullmatch(label) for label in labels]
    if not labels or not all(matches):
        return [{"name": "all heads", "layer": None,
                 "heads": [{"index": i, "name": label, "head": i} for i, label in enumerate(labels)]}]
    groups: dict[int, dict] = {}
    for i, m in enumerate(matches):
        layer, head = int(m.group(1)), int(m.group(2))
        group = groups.setdefault(layer, {"name": f"layer {layer}", "layer": layer, "heads": []})
        group["heads"].append({"index": i, "name": f"head {head}", "head": head})
    return list(groups.values())


def _mpl_text(token: str) -> str:
    """A token as a matplotlib tick label: whitespace made visible, "$" not read as mathtext."""
    shown = token.replace(" ", "\u00b7").replace("\n", "\u23ce").replace("\r", "\u240d").replace("\t", "\u21e5")
    return (shown or "\u2205").replace("$", r"\$")


_SKELETON = (
    '<div class="ia-ui" hidden>'
    '<div class="ia-bar"><label>layer <select class="ia-layer"></select></label>'
    '<label>head <select class="ia-head"></select></label><span class="ia-title"></span></div>'
    '<div class="ia-thumbs"></div>'
    '<div class="ia-main"><div class="ia-corner">key &rarr;<br>query &darr;</div><div class="ia-cols"></div>'
    '<div class="ia-rows"></div><canvas class="ia-grid"></canvas></div>'
    '<div class="ia-strips"><span class="ia-cap ia-rowcap"></span><div class="ia-strip ia-row"></div>'
    '<span class="ia-cap ia-colcap"></span><div class="ia-strip ia-col"></div></div>'
    '<div class="ia-readout"></div></div>'
)

_CSS = """
#ROOT{font:12px/1.4 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;background:#fff;padding:6px;margin:4px 0}
#ROOT .ia-nojs{color:#8a1c1c}
#ROOT .ia-bar{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px;margin-bottom:6px}
#ROOT select{font:inherit}
#ROOT .ia-title{font-weight:bold}
#ROOT .ia-thumbs{display:flex;flex-wrap:wrap;gap:4px;margin-bottom:8px}
#ROOT .ia-thumb{display:flex;flex-direction:column;align-items:center;padding:2px;border:1px solid #ccc;border-radius:3px;background:#fff;color:#222;cursor:pointer;font:inherit;font-size:10px}
#ROOT .ia-thumb[aria-pressed=true]{border-color:#2166ac;box-shadow:0 0 0 1px #2166ac}
#ROOT .ia-thumb canvas{width:48px;height:48px;image-rendering:pixelated;border:1px solid #eee}
#ROOT .ia-main{display:grid;grid-template-columns:max-content max-content;margin:4px 0}
#ROOT .ia-corner{align-self:end;text-align:right;padding:0 4px 2px 0;color:#777;font-size:10px}
#ROOT .ia-cols{display:flex;align-items:flex-end}
#ROOT .ia-cols .ia-lab{writing-mode:vertical-rl;transform:rotate(180deg);max-height:90px;overflow:hidden;text-overflow:ellipsis;text-align:left}
#ROOT .ia-rows .ia-lab{display:block;text-align:right;padding-right:4px;max-width:160px;overflow:hidden;text-overflow:ellipsis}
#ROOT .ia-lab{white-space:pre;cursor:default}
#ROOT .ia-lab.ia-on{color:#b2182b;font-weight:bold}
#ROOT canvas.ia-grid{cursor:crosshair;border:1px solid #ddd}
#ROOT .ia-strips{display:grid;grid-template-columns:max-content auto;gap:4px 8px;align-items:start;max-width:100%}
#ROOT .ia-strip{display:flex;flex-wrap:wrap;gap:2px}
#ROOT .ia-cap{color:#555;text-align:right;white-space:pre}
#ROOT .ia-tok{white-space:pre;padding:0 3px;border:1px solid #ddd;border-radius:2px;cursor:default}
#ROOT .ia-tok.ia-on{outline:2px solid #b2182b}
#ROOT .ia-readout{min-height:1.4em;margin-top:4px;font-variant-numeric:tabular-nums}
"""

_JS = r"""
(function () {
  var ID = "__ROOT__", tries = 0;
  function start() {
    var root = document.getElementById(ID);
    if (!root) { if (tries++ < 200) setTimeout(start, 50); return; }  // JupyterLab may attach the output later
    if (root.getAttribute("data-ready")) return;
    root.setAttribute("data-ready", "1");
    init(root);
  }
  function init(root) {
    var $ = function (s) { return root.querySelector(s); };
    var spec = JSON.parse($("script.ia-data").textContent);
    var T = spec.shape[1], tri = spec.encoding === "uint8-tril", per = tri ? T * (T + 1) / 2 : T * T;
    var bin = atob(spec.data), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    function w(h, q, k) {
      if (tri) return k > q ? 0 : bytes[h * per + q * (q + 1) / 2 + k] / spec.scale;
      return bytes[h * per + q * T + k] / spec.scale;
    }
    function fmt(x) { return x.toFixed(3); }
    function show(t) {
      if (t === "") return "\u2205";
      return t.replace(/ /g, "\u00b7").replace(/\n/g, "\u23ce").replace(/\r/g, "\u240d").replace(/\t/g, "\u21e5");
    }
    function quote(p) { return "\u201c" + show(spec.tokens[p]) + "\u201d (" + p + ")"; }
    function make(tag, cls, text) {
      var e = document.createElement(tag);
      if (cls) e.className = cls;
      if (text !== undefined) e.textContent = text;
      return e;
    }
    var layerSel = $(".ia-layer"), headSel = $(".ia-head"), thumbs = $(".ia-thumbs"), canvas = $(".ia-grid");
    var rowStrip = $(".ia-row"), colStrip = $(".ia-col"), readout = $(".ia-readout"), title = $(".ia-title");
    var cell = Math.max(2, Math.min(spec.cell, Math.floor(560 / T))), state = {group: 0, head: 0, q: T - 1, k: T - 1};

    // labels on both axes and two token strips, built once; hovering any of them focuses that token
    var rowLabs = [], colLabs = [], rowToks = [], colToks = [];
    var rowCap = $(".ia-rowcap"), colCap = $(".ia-colcap");
    var fontSize = Math.min(11, cell - 2) + "px";
    for (var p = 0; p < T; p++) {
      var full = JSON.stringify(spec.tokens[p]) + " (" + p + ")";
      var r = make("span", "ia-lab", show(spec.tokens[p])), c = make("span", "ia-lab", show(spec.tokens[p]));
      r.style.height = r.style.lineHeight = cell + "px"; r.style.fontSize = fontSize;
      c.style.width = c.style.lineHeight = cell + "px"; c.style.fontSize = fontSize;
      if (cell < 7) { r.style.visibility = c.style.visibility = "hidden"; }
      r.title = c.title = full;
      $(".ia-rows").appendChild(r); $(".ia-cols").appendChild(c); rowLabs.push(r); colLabs.push(c);
      var a = make("span", "ia-tok", show(spec.tokens[p])), b = make("span", "ia-tok", show(spec.tokens[p]));
      rowStrip.appendChild(a); colStrip.appendChild(b); rowToks.push(a); colToks.push(b);
      [r, c, a, b].forEach(function (e) {
        e.setAttribute("data-pos", p);
        e.addEventListener("mouseover", function () { var n = +this.getAttribute("data-pos"); focus(n, n, null); });
      });
    }

    function head() { return spec.groups[state.group].heads[state.head]; }
    function shade(e, x, rgb) {
      e.style.background = "rgba(" + rgb + "," + x + ")";
      e.style.color = x > 0.55 ? "#fff" : "#222";
    }
    function drawGrid() {
      var h = head().index, dpr = window.devicePixelRatio || 1, n = T * cell, ctx = canvas.getContext("2d");
      canvas.width = n * dpr; canvas.height = n * dpr; canvas.style.width = canvas.style.height = n + "px";
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, n, n);
      for (var q = 0; q < T; q++) for (var k = 0; k < T; k++) {
        ctx.fillStyle = tri && k > q ? "#f4f4f4" : "rgba(33,102,172," + w(h, q, k) + ")";
        ctx.fillRect(k * cell, q * cell, cell, cell);
      }
      if (cell >= 8) {
        ctx.strokeStyle = "rgba(0,0,0,0.06)"; ctx.lineWidth = 1; ctx.beginPath();
        for (var j = 1; j < T; j++) { ctx.moveTo(j * cell + 0.5, 0); ctx.lineTo(j * cell + 0.5, n); ctx.moveTo(0, j * cell + 0.5); ctx.lineTo(n, j * cell + 0.5); }
        ctx.stroke();
      }
      ctx.strokeStyle = "#b2182b"; ctx.lineWidth = 1.5;
      ctx.strokeRect(0.75, state.q * cell + 0.75, n - 1.5, cell - 1.5);
      ctx.strokeRect(state.k * cell + 0.75, 0.75, cell - 1.5, n - 1.5);
    }
    function drawThumbs() {
      thumbs.textContent = "";
      spec.groups[state.group].heads.forEach(function (hd, j) {
        var btn = make("button", "ia-thumb"), cv = make("canvas");
        btn.type = "button"; btn.setAttribute("data-index", j); btn.title = spec.labels[hd.index];
        btn.setAttribute("aria-pressed", j === state.head ? "true" : "false");
        cv.width = cv.height = T;
        var ctx = cv.getContext("2d"), img = ctx.createImageData(T, T);
        for (var q = 0; q < T; q++) for (var k = 0; k < T; k++) {
          var x = w(hd.index, q, k), o = 4 * (q * T + k), blank = tri && k > q;
          img.data[o] = blank ? 244 : 255 - 222 * x; img.data[o + 1] = blank ? 244 : 255 - 153 * x;
          img.data[o + 2] = blank ? 244 : 255 - 83 * x; img.data[o + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        btn.appendChild(cv); btn.appendChild(make("span", "", hd.name));
        btn.addEventListener("click", function () { headSel.value = String(j); headSel.dispatchEvent(new Event("change")); });
        thumbs.appendChild(btn);
      });
    }
    // q: the query whose row the first strip shows; k: the key whose column the second strip shows
    function focus(q, k, cellText) {
      state.q = q; state.k = k;
      var h = head().index, label = spec.labels[h];
      rowCap.textContent = quote(q) + " attends to:";
      colCap.textContent = "attending to " + quote(k) + ":";
      var bestRow = 0, bestCol = k;
      for (var p = 0; p < T; p++) {
        var x = w(h, q, p), y = w(h, p, k);
        if (x > w(h, q, bestRow)) bestRow = p;
        if (y > w(h, bestCol, k)) bestCol = p;
        shade(rowToks[p], x, "33,102,172"); shade(colToks[p], y, "214,96,77");
        rowToks[p].setAttribute("data-weight", fmt(x)); colToks[p].setAttribute("data-weight", fmt(y));
        rowToks[p].title = label + ": " + quote(q) + " \u2192 " + quote(p) + ": " + fmt(x);
        colToks[p].title = label + ": " + quote(p) + " \u2192 " + quote(k) + ": " + fmt(y);
        rowToks[p].classList.toggle("ia-on", p === q); colToks[p].classList.toggle("ia-on", p === k);
        rowLabs[p].classList.toggle("ia-on", p === q); colLabs[p].classList.toggle("ia-on", p === k);
      }
      readout.setAttribute("data-q", q); readout.setAttribute("data-k", k);
      readout.setAttribute("data-weight", fmt(w(h, q, k)));
      readout.textContent = cellText || (label + ": " + quote(q) + " attends most to " + quote(bestRow) + " " +
        fmt(w(h, q, bestRow)) + "; " + quote(k) + " is attended most by " + quote(bestCol) + " " + fmt(w(h, bestCol, k)));
      root.setAttribute("data-q", q); root.setAttribute("data-k", k);
      drawGrid();
    }
    function render() {
      var hd = head(), label = spec.labels[hd.index];
      title.textContent = label;
      root.setAttribute("data-shown", label); root.setAttribute("data-index", hd.index);
      Array.prototype.forEach.call(thumbs.children, function (b, j) { b.setAttribute("aria-pressed", j === state.head ? "true" : "false"); });
      focus(state.q, state.k, null);
    }
    function fillHeads(wanted) {
      headSel.textContent = "";
      var heads = spec.groups[state.group].heads;
      state.head = 0;
      heads.forEach(function (hd, j) {
        var o = make("option", "", hd.name); o.value = String(j); headSel.appendChild(o);
        if (hd.head === wanted) state.head = j;
      });
      headSel.value = String(state.head);
      drawThumbs();
    }
    spec.groups.forEach(function (g, j) { var o = make("option", "", g.name); o.value = String(j); layerSel.appendChild(o); });
    layerSel.addEventListener("change", function () {
      var wanted = head().head;
      state.group = +layerSel.value; fillHeads(wanted); render();
    });
    headSel.addEventListener("change", function () { state.head = +headSel.value; render(); });
    canvas.addEventListener("mousemove", function (ev) {
      var rect = canvas.getBoundingClientRect(), h = head().index;
      var k = Math.floor((ev.clientX - rect.left) / cell), q = Math.floor((ev.clientY - rect.top) / cell);
      if (q < 0 || k < 0 || q >= T || k >= T || (q === state.q && k === state.k)) return;
      focus(q, k, spec.labels[h] + ": " + quote(q) + " \u2192 " + quote(k) + ": " + fmt(w(h, q, k)));
    });

    // first selection: the first head, the last token; a saved page also reads ?layer=&head=&pos= or #...
    var wantedHead = null;
    if (spec.standalone) {
      var params = new URLSearchParams(location.search.slice(1) + "&" + location.hash.slice(1));
      var lay = params.get("layer"), hh = params.get("head"), pos = params.get("pos");
      spec.groups.forEach(function (g, j) { if (lay !== null && String(g.layer) === lay) state.group = j; });
      if (hh !== null) wantedHead = +hh;
      if (pos !== null && +pos >= 0 && +pos < T) state.q = state.k = +pos;
    }
    layerSel.value = String(state.group);
    fillHeads(wantedHead);
    $(".ia-nojs").hidden = true;
    $(".ia-ui").hidden = false;
    render();
  }
  start();
})();
"""


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
    `AttentionView`: an interactive page in Jupyter or ``.save(path)``, ``.figure()`` for matplotlib.
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

"""Sparse feature circuits: attribution patching over SAE features and their error terms.

    saes = {Site("resid_post", 1): sae1, Site("resid_post", 2): sae2}
    attr = feature_attribution(model, prompts, saes, logit_diff, method="ig", steps=10)
    attr.top(10)                      # the nodes of largest |indirect effect| (a DataFrame)
    attr.plot()                       # bars of the top nodes (error nodes hatched) and per-site totals
    check = check_top_nodes(model, prompts, saes, attr, logit_diff, n=20)   # exact patches vs estimates
    curve = faithfulness_curve(model, prompts, saes, attr, logit_diff, sizes=[0, 10, 100])

Marks et al. 2024 ("Sparse feature circuits") write the activation ``x`` at every site that has an
SAE as ``x = decode(f) + e``: the SAE's latents ``f = encode(x)`` and its error ``e = x - decode(f)``
(what the dictionary misses). The nodes of the circuit are the latents at each position and one
error node per site and position (``by_pos=False`` sums each latent over positions instead). A
node's *indirect effect* on a metric ``m`` is the change of ``m`` when that node alone takes its
value from another prompt while everything downstream recomputes: noising (Marks et al.'s setting)
runs the clean prompt and patches in the corrupted value; denoising the reverse.

Measuring every node exactly takes one forward per node (tens of thousands); attribution patching
(Nanda 2023; Syed et al. 2023) estimates them all from gradients: with ``a`` a node's value on the
base run and ``a'`` its patched value, ``IE(a) ~ (a' - a) * dm/da``. Since ``x = f @ W_dec + b_dec
+ e``, ``dm/df_i = W_dec[i] . dm/dx`` and ``dm/de = dm/dx``: one backward through the unmodified model
gives the gradient at every site at once. Where the metric bends between the two values, the
integrated-gradients variant Marks et al. use (``method="ig"``) averages the gradient along the path
from base to patched value, interpolating one site at a time while the layers after it recompute:
``IE(a) ~ (a' - a) * mean_k dm/da |_(a + k/steps (a' - a))``, ``k = 0 .. steps-1`` (left Riemann
sum, as in their code; ``steps=1`` is plain attribution patching). Interpolating ``f`` and ``e``
along a line interpolates ``x`` along the same line (``decode`` is affine), so the sites' paths run
as copies of the base prompts in one stacked forward and backward, not one per site.

The checks: `check_top_nodes` patches each of the top nodes alone to its other value (a latent
through `probes.sae.clamp_features`, keeping the error; an error node by swapping the error) and
compares the exact effects with the estimates. `circuit_faithfulness` is Marks et al.'s
``(m(C) - m(empty)) / (m(M) - m(empty))`` on the clean prompts: every node outside the circuit C is
ablated at every site at once (``ablation="mean"``: set to its mean over a reference set, per
position when the reference has the prompts' length, Marks et al.'s choice; ``"corrupted"``: set to
its value on the corrupted prompt), nodes inside keep the value they take in that run; M is the
model, ``empty`` ablates every node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.sites import Site, SiteLike, as_site
from interp.tasks import PromptSet
from patching.attribution import activation_gradients, agreement
from patching.metrics import Metric, MetricError, check_values, metric_name
from probes.sae.intervene import clamp_features, to_feature_axis
from probes.sae.model import SAE

METHODS = ("atp", "ig")
DIRECTIONS = ("noise", "denoise")
ABLATIONS = ("mean", "corrupted")


# =============================================================================== nodes and results
@dataclass(frozen=True)
class Node:
    """One node of a feature circuit: latent ``feature`` of the SAE at ``site`` (``feature=None``:
    the site's error node) at position ``pos`` (``None``: summed over positions)."""

    site: Site
    feature: int | None
    pos: int | None = None

    @property
    def is_error(self) -> bool:
        return self.feature is None

    def label(self, tokens: Sequence[str] | None = None) -> str:
        """``"resid_post 2 f311 @4"`` (``err`` for the error node); ``tokens`` names the position."""
        what = "err" if self.feature is None else f"f{self.feature}"
        where = ""
        if self.pos is not None:
            where = f" @{self.pos}" + (f" {tokens[self.pos]!r}" if tokens is not None else "")
        layer = "" if self.site.layer is None else f" {self.site.layer}"
        head = "" if self.site.head is None else f".h{self.site.head}"
        return f"{self.site.kind}{layer}{head} {what}{where}"


@dataclass
class FeatureAttribution:
    """Estimated indirect effects (mean over prompts) of every node, from `feature_attribution`.

    ``features[site]``: ``[pos d_sae]`` (``[d_sae]`` when summed over positions); ``errors[site]``:
    ``[pos]`` (a scalar when summed); ``sites``: the sites in the order given. ``baseline``: the
    metric on the base run (the clean prompts when noising); ``source_value``: on the other run.
    ``tokens``: per position, the clean prompts' token as text where they all share it, else
    ``"(varies)"`` (plot labels; None for a model without a tokenizer).
    """

    sites: list[Site]
    features: dict[Site, Tensor]
    errors: dict[Site, Tensor]
    baseline: float
    source_value: float
    settings: dict[str, Any] = field(default_factory=dict)
    tokens: list[str] | None = None

    @property
    def by_pos(self) -> bool:
        return bool(self.settings.get("by_pos", True))

    def __repr__(self) -> str:
        s = self.settings
        return (f"FeatureAttribution({len(self.sites)} sites, {self.n_nodes} nodes, method={s.get('method')!r}, "
                f"direction={s.get('direction')!r}, metric={s.get('metric')!r}, baseline={self.baseline:.4g}, "
                f"source={self.source_value:.4g})")

    # ------------------------------------------------------------------ flat views
    @property
    def n_nodes(self) -> int:
        return sum(self.features[s].numel() + self.errors[s].numel() for s in self.sites)

    def effects(self) -> Float[Tensor, " node"]:
        """Every node's estimate in one flat tensor: per site, its latents (position-major) then its error nodes."""
        return torch.cat([t for s in self.sites for t in (self.features[s].reshape(-1), self.errors[s].reshape(-1))])

    def node(self, index: int) -> Node:
        """The node at ``index`` of `effects`."""
        for site in self.sites:
            f, e = self.features[site], self.errors[site]
            if index < f.numel():
                if f.ndim == 1:
                    return Node(site, index, None)
                return Node(site, index % f.shape[-1], index // f.shape[-1])
            index -= f.numel()
            if index < e.numel():
                return Node(site, None, index if e.ndim == 1 else None)
            index -= e.numel()
        raise InputError(f"Node index out of range: this attribution has {self.n_nodes} nodes.")

    def ranking(self) -> Int[Tensor, " node"]:
        """Indices of `effects` by decreasing ``|effect|`` (ties keep their order)."""
        return torch.sort(self.effects().abs(), descending=True, stable=True).indices

    def top_nodes(self, n: int = 10) -> list[Node]:
        """The ``n`` nodes of largest ``|effect|``, largest first."""
        n = check_count(n, "n")
        return [self.node(int(i)) for i in self.ranking()[:n]]

    def effect_of(self, node: Node) -> float:
        """The estimate of one node."""
        t = self.errors[node.site] if node.is_error else self.features[node.site][..., node.feature]
        return float(t if node.pos is None else t[node.pos])

    def top(self, n: int = 10):
        """The ``n`` nodes of largest ``|effect|`` as a DataFrame (site, layer, node kind, feature,
        pos, token, effect), largest first."""
        import pandas as pd

        rows = []
        for node in self.top_nodes(n):
            rows.append({"site": str(node.site), "layer": node.site.layer, "node": "error" if node.is_error else "feature",
                         "feature": node.feature, "pos": node.pos,
                         "token": self.tokens[node.pos] if self.tokens is not None and node.pos is not None else None,
                         "effect": self.effect_of(node)})
        return pd.DataFrame(rows)

    def totals(self) -> dict[Site, dict[str, float]]:
        """Per site: the summed estimate of its latents and of its error nodes, and their sums of ``|effect|``."""
        return {s: {"features": float(self.features[s].sum()), "error": float(self.errors[s].sum()),
                    "features_abs": float(self.features[s].abs().sum()), "error_abs": float(self.errors[s].abs().sum())}
                for s in self.sites}

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the estimates, sites, baselines, settings and token labels to one file (plain data)."""
        path = Path(path)
        torch.save({"sites": [[s.kind, s.layer, s.head] for s in self.sites], "features": [self.features[s] for s in self.sites],
                    "errors": [self.errors[s] for s in self.sites], "baseline": self.baseline,
                    "source_value": self.source_value, "settings": self.settings, "tokens": self.tokens}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureAttribution:
        """Read a file written by `save` (``weights_only=True``: no code runs)."""
        data = torch.load(Path(path), weights_only=True)
        sites = [Site(kind, layer, head) for kind, layer, head in data["sites"]]
        return cls(sites, dict(zip(sites, data["features"], strict=True)), dict(zip(sites, data["errors"], strict=True)),
                   data["baseline"], data["source_value"], dict(data["settings"]), data["tokens"])

    # ------------------------------------------------------------------ figure
    def plot(self, n: int = 20, title: str | None = None):
        """A matplotlib Figure: left, the ``n`` top nodes as horizontal bars (one colour per site,
        error nodes hatched), labelled with the site, feature id and token; right, per site the
        summed ``|effect|`` of its latents (plain) and of its error nodes (hatched), with the legend."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        nodes = self.top_nodes(min(n, self.n_nodes))
        values = [self.effect_of(node) for node in nodes]
        colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(self.sites)}
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.0, 0.28 * len(nodes) + 1.2)),
                                          gridspec_kw={"width_ratios": [3, 2]})
        y = list(range(len(nodes)))[::-1]
        bars = left.barh(y, values, color=[colours[node.site] for node in nodes], edgecolor="black", linewidth=0.4)
        for bar, node in zip(bars, nodes, strict=True):
            if node.is_error:
                bar.set_hatch("///")
                bar.set_alpha(0.6)
        left.set_yticks(y, [node.label(self.tokens) for node in nodes], fontsize=8)
        left.axvline(0, color="black", linewidth=0.6)
        left.set_xlabel(f"estimated indirect effect on {self.settings.get('metric', 'the metric')}")
        left.set_title(f"top {len(nodes)} of {self.n_nodes} nodes ({self.settings.get('method')}, {self.settings.get('direction')})")
        totals = self.totals()
        x = range(len(self.sites))
        right.bar([i - 0.2 for i in x], [totals[s]["features_abs"] for s in self.sites], 0.4,
                  color=[colours[s] for s in self.sites], edgecolor="black", linewidth=0.4)
        right.bar([i + 0.2 for i in x], [totals[s]["error_abs"] for s in self.sites], 0.4,
                  color=[colours[s] for s in self.sites], edgecolor="black", linewidth=0.4, hatch="///", alpha=0.6)
        right.set_xticks(list(x), [str(s) for s in self.sites], rotation=30, ha="right", fontsize=8)
        right.set_ylabel("sum of |estimated effect| (plain: latents)")
        right.set_title("per site: latents vs error")
        handles = [Patch(facecolor=colours[s], label=str(s)) for s in self.sites]
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="error nodes"))
        right.legend(handles=handles, fontsize=7)
        fig.suptitle(title or f"feature attribution: baseline {self.baseline:.3g}, other run {self.source_value:.3g}")
        fig.tight_layout()
        return fig


@dataclass
class NodeCheck:
    """Exact single-node patches against their estimates (`check_top_nodes`).

    ``nodes``; ``estimate`` and ``exact`` ``[n]`` (changes of the mean metric); ``agreement``:
    Pearson and Spearman correlations, the share of nodes whose signs agree, and the estimate's
    summed absolute error relative to the summed ``|exact|``."""

    nodes: list[Node]
    estimate: Tensor
    exact: Tensor
    agreement: dict[str, float]

    def __repr__(self) -> str:
        a = self.agreement
        return (f"NodeCheck({len(self.nodes)} nodes: pearson {a['pearson']:.3f}, spearman {a['spearman']:.3f}, "
                f"sign agreement {a['sign_agreement']:.2f}, relative error {a['relative_error']:.3f})")

    def to_dataframe(self, tokens: Sequence[str] | None = None):
        import pandas as pd

        return pd.DataFrame({"node": [n.label(tokens) for n in self.nodes], "estimate": self.estimate.tolist(),
                             "exact": self.exact.tolist()})

    def plot(self, title: str | None = None):
        """Scatter of exact effect against estimate, with the diagonal."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        err = [n.is_error for n in self.nodes]
        est, ex = self.estimate.numpy(), self.exact.numpy()
        ax.scatter(est[[not e for e in err]], ex[[not e for e in err]], s=18, label="latents")
        if any(err):
            ax.scatter(est[err], ex[err], s=40, marker="x", color="black", label="error nodes")
        lo = float(min(est.min(), ex.min(), 0.0))
        hi = float(max(est.max(), ex.max(), 0.0))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
        ax.set_xlabel("estimated effect")
        ax.set_ylabel("exact effect (patched alone)")
        ax.legend(fontsize=8)
        ax.set_title(title or f"top {len(self.nodes)} nodes: pearson {self.agreement['pearson']:.2f}")
        fig.tight_layout()
        return fig


@dataclass
class Faithfulness:
    """``(m(C) - m(empty)) / (m(M) - m(empty))`` for circuits of the given sizes (`faithfulness_curve`).

    ``sizes`` (number of nodes kept, by decreasing ``|estimate|``), ``faithfulness`` and
    ``circuit_metric`` ``[len(sizes)]``; ``full_metric`` m(M) and ``empty_metric`` m(empty);
    ``total_nodes``; ``settings`` (ablation and the metric)."""

    sizes: list[int]
    faithfulness: Tensor
    circuit_metric: Tensor
    full_metric: float
    empty_metric: float
    total_nodes: int
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        pts = ", ".join(f"{n}: {float(f):.3f}" for n, f in zip(self.sizes, self.faithfulness, strict=True))
        return f"Faithfulness(ablation={self.settings.get('ablation')!r}, m(M)={self.full_metric:.4g}, m(empty)={self.empty_metric:.4g}; {pts})"

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame({"nodes": self.sizes, "faithfulness": self.faithfulness.tolist(),
                             "metric": self.circuit_metric.tolist()})

    def plot(self, title: str | None = None):
        """Faithfulness against the number of nodes kept (log axis), with 0 and 1 marked."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = [max(n, 0.5) for n in self.sizes]  # 0 nodes drawn at 0.5 on the log axis
        ax.plot(x, self.faithfulness.numpy(), marker="o")
        ax.set_xscale("log")
        for level in (0.0, 1.0):
            ax.axhline(level, color="grey", linewidth=0.7, linestyle="--")
        ax.set_xlabel(f"nodes kept (of {self.total_nodes}; 0 drawn at 0.5)")
        ax.set_ylabel("faithfulness")
        ax.set_title(title or f"faithfulness, others {self.settings.get('ablation')}-ablated")
        fig.tight_layout()
        return fig


# =============================================================================== checks
def check_count(n: Any, name: str) -> int:
    """``n`` if it is a positive int, else an InputError."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(f"{name} must be a positive int (a number of nodes), got {n!r}.")
    return n


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise InputError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}.")
    return value


def check_saes(model, saes: Mapping[SiteLike, SAE], seq_len: int) -> dict[Site, SAE]:
    """``{Site: SAE}`` with each site validated against ``model`` (no ``pos``: positions are node
    axes) and each SAE on the model's device; an InputError / SiteError otherwise."""
    if not isinstance(saes, Mapping) or not saes:
        raise InputError("saes must be a non-empty dict {site: SAE}, e.g. {Site('resid_post', 1): sae}.")
    out: dict[Site, SAE] = {}
    for key, sae in saes.items():
        site = as_site(key).validate(model, seq_len)
        if site.pos is not None:
            raise InputError(f"{site}: give SAE sites without pos=; every position is a node (by_pos=False sums them).")
        if site.kind == "pattern":
            raise InputError(f"{site}: attention patterns carry no SAE here; use z, attn_out, mlp_out or a residual site.")
        if not isinstance(sae, SAE):
            raise InputError(f"saes[{site}] must be a probes.sae.SAE, got {type(sae).__name__}.")
        if site in out:
            raise InputError(f"{site} appears twice in saes; give each site one SAE.")
        if sae.device != model.device:
            raise InputError(f"The SAE at {site} is on {sae.device} but the model is on {model.device}; "
                             f"move it with sae.to({str(model.device)!r}).")
        out[site] = sae
    return out


def _check_prompts(prompts: Any) -> PromptSet:
    if not isinstance(prompts, PromptSet):
        raise InputError(f"prompts must be a PromptSet (clean / corrupted pairs), got {type(prompts).__name__}.")
    if prompts.clean.shape != prompts.corrupted.shape:
        raise InputError(f"Clean tokens {tuple(prompts.clean.shape)} and corrupted tokens {tuple(prompts.corrupted.shape)} "
                         f"differ in shape; node values are patched position by position, so align them.")
    return prompts


def _flat(site: Site, act: Tensor, sae: SAE) -> Tensor:
    """The site's activation ``[batch pos d_in]`` in the SAE's feature layout, or an InputError."""
    if act.ndim < 3 or not (act.shape[-1] == sae.d_in or act.shape[-2] * act.shape[-1] == sae.d_in):
        width = act.shape[-1] if act.ndim < 4 else f"{act.shape[-1]} (or {act.shape[-2] * act.shape[-1]} flattened)"
        raise InputError(f"The SAE at {site} reads d_in={sae.d_in} but the site's activation has width {width} "
                         f"(shape {tuple(act.shape)}); use an SAE trained at this site.")
    return to_feature_axis(act, sae.d_in, f"{site}'s activation")[0].to(sae.dtype)


def _split(sae: SAE, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(f, e)``: the latents and the error of activations ``x [... d_in]``."""
    f = sae.encode(x)
    return f, x - sae.decode(f)


def _cache(model, tokens: Tensor, saes: dict[Site, SAE]) -> dict[Site, Tensor]:
    """Each site's activation ``[batch pos d_in]`` (SAE layout) on ``tokens``, with the metric's logits."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, list(saes))
    return logits, {s: _flat(s, cache[s], sae) for s, sae in saes.items()}


def _mean_metric(metric: Metric, logits: Tensor, prompts: PromptSet) -> float:
    return float(check_values(metric(logits, prompts), len(prompts), metric).double().mean())


def _runs(prompts: PromptSet, direction: str) -> tuple[Tensor, Tensor]:
    return (prompts.clean, prompts.corrupted) if direction == "noise" else (prompts.corrupted, prompts.clean)


def _token_text(model, tokens: Int[Tensor, "batch pos"]) -> list[str] | None:
    """Per position, the token's text where every prompt has the same token there, else "(varies)"."""
    try:
        text = [str(t) for t in model.to_str_tokens(tokens[0])]
    except Exception:  # a model without a tokenizer: positions are labelled by number
        return None
    same = (tokens == tokens[:1]).all(0).tolist()
    return [t if s else "(varies)" for t, s in zip(text, same, strict=True)]


# =============================================================================== attribution
def feature_attribution(
    model,
    prompts: PromptSet,
    saes: Mapping[SiteLike, SAE],
    metric: Metric,
    method: str = "ig",
    steps: int = 10,
    direction: str = "noise",
    by_pos: bool = True,
    batch_size: int = 256,
    progress: bool = True,
) -> FeatureAttribution:
    """Estimated indirect effect of every SAE latent and error node at ``saes``' sites.

    ``saes``: ``{site: SAE}``, sites at any layers (``resid_post``, ``attn_out``, ``mlp_out``, ``z``
    ...; no ``pos``). ``metric(logits, prompts) -> [batch]`` (e.g. `patching.metrics.logit_diff`).
    ``method``: ``"atp"`` (gradient at the base run: one forward on the other prompts, one forward
    and one backward on the base prompts for all sites) or ``"ig"`` (integrated gradients over
    ``steps`` points, Marks et al.; each site interpolated in its own copy of the base prompts, all
    copies stacked into forwards of at most ``batch_size`` sequences). ``direction``: ``"noise"``
    (base = clean, nodes take their corrupted values; Marks et al.) or ``"denoise"``. ``by_pos``:
    one node per position, or each latent / error summed over positions. Effects are changes of
    the metric's mean over prompts. The model's parameters get no gradients.
    """
    prompts = _check_prompts(prompts)
    method = _choice(method, METHODS, "method")
    direction = _choice(direction, DIRECTIONS, "direction")
    steps = check_count(steps, "steps")
    batch_size = check_count(batch_size, "batch_size")
    saes = check_saes(model, saes, prompts.seq_len)
    base_tokens, source_tokens = _runs(prompts, direction)
    source_logits, source = _cache(model, source_tokens, saes)
    source_value = _mean_metric(metric, source_logits, prompts)
    with model.frozen():  # activation gradients only
        if method == "atp":
            baseline, base, grads = _gradients_at_base(model, prompts, base_tokens, saes, metric)
        else:
            baseline, base, grads = _integrated_gradients(model, prompts, base_tokens, saes, source, metric, steps,
                                                          batch_size, progress)
    features, errors = {}, {}
    with torch.no_grad():
        for site, sae in saes.items():
            f_b, e_b = _split(sae, base[site])
            f_s, e_s = _split(sae, source[site])
            g = grads[site].to(sae.dtype)
            # g is the gradient of the mean over prompts: summing over prompts gives the change of that mean
            feat = ((f_s - f_b) * (g @ sae.W_dec.T)).double().sum(0)  # [pos d_sae]
            err = ((e_s - e_b) * g).double().sum((0, -1))  # [pos]
            features[site] = (feat if by_pos else feat.sum(0)).float().cpu()
            errors[site] = (err if by_pos else err.sum(0)).float().cpu()
    settings = {"method": method, "steps": steps if method == "ig" else None, "direction": direction, "by_pos": bool(by_pos),
                "metric": metric_name(metric), "n_prompts": len(prompts), "seq_len": prompts.seq_len}
    return FeatureAttribution(list(saes), features, errors, baseline, source_value, settings,
                              _token_text(model, prompts.clean))


def _gradients_at_base(model, prompts, base_tokens, saes, metric):
    """Base activations and ``d mean(metric) / d x`` at every site, from one forward and one backward
    (on hooks, as the source run and the exact checks, so that their values agree to the bit)."""
    acts, grads, values = activation_gradients(model, base_tokens, list(saes), metric, prompts, engine="hooks")
    base = {s: _flat(s, acts[s], saes[s]) for s in saes}
    out = {s: to_feature_axis(grads[s], saes[s].d_in)[0] for s in saes}
    return float(values.double().mean()), base, out


@dataclass(frozen=True, eq=False)
class _Interpolate:
    """In a stack of copies of the prompts (``n`` rows each), replace the rows of copies ``jobs``
    with ``values`` (``[len(jobs) * n pos d_in]``, the points of this site's integration path)."""

    d_in: int
    jobs: list[int]
    values: Tensor
    n: int

    def __call__(self, act: Tensor) -> Tensor:
        x, back = to_feature_axis(act, self.d_in)
        new = x.clone()
        n = self.n
        for m, j in enumerate(self.jobs):
            new[j * n:(j + 1) * n] = self.values[m * n:(m + 1) * n].to(x.dtype)
        return back(new)


def _integrated_gradients(model, prompts, base_tokens, saes, source, metric, steps, batch_size, progress):
    """Base activations and, per site, the gradient of the mean metric averaged over ``steps`` points
    ``base + k/steps (source - base)`` of that site alone (the others recompute). One job = one site
    at one step on a copy of all prompts; jobs are stacked into forwards of <= ``batch_size`` rows."""
    n = len(prompts)
    logits, base = _cache(model, base_tokens, saes)
    baseline = _mean_metric(metric, logits, prompts)
    sites = list(saes)
    jobs = [(s, k) for s in sites for k in range(steps)]
    per_forward = max(1, batch_size // n)
    sums = {s: torch.zeros_like(base[s]) for s in sites}
    chunks = [jobs[i:i + per_forward] for i in range(0, len(jobs), per_forward)]
    for chunk in tqdm(chunks, desc="feature attribution (ig)", disable=not progress or len(chunks) < 2):
        rows: dict[Site, list[int]] = {}
        for j, (site, _) in enumerate(chunk):
            rows.setdefault(site, []).append(j)
        leaves: dict[Site, Tensor] = {}
        for site, js in rows.items():
            alphas = torch.tensor([chunk[j][1] / steps for j in js], dtype=base[site].dtype, device=base[site].device)
            path = base[site] + alphas[:, None, None, None] * (source[site] - base[site])  # [jobs batch pos d_in]
            leaves[site] = path.reshape(-1, *base[site].shape[1:]).detach().requires_grad_(True)
        edits = {site: _Interpolate(saes[site].d_in, rows[site], leaves[site], n) for site in rows}
        tokens = base_tokens.repeat(len(chunk), 1)
        with torch.enable_grad():
            logits, _ = model.run(tokens, edits=edits)
            total = 0.0
            for j in range(len(chunk)):
                total = total + check_values(metric(logits[j * n:(j + 1) * n], prompts), n, metric).mean()
            grads = torch.autograd.grad(total, [leaves[s] for s in rows], allow_unused=True)
        for site, g in zip(rows, grads, strict=True):
            if g is not None:
                sums[site] += g.reshape(len(rows[site]), n, *g.shape[1:]).sum(0)
    return baseline, base, {s: sums[s] / steps for s in sites}


# =============================================================================== exact effects
@dataclass(frozen=True, eq=False)
class ErrorSwap:
    """An intervention that replaces the SAE error of the activation with ``error``:
    ``x' = decode(encode(x)) + error`` (the latents keep their values)."""

    sae: SAE
    error: Tensor

    def __call__(self, act: Tensor) -> Tensor:
        x, back = to_feature_axis(act, self.sae.d_in)
        return back((self.sae(x) + self.error.to(x.device, self.sae.dtype)).to(x.dtype))


def node_edit(node: Node, sae: SAE, source_act: Float[Tensor, "batch pos d_in"]) -> tuple[Site, Any]:
    """``(site, intervention)`` that sets ``node`` to its value on the run whose activation at the
    node's site is ``source_act`` (``[batch pos d_in]``, the SAE's layout): a latent through
    `probes.sae.clamp_features` (keeping the reconstruction error), an error node by `ErrorSwap`."""
    f_s, e_s = _split(sae, source_act)
    site = node.site if node.pos is None else Site(node.site.kind, node.site.layer, node.site.head, node.pos)
    if node.is_error:
        return site, ErrorSwap(sae, (e_s if node.pos is None else e_s[:, node.pos]).detach())
    values = f_s[..., node.feature:node.feature + 1] if node.pos is None else f_s[:, node.pos, node.feature:node.feature + 1]
    return site, clamp_features(sae, [node.feature], values.detach())


def node_patch_effects(
    model,
    prompts: PromptSet,
    saes: Mapping[SiteLike, SAE],
    nodes: Sequence[Node],
    metric: Metric,
    direction: str = "noise",
    progress: bool = True,
) -> Float[Tensor, " node"]:
    """Exact indirect effect of each node patched alone: the change of the mean metric on the base
    prompts (clean when noising) when the node takes its value on the other prompts and everything
    downstream recomputes. One forward per node, through `HookedModel.edit`."""
    prompts = _check_prompts(prompts)
    direction = _choice(direction, DIRECTIONS, "direction")
    saes = check_saes(model, saes, prompts.seq_len)
    nodes = list(nodes)
    for node in nodes:
        if not isinstance(node, Node) or node.site not in saes:
            raise InputError(f"{node!r} is not a node of these SAEs' sites ({', '.join(map(str, saes))}).")
        if node.feature is not None and not 0 <= node.feature < saes[node.site].d_sae:
            raise InputError(f"{node.label()}: feature {node.feature} is outside the SAE's d_sae={saes[node.site].d_sae}.")
        if node.pos is not None and not 0 <= node.pos < prompts.seq_len:
            raise InputError(f"{node.label()}: position {node.pos} is outside prompts of {prompts.seq_len} tokens.")
    base_tokens, source_tokens = _runs(prompts, direction)
    _, source = _cache(model, source_tokens, {s: saes[s] for s in {n.site for n in nodes}} or saes)
    with torch.no_grad():
        baseline = _mean_metric(metric, model(base_tokens), prompts)
        out = torch.empty(len(nodes), dtype=torch.float64)
        for i, node in enumerate(tqdm(nodes, desc="exact node patches", disable=not progress)):
            site, edit = node_edit(node, saes[node.site], source[node.site])
            with model.edit({site: edit}):
                out[i] = _mean_metric(metric, model(base_tokens), prompts) - baseline
    return out.float()


def check_top_nodes(
    model,
    prompts: PromptSet,
    saes: Mapping[SiteLike, SAE],
    attribution: FeatureAttribution,
    metric: Metric,
    n: int = 20,
    progress: bool = True,
) -> NodeCheck:
    """Patch each of ``attribution``'s top ``n`` nodes alone (`node_patch_effects`, same direction)
    and compare with the estimates: Pearson / Spearman correlation, sign agreement, relative error."""
    n = check_count(n, "n")
    if not isinstance(attribution, FeatureAttribution):
        raise InputError(f"attribution must be a FeatureAttribution (from feature_attribution), got {type(attribution).__name__}.")
    nodes = attribution.top_nodes(n)
    estimate = torch.tensor([attribution.effect_of(node) for node in nodes])
    exact = node_patch_effects(model, prompts, saes, nodes, metric, attribution.settings["direction"], progress)
    stats = {"pearson": float("nan"), "spearman": float("nan")}
    if len(nodes) >= 2:
        a = agreement(estimate, exact, k=len(nodes), baseline=0.0)
        stats = {"pearson": a["pearson"], "spearman": a["spearman"]}
    stats["sign_agreement"] = float((torch.sign(estimate) == torch.sign(exact)).float().mean())
    stats["relative_error"] = float((estimate - exact).abs().sum() / exact.abs().sum().clamp_min(1e-12))
    return NodeCheck(nodes, estimate, exact, stats)


# =============================================================================== faithfulness
@dataclass(frozen=True, eq=False)
class CircuitAblation:
    """An intervention keeping the circuit's nodes at one site and ablating the others:
    ``x' = decode(where(keep_f, f, ref_f)) + where(keep_e, e, ref_e)`` with ``f, e`` the latents and
    error of the incoming activation. ``keep_f [pos d_sae]``, ``keep_e [pos]``; ``ref_f`` /
    ``ref_e`` broadcast to ``[batch pos d_sae]`` / ``[batch pos d_in]``."""

    sae: SAE
    keep_f: Tensor
    keep_e: Tensor
    ref_f: Tensor
    ref_e: Tensor

    def __call__(self, act: Tensor) -> Tensor:
        x, back = to_feature_axis(act, self.sae.d_in)
        f, e = _split(self.sae, x.to(self.sae.dtype))
        f = torch.where(self.keep_f, f, self.ref_f)
        e = torch.where(self.keep_e[..., None], e, self.ref_e)
        return back((self.sae.decode(f) + e).to(x.dtype))


def _references(model, prompts, saes, ablation, reference) -> dict[Site, tuple[Tensor, Tensor]]:
    """Per site, the values ablated nodes take: ``(ref_f, ref_e)``."""
    if ablation == "corrupted":
        _, acts = _cache(model, prompts.corrupted, saes)
        return {s: tuple(t.detach() for t in _split(saes[s], acts[s])) for s in saes}
    tokens = prompts.clean if reference is None else model.check_tokens(reference)
    _, acts = _cache(model, tokens, saes)
    out = {}
    for s, sae in saes.items():
        with torch.no_grad():
            f, e = _split(sae, acts[s])
        if tokens.shape[1] == prompts.seq_len:  # per position
            out[s] = (f.mean(0), e.mean(0))
        else:  # pooled over every position of the reference
            out[s] = (f.mean((0, 1)), e.mean((0, 1)))
    return out


def _keep_masks(attribution: FeatureAttribution, saes, kept: Tensor, seq_len: int) -> dict[Site, tuple[Tensor, Tensor]]:
    """Boolean keep masks ``([pos d_sae], [pos])`` per site from a flat mask over `effects`."""
    out, at = {}, 0
    for site in attribution.sites:
        f, e = attribution.features[site], attribution.errors[site]
        keep_f = kept[at:at + f.numel()].reshape(f.shape)
        at += f.numel()
        keep_e = kept[at:at + e.numel()].reshape(e.shape)
        at += e.numel()
        if f.ndim == 1:  # summed over positions: a node covers every position
            keep_f, keep_e = keep_f.expand(seq_len, -1), keep_e.expand(seq_len)
        device = saes[site].device
        out[site] = (keep_f.to(device), keep_e.to(device))
    return out


def faithfulness_curve(
    model,
    prompts: PromptSet,
    saes: Mapping[SiteLike, SAE],
    attribution: FeatureAttribution,
    metric: Metric,
    sizes: Sequence[int] | None = None,
    ablation: str = "mean",
    reference: Int[Tensor, "n pos"] | None = None,
    progress: bool = True,
) -> Faithfulness:
    """Faithfulness of the circuits made of ``attribution``'s top nodes (by ``|estimate|``), for
    each number of nodes in ``sizes`` (default: 0, 1, 2, 5, 10, 20, 50, ... up to every node).

    Run on the clean prompts; nodes outside the circuit are ablated at every site at once
    (``ablation="mean"``: their mean over ``reference`` tokens, default the clean prompts, per
    position when ``reference`` has the prompts' length and pooled over positions otherwise;
    ``"corrupted"``: their value on the corrupted prompt). ``(m(C) - m(empty)) / (m(M) - m(empty))``
    with ``m`` the metric's mean: 1 keeping every node, 0 keeping none.
    """
    prompts = _check_prompts(prompts)
    ablation = _choice(ablation, ABLATIONS, "ablation")
    saes = check_saes(model, saes, prompts.seq_len)
    if not isinstance(attribution, FeatureAttribution):
        raise InputError(f"attribution must be a FeatureAttribution (from feature_attribution), got {type(attribution).__name__}.")
    if list(attribution.sites) != list(saes) or any(attribution.features[s].shape[-1] != saes[s].d_sae for s in saes):
        raise InputError(f"The attribution was computed for sites {[str(s) for s in attribution.sites]}; pass the same "
                         f"saes (same sites, same order, same SAEs) to measure its faithfulness.")
    if attribution.by_pos and attribution.settings.get("seq_len") != prompts.seq_len:
        raise InputError(f"The attribution has nodes for {attribution.settings.get('seq_len')} positions but the prompts "
                         f"have {prompts.seq_len} tokens.")
    total = attribution.n_nodes
    if sizes is None:
        sizes = [0] + [m * 10 ** e for e in range(int(math.log10(max(total, 1))) + 1) for m in (1, 2, 5) if m * 10 ** e < total]
        sizes.append(total)
    sizes = [int(s) for s in sizes]
    if any(s < 0 or s > total for s in sizes):
        raise InputError(f"sizes must lie in 0..{total} (the attribution's number of nodes), got {sizes}.")
    refs = _references(model, prompts, saes, ablation, reference)
    order = attribution.ranking()

    def run(kept: Tensor) -> float:
        masks = _keep_masks(attribution, saes, kept, prompts.seq_len)
        edits = {s: CircuitAblation(saes[s], *masks[s], *refs[s]) for s in saes}
        with torch.no_grad(), model.edit(edits):
            return _mean_metric(metric, model(prompts.clean), prompts)

    with torch.no_grad():
        full = _mean_metric(metric, model(prompts.clean), prompts)
    empty = run(torch.zeros(total, dtype=torch.bool))
    if not math.isfinite(full - empty) or full == empty:
        raise MetricError(f"Faithfulness is undefined: the metric is {full:.6g} on the model and {empty:.6g} with every "
                          f"node ablated; pick a metric and ablation that the nodes move.")
    values = []
    for size in tqdm(sizes, desc="faithfulness", disable=not progress):
        kept = torch.zeros(total, dtype=torch.bool)
        kept[order[:size]] = True
        values.append(empty if size == 0 else run(kept))
    circuit = torch.tensor(values, dtype=torch.float64)
    faith = (circuit - empty) / (full - empty)
    return Faithfulness(sizes, faith.float(), circuit.float(), full, empty, total,
                        {"ablation": ablation, "metric": metric_name(metric),
                         "reference": "prompts" if reference is None else f"{tuple(reference.shape)} tokens"})


def circuit_faithfulness(
    model,
    prompts: PromptSet,
    saes: Mapping[SiteLike, SAE],
    attribution: FeatureAttribution,
    metric: Metric,
    n: int,
    ablation: str = "mean",
    reference: Int[Tensor, "n pos"] | None = None,
) -> float:
    """Faithfulness of the circuit of ``attribution``'s top ``n`` nodes (see `faithfulness_curve`)."""
    n = check_count(n, "n")
    return float(faithfulness_curve(model, prompts, saes, attribution, metric, [n], ablation, reference, progress=False).faithfulness[0])


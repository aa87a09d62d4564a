"""Automatic circuit discovery: score every edge of the model's computational graph, keep the few that matter.

The *graph* of a transformer has a node for the embeddings, each attention head, each MLP and the
logits. Everything a node writes is added to the residual stream, so every later node reads the sum
of its predecessors' writes: an *edge* ``u -> v`` is sender u's direct write into receiver v's input.
Attention heads have three inputs (their query, key and value), each a receiver of its own, so an
edge is e.g. ``a0.h3 -> a1.h1.k`` (K-composition). *Patching an edge* (noising, as in ACDC) replaces
u's clean contribution to v's input by its corrupted one and leaves every other path alone::

    input_v = resid_v - out_u(clean) + out_u(corrupted)

(the layer norm in front of v is recomputed from the changed input). A circuit C keeps its edges clean
and patches all others; its *faithfulness* is the metric of that run normalised so that 0 is the
corrupted run (every edge patched) and 1 the clean run (none patched).

Scores (Syed, Rager & Conmy 2023, "Attribution patching outperforms automated circuit discovery";
Hanna, Pezzelle & Belinkov 2024, "Have faith in faithfulness"; Conmy et al. 2023, ACDC):

- ``eap``: ``(out_u(corr) - out_u(clean)) . d metric / d input_v`` on the clean run: one forward on
  each prompt set and one backward for every edge at once;
- ``eap_ig``: the same difference times the gradient averaged over ``steps`` points whose input
  embeddings lie on the line from the corrupted to the clean embeddings (integrated gradients);
- ``exact``: each edge's own patching effect, ``metric(edge patched) - metric(clean)``, batched.

    graph = build_graph(model); print(graph)                        # nodes, receivers, graph.n_edges
    scores = edge_scores(model, prompts, logit_diff, "eap_ig")      # EdgeScores: .top(10), .to_dataframe()
    circuit = scores.circuit(k=20)                                  # or threshold=..., or acdc(model, ..., tau=0.01)
    circuit.faithfulness(model, prompts, logit_diff); circuit.draw()

Two engines run the graph. On every model with an anatomy (`patching.anatomy`) the forward is
driven directly (`_Direct`) and does only the work that changes: positions before the first token
where clean and corrupted prompts differ are computed once (no edge changes them), and the last
layer computes the answer query alone when the metric reads only the answer. EAP / EAP-IG take one
backward to the heads' q, k and v projections (no parameter gradients) and contract it with the
senders' differences through the norm's Jacobian in closed form (`_NormDot`); exact scores
recompute only the receiver at its layer and the layers after it, many edges per pass; circuits
(faithfulness, ACDC) run the whole graph with each receiver's input of its own, from the first
layer with a patched receiver; ACDC tries its edges in speculative batches (the one-at-a-time
algorithm's circuit). On any other `HookedModel` (sites resid_pre, q, k, v, z, resid_post, and
resid_mid / mlp_out for MLPs) hooks run every layer's attention on 1 + (heads + 2 kv_heads) copies of
the batch, one per receiver. ``engine="hooks"`` forces the second; both give the same numbers. In a
parallel-residual block (GPT-NeoX) the MLP reads the layer's input, so it receives no edge from that
layer's heads; the hook engine, having no site at that input, does not run such models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError, InterpError, closest
from interp.sites import Site
from interp.tasks import PromptSet
from patching import anatomy
from patching.metrics import Metric, answer_only, block_means, metric_name

METHODS = ("eap", "eap_ig", "exact")


class DiscoveryError(InterpError):
    """Bad input to circuit discovery (unknown method, a threshold or k out of range, an unsupported model)."""


# =============================================================================== the graph
@dataclass(frozen=True)
class Node:
    """A sender (``input``, ``a{layer}.h{head}``, ``m{layer}``) or a receiver (``a{layer}.h{head}.q|k|v``,
    ``m{layer}``, ``logits``). ``time`` orders them: a sender feeds every receiver of larger time."""

    name: str
    kind: str  # "input", "head", "mlp" (senders); "q", "k", "v", "mlp", "logits" (receivers)
    layer: int | None
    head: int | None
    time: int


@dataclass(frozen=True)
class Graph:
    """The computational graph of a model: senders, receivers and the edges between them.

        graph = build_graph(model)
        graph.n_edges, graph.edge_names[:3]      # 'input -> a0.h0.q', ...
        print(graph)

    ``edges[i] = (sender index, receiver index)``; ``allowed[u, v]`` is True where u writes into v's input.
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    has_mlp: bool
    senders: tuple[Node, ...]
    receivers: tuple[Node, ...]
    edges: tuple[tuple[int, int], ...]

    @property
    def n_edges(self) -> int:
        """How many edges the graph has."""
        return len(self.edges)

    @property
    def edge_names(self) -> list[str]:
        return [f"{self.senders[u].name} -> {self.receivers[v].name}" for u, v in self.edges]

    @property
    def allowed(self) -> Bool[Tensor, "sender receiver"]:
        out = torch.zeros(len(self.senders), len(self.receivers), dtype=torch.bool)
        out[tuple(torch.tensor(self.edges).T)] = True
        return out

    def index(self, name: str) -> int:
        """The index of the edge ``"sender -> receiver"`` (e.g. ``"a0.h1 -> a1.h2.k"``)."""
        names = self.edge_names
        if name not in names:
            raise DiscoveryError(f"No edge {name!r} in this graph.{closest(name, names)} Edges look like 'a0.h1 -> a1.h2.k'.")
        return names.index(name)

    def __repr__(self) -> str:
        return (f"Graph(n_layers={self.n_layers}, n_heads={self.n_heads}, mlps={self.has_mlp}, "
                f"senders={len(self.senders)}, receivers={len(self.receivers)}, n_edges={self.n_edges})")

    def __str__(self) -> str:
        lines = [repr(self), "  senders:   " + " ".join(n.name for n in self.senders),
                 f"  receivers: {len(self.receivers)} (" + " ".join(n.name for n in self.receivers[:6]) + " ...)"]
        lines += ["  edges:     " + ", ".join(self.edge_names[:4]) + f", ... ({self.n_edges} in all)"]
        return "\n".join(lines)

    # receivers read in one step of the forward
    def attn_receivers(self, layer: int) -> list[int]:
        return [i for i, r in enumerate(self.receivers) if r.kind in "qkv" and r.layer == layer]

    def mlp_receiver(self, layer: int) -> int:
        return next(i for i, r in enumerate(self.receivers) if r.kind == "mlp" and r.layer == layer)

    @property
    def logits_receiver(self) -> int:
        return len(self.receivers) - 1

    def n_senders_before(self, time: int) -> int:
        """Senders are ordered by time: how many write before a receiver of ``time`` reads."""
        return sum(1 for s in self.senders if s.time < time)


def build_graph(model) -> Graph:
    """The graph of ``model``: senders ``input``, every head ``a{l}.h{h}``, every MLP ``m{l}``;
    receivers every head's ``q``, ``k`` and ``v`` (one per key/value head under grouped-query
    attention), every MLP and ``logits``. Times: input -1, heads of layer l 2l, its MLP 2l + 1 (2l in a
    parallel-residual block, whose MLP reads the layer's input, not its heads' writes), logits 2L."""
    L, H = model.n_layers, model.n_heads
    kv = getattr(model, "n_kv_heads", H)
    mlp = bool(model.has_mlp)
    late = 0 if anatomy.parallel_residual(model) else 1  # a parallel block's MLP reads resid_pre, not its heads
    senders = [Node("input", "input", None, None, -1)]
    receivers = []
    for layer in range(L):
        senders += [Node(f"a{layer}.h{h}", "head", layer, h, 2 * layer) for h in range(H)]
        for kind, n in (("q", H), ("k", kv), ("v", kv)):
            receivers += [Node(f"a{layer}.h{h}.{kind}", kind, layer, h, 2 * layer) for h in range(n)]
        if mlp:
            senders.append(Node(f"m{layer}", "mlp", layer, None, 2 * layer + late))
            receivers.append(Node(f"m{layer}", "mlp", layer, None, 2 * layer + late))
    receivers.append(Node("logits", "logits", None, None, 2 * L))
    edges = tuple((u, v) for v, r in enumerate(receivers) for u, s in enumerate(senders) if s.time < r.time)
    return Graph(L, H, kv, mlp, tuple(senders), tuple(receivers), edges)


# =============================================================================== results
@dataclass
class EdgeScores:
    """A score per edge of ``graph`` (``scores[i]`` for ``graph.edges[i]``), from `edge_scores`.

        scores = edge_scores(model, prompts, logit_diff, "exact")
        scores.top(5)                 # DataFrame: the edges of largest |score|
        scores.circuit(k=20)          # a Circuit of the 20 edges of largest |score|

    A score estimates (``eap``, ``eap_ig``) or measures (``exact``) the change of the mean metric when
    that edge alone is patched (noising). ``settings`` holds the method, metric, clean and corrupted values.
    """

    graph: Graph
    scores: Float[Tensor, " edge"]
    method: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"EdgeScores(method={self.method!r}, n_edges={self.graph.n_edges}, settings={self.settings})"

    def to_dataframe(self):
        """One row per edge: ``sender``, ``receiver``, ``input`` (q / k / v / resid), ``edge``, ``score``."""
        import pandas as pd

        rows = []
        for (u, v), score in zip(self.graph.edges, self.scores.tolist(), strict=True):
            s, r = self.graph.senders[u], self.graph.receivers[v]
            rows.append({"sender": s.name, "receiver": r.name.rsplit(".", 1)[0] if r.kind in "qkv" else r.name,
                         "input": r.kind if r.kind in "qkv" else "resid", "edge": f"{s.name} -> {r.name}", "score": score})
        return pd.DataFrame(rows)

    def order(self) -> Tensor:
        """Edge indices by decreasing |score| (ties by edge order)."""
        return torch.from_numpy((-self.scores.abs()).numpy().argsort(kind="stable"))

    def top(self, k: int = 10):
        """The ``k`` edges of largest absolute score (a DataFrame, largest first)."""
        _check_k(k, self.graph.n_edges, "top")
        return self.to_dataframe().loc[self.order()[:k].tolist()].reset_index(drop=True)

    def circuit(self, k: int | None = None, threshold: float | None = None) -> Circuit:
        """The circuit of the ``k`` edges of largest |score|, or of every edge with |score| >= ``threshold``."""
        if (k is None) == (threshold is None):
            raise DiscoveryError(f"Give exactly one of k and threshold (got k={k!r}, threshold={threshold!r}).")
        keep = torch.zeros(self.graph.n_edges, dtype=torch.bool)
        if k is not None:
            _check_k(k, self.graph.n_edges, "circuit", allow_zero=True)
            keep[self.order()[:k]] = True
        else:
            if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not threshold >= 0:
                raise DiscoveryError(f"threshold must be a non-negative number (compared with |score|), got {threshold!r}.")
            keep = self.scores.abs() >= threshold
        return Circuit(self.graph, keep, self.scores.clone(), self.method)


def _check_k(k, n: int, what: str, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(k, int) or isinstance(k, bool) or not low <= k <= n:
        raise DiscoveryError(f"{what}: k must be an int from {low} to {n} (the graph's edges), got {k!r}.")


@dataclass
class Circuit:
    """A set of edges of ``graph`` (``edges[i]`` True: ``graph.edges[i]`` is in the circuit).

        circuit = scores.circuit(k=20)                   # or acdc(model, prompts, metric, tau=0.02)
        circuit.faithfulness(model, prompts, logit_diff) # 1 = clean model, 0 = fully corrupted
        circuit.draw()                                   # matplotlib Figure: nodes by layer, width by score
    """

    graph: Graph
    edges: Bool[Tensor, " edge"]
    scores: Float[Tensor, " edge"] | None = None
    method: str = ""
    value: float | None = None  # the faithfulness the method measured for it (ACDC: its last patched trial)

    @property
    def n_edges(self) -> int:
        """How many edges the circuit keeps."""
        return int(self.edges.sum())

    @property
    def edge_names(self) -> list[str]:
        names = self.graph.edge_names
        return [names[i] for i in torch.nonzero(self.edges).flatten().tolist()]

    def __contains__(self, edge: str) -> bool:
        return bool(self.edges[self.graph.index(edge)])

    def __repr__(self) -> str:
        return f"Circuit(method={self.method!r}, n_edges={self.n_edges} of {self.graph.n_edges})"

    def faithfulness(self, model, prompts: PromptSet, metric: Metric, engine: str = "auto") -> float:
        """The metric with every edge outside the circuit patched, normalised (0 = corrupted, 1 = clean)."""
        return float(faithfulness(model, prompts, metric, [self], engine=engine)[0])

    def draw(self, ax=None, title: str | None = None):
        """The circuit as a figure: nodes laid out by layer (input left, logits right, heads stacked),
        an edge per kept edge coloured by the receiver's input (q / k / v / residual), its width by |score|."""
        return draw_circuit(self, ax=ax, title=title)


# =============================================================================== the engines
class _Mixer:
    """The change of every receiver's input: ``delta_v = sum_u W[c, u, v] (out_u(corr) - out_u(now))`` for
    each copy c of the batch, plus a zero probe (a leaf for the gradient) where asked. A sender's
    output may be one for all copies (``[n s d]``: a state shared by every copy) or one per copy
    (``[C*n s d]``). Where the engine passes the residual stream ``x`` and the corrupted run's at the
    receivers' time (``corr_resid``) and most senders are patched, the sum runs over the few kept
    ones: ``delta = (corr_resid - x) - sum_u (1 - W[c, u, v]) (out_u(corr) - out_u(now))``."""

    def __init__(self, graph: Graph, W: Tensor | None, corr: Tensor | None, copies: int, n: int, probe: bool,
                 corr_resid: dict[int, Tensor] | None = None):
        self.graph, self.W, self.corr, self.C, self.n, self.probe = graph, W, corr, copies, n, probe
        self.corr_resid = corr_resid  # receiver time -> the corrupted run's residual stream there [n s d]
        self.probes: dict[int, Tensor] = {}  # first receiver index -> leaf [rows S R d]

    def delta(self, receivers: list[int], outs: list[Tensor], active: bool = False, x: Tensor | None = None):
        """``[rows S R d]`` for the R receivers (all of the same time), or None when nothing changes.
        With ``active``: ``(delta [rows S R' d], positions)`` for the R' receivers that change (all with a
        probe), positions indexing ``receivers``; ``(None, [])`` when none does."""
        time = self.graph.receivers[receivers[0]].time
        k = self.graph.n_senders_before(time)
        out, keep = None, list(range(len(receivers)))
        if self.W is not None:
            w = self.W[:, :k][:, :, receivers]  # [copies sender receiver]
            if active and not self.probe:
                keep = torch.nonzero(w.any(1).any(0)).flatten().tolist()
                w = w[:, :, keep]
            patched = torch.nonzero(w.any(2).any(0)).flatten().tolist()
            kept = torch.nonzero((w != 1).any(2).any(0)).flatten().tolist()
            if patched and x is not None and self.corr_resid is not None and len(kept) < len(patched):
                whole = self.corr_resid[time][None] - x.view(self.C, self.n, *x.shape[1:])  # every sender patched
                out = whole[..., None, :] - self._mix(1 - w, kept, outs) if kept else whole[..., None, :].expand(
                    *whole.shape[:-1], w.shape[2], whole.shape[-1])
                out = out.flatten(0, 1)
            elif patched:
                out = self._mix(w, patched, outs).flatten(0, 1)
        if self.probe:
            like = outs[0]
            leaf = torch.zeros(self.C * self.n, like.shape[1], len(receivers), like.shape[-1], dtype=like.dtype,
                               device=like.device, requires_grad=True)
            self.probes[receivers[0]] = leaf
            out = leaf if out is None else out + leaf
        if active:
            return (out, keep) if out is not None else (None, [])
        return out

    def _mix(self, w: Tensor, senders: list[int], outs: list[Tensor]) -> Tensor:
        """``sum_u w[c, u, r] (out_u(corr) - out_u(now))`` over ``senders`` -> ``[C n S R d]``."""
        total = 0
        shared = [j for j in range(len(senders)) if self.C > 1 and outs[senders[j]].shape[0] == self.n]
        for group in (shared, [j for j in range(len(senders)) if j not in set(shared)]):
            if not group:
                continue
            us = [senders[j] for j in group]
            cur = torch.stack([outs[u] for u in us])  # [u rows S d]
            if group is shared:  # one output for every copy: copy 0's weights once, the other copies' departures from them
                diff, wu = self.corr[us].to(cur.dtype) - cur, w[:, us].to(cur.dtype)
                total = total + einops.einsum(wu[0], diff, "u r, u n s d -> n s r d")[None]
                rest = wu[1:] - wu[0]
                moved = torch.nonzero(rest.any(2).any(0)).flatten()
                if len(moved):
                    total = total + F.pad(einops.einsum(rest[:, moved], diff[moved], "c u r, u n s d -> c n s r d"),
                                          (0, 0) * 4 + (1, 0))
            else:
                diff = self.corr[us][:, None].to(cur.dtype) - cur.view(len(us), self.C, self.n, *cur.shape[2:])
                total = total + einops.einsum(w[:, us].to(cur.dtype), diff, "c u r, u c n s d -> c n s r d")
        return total.expand(self.C, *total.shape[1:])


@dataclass
class _Run:
    logits: Tensor  # [rows S vocab], or [rows vocab] (answer position only)
    outs: list[Tensor]  # each sender's output [rows S d]
    probes: dict[int, Tensor]
    resid: dict[int, Tensor] = field(default_factory=dict)  # receiver time -> the residual stream there (whole-graph engine)


class _GraphEngine:
    """The whole graph on the model's anatomy (circuits, faithfulness, ACDC): `_Direct.run` with a
    `_Mixer`, from position ``p0`` (the senders' outputs are ``[rows S - p0 d]``). ``start``: the layer
    to start from, when no edge into an earlier receiver is patched (the state there is ``start_run``'s)."""

    def __init__(self, d: _Direct, clean: Tensor, corrupted: Tensor, at: int | None):
        self.d, self.p0 = d, _first_change(clean, corrupted, at)
        self.prefix = self.prefix_logits = None
        if self.p0 > 0:  # the keys, values (and, for metrics reading every position, logits) of positions 0..p0-1
            with torch.no_grad():
                t = d.run(d.net.embed(corrupted[:, : self.p0]), 0, None, None)
            self.prefix, self.prefix_logits = list(zip(t.keys, t.values, strict=True)), t.logits if at is None else None

    def run(self, tokens: Tensor, mixer: _Mixer, at: int | None, embed: Tensor | None = None, start: int = 0,
            start_run: _Run | None = None) -> _Run:
        g, rows = self.d.graph, tokens.shape[0]
        if start > 0:  # the clean run's state before layer ``start`` (every copy the same)
            x = start_run.resid[2 * start].repeat(rows // start_run.resid[2 * start].shape[0], 1, 1)
            outs = start_run.outs[: g.n_senders_before(2 * start)]
        else:
            x = self.d.net.embed(tokens)[:, self.p0 :] if embed is None else embed.to(self.d.net.W_U.dtype)
            outs = [x]
        t = self.d.run(x, self.p0, self.prefix, at, start, mixer, outs)
        resid = {2 * g.n_layers: t.final}  # receiver time -> the residual stream there (of unpatched runs)
        for i, layer in enumerate(range(start, g.n_layers)):
            resid[2 * layer] = t.x[i]
            if t.mlp_in:
                resid[g.receivers[g.mlp_receiver(layer)].time] = t.mlp_in[i]
        logits = t.logits
        if at is None and self.prefix_logits is not None:  # the prefix's logits (no edge changes them) first
            logits = torch.cat([self.prefix_logits.repeat(rows // len(self.prefix_logits), 1, 1).to(logits.dtype), logits], dim=1)
        return _Run(logits, outs, mixer.probes, resid)


def _identity(x: Tensor) -> Tensor:
    return x


class _HookEngine:
    """Any HookedModel, through hooks: at each layer the batch runs as 1 + R copies (R attention
    receivers); copy r's residual input is the main copy's plus receiver r's change, and the main
    copy's q / k / v of receiver r are taken from copy r."""

    def __init__(self, model, graph: Graph):
        need = ["resid_pre", "q", "k", "v", "z", "resid_post"] + (["resid_mid", "mlp_out"] if graph.has_mlp else [])
        have = set(model.supported_kinds)
        missing = [k for k in need if k not in have]
        if missing or "head_out" not in have:
            why = model.why_unsupported("resid_mid") if "resid_mid" in missing else ""
            raise DiscoveryError(
                f"Circuit discovery needs the sites {', '.join(need)} and each head's W_O; this model lacks "
                f"{', '.join(missing) or 'W_O (head_out)'}. {why}".strip()
            )
        self.model, self.graph = model, graph
        self.H, self.kv = graph.n_heads, graph.n_kv_heads
        self.R = self.H + 2 * self.kv

    def run(self, tokens: Tensor, mixer: _Mixer, at: int | None, embed: Tensor | None = None, start: int = 0,
            start_run: _Run | None = None) -> _Run:
        """(``start``, ``start_run``: ignored; hooks run every layer.)"""
        g, H, kv, rows, model = self.graph, self.H, self.kv, tokens.shape[0], self.model
        outs: list[Tensor] = []
        state: dict[int, Tensor | None] = {}  # layer -> delta of its attention receivers

        def resid_pre(layer):
            def fn(act):
                main = act[:rows]
                if layer == 0:
                    if embed is not None:
                        main = embed.to(act.dtype)
                    outs.append(main)
                delta = mixer.delta(g.attn_receivers(layer), outs)
                state[layer] = delta
                if delta is None:
                    return torch.cat([main, act[rows:]]) if layer == 0 and embed is not None else act
                copies = einops.rearrange(main[:, :, None] + delta, "b s r d -> (r b) s d")
                return torch.cat([main, copies])

            return fn

        def qkv(layer, offset, n):  # the main rows take head h's q / k / v from the copy of its receiver
            def fn(act):
                if state.get(layer) is None:
                    return act
                picked = torch.stack([act[(1 + offset + h) * rows : (2 + offset + h) * rows, :, h] for h in range(n)], dim=2)
                return torch.cat([picked.to(act.dtype), act[rows:]])

            return fn

        def z_read(layer):
            def fn(act):
                W_O = model.backend.W_O(layer).to(act.device, act.dtype)
                outs.extend(einops.einsum(act[:rows], W_O, "b s h e, h e m -> b s h m").unbind(2))
                return act

            return fn

        def receive(receiver):  # an MLP's or the logits' input: the main rows plus the receiver's change
            def fn(act):
                delta = mixer.delta([receiver], outs)
                return act if delta is None else torch.cat([act[:rows] + delta[:, :, 0], act[rows:]])

            return fn

        def mlp_out(act):
            outs.append(act[:rows])
            return act

        edits: list[tuple[Site, Callable]] = []
        for layer in range(g.n_layers):
            edits += [(Site("resid_pre", layer), resid_pre(layer)), (Site("q", layer), qkv(layer, 0, H)),
                      (Site("k", layer), qkv(layer, H, kv)), (Site("v", layer), qkv(layer, H + kv, kv)),
                      (Site("z", layer), z_read(layer))]
            if g.has_mlp:
                edits += [(Site("resid_mid", layer), receive(g.mlp_receiver(layer))), (Site("mlp_out", layer), mlp_out)]
        edits.append((Site("resid_post", g.n_layers - 1), receive(g.logits_receiver)))
        logits = model.run(einops.repeat(tokens, "b s -> (e b) s", e=1 + self.R), edits=edits, detach=False)[0][:rows]
        return _Run(logits[:, at] if at is not None else logits, outs, mixer.probes)


# =============================================================================== the direct engine
@dataclass
class _Trace:
    """One run of `_Direct.run`: per layer (lists), at the positions each was computed for."""

    x: list[Tensor]  # resid_pre [B s d] (positions p0..)
    qkv: list[Tensor]  # every head's q, k and v projections (before rotary) [B s H+2KV dh] (the last layer: k, v)
    keys: list[Tensor]  # the keys / values the queries read, prefix included: [B KV S dh] (rotated)
    values: list[Tensor]
    qs: list[Tensor]  # the queries as attention read them (rotated) [B H sq dh] (the last layer: the answer's)
    outs: list[Tensor]  # each head's write [B sq H d]
    mid: list[Tensor]  # resid_pre plus the attention's write [B sq d]
    mlp_in: list[Tensor]  # the MLP's input before its norm [B sq d]: mid, or resid_pre (parallel residual)
    h2: list[Tensor]  # ln2(mlp_in) [B sq d]
    mlp: list[Tensor]  # mlp_out [B sq d]
    final: Tensor | None = None  # the logits' input [B sq d]
    logits: Tensor | None = None  # [B vocab] (answer only) or [B s vocab]
    q_last: Tensor | None = None  # the last layer's answer query projections [B 1 H dh] (answer only)


class _Direct:
    """Discovery's one forward, on the model's anatomy, at positions p0.. (the shared prefix's keys and
    values are passed in) and, when the metric reads the answer alone, the last layer's answer query
    alone: EAP / EAP-IG, exact scores and, with a `_Mixer`, circuits (`_GraphEngine`)."""

    def __init__(self, model, graph: Graph):
        self.net = net = anatomy.of(model)
        self.graph = graph
        self.L, self.H, self.KV, self.dh = net.n_layers, net.n_heads, net.n_kv_heads, net.d_head
        self.has_mlp = not net.attn_only
        self.layers = []
        for layer, parts in enumerate(net.layers):
            lay = dict(ln1=parts["ln1"] or _identity, ln2=(parts["ln2"] or _identity) if self.has_mlp else None, mlp=parts["mlp"])
            lay["dot1"] = _NormDot(anatomy.norm_spec(parts["norm1"]), lay["ln1"])
            lay["dot2"] = _NormDot(anatomy.norm_spec(parts["norm2"]), lay["ln2"]) if self.has_mlp else None
            (W, b), (W_O, b_O) = net.qkv_weights(layer), net.o_weights(layer)
            lay["Wqkv"], lay["bqkv"] = W.detach(), None if b is None else b.detach()  # [H+2KV dh d]: queries, keys, values
            lay["Wflat"] = lay["Wqkv"].flatten(0, 1)  # [(H+2KV)*dh d]: one linear map for every head's q, k, v
            lay["bflat"] = None if b is None else lay["bqkv"].flatten()
            lay["WOflat"], lay["bO"] = W_O.detach(), None if b_O is None else b_O.detach()  # [d (H dh)]
            lay["WO"] = einops.rearrange(lay["WOflat"], "d (h e) -> h e d", h=self.H)
            self.layers.append(lay)

    # --------------------------------------------------------------------------- pieces
    def project(self, layer: int, kind: str, h: Tensor, heads: Tensor) -> Tensor:
        """``h [E n s d]`` -> ``[E n s dh]``: edge e's input through the ``kind`` projection of head
        ``heads[e]`` (a query head for q, a key/value head for k and v)."""
        lay, rows = self.layers[layer], heads + {"q": 0, "k": self.H, "v": self.H + self.KV}[kind]  # rows of Wqkv
        out = einops.einsum(h, lay["Wqkv"][rows], "E n s m, E e m -> E n s e")
        return out if lay["bqkv"] is None else out + lay["bqkv"][rows][:, None, None]

    def mlp(self, layer: int, mlp_in: Tensor) -> tuple[Tensor, Tensor]:
        lay = self.layers[layer]
        h2 = lay["ln2"](mlp_in)
        return h2, lay["mlp"](h2)

    # --------------------------------------------------------------------------- runs
    def run(self, x: Tensor, p0: int, prefix, at: int | None, first_layer: int = 0, mixer: _Mixer | None = None,
            senders: list[Tensor] | None = None) -> _Trace:
        """Layers ``first_layer..`` on the residual stream ``x [B s d]`` of positions p0.. (rows: copies
        of the n prompts, each reading the prefix's keys and values); ``at``: the answer position, whose
        query alone the last layer computes. With ``mixer`` (the whole graph): each receiver reads the
        residual stream plus the mixer's change from the sender outputs ``senders`` (which the heads and
        MLPs append to), and the last layer computes every position; the trace then holds ``x``,
        ``mlp_in``, ``final`` and ``logits`` alone."""
        t = _Trace([], [], [], [], [], [], [], [], [], [])
        B, s, _ = x.shape
        H, KV, dh, net = self.H, self.KV, self.dh, self.net
        for layer in range(first_layer, self.L):
            lay = self.layers[layer]
            last = at is not None and layer == self.L - 1 and mixer is None
            t.x.append(x)
            h = lay["ln1"](x)
            if last:  # keys and values at every position, the query at the answer alone
                a, W, b = at - p0, lay["Wflat"], lay["bflat"]
                x, hq = x[:, a : a + 1], h[:, a : a + 1]
                t.q_last = F.linear(hq, W[: H * dh], None if b is None else b[: H * dh]).view(B, 1, H, dh)
                qkv = F.linear(h, W[H * dh :], None if b is None else b[H * dh :]).view(B, s, 2 * KV, dh)
                q, (k, v) = t.q_last.transpose(1, 2), (part.transpose(1, 2) for part in qkv.split(KV, dim=2))
            else:
                qkv = self._qkv(layer, x, h, mixer, senders)
                q, k, v = (part.transpose(1, 2) for part in qkv.split([H, KV, KV], dim=2))  # [B heads s dh]
            qf = at if last else p0
            q, keys, values = net.rope(layer, q, qf), net.rope(layer, k, p0), v
            if prefix is not None:
                keys, values = (anatomy.with_prefix(pre, t) for pre, t in zip(prefix[layer], (keys, values), strict=True))
            z = net.attend(layer, q, keys, values, qf)  # [B H sq dh]
            pre = x
            if torch.is_grad_enabled() and z.requires_grad:  # the gradient flows through one linear map,
                x = x + F.linear(z.transpose(1, 2).reshape(B, z.shape[2], -1), lay["WOflat"], lay["bO"])
                with torch.no_grad():  # ... each head's write is read, not differentiated
                    outs = einops.einsum(z, lay["WO"], "b h s e, h e d -> b s h d")
            else:
                outs = einops.einsum(z, lay["WO"], "b h s e, h e d -> b s h d")  # each head's write
                x = x + outs.sum(2)
                if lay["bO"] is not None:
                    x = x + lay["bO"]
            if mixer is None:  # (the whole graph keeps the residual stream alone: trials run many copies)
                t.qkv.append(qkv), t.keys.append(keys), t.values.append(values), t.qs.append(q)
                t.outs.append(outs), t.mid.append(x)
            else:
                senders.extend(outs.unbind(2))
            if self.has_mlp:
                mlp_in = pre if net.parallel else x
                d_m = None if mixer is None else mixer.delta([self.graph.mlp_receiver(layer)], senders, x=mlp_in)
                h2, out = self.mlp(layer, mlp_in if d_m is None else mlp_in + d_m[:, :, 0])
                t.mlp_in.append(mlp_in)
                if mixer is None:
                    t.h2.append(h2), t.mlp.append(out)
                else:
                    senders.append(out)
                x = x + out
        d_f = None if mixer is None else mixer.delta([self.graph.logits_receiver], senders, x=x)
        t.final = x if d_f is None else x + d_f[:, :, 0]
        t.logits = net.unembed(t.final if at is None else t.final[:, at - p0 if mixer is not None else 0])
        return t

    def _qkv(self, layer: int, x: Tensor, h: Tensor, mixer: _Mixer | None, senders: list[Tensor] | None) -> Tensor:
        """Every head's q, k and v (before rotary) ``[B s H+2KV dh]`` from ``h = ln1(x)``; with ``mixer``,
        each receiver whose input changes from its own input ``ln1(x + change)``, through its own rows."""
        lay = self.layers[layer]
        delta, changed = (None, []) if mixer is None else mixer.delta(self.graph.attn_receivers(layer), senders, active=True, x=x)
        if len(changed) < len(lay["Wqkv"]):
            qkv = F.linear(h, lay["Wflat"], lay["bflat"]).view(*x.shape[:2], -1, self.dh)
        if not changed:
            return qkv
        every = len(changed) == len(lay["Wqkv"])  # (most circuits)
        W, b = (lay["Wqkv"], lay["bqkv"]) if every else (lay["Wqkv"][changed], None if lay["bqkv"] is None else lay["bqkv"][changed])
        new = einops.einsum(lay["ln1"](x[:, :, None] + delta), W, "b s r m, r e m -> b s r e")
        new = new if b is None else new + b
        return new if every else qkv.index_copy(2, torch.tensor(changed, device=x.device), new)


def _first_change(clean: Tensor, corrupted: Tensor, at: int | None) -> int:
    """The first position where any clean and corrupted prompt differ (clamped so that the answer
    position, or the last one, is still computed)."""
    S = clean.shape[1]
    differ = torch.nonzero((clean != corrupted).any(0)).flatten()
    p0 = int(differ[0]) if len(differ) else S - 1
    return min(p0, at if at is not None else S - 1)


@dataclass
class _DirectSetup:
    """What EAP and exact share on the direct engine: the shared prefix and the corrupted run."""

    d: _Direct
    prompts: PromptSet
    metric: Metric
    at: int | None
    p0: int
    emb_clean: Tensor  # [n s d] at positions p0..
    emb_corr: Tensor
    prefix: list | None  # per layer (keys, values) [n H p0 dh]
    prefix_logits: Tensor | None  # [n p0 vocab], for metrics that read every position
    corr_outs: list[Tensor]  # each sender's corrupted write at positions p0.. (the last layer's: the answer position)
    corrupted_value: float

    def values(self, logits: Tensor, copies: int) -> Tensor:
        """The mean metric of each of ``copies`` blocks of n rows: ``[copies]`` (float64; differentiable)."""
        if self.prefix_logits is not None:  # full logits: the prefix's (unchanged) logits first
            logits = torch.cat([self.prefix_logits.repeat(copies, 1, 1).to(logits.dtype), logits], dim=1)
        return block_means(self.metric, logits, self.prompts, copies, self.at)

    def sender_outs(self, t: _Trace, start: int = 0) -> list[Tensor]:
        """Each sender's write ``[n sq d]`` (input, then per layer its heads and MLP) from position
        ``start`` of the run on (the last layer's at the answer position alone, where it computed that alone)."""
        outs = [t.x[0][:, start:]]
        for layer in range(self.d.L):
            skip = 0 if self.at is not None and layer == self.d.L - 1 else start
            outs += [o[:, skip:] for o in t.outs[layer].unbind(2)]
            if self.d.has_mlp:
                outs.append(t.mlp[layer][:, skip:])
        return outs


def _direct_setup(d: _Direct, prompts: PromptSet, metric: Metric, clean: Tensor, corrupted: Tensor,
                  at: int | None) -> _DirectSetup:
    """The corrupted run, at every position: its writes from p0 on, and the keys and values of the
    positions before p0 (where clean and corrupted prompts agree), which every later run reads."""
    p0 = _first_change(clean, corrupted, at)
    with torch.no_grad():
        emb_clean, emb_corr = d.net.embed(clean), d.net.embed(corrupted)
        corr = d.run(emb_corr, 0, None, at)
        corrupted_value = float(block_means(metric, corr.logits, prompts, 1, at)[0])
        prefix = [(k[:, :, :p0], v[:, :, :p0]) for k, v in zip(corr.keys, corr.values, strict=True)] if p0 > 0 else None
        prefix_logits = corr.logits[:, :p0] if p0 > 0 and at is None else None
        ds = _DirectSetup(d, prompts, metric, at, p0, emb_clean[:, p0:], emb_corr[:, p0:], prefix, prefix_logits, [],
                          corrupted_value)
        ds.corr_outs = ds.sender_outs(corr, p0)
    return ds


class _NormDot:
    """``sum over rows and positions of (J diff_u) . (W_r^T g_r)`` for every sender difference u and
    receiver r at once, J the Jacobian of a norm at its input x, W_r the receiver's projection (none for
    an MLP's input) and g_r the gradient at its output, without a per-(u, r) copy of the residual
    stream: closed forms for LayerNorm and RMSNorm (with or without a scale) and for no norm; any other
    norm module takes its autograd backward on R copies of x."""

    def __init__(self, spec: anatomy.NormSpec | None, fn):
        """``spec``: the norm as `patching.anatomy.norm_spec` reads it (None: any other norm, by
        autograd); ``fn``: the norm as a function."""
        self.fn, self.kind = fn, "generic" if spec is None else ("none" if spec.kind == "none" else "closed")
        if spec is not None:
            self.centre, self.weight, self.eps = spec.centre, spec.weight, spec.eps

    def __call__(self, x: Tensor, diffs: Tensor, copies: int, grads: Tensor, W: Tensor | None = None,
                 centred: Tensor | None = None) -> Tensor:
        """``x [C*n s d]`` (the norm's input), ``diffs [U n s d]`` (the same for every copy; ``centred``:
        the same minus their mean over d, if the caller has them), ``grads`` at the receivers' outputs:
        ``[C*n s R dh]`` with their projections ``W [R dh d]``, or ``[C*n s d]`` (one receiver, the
        norm's output itself) -> ``[U R]`` (float64).

        With ``J v = scale (v_c - xhat mean(v_c xhat))`` (v_c = v centred for a LayerNorm, v for an
        RMSNorm), ``sum (J v_u) . (W_r^T g_r) = sum (scale v_c) . (W_r^T g_r) - sum_rows,positions
        mean(v_c xhat) (W_r (scale xhat)) . g_r``: one contraction of the scaled differences with the
        receivers' cotangents (or, for one difference, of its projection with the gradients), and a
        rank-one correction computed in d_head."""
        C, U = copies, diffs.shape[0]
        n, s, dm = diffs.shape[1:]
        mlp = W is None
        R = 1 if mlp else W.shape[0]
        if self.kind == "generic":
            cot = grads[None] if mlp else self._cot(grads, W)  # [R C*n s d]
            with torch.enable_grad():
                xr = x.detach().expand(cot.shape).clone().requires_grad_(True)
                back = torch.autograd.grad(self.fn(xr), xr, cot)[0]
            return (diffs.reshape(U, -1) @ back.reshape(R, C, -1).sum(1).T).double()
        if self.kind == "none":  # J = 1 for every copy
            g = grads.reshape(C, -1).sum(0) if mlp else grads.view(C, n, s, R, -1).sum(0)
            return self._main(diffs, g, W, 1).double()
        xf = x.float()
        if self.centre:
            xf = xf - xf.mean(-1, keepdim=True)
        inv = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)  # [B s 1]
        xhat = xf * inv
        scale = inv if self.weight is None else inv * self.weight  # [B s d] or [B s 1]
        if 2 * R < U * C:  # fewer receivers: J^T (W_r^T g_r) = centre(a - xhat mean(a xhat)), a = scale W_r^T g_r
            a = (grads if mlp else self._cot(grads, W)) * scale  # [(R) B s d]
            back = a - xhat * (a * xhat).mean(-1, keepdim=True)
            if self.centre:
                back = back - back.mean(-1, keepdim=True)
            return (diffs.reshape(U, -1).float() @ back.reshape(R, C, -1).sum(1).T).double()
        v = diffs.float()
        if self.centre:
            v = centred.float() if centred is not None else v - v.mean(-1, keepdim=True)
        per_copy = (lambda t: t.view(C, n, s, -1)) if C > 1 else (lambda t: t)  # noqa: E731
        vc = v[:, None] if C > 1 else v
        scaled = vc * per_copy(scale)  # [U (C) n s d]
        delta = (vc * per_copy(xhat)).mean(-1).reshape(U, -1)  # [U (C n s)]
        sx = scale * xhat  # [B s d]
        if mlp:
            gamma = (sx * grads).sum(-1).reshape(-1, 1)  # [(C n s) 1]
        else:
            gamma = (F.linear(sx, W.flatten(0, 1)).view(*sx.shape[:2], R, -1) * grads).sum(-1).reshape(-1, R)
        return (self._main(scaled, grads, W, C) - delta @ gamma).double()

    @classmethod
    def _main(cls, v: Tensor, grads: Tensor, W: Tensor | None, C: int) -> Tensor:
        """``sum over copies, rows, positions of v_u . (W_r^T g_r)``: ``v [U (C) n s d]``, ``grads``
        ``[C*n s R dh]`` (or ``[C*n s d]`` without W) -> ``[U R]``."""
        U = v.shape[0]
        if W is None:
            return v.reshape(U, -1) @ grads.reshape(-1, 1)
        R, dh = W.shape[:2]
        if U == 1:  # one difference: project it, contract in d_head
            proj = F.linear(v.reshape(-1, v.shape[-1]), W.flatten(0, 1)).view(-1, R, dh)
            return (proj * grads.reshape(-1, R, dh)).sum((0, 2))[None]
        return v.reshape(U, -1) @ cls._cot(grads, W).reshape(R, -1).T

    @staticmethod
    def _cot(grads: Tensor, W: Tensor) -> Tensor:
        """Gradients ``[B s R dh]`` at the projections' outputs -> at their input, per receiver ``[R B s d]``."""
        B, s, R, e = grads.shape
        return torch.bmm(grads.permute(2, 0, 1, 3).reshape(R, B * s, e), W).view(R, B, s, -1)


def _edge_ids(g: Graph) -> Tensor:
    """``[sender receiver]`` -> the edge's index (-1 where there is no edge)."""
    eid = torch.full((len(g.senders), len(g.receivers)), -1, dtype=torch.long)
    u, v = torch.tensor(g.edges).T
    eid[u, v] = torch.arange(g.n_edges)
    return eid


def _gradient_direct(ds: _DirectSetup, g: Graph, steps: int | None, batch_size: int) -> tuple[Tensor, float]:
    """EAP / EAP-IG on the direct engine. One backward per chunk of interpolation points, to the
    projections' outputs only (every head's q, k and v, ln2's output, the logits' input; no parameter
    gradients). The score of ``u -> v`` is ``sum over positions of (corrupted - clean write of u) .
    d metric / d input_v``; with ``input_v -> norm -> W_v -> q_v`` that is ``(W_v^T g_v) . (J_norm
    diff_u)``, so each sender's difference goes once through the norm's Jacobian (forward mode) and each
    receiver's gradient once through its head's projection: no per-receiver copy of the residual stream.
    Positions before p0 are left out (no write differs there)."""
    d, n, L, H = ds.d, len(ds.prompts), ds.d.L, ds.d.H
    alphas = [1.0] if steps is None else [(k + 1) / steps for k in range(steps)]
    per = max(1, batch_size // n)
    chunks = [alphas[i : i + per] for i in range(0, len(alphas), per)][::-1]  # the clean point (1) first
    a = None if ds.at is None else ds.at - ds.p0
    scores = torch.zeros(g.n_edges, dtype=torch.float64)
    eid = _edge_ids(g)
    diff: list[Tensor] = []
    clean_value = math.nan

    s = ds.emb_clean.shape[1]
    full = centred = None  # the differences of every sender written at every position p0.. [U n s d] (centred: minus their mean)

    def stacked(k: int, sq: int) -> Tensor:  # the first k senders' differences at the sq positions read
        if sq == s and k <= len(full):
            return full[:k]
        return torch.stack([dd if sq == dd.shape[1] else dd[:, a : a + 1] for dd in diff[:k]])

    for chunk in chunks:
        C = len(chunk)
        if steps is None:
            x = ds.emb_clean
        else:
            w = torch.tensor(chunk, dtype=ds.emb_clean.dtype, device=ds.emb_clean.device).view(C, 1, 1, 1)
            x = (ds.emb_corr + w * (ds.emb_clean - ds.emb_corr)).flatten(0, 1)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            t = d.run(x, ds.p0, ds.prefix, ds.at)
            vals = ds.values(t.logits, C)
            targets = t.qkv + t.h2 + [t.final] + ([t.q_last] if t.q_last is not None else [])
            got = torch.autograd.grad(vals.sum(), targets, allow_unused=True)
        got = [torch.zeros_like(f) if gr is None else gr for f, gr in zip(targets, got, strict=True)]
        with torch.no_grad():
            if not diff:  # the clean run: its writes give the differences, its metric the clean value
                clean_value = float(vals[-1])
                clean = [o[-n:] for o in ds.sender_outs(t)]
                diff = [r - c for c, r in zip(clean, ds.corr_outs, strict=True)]
                full = torch.stack([dd for dd in diff if dd.shape[1] == s])
                centred = full - full.mean(-1, keepdim=True)
            for layer in range(L):
                lay = d.layers[layer]
                recv = torch.tensor(g.attn_receivers(layer))  # q heads, k heads, v heads
                k = g.n_senders_before(2 * layer)
                grads, W = got[layer], lay["Wqkv"]  # [B s 3H dh], [3H dh d]
                if a is None or layer < L - 1:  # every input at positions p0..: one contraction for the 3H receivers
                    scores[eid[:k, recv]] += lay["dot1"](t.x[layer], full[:k], C, grads, W, centred[:k])
                else:  # the last layer: the answer query; keys and values at every position
                    scores[eid[:k, recv[:H]]] += lay["dot1"](t.x[layer][:, a : a + 1], full[:k, :, a : a + 1], C, got[-1], W[:H],
                                                             centred[:k, :, a : a + 1])
                    scores[eid[:k, recv[H:]]] += lay["dot1"](t.x[layer], full[:k], C, grads, W[H:], centred[:k])
                if d.has_mlp:
                    k = g.n_senders_before(g.receivers[g.mlp_receiver(layer)].time)
                    gr = got[L + layer]
                    scores[eid[:k, g.mlp_receiver(layer)]] += lay["dot2"](t.mlp_in[layer], stacked(k, gr.shape[1]), C, gr)[:, 0]
            gr = got[2 * L if d.has_mlp else L]
            diffs = stacked(len(g.senders), gr.shape[1])
            scores[eid[:, g.logits_receiver]] += einops.einsum(diffs, gr.view(C, *diffs.shape[1:]).sum(0), "u n s m, n s m -> u").double()
    return scores / len(alphas), clean_value


def _exact_direct(ds: _DirectSetup, g: Graph, batch_size: int, progress: bool, chosen: list[int]) -> tuple[Tensor, float]:
    """Exact edge scores on the direct engine. Edges are grouped by receiver (layer and kind) and run
    many at a time, about ``batch_size`` sequences' worth of tokens per pass. Only the receiver
    changes at its layer: a head receiver recomputes that head alone (its q, k or v from the layer norm
    of the clean residual stream plus the sender's difference, attention over the clean run's other
    inputs), an MLP receiver its MLP, the logits their final layer norm and unembedding; later layers
    run in full from there, at positions p0.. (the answer query alone on the last layer)."""
    d, net, n, L, p0, at = ds.d, ds.d.net, len(ds.prompts), ds.d.L, ds.p0, ds.at
    with torch.no_grad():
        c = d.run(ds.emb_clean, p0, ds.prefix, at)
        clean_value = float(ds.values(c.logits, 1)[0])
        diff = [r - cl for cl, r in zip(ds.sender_outs(c), ds.corr_outs, strict=True)]
    s = ds.emb_clean.shape[1]
    a = None if at is None else at - p0
    groups: dict[tuple, list[int]] = {}
    for i in chosen:
        r = g.receivers[g.edges[i][1]]
        groups.setdefault((r.layer if r.layer is not None else L, r.kind), []).append(i)
    budget = max(1, batch_size) * ds.prompts.seq_len  # tokens per pass
    out = torch.full((g.n_edges,), math.nan, dtype=torch.float64)
    with tqdm(total=len(chosen), desc="exact edge patching", disable=not progress) as bar, torch.no_grad():
        for (layer, kind), idx in sorted(groups.items()):
            answer = at is not None and layer >= L - 1  # the receiver reads the answer position alone
            qs = slice(a, a + 1) if answer else slice(0, s)  # positions whose queries / writes matter
            first = at if answer else p0
            narrow = answer and kind not in ("k", "v")  # reads the answer position alone
            per = max(1, budget // (n * (1 if narrow else s)))
            # each edge's sender difference at the positions the receiver reads
            read = {e: diff[g.edges[e][0]][:, qs] if narrow and diff[g.edges[e][0]].shape[1] == s else diff[g.edges[e][0]]
                    for e in idx}
            moved = {u: bool(read[e].any()) for u, e in {g.edges[e][0]: e for e in idx}.items()}  # a non-zero difference there
            unchanged = {e for e in idx if not moved[g.edges[e][0]]}  # the edge changes nothing: 0 exactly
            out[list(unchanged)] = 0.0
            bar.update(len(unchanged))
            idx = [e for e in idx if e not in unchanged]
            for j in range(0, len(idx), per):
                part = idx[j : j + per]
                E = len(part)
                D = torch.stack([read[e] for e in part])  # [E n sq d] (k, v: [E n s d])
                if kind == "logits":  # (layer L: the final residual stream)
                    post = c.final + D
                elif kind == "mlp":
                    post = c.mid[layer][None] + d.mlp(layer, c.mlp_in[layer][None] + D)[1]
                else:
                    delta = _head_receiver_change(d, c, layer, kind, part, D, qs, first, p0)
                    mid = c.mid[layer][None] + delta
                    if not d.has_mlp:
                        post = mid
                    elif net.parallel:  # the MLP reads resid_pre: unchanged
                        post = c.mid[layer][None] + c.mlp[layer][None] + delta
                    else:
                        post = mid + d.mlp(layer, mid)[1]
                if layer < L - 1:
                    logits = d.run(post.flatten(0, 1), p0, ds.prefix, at, first_layer=layer + 1).logits
                else:
                    logits = net.unembed(post[:, :, 0] if at is not None else post).flatten(0, 1)
                out[part] = ds.values(logits, E) - clean_value
                bar.update(E)
    return out, clean_value


def _head_receiver_change(d: _Direct, c: _Trace, layer: int, kind: str, part: list[int], D: Tensor, qs: slice,
                          first: int, p0: int) -> Tensor:
    """The change of the attention's write ``[E n sq d]`` when edge e of ``part`` (receivers of one
    kind at ``layer``) adds its sender's difference ``D[e]`` to its receiver's input: the receiver's
    head recomputed against the clean run's other inputs. A query receiver changes its head; a key or
    value receiver (grouped-query: one per key/value head) changes every query head that reads it."""
    g, lay, net = d.graph, d.layers[layer], d.net
    hs = torch.tensor([g.receivers[g.edges[e][1]].head for e in part], device=D.device)
    reps = d.H // d.KV
    if kind == "q":
        qh, kvh = hs[:, None], hs // reps  # [E 1] query heads, [E] their key/value heads
    else:
        qh, kvh = hs[:, None] * reps + torch.arange(reps, device=D.device), hs  # [E reps]
    keys = c.keys[layer][:, kvh].transpose(0, 1)[:, :, None]  # [E n 1 S dh]
    values = c.values[layer][:, kvh].transpose(0, 1)[:, :, None]
    queries = c.qs[layer][:, qh].transpose(0, 1)  # [E n r sq dh]
    if kind == "q":
        h = lay["ln1"](c.x[layer][:, qs][None] + D)
        queries = net.rope(layer, d.project(layer, "q", h, hs), first)[:, :, None]
    else:
        new = d.project(layer, kind, lay["ln1"](c.x[layer][None] + D), hs)[:, :, None]  # [E n 1 s dh]
        if kind == "k":
            keys = torch.cat([keys[..., :p0, :], net.rope(layer, new, p0)], dim=-2)
        else:
            values = torch.cat([values[..., :p0, :], new], dim=-2)
    # [E n r sq dh], attended as [E*n r sq dh] over [E*n 1 S dh] (grouped): four axes take SDPA's fast kernel
    z = net.attend(layer, queries.flatten(0, 1), keys.flatten(0, 1), values.flatten(0, 1), first).view(queries.shape)
    delta = einops.einsum(z, lay["WO"][qh], "E n r s e, E r e d -> E n s d")
    return delta - c.outs[layer][:, :, qh].sum(3).permute(2, 0, 1, 3)


def _engine(model, graph: Graph, engine: str, seq_len: int):
    """The engine of ``engine``: "auto" takes the model's anatomy where it has one (`_Direct`), else hooks."""
    if anatomy.runs_on_anatomy(engine, anatomy.unsupported(model, seq_len) if engine != "hooks" else None, DiscoveryError):
        return _Direct(model, graph)
    return _HookEngine(model, graph)


# =============================================================================== shared set-up
@dataclass
class _Setup:
    prompts: PromptSet
    metric: Metric
    graph: Graph
    eng: Any
    clean: Tensor
    at: int | None  # the answer position when the metric reads it alone
    corr_outs: Tensor  # [sender n S d] (the whole-graph engine: positions p0..)
    clean_outs: Tensor
    clean_value: float
    corrupted_value: float
    corr_resid: dict[int, Tensor] | None = None  # the corrupted run's residual stream at each receiver time
    clean_run: _Run | None = None  # the clean run (the whole-graph engine starts later runs from its state)

    def values(self, logits: Tensor, copies: int) -> Tensor:
        """The mean metric of each copy: ``[copies]`` float64."""
        return block_means(self.metric, logits, self.prompts, copies, self.at)

    def W(self, patched: Tensor) -> Tensor:
        """Dense ``[copies sender receiver]`` weights from per-edge patch amounts ``[copies edge]``."""
        g = self.graph
        W = torch.zeros(patched.shape[0], len(g.senders), len(g.receivers), dtype=torch.float32)
        u, v = torch.tensor(g.edges).T
        W[:, u, v] = patched.float()
        return W.to(self.clean.device)

    def run(self, patched: Tensor) -> Tensor:
        """Mean metric ``[copies]`` with each copy's edges patched by the amounts ``patched [copies edge]``.
        Layers before the first receiver of a patched edge are the clean run's, and not run again."""
        C, n, g = patched.shape[0], len(self.prompts), self.graph
        mixer = _Mixer(g, self.W(patched), self.corr_outs, C, n, probe=False, corr_resid=self.corr_resid)
        tokens = einops.repeat(self.clean, "n s -> (c n) s", c=C)
        start = 0
        if self.clean_run is not None and self.clean_run.resid:
            receivers = {g.edges[i][1] for i in torch.nonzero(patched.any(0)).flatten().tolist()}
            start = min((g.n_layers if g.receivers[v].layer is None else g.receivers[v].layer for v in receivers), default=g.n_layers)
        with torch.no_grad():
            out = self.eng.run(tokens, mixer, self.at, start=start, start_run=self.clean_run)
        return self.values(out.logits, C)


def _inputs(model, prompts: PromptSet, metric: Metric, engine: str):
    """Checked inputs: clean and corrupted tokens, the graph, the engine, the answer position (None
    when the metric reads more than the answer position's logits)."""
    if not isinstance(prompts, PromptSet):
        raise InputError(f"prompts must be an interp.tasks.PromptSet, got {type(prompts).__name__}.")
    if not callable(metric):
        raise InputError(f"metric must be a function (logits, prompts) -> [batch], got {type(metric).__name__}.")
    if prompts.clean.shape != prompts.corrupted.shape:
        raise InputError(f"Clean tokens {tuple(prompts.clean.shape)} and corrupted tokens {tuple(prompts.corrupted.shape)} differ in shape.")
    clean, corrupted = model.check_tokens(prompts.clean), model.check_tokens(prompts.corrupted)
    graph = build_graph(model)
    at = prompts.answer_pos % prompts.seq_len if answer_only(metric) else None
    return clean, corrupted, graph, _engine(model, graph, engine, clean.shape[1]), at


def _setup(model, prompts: PromptSet, metric: Metric, engine: str, clean_run: bool = True) -> _Setup:
    clean, corrupted, graph, eng, at = _inputs(model, prompts, metric, engine)
    eng = _GraphEngine(eng, clean, corrupted, at) if isinstance(eng, _Direct) else eng
    n = len(prompts)
    with torch.no_grad():
        r_run = eng.run(corrupted, _Mixer(graph, None, None, 1, n, probe=False), at)
        c_run = eng.run(clean, _Mixer(graph, None, None, 1, n, probe=False), at) if clean_run else None
    setup = _Setup(prompts, metric, graph, eng, clean, at, torch.stack(r_run.outs),
                   torch.stack(c_run.outs) if clean_run else None, math.nan, 0.0, r_run.resid or None, c_run)
    setup.corrupted_value = float(setup.values(r_run.logits, 1)[0])
    if clean_run:  # (EAP reads the clean run off its gradient pass instead)
        setup.clean_value = float(setup.values(c_run.logits, 1)[0])
    return setup


def _check_batch(batch_size) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DiscoveryError(f"batch_size must be a positive int (sequences per forward), got {batch_size!r}.")


# =============================================================================== scores
def edge_scores(
    model,
    prompts: PromptSet,
    metric: Metric,
    method: str = "eap",
    steps: int = 5,
    batch_size: int = 128,
    engine: str = "auto",
    progress: bool = True,
    edges: Sequence[int] | Tensor | None = None,
) -> EdgeScores:
    """A score for every edge of ``build_graph(model)``: the (estimated) change of the mean metric when
    that edge alone is patched from clean to corrupted.

    ``method``: ``"eap"`` (gradient at the clean run; one forward per prompt set, one backward),
    ``"eap_ig"`` (gradient averaged over ``steps`` input embeddings from corrupted to clean, Hanna et
    al. 2024), ``"exact"`` (each edge patched, ``batch_size`` sequences per forward). ``engine``:
    "auto" (the model's anatomy where it has one, else hooks), "fast" or "hooks". ``edges``
    (``"exact"`` only): score just these edge indices (or a bool mask over the edges), NaN elsewhere:
    the exact check of an estimate's top edges on a model too large to patch every edge.
    """
    if method not in METHODS:
        raise DiscoveryError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    if edges is not None and method != "exact":
        raise DiscoveryError(f"edges= selects edges for method='exact' only (the gradient methods score every edge at once); got method={method!r}.")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise DiscoveryError(f"steps must be a positive int (interpolation points for eap_ig), got {steps!r}.")
    _check_batch(batch_size)
    clean, corrupted, graph, eng, at = _inputs(model, prompts, metric, engine)
    chosen = _chosen_edges(edges, graph)
    if isinstance(eng, _Direct):
        ds = _direct_setup(eng, prompts, metric, clean, corrupted, at)
        corrupted_value = ds.corrupted_value
        if method == "exact":
            scores, clean_value = _exact_direct(ds, graph, batch_size, progress, chosen)
        else:
            scores, clean_value = _gradient_direct(ds, graph, steps if method == "eap_ig" else None, batch_size)
    else:
        s = _setup(model, prompts, metric, engine, clean_run=method != "eap")
        if method == "exact":
            scores = _exact(s, batch_size, progress, chosen)
        else:
            scores = _gradient(s, steps if method == "eap_ig" else None, batch_size)
        clean_value, corrupted_value = s.clean_value, s.corrupted_value
    settings = dict(metric=metric_name(metric), clean_value=clean_value, corrupted_value=corrupted_value,
                    n_prompts=len(prompts), engine="fast" if isinstance(eng, _Direct) else "hooks")
    if method == "eap_ig":
        settings["steps"] = steps
    return EdgeScores(graph, scores, method, settings)


def _chosen_edges(edges, graph: Graph) -> list[int]:
    """The edge indices to score: all, or those given (indices or a bool mask), checked and sorted."""
    if edges is None:
        return list(range(graph.n_edges))
    t = torch.as_tensor(edges)
    if t.dtype == torch.bool:
        if t.shape != (graph.n_edges,):
            raise DiscoveryError(f"An edge mask has one entry per edge, shape ({graph.n_edges},); got {tuple(t.shape)}.")
        t = t.nonzero().flatten()
    if t.is_floating_point() or t.ndim != 1 or t.numel() == 0:
        raise DiscoveryError(f"edges must be a non-empty list of edge indices or a bool mask over the {graph.n_edges} edges.")
    if int(t.min()) < 0 or int(t.max()) >= graph.n_edges:
        raise DiscoveryError(f"Edge indices must lie in [0, {graph.n_edges}); got values from {int(t.min())} to {int(t.max())}.")
    return sorted(set(t.tolist()))


def eap(model, prompts: PromptSet, metric: Metric, engine: str = "auto") -> EdgeScores:
    """Edge attribution patching (Syed et al. 2023): `edge_scores` with ``method="eap"``."""
    return edge_scores(model, prompts, metric, "eap", engine=engine, progress=False)


def eap_ig(model, prompts: PromptSet, metric: Metric, steps: int = 5, engine: str = "auto") -> EdgeScores:
    """EAP with integrated gradients (Hanna et al. 2024): `edge_scores` with ``method="eap_ig"``."""
    return edge_scores(model, prompts, metric, "eap_ig", steps=steps, engine=engine, progress=False)


def _gradient(s: _Setup, steps: int | None, batch_size: int) -> Tensor:
    """EAP (``steps`` None: the gradient at the clean run) or EAP-IG (averaged over ``steps`` points)."""
    g, n = s.graph, len(s.prompts)
    alphas = [1.0] if steps is None else [(k + 1) / steps for k in range(steps)]
    per = max(1, batch_size // n)
    grads: dict[int, Tensor] = {}
    emb_clean = s.corr_outs[0] if s.clean_outs is None else s.clean_outs[0]  # (EAP: unused)
    emb_corr = s.corr_outs[0]
    for i in range(0, len(alphas), per):
        chunk = torch.tensor(alphas[i : i + per], dtype=emb_clean.dtype, device=emb_clean.device)
        C = len(chunk)
        tokens = einops.repeat(s.clean, "n s -> (c n) s", c=C)
        embed = None
        if steps is not None:
            embed = (emb_corr[None] + chunk.view(C, 1, 1, 1) * (emb_clean - emb_corr)[None]).flatten(0, 1)
        mixer = _Mixer(g, None, None, C, n, probe=True)
        with torch.enable_grad():
            out = s.eng.run(tokens, mixer, s.at, embed=embed)
            total = s.values(out.logits, C).sum()
            keys = list(out.probes)
            got = torch.autograd.grad(total, [out.probes[k] for k in keys], allow_unused=True)
        if s.clean_outs is None:  # EAP: this pass is the clean run
            s.clean_outs = torch.stack([o.detach() for o in out.outs])
            s.clean_value = float(total.detach())
        for key, grad in zip(keys, got, strict=True):
            grad = torch.zeros_like(out.probes[key]) if grad is None else grad
            grad = grad.view(C, n, *grad.shape[1:]).sum(0)  # [n S R d]
            grads[key] = grads.get(key, 0) + grad.detach()
    diff = (s.corr_outs - s.clean_outs).double()  # [u n S d]
    scores, eid = torch.zeros(g.n_edges, dtype=torch.float64), _edge_ids(g)
    for first, grad in grads.items():  # receivers first.. (of one time) read every sender before them
        k = g.n_senders_before(g.receivers[first].time)
        scores[eid[:k, first : first + grad.shape[2]]] = einops.einsum(diff[:k], grad.double() / len(alphas), "u n s d, n s r d -> u r")
    return scores


def _exact(s: _Setup, batch_size: int, progress: bool, chosen: list[int]) -> Tensor:
    """Each chosen edge patched on its own, ``batch_size // n`` edges per forward (the hook engine;
    native models take `_exact_direct`); NaN for the others."""
    g, n = s.graph, len(s.prompts)
    per = max(1, batch_size // n)
    out = torch.full((g.n_edges,), math.nan, dtype=torch.float64)
    with tqdm(total=len(chosen), desc="exact edge patching", disable=not progress) as bar:
        for i in range(0, len(chosen), per):
            idx = chosen[i : i + per]
            patched = torch.zeros(len(idx), g.n_edges)
            patched[torch.arange(len(idx)), torch.tensor(idx)] = 1.0
            out[idx] = s.run(patched) - s.clean_value
            bar.update(len(idx))
    return out


# =============================================================================== circuits
def faithfulness(model, prompts: PromptSet, metric: Metric, circuits: Sequence[Circuit | Tensor], batch_size: int = 128,
                 engine: str = "auto") -> Float[Tensor, " circuit"]:
    """The faithfulness of each circuit (a `Circuit` or a boolean mask over the graph's edges): the
    mean metric with every edge outside it patched, as ``(value - corrupted) / (clean - corrupted)``
    where clean keeps every edge and corrupted patches every edge (so 1 and 0 by construction)."""
    _check_batch(batch_size)
    s = _setup(model, prompts, metric, engine)
    return _faithfulness(s, [_mask(c, s.graph) for c in circuits], batch_size)


def _mask(c, graph: Graph) -> Tensor:
    mask = c.edges if isinstance(c, Circuit) else c
    if not isinstance(mask, Tensor) or mask.shape != (graph.n_edges,) or mask.dtype != torch.bool:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise DiscoveryError(f"A circuit is a Circuit or a bool tensor of shape ({graph.n_edges},) (one per edge), got {got}.")
    return mask


def _span(s: _Setup) -> float:
    span = s.clean_value - s.corrupted_value
    if not math.isfinite(span) or span == 0:
        raise DiscoveryError(f"Faithfulness is undefined: the clean metric ({s.clean_value}) equals the corrupted one "
                             f"({s.corrupted_value}); choose a corruption that changes the metric.")
    return span


def _faithfulness(s: _Setup, masks: list[Tensor], batch_size: int) -> Tensor:
    """Faithfulness of each mask; the full graph is the clean run (1) and the empty circuit, every edge
    patched, the corrupted run (0) by definition, so those two are not run."""
    span = _span(s)
    per = max(1, batch_size // len(s.prompts))
    out = torch.tensor([1.0 if bool(mask.all()) else 0.0 for mask in masks], dtype=torch.float64)
    todo = [i for i, mask in enumerate(masks) if bool(mask.any()) and not bool(mask.all())]
    for j in range(0, len(todo), per):
        idx = todo[j : j + per]
        patched = (~torch.stack([masks[i] for i in idx])).float()
        out[idx] = (s.run(patched) - s.corrupted_value) / span
    return out


def acdc(model, prompts: PromptSet, metric: Metric, tau: float = 0.01, engine: str = "auto", progress: bool = True,
         batch_size: int = 16) -> Circuit:
    """ACDC (Conmy et al. 2023) with exact edge patching: start from the full graph; visit the receivers
    from the logits back to the first layer and, for each, its senders from the latest back; patch the
    edge for good when faithfulness falls by less than ``tau`` (in faithfulness units; 0 keeps every edge
    that matters at all). ``Circuit.scores`` holds each edge's faithfulness drop when it was tried.

    The trials run up to ``batch_size`` at a time, speculatively: trial j patches the next j edges on
    top of the current circuit, which is what the one-at-a-time algorithm tries if the j - 1 before
    are patched; at the first edge kept, the trials after it are dropped and the next batch starts
    from there (the batch grows while every edge is patched, and shrinks when one is kept). The
    circuit is the one-at-a-time algorithm's; on the model's anatomy a trial starts at its first
    receiver's layer (the layers before are the clean run's)."""
    if not isinstance(tau, int | float) or isinstance(tau, bool) or not tau >= 0:
        raise DiscoveryError(f"tau must be a non-negative number (a faithfulness drop), got {tau!r}.")
    _check_batch(batch_size)
    s = _setup(model, prompts, metric, engine)
    span, g = _span(s), s.graph
    patched = torch.zeros(g.n_edges)
    current = 1.0
    drops = torch.zeros(g.n_edges, dtype=torch.float64)
    order = sorted(range(g.n_edges), key=lambda i: (-g.receivers[g.edges[i][1]].time, g.edges[i][1], -g.edges[i][0]))
    done, width = 0, 1
    with tqdm(total=len(order), desc="ACDC", disable=not progress) as bar:
        while done < len(order):
            batch = order[done : done + width]
            trials = patched.repeat(len(batch), 1)
            for j, edge in enumerate(batch):
                trials[j:, edge] = 1.0  # trial j: the edges batch[:j + 1] patched on top of the circuit
            values = ((s.run(trials) - s.corrupted_value) / span).tolist()
            tried = len(batch)
            for j, (edge, value) in enumerate(zip(batch, values, strict=True)):
                drops[edge] = current - value
                if current - value >= tau:  # kept: the later trials assumed it patched
                    tried = j + 1
                    break
                patched[edge], current = 1.0, value
            done += tried
            bar.update(tried)
            width = min(batch_size, 2 * width) if tried == len(batch) else max(1, tried // 2)
    return Circuit(g, patched == 0, drops, f"acdc(tau={tau:g})", current)


def faithfulness_curve(model, prompts: PromptSet, metric: Metric, scores: Sequence[EdgeScores] | EdgeScores,
                       ks: Sequence[int] | None = None, batch_size: int = 128, engine: str = "auto"):
    """Faithfulness of the top-k circuit of each scoring, for each k in ``ks`` (default: 20 sizes from 0
    to every edge): a DataFrame with columns ``method``, ``k``, ``fraction`` (k / edges), ``faithfulness``."""
    import pandas as pd

    scores = [scores] if isinstance(scores, EdgeScores) else list(scores)
    s = _setup(model, prompts, metric, engine)
    n = s.graph.n_edges
    ks = sorted({round(n * f) for f in torch.linspace(0, 1, 21).tolist()}) if ks is None else list(ks)
    for k in ks:
        _check_k(k, n, "faithfulness_curve", allow_zero=True)
    rows = []
    for sc in scores:
        if sc.graph != s.graph:
            raise DiscoveryError("These EdgeScores belong to another model's graph; score this model first.")
        values = _faithfulness(s, [sc.circuit(k=k).edges for k in ks], batch_size)
        rows += [{"method": sc.method, "k": k, "fraction": k / n, "faithfulness": float(v)} for k, v in zip(ks, values, strict=True)]
    return pd.DataFrame(rows)


def plot_faithfulness_curve(curve, ax=None, title: str | None = None):
    """The faithfulness curve (from `faithfulness_curve`) as a matplotlib Figure: one line per method."""
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(5.5, 3.6)) if ax is None else (ax.figure, ax))
    for method, part in curve.groupby("method", sort=False):
        ax.plot(part["k"], part["faithfulness"], marker="o", ms=3, label=method)
    ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("edges kept (top-k by |score|)")
    ax.set_ylabel("faithfulness (0 corrupted, 1 clean)")
    ax.set_title(title or "Faithfulness against circuit size")
    ax.legend(frameon=False)
    return fig


_INPUT_COLOURS = {"q": "tab:blue", "k": "tab:red", "v": "tab:green", "mlp": "0.35", "logits": "0.35"}


def draw_circuit(circuit: Circuit, ax=None, title: str | None = None):
    """`Circuit.draw`: a matplotlib Figure of the circuit."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    g = circuit.graph
    rows = max(g.n_heads, 1)
    fig, ax = (plt.subplots(figsize=(2.0 + 1.6 * g.n_layers, 0.6 + 0.55 * rows)) if ax is None else (ax.figure, ax))

    def where(node: Node) -> tuple[float, float]:
        mid = (rows - 1) / 2
        if node.kind == "input":
            return 0.0, mid
        if node.kind == "logits":
            return 2.0 * g.n_layers + 1, mid
        if node.kind == "mlp":
            return 2.0 * node.layer + 2, mid
        return 2.0 * node.layer + 1, float(rows - 1 - node.head)

    kept = torch.nonzero(circuit.edges).flatten().tolist()
    used = set()
    weights = circuit.scores.abs() if circuit.scores is not None else torch.ones(g.n_edges)
    top = float(weights[kept].max()) if kept and float(weights[kept].max()) > 0 else 1.0
    for i in kept:
        u, v = g.edges[i]
        s, r = g.senders[u], g.receivers[v]
        used |= {s.name, r.name.rsplit(".", 1)[0] if r.kind in "qkv" else r.name}
        (x0, y0), (x1, y1) = where(s), where(r)
        offset = {"q": -0.12, "k": 0.0, "v": 0.12}.get(r.kind, 0.0)
        ax.annotate("", xy=(x1 - 0.18, y1 + offset), xytext=(x0 + 0.18, y0),
                    arrowprops=dict(arrowstyle="-|>", color=_INPUT_COLOURS[r.kind], alpha=0.8,
                                    lw=0.6 + 3.4 * float(weights[i]) / top, shrinkA=0, shrinkB=0,
                                    connectionstyle="arc3,rad=0.08"))
    for node in g.senders + (g.receivers[-1],):
        x, y = where(node)
        on = node.name in used
        ax.scatter([x], [y], s=260 if on else 90, c="white", edgecolors="black" if on else "0.8", zorder=3)
        ax.text(x, y, node.name, ha="center", va="center", fontsize=6.5 if on else 5, color="black" if on else "0.6", zorder=4)
    ax.set_xticks([0] + [2 * layer + 1 for layer in range(g.n_layers)] + [2 * g.n_layers + 1])
    ax.set_xticklabels(["embed"] + [f"layer {layer}" for layer in range(g.n_layers)] + ["logits"])
    ax.set_yticks([])
    ax.set_xlim(-0.6, 2 * g.n_layers + 1.6)
    ax.set_ylim(-0.8, rows - 0.2)
    ax.spines[["top", "right", "left"]].set_visible(False)
    handles = [Line2D([], [], color=c, label=f"{k} input") for k, c in _INPUT_COLOURS.items() if k in "qkv"]
    handles.append(Line2D([], [], color="0.35", label="residual input (MLP, logits)"))
    ax.legend(handles=handles, fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"{circuit.method} circuit: {circuit.n_edges} of {g.n_edges} edges", fontsize=9)
    return fig

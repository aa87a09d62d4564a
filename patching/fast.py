"""The fast activation-patching engine for native TransformerLens models: do only the work that changes.

Patching one activation at layer l and position p leaves everything before it untouched: layers
0..l-1 of every position, and (attention being causal) every layer at positions before p. The
generic engine (`patching.activation`, forward hooks on the whole model) recomputes all of it, and
TransformerLens' `get_act_patch_*` do so once per intervention, with autograd on. This engine, for
models built by ``TransformerBridge.boot_native`` (``model.backend_name == "transformer_lens"``
and a ``NativeModel`` underneath), instead:

1. **reuses the prefix**: one base run caches each layer's residual stream (resid_pre) and its
   keys and values; the interventions that start at layer l (stacked, up to ``batch_size``
   sequences per forward) start from that cached resid_pre and drive layers l..L-1 directly;
2. **skips unchanged earlier positions**: interventions are sorted by the first position they
   touch; a chunk whose interventions all start at position p0 or later computes only positions
   p0.. as queries, reading the earlier positions' keys and values from the base run. An
   intervention only in the last layer, after its queries, keys and values (z, pattern,
   attn_out, ...), computes the answer position alone;
3. **unembeds only the answer position**, when the metric reads only ``logits[:, answer_pos]``
   (see `answer_only`): the metric receives ``[batch pos vocab]`` logits whose every position is
   a broadcast view of the answer position's logits. Other metrics get full logits (and no
   position skipping).

It mirrors the native model's own forward (``transformer_lens.model_bridge.sources.native.model``:
``NativeBlock`` / ``NativeAttention``) with the same modules, so its numbers equal the hook
engine's to float rounding; ``tests/test_patching_fast.py`` checks every supported kind. The sites
follow the bridge's hook semantics exactly, including ``resid_mid``, which the bridge places on the
MLP's input (``ln2.hook_in``), so patching it changes the MLP's input and not the residual stream.

Supported kinds: resid_pre, resid_mid, resid_post, attn_out, mlp_out, z, head_out, pattern. Other
kinds (q, k, v, mlp_post, embed), other backends, non-causal or grouped-query attention, and models
inside an active ``model.edit`` block fall back to the hook engine (``engine="auto"``) or raise
(``engine="fast"``). Hooks added to the bridge's HookPoints by hand (outside ``model.edit``) are not
run by this engine: pass ``engine="hooks"`` to keep them.

    result = activation_patch(model, prompts, "resid_pre", logit_diff)                 # auto: fast here
    result = activation_patch(model, prompts, "z", logit_diff, by_pos=True, engine="fast")
    answer_only(my_metric)     # True: the metric gets answer-position logits only (set my_metric.answer_only = True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.sites import Site
from interp.tasks import PromptSet
from patching import metrics as _metrics
from patching.activation import _as_z, _prepare, _result
from patching.metrics import Metric, check_values
from patching.results import PatchResult

_sdpa = torch.nn.functional.scaled_dot_product_attention

FAST_KINDS = frozenset({"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "head_out", "pattern"})
#: kinds computed after a layer's queries, keys and values (patching them leaves that layer's attention inputs alone).
AFTER_QKV = frozenset({"z", "head_out", "pattern", "attn_out", "resid_mid", "mlp_out", "resid_post"})
_ANSWER_ONLY = (_metrics.logit_diff, _metrics.log_prob, _metrics.prob)

Edit = Callable[[str, int, Tensor], Tensor]


class FastEngineError(InputError):
    """``engine="fast"`` was asked for a model or sweep it does not cover."""


# =============================================================================== public
def answer_only(metric: Metric) -> bool:
    """Whether ``metric`` reads nothing but ``logits[:, prompts.answer_pos]``.

    True for `logit_diff`, `log_prob`, `prob`, `kl_to(...)`, `normalized(m, ...)` of such an m,
    and any function with an attribute ``answer_only = True`` (mark your own metrics that way).
    """
    if getattr(metric, "answer_only", False) is True or metric in _ANSWER_ONLY:
        return True
    if getattr(metric, "__module__", None) != "patching.metrics":
        return False
    qualname = getattr(metric, "__qualname__", "")
    if qualname == "kl_to.<locals>.kl_to_clean":
        return True
    if qualname == "normalized.<locals>.normalized_metric":
        free = dict(zip(metric.__code__.co_freevars, (c.cell_contents for c in metric.__closure__ or ()), strict=False))
        return "metric" in free and answer_only(free["metric"])
    return False


def _rowwise(metric: Metric) -> bool:
    """Whether ``metric`` computes each prompt's value from that prompt's row alone, so that it can run
    once on k stacked copies of the prompt set: the built-in logit_diff / log_prob / prob, and
    `normalized` of one of them with scalar clean / corrupted values."""
    if metric in _ANSWER_ONLY:
        return True
    if getattr(metric, "__module__", None) == "patching.metrics" and getattr(metric, "__qualname__", "") == "normalized.<locals>.normalized_metric":
        free = dict(zip(metric.__code__.co_freevars, (c.cell_contents for c in metric.__closure__ or ()), strict=False))
        return free.get("metric") in _ANSWER_ONLY and all(
            isinstance(free.get(name), Tensor) and free[name].ndim == 0 for name in ("corrupted", "span")
        )
    return False


def _repeat(prompts: PromptSet, k: int) -> PromptSet:
    return PromptSet(
        prompts.clean.repeat(k, 1), prompts.corrupted.repeat(k, 1), prompts.answers.repeat(k),
        None if prompts.wrong is None else prompts.wrong.repeat(k), prompts.answer_pos,
    )


def unsupported_reason(model, sites: Sequence[Site] = ()) -> str | None:
    """Why the fast engine cannot run ``sites`` on ``model`` (None when it can)."""
    if getattr(model, "backend_name", None) != "transformer_lens":
        return f"the model's backend is {getattr(model, 'backend_name', type(model).__name__)!r}, not 'transformer_lens'"
    from transformer_lens.model_bridge.sources.native.model import NativeModel

    om = getattr(model.module, "original_model", None)
    if not isinstance(om, NativeModel):
        return "the bridge does not wrap a native TransformerLens model (boot_native); Hugging Face bridges use the hook engine"
    attn = _raw(om.layers[0].attn)
    if not attn.causal:
        return "the model's attention is not causal"
    if attn.kv_repeats != 1:
        return "the model uses grouped-query attention"
    if getattr(model, "_edits", None):
        return "an enclosing model.edit block is active (the fast engine runs no hooks)"
    bad = sorted({s.kind for s in sites if s.kind not in FAST_KINDS})
    if bad:
        return f"kinds {bad} are not covered (covered: {', '.join(sorted(FAST_KINDS))})"
    return None


def try_fast_patch(
    model, prompts: PromptSet, sites, metric: Metric, direction: str, source: str, by_pos, layers,
    batch_size: int | None, progress: bool, required: bool = False,
) -> PatchResult | None:
    """`activation_patch` on the fast engine, or None where it does not apply (an error if ``required``)."""
    plan, base, _ = _prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, map_heads=False)
    reason = unsupported_reason(model, [s for cell in plan.cells for s in cell])
    if reason is not None:
        if required:
            raise FastEngineError(f"engine='fast' cannot run this sweep: {reason}. Use engine='auto' or engine='hooks'.")
        return None
    other = model.check_tokens(prompts.clean if direction == "denoise" else prompts.corrupted)
    net = _Native(model.module.original_model)
    n, S = len(prompts), prompts.seq_len
    ans = prompts.answer_pos % S
    only_answer = answer_only(metric)
    rowwise, repeated = _rowwise(metric), {}
    out = torch.empty(len(plan.cells), dtype=torch.float64)
    L = net.n_layers
    with torch.no_grad():
        keys = {_as_z(s).full for cell in plan.cells for s in cell}
        # One forward of the source and base prompts stacked: the source activations of the swept
        # kinds, and the base run's resid_pre, keys and values of every layer.
        want_src = set() if source == "zero" else {(key.kind, key.layer) for key in keys}
        want_base = {(kind, layer) for layer in range(L) for kind in ("resid_pre", "k", "v")}
        nb = 0 if source == "zero" else n
        recorded: dict[tuple[str, int], Tensor] = {}
        base_run: dict[Site, Tensor] = {}

        def record(kind: str, layer: int, act: Tensor) -> Tensor:
            if (kind, layer) in want_src:
                recorded[(kind, layer)] = act[:nb]
            if (kind, layer) in want_base:
                base_run[Site(kind, layer)] = act[nb:]
            return act

        record.kinds = {kind for kind, _ in want_src | want_base}
        resid = net.embed(base if source == "zero" else torch.cat([other, base]))
        for layer in range(L):
            resid = net.block(layer, resid, 0, None, record)
        src: dict[Site, Tensor | None] = {}
        for key in keys:
            act = recorded.get((key.kind, key.layer))
            src[key] = None if act is None else (act.mean(0, keepdim=True) if source == "mean" else act)
        # With source "other" and a metric reading only the answer position, positions before the first
        # one where the clean and corrupted tokens differ have the same activations in both runs
        # (attention is causal): patching them changes nothing, so the computed window starts there.
        same = 0
        if source == "other" and only_answer:
            differs = (prompts.clean != prompts.corrupted).any(0).nonzero()
            same = int(differs[0]) if len(differs) else S
        # Interventions grouped by first layer; within a layer, by first position (latest first).
        order, noop = [], []
        for i, cell in enumerate(plan.cells):
            live = [s for s in cell if s.pos is None or s.pos % S >= same]
            if not live:
                noop.append(i)
                continue
            start = min(s.layer for s in live)
            p0 = min(same if s.pos is None else s.pos % S for s in live) if only_answer else 0
            if only_answer and all(s.layer == L - 1 and s.kind in AFTER_QKV for s in live):
                p0 = ans  # the last layer's keys and values are unchanged: only the answer query matters
            order.append((start, -min(p0, ans), i))
        if noop:  # the unpatched base run's metric
            last = resid[nb:, ans] if only_answer else resid[nb:]
            logits = net.softcap(net.head(net.ln_out(last)), net.om.output_logits_soft_cap)
            if only_answer:
                logits = logits[:, None, :].expand(n, S, logits.shape[-1])
            value = check_values(metric(logits, prompts), n, metric).double().mean()
            for i in noop:
                out[i] = value
        order.sort()
        per_chunk = len(plan.cells) if batch_size is None else max(1, batch_size // n)
        flops = net.token_flops(S)
        chunks = []
        for start in sorted({o[0] for o in order}):
            group = [o for o in order if o[0] == start]
            chunks += _chunk(group, per_chunk, n, S, flops)
        for chunk in tqdm(_passes(chunks, per_chunk, n, flops), desc=f"patching {plan.kind} (fast)", disable=not progress):
            p0 = min(-o[1] for o in chunk)
            joins: dict[int, int] = {}
            for start, _, _ in chunk:
                joins[start] = joins.get(start, 0) + 1
            cells = [plan.cells[i] for _, _, i in chunk]
            k = len(cells)
            at = ans if only_answer else None
            logits = net.run_pass(base_run, joins, n, p0, _row_edits(cells, src, n, S, p0, L - 1, at), at)
            if only_answer:
                logits = logits[:, None, :].expand(logits.shape[0], S, logits.shape[-1])
            if rowwise:  # one metric call for the whole chunk: prompts repeated k times
                if k not in repeated:
                    repeated[k] = _repeat(prompts, k)
                values = check_values(metric(logits, repeated[k]), k * n, metric).double().reshape(k, n).mean(1)
                for j, (_, _, i) in enumerate(chunk):
                    out[i] = values[j]
                continue
            for j, (_, _, i) in enumerate(chunk):
                values = check_values(metric(logits[j * n : (j + 1) * n], prompts), n, metric)
                out[i] = values.double().mean()
    result = _result(model, prompts, plan, out, metric, direction, source, by_pos)
    result.settings["engine"] = "fast"
    return result


# =============================================================================== the model, driven directly
class _Native:
    """The forward of a ``NativeModel``, block by block, with an edit callback at every site."""

    def __init__(self, om):
        from transformer_lens.utilities.activation_functions import apply_softcap

        self.om, self.softcap = om, apply_softcap
        self.n_layers, self.attn_only = len(om.layers), bool(om.cfg.attn_only)
        self.n_heads, self.d_head = om.cfg.n_heads, om.cfg.d_head
        # The bridge wraps every submodule in place (with hook points); call the wrapped originals.
        self.tok_embed, self.pos = _raw(om.tok_embed), None if om.pos is None else _raw(om.pos)
        self.ln_out, self.head = _raw(om.ln_out), _raw(om.head)
        self.layers = []
        for blk in om.layers:
            attn = _raw(blk.attn)
            mlp = None if self.attn_only else _raw(blk.mlp)
            self.layers.append(dict(
                ln1=_raw(blk.ln1), attn=attn, q=_raw(attn.q), k=_raw(attn.k), v=_raw(attn.v), o=_raw(attn.o),
                ln2=None if self.attn_only else _raw(blk.ln2), mlp=None if mlp is None else _mlp_fn(mlp),
            ))

    def token_flops(self, S: int) -> float:
        """Floating-point operations of one token through one layer (projections, attention, MLP)."""
        cfg = self.om.cfg
        d, hd = cfg.d_model, cfg.n_heads * cfg.d_head
        mlp = 0 if self.attn_only else (3 if cfg.gated_mlp else 2) * d * cfg.d_mlp
        return 2.0 * (4 * d * hd + 2 * S * hd + mlp)

    def forward(self, tokens: Int[Tensor, "batch pos"], record: set[Site]) -> tuple[Tensor, dict[Site, Tensor]]:
        """Plain forward; returns logits and the full activations of ``record`` (Sites without head/pos)."""
        cache: dict[Site, Tensor] = {}
        wanted = {(s.kind, s.layer) for s in record}

        def edit(kind: str, layer: int, act: Tensor) -> Tensor:
            if (kind, layer) in wanted:
                cache[Site(kind, layer)] = act
            return act

        resid = self.embed(tokens)
        logits = self.logits_from(resid, 0, 0, None, edit, None)
        return logits, cache

    def embed(self, tokens: Tensor) -> Tensor:
        resid = self.tok_embed(tokens)
        if self.pos is not None:
            position_ids = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0).expand(tokens.shape[0], -1)
            resid = resid + self.pos(position_ids)
        return resid

    def logits_from(
        self, resid: Float[Tensor, "batch pos d_model"], layer: int, p0: int, prefix: dict | None, edit: Edit, ans: int | None,
    ) -> Tensor:
        """Run layers ``layer..`` on positions ``p0..`` (earlier keys / values from ``prefix``); logits
        of the answer position ``[batch vocab]`` if ``ans`` is given, else ``[batch pos vocab]``."""
        for lay in range(layer, self.n_layers):
            row = ans - p0 if ans is not None and lay == self.n_layers - 1 else None
            resid = self.block(lay, resid, p0, None if prefix is None else prefix[lay], edit, row)
        if ans is not None:
            resid = resid[:, 0]
        return self.softcap(self.head(self.ln_out(resid)), self.om.output_logits_soft_cap)

    def run_pass(
        self, base_run: dict[Site, Tensor], joins: dict[int, int], n: int, p0: int, edit: Edit, ans: int | None,
    ) -> Tensor:
        """One stacked pass over positions ``p0..``: at each layer l of ``joins``, ``joins[l]`` copies of
        the base run's resid_pre (n rows each) join the batch (after the rows already there), so an
        intervention starting at layer l computes layers l.. only; earlier positions' keys / values
        come from the base run. Logits as in `logits_from`."""
        resid = None
        for lay in range(min(joins), self.n_layers):
            k = joins.get(lay)
            if k:
                new = base_run[Site("resid_pre", lay)][:, p0:].repeat(k, 1, 1)
                resid = new if resid is None else torch.cat([resid, new])
            prefix = tuple(base_run[Site(kv, lay)][:, :, :p0] for kv in ("k", "v")) if p0 else None
            row = ans - p0 if ans is not None and lay == self.n_layers - 1 else None
            resid = self.block(lay, resid, p0, prefix, edit, row)
        if ans is not None:
            resid = resid[:, 0]
        return self.softcap(self.head(self.ln_out(resid)), self.om.output_logits_soft_cap)

    def block(self, layer: int, x: Tensor, p0: int, prefix: tuple[Tensor, Tensor] | None, edit: Edit, row: int | None = None) -> Tensor:
        """``NativeBlock.forward`` (and ``NativeAttention.forward``) for query positions p0..; with
        ``row``, keys and values for all of them but everything after them for query p0 + row alone."""
        blk = self.layers[layer]
        attn = blk["attn"]
        B, s, _ = x.shape
        S = p0 + s
        x = edit("resid_pre", layer, x)
        h = blk["ln1"](x)
        q = blk["q"](h).view(B, s, self.n_heads, self.d_head).transpose(1, 2)
        k = blk["k"](h).view(B, s, self.n_heads, self.d_head).transpose(1, 2)
        v = blk["v"](h).view(B, s, self.n_heads, self.d_head).transpose(1, 2)
        if attn.rotary is not None:
            position_ids = torch.arange(p0, S, device=x.device).unsqueeze(0).expand(B, -1)
            q, k = attn.rotary.apply_rope(q, k, position_ids=position_ids)
        k, v = edit("k", layer, k), edit("v", layer, v)  # [batch head pos d]: recorded, not patched
        if prefix is not None:  # prefix: [b h p0 d], b dividing the batch (shared by every copy of the prompts)
            b = prefix[0].shape[0]
            if b == B:
                k, v = torch.cat([prefix[0], k], dim=2), torch.cat([prefix[1], v], dim=2)
            else:
                r, shape = B // b, (B // b, b, self.n_heads, -1, self.d_head)
                k, v = (
                    torch.cat([pre.expand(r, *pre.shape), new.reshape(shape)], dim=3).view(B, self.n_heads, S, self.d_head)
                    for pre, new in ((prefix[0], k), (prefix[1], v))
                )
        first = p0
        if row is not None:  # the last layer: only the answer position's query reaches the logits
            q, x, s, first = q[:, :, row : row + 1], x[:, row : row + 1], 1, p0 + row
        mask = attn.causal_mask[first : first + s, :S]
        if "pattern" in getattr(edit, "kinds", ("pattern",)) or not 0 < attn.scale or (
            attn.attn_scores_soft_cap is not None and attn.attn_scores_soft_cap > 0
        ):
            scores = torch.matmul(q, k.transpose(-2, -1)) / attn.scale
            scores = self.softcap(scores, attn.attn_scores_soft_cap)
            scores = scores.masked_fill(mask, float("-inf"))
            pattern = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
            pattern = edit("pattern", layer, pattern)
            mixed = torch.matmul(pattern, v)
        else:  # nothing reads or edits the pattern: one fused kernel
            mixed = _sdpa(q, k, v, attn_mask=~mask, scale=1.0 / attn.scale)
        z = edit("z", layer, mixed.transpose(1, 2))  # [batch pos head d_head]
        attn_out = edit("attn_out", layer, blk["o"](z.contiguous().view(B, s, -1)))
        x = x + attn_out
        if not self.attn_only:
            mlp_in = edit("resid_mid", layer, x)  # the bridge's hook_resid_mid is ln2's input
            x = x + edit("mlp_out", layer, blk["mlp"](blk["ln2"](mlp_in)))
        return edit("resid_post", layer, x)


#: fixed cost of one chunk through one layer (Python and kernel launches), in floating-point operations:
#: about 250 microseconds at 30 GFLOP/s on one CPU core.
CHUNK_OVERHEAD_FLOPS = 7.5e6


def _chunk(group: list[tuple[int, int, int]], per_chunk: int, n: int, S: int, flops: float) -> list[list]:
    """Split one layer's interventions (sorted by first position, latest first) into chunks of at most
    ``per_chunk``, minimising sum(overhead + rows * (S - p0) * flops) by dynamic programming: a
    chunk computes positions p0.. of its earliest-starting intervention for all its rows."""
    m = len(group)
    best = [0.0] + [float("inf")] * m
    cut = [0] * (m + 1)
    for j in range(1, m + 1):
        p0 = -group[j - 1][1]  # the chunk group[i:j] starts at the smallest p0, its last entry
        for i in range(max(0, j - per_chunk), j):
            cost = best[i] + CHUNK_OVERHEAD_FLOPS + (j - i) * n * (S - p0) * flops
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], m
    while j > 0:
        chunks.append(group[cut[j] : j])
        j = cut[j]
    return chunks[::-1]


def _passes(chunks: list[list], per_chunk: int, n: int, flops: float) -> list[list]:
    """Stack chunks of later first layers onto an earlier one (one pass; the later ones join the batch at
    their layer, see `_Native.run_pass`) while the pass holds at most ``per_chunk`` interventions and a
    joining chunk's extra positions (it computes from the pass's p0, not its own) cost less than the
    per-chunk overhead it saves. Chunks come sorted by first layer."""
    passes: list[list] = []
    for chunk in chunks:
        if passes:
            cur = passes[-1]
            p0, own = min(-o[1] for o in cur), min(-o[1] for o in chunk)
            extra = len(chunk) * n * (own - p0) * flops
            if chunk[0][0] > cur[-1][0] and len(cur) + len(chunk) <= per_chunk and own >= p0 and extra <= CHUNK_OVERHEAD_FLOPS:
                cur.extend(chunk)
                continue
        passes.append(list(chunk))
    return passes


def _raw(module):
    """The module a bridge component wraps (itself if it wraps nothing)."""
    return getattr(module, "original_component", None) or module


def _mlp_fn(mlp) -> Callable[[Tensor], Tensor]:
    """``NativeMLP`` / ``NativeGatedMLP.forward`` on the unwrapped linear layers."""
    act = mlp.act
    if hasattr(mlp, "fc_in"):
        fc_in, fc_out, ln = _raw(mlp.fc_in), _raw(mlp.fc_out), mlp.ln
        ln = None if ln is None else _raw(ln)

        def forward(x: Tensor) -> Tensor:
            mid = act(fc_in(x))
            return fc_out(mid if ln is None else ln(mid))

        return forward
    gate, up, out = _raw(mlp.gate), _raw(getattr(mlp, "in")), _raw(mlp.out)
    return lambda x: out(act(gate(x)) * up(x))


def _row_edits(
    cells: list[tuple[Site, ...]], src: dict[Site, Tensor | None], n: int, S: int, p0: int, last: int, ans: int | None,
) -> Edit:
    """Intervention j overwrites rows j*n .. (j+1)*n - 1 of its sites, positions shifted by ``p0``
    (by ``ans`` after the last layer's keys and values, when only the answer position is computed)."""
    by_key: dict[tuple[str, int], list[tuple[int, tuple, Tensor | float]]] = {}
    for j, cell in enumerate(cells):
        for site in cell:
            site = _as_z(site)
            start, stop = p0, S
            if ans is not None and site.layer == last and site.kind in AFTER_QKV:
                start, stop = ans, ans + 1  # the last layer after its keys and values runs the answer query alone
            if site.pos is not None and not start <= site.pos % S < stop:
                continue  # outside the computed window: cannot reach the answer (see the choice of p0)
            shifted = Site(site.kind, site.layer, site.head, None if site.pos is None else site.pos % S - start)
            full = src[site.full]
            if full is None:
                value: Tensor | float = 0.0
            else:
                view = full[:, :, start:stop] if site.kind == "pattern" else full[:, start:stop]
                value = view[shifted.index()]
            by_key.setdefault((site.kind, site.layer), []).append((j, shifted.index(), value))

    def edit(kind: str, layer: int, act: Tensor) -> Tensor:
        entries = by_key.get((kind, layer))
        if not entries:
            return act
        out = act.clone()
        for j, index, value in entries:
            rows = out[j * n : (j + 1) * n]  # a view: writing into it writes into out
            rows[index] = value if isinstance(value, float) else value.to(out.dtype)
        return out

    edit.kinds = {kind for kind, _ in by_key}
    return edit

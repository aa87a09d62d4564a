"""The fast activation-patching engine: do only the work that changes.

Patching one activation at layer l and position p leaves everything before it untouched: layers
0..l-1 of every position, and (attention being causal) every layer at positions before p. The
generic engine (`patching.activation`, forward hooks on the whole model) recomputes all of it, and
TransformerLens' `get_act_patch_*` do so once per intervention, with autograd on. This engine, for
every model with an anatomy (`patching.anatomy`), instead:

1. **reuses the prefix**: the source and base prompts run once, and every intervention starts from
   that run's state where it first differs: at layer l's residual stream (resid_pre), or, when it
   patches nothing at layer l before z (z, head_out, attn_out, resid_mid, mlp_out, resid_post), after
   layer l's attention, from the base run's z (a *late* start: layer l's queries, keys, values and
   attention are not recomputed);
2. **skips unchanged earlier positions**: interventions are sorted by the first position they
   touch (with source "other", positions before the first token where clean and corrupted differ
   are shared and never patched); a segment whose interventions all start at position p0 or later
   computes only positions p0.. as queries, reading the earlier positions' keys and values from the
   base run. The source prompts, too, run from the first differing position where that saves more
   than the attention call it adds (`_split_pays`). On the last layer only the answer position's
   query is computed;
3. **batches everything it can**: a pass is one loop over the layers in which the tokens of all its
   segments (the base and source prompts first, then groups of interventions with their own first layer
   and first position) sit side by side in one ``[tokens d_model]`` tensor, so each linear map,
   LayerNorm and MLP runs once per layer for all of them and only attention runs per segment; the
   writes of one (kind, layer) are one indexed assignment per segment (one strided copy where
   consecutive interventions patch consecutive heads or positions). ``batch_size`` bounds the
   sequences of interventions per pass; passes run under ``torch.inference_mode``;
4. **unembeds only the answer position**, when the metric reads only ``logits[:, answer_pos]``
   (see `answer_only`): the metric receives ``[batch pos vocab]`` logits whose every position is
   a broadcast view of the answer position's logits. Other metrics get full logits (and no
   position skipping). For `logit_diff` (and `normalized` of it) only the answer's and the wrong
   answer's columns of the unembedding are computed (`patching.anatomy.Anatomy.unembed_at`): two dot products per row
   instead of the whole vocabulary, which on a 50k-token vocabulary is much of a sweep's arithmetic.

The planner (segments, passes, writes: `_schedule`, cached per shape) is this module's; how a family
computes is the model's `patching.anatomy.Anatomy`, read at every call, which `_run_flat` drives. Its
numbers equal the hook engine's to float rounding (``tests/test_patching_fast.py``,
``tests/test_patching_fast_hf.py``). The sites follow the bridge's hooks, including ``resid_mid`` on
the MLP's input (``ln2.hook_in``: patching it changes the MLP's input, not the residual stream).

Supported kinds: `FAST_KINDS`. Other kinds and models without an anatomy (`unsupported_reason` says
why) fall back to the hook engine (``engine="auto"``) or raise (``engine="fast"``). Hooks added by
hand (outside ``model.edit``) are not run by this engine: pass ``engine="hooks"`` to keep them.
`patching.causal_trace` runs its restorations through it too (`FastRun` with ``base_noise``).

    result = activation_patch(model, prompts, "resid_pre", logit_diff)                 # auto: fast here
    result = activation_patch(model, prompts, "z", logit_diff, by_pos=True, engine="fast")
    answer_only(my_metric)     # True: the metric gets answer-position logits only (set my_metric.answer_only = True)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.sites import Site
from interp.tasks import PromptSet
from patching import anatomy, sweep
from patching.metrics import Metric, answer_only, block_means, blockwise, expand_answer  # noqa: F401  (answer_only: public here too)
from patching.results import PatchResult

FAST_KINDS = frozenset({"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "head_out", "pattern"})
#: kinds computed after a layer's queries, keys and values (patching them leaves that layer's attention inputs alone).
AFTER_QKV = frozenset({"z", "head_out", "pattern", "attn_out", "resid_mid", "mlp_out", "resid_post"})
#: kinds computed from a layer's z on (an intervention patching only these at its first layer joins there).
LATE_KINDS = frozenset({"z", "attn_out", "resid_mid", "mlp_out", "resid_post"})


class FastEngineError(InputError):
    """``engine="fast"`` was asked for a model or sweep it does not cover."""


# =============================================================================== public
def unsupported_reason(model, sites: Sequence[Site] = (), seq_len: int | None = None) -> str | None:
    """Why the fast engine cannot run ``sites`` on ``model`` (None when it can): a kind it does not
    cover, or no anatomy for the model (`patching.anatomy.unsupported`)."""
    bad = sorted({s.kind for s in sites if s.kind not in FAST_KINDS})
    if bad and not getattr(model, "_edits", None):
        return f"kinds {bad} are not covered (covered: {', '.join(sorted(FAST_KINDS))})"
    return anatomy.unsupported(model, seq_len)


def runs_fast(model, sites: Sequence[Site], seq_len: int, engine: str) -> bool:
    """Whether ``engine`` ("auto": fast where it applies; "fast"; "hooks") runs ``sites`` on the model's
    anatomy; an error for an unknown engine, or for "fast" where it cannot run."""
    reason = unsupported_reason(model, sites, seq_len) if engine in ("auto", "fast") else None
    return anatomy.runs_on_anatomy(engine, reason, FastEngineError)


def try_fast_patch(
    model, prompts: PromptSet, sites, metric: Metric, direction: str, source: str, by_pos, layers,
    batch_size: int | None, progress: bool, engine: str = "auto",
) -> PatchResult | None:
    """`activation_patch` on the fast engine, or None where ``engine`` runs hooks (`runs_fast`)."""
    run = FastRun.setup(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, engine)
    if run is None:
        return None
    result = sweep.result(model, prompts, run.plan, run.values(progress), metric, direction, source, by_pos)
    result.settings["engine"] = "fast"
    return result


class FastRun:
    """One fast-engine sweep, pass by pass: `setup`, then `run_pass` for 0, 1, ... in order (pass 0
    runs the base and source prompts and fills the store every later pass reads; a later pass may be
    skipped, as an executor's worker does with the passes of other workers)."""

    @classmethod
    def setup(cls, model, prompts: PromptSet, sites, metric: Metric, direction: str, source: str, by_pos, layers,
              batch_size: int | None, engine: str = "auto",
              base_noise: Float[Tensor, "batch pos d_model"] | None = None) -> FastRun | None:
        """Plan a sweep (`activation_patch`'s arguments); None where ``engine`` runs hooks (`runs_fast`).
        ``base_noise`` is added to the base run's embedding (causal tracing: the base run is the noised
        one); positions where it is zero and the tokens agree count as shared."""
        if engine == "hooks":  # (the hook engine validates the call itself)
            return None
        plan, base, _ = sweep.prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, map_heads=False)
        if not runs_fast(model, [s for cell in plan.cells for s in cell], prompts.seq_len, engine):
            return None
        self = cls()
        self.plan, self.base, self.metric, self.prompts = plan, base, metric, prompts
        self.noise = None if base_noise is None else base_noise.to(model.device, model.dtype)
        other = (prompts.clean if direction == "denoise" else prompts.corrupted).long()  # checked by sweep.prepare
        net = anatomy.of(model)
        n, S = len(prompts), prompts.seq_len
        ans = prompts.answer_pos % S
        only_answer = answer_only(metric)
        nb = 0 if source == "zero" else n
        # With source "other" and a metric reading only the answer position, positions before the first
        # one where the clean and corrupted tokens differ have the same activations in both runs
        # (attention is causal): patching them changes nothing, so the computed window starts there.
        same = 0
        if source == "other" and only_answer:
            differs = (prompts.clean != prompts.corrupted).any(0)
            if self.noise is not None:
                differs = differs | (self.noise != 0).any(2).any(0).to(differs.device)
            differs = differs.nonzero()
            same = int(differs[0]) if len(differs) else S
        per_chunk = len(plan.cells) if batch_size is None else max(1, batch_size // n)
        plan_key = (tuple(plan.cells), n, S, ans, same, only_answer, net.n_layers, per_chunk, net.token_flops(S), nb)
        self.sched = sched = _schedule(*plan_key)
        self.store = _Store(
            n=n, nb=nb, S=S, mean=source == "mean", keep=len(sched.passes) > 1, late=sched.late,
            want_src=set() if source == "zero" else sched.want_src, src_seg=int(sched.split),
        )
        self.net, self.other, self.n, self.nb = net, other, n, nb
        self.at = ans if only_answer else None
        self.blockwise = blockwise(metric, prompts) if only_answer else None
        # logit_diff reads two logits per prompt: unembed only those columns (not the whole vocabulary,
        # where it is large enough for that to pay: on a small one the full product is a single cheap call)
        self.columns = None
        if only_answer and net.W_U.shape[0] >= COLUMNS_MIN_VOCAB and blockwise(metric, prompts, columns=True) is not None:
            self.blockwise = blockwise(metric, prompts, columns=True)
            self.columns = torch.stack([prompts.answers, prompts.wrong], 1).to(self.base.device)  # [n 2]
        self.ran = -1  # the last pass run (pass 0 first: it fills the store)
        return self

    @property
    def n_passes(self) -> int:
        return len(self.sched.passes)

    def values(self, progress: bool = False) -> Float[Tensor, " cell"]:
        """Every pass in order: the mean metric of each cell of the plan (float64)."""
        out = torch.empty(len(self.plan.cells), dtype=torch.float64)
        # no bar object at all without progress: even a disabled tqdm costs ~50 us, a tenth of a small sweep
        with tqdm(total=len(out), desc=f"patching {self.plan.kind} (fast)") if progress else contextlib.nullcontext() as bar:
            for number in range(self.n_passes):
                index, values = self.run_pass(number)
                out[index] = values
                if bar is not None:
                    bar.update(len(index))
        return out

    def _logit_columns(self, resid: Float[Tensor, "rows d_model"]) -> Float[Tensor, "rows 2"]:
        """The answer and wrong answer's logits of answer-position rows (blocks of the n prompts in order)."""
        return self.net.unembed_at(resid, self.columns.repeat(resid.shape[0] // self.n, 1))

    def run_pass(self, number: int) -> tuple[Tensor, Tensor]:
        """Run pass ``number`` (after pass 0, in increasing order); the cells it settles and their values."""
        if number <= self.ran or (number > 0 and self.ran < 0):
            raise ValueError(f"pass {number} after pass {self.ran}: pass 0 first, then increasing")
        sched, n, nb, metric, prompts, at = self.sched, self.n, self.nb, self.metric, self.prompts, self.at
        segs, edits, done = sched.passes[number], sched.edits[number], sched.done[number]
        first = number == 0  # the first pass also runs the base and source prompts (its first segments)
        index, values = [], []
        # Inference mode (no view tracking, no version counters) saves per-op time over no_grad; what is
        # kept from it (the values) is copied out, so results are ordinary tensors.
        with torch.inference_mode():
            tokens = (self.base if nb == 0 else torch.cat([self.base, self.other])) if first else None
            unembed = None if self.columns is None else self._logit_columns
            logits = _run_flat(self.net, segs, tokens, self.store, edits, at, self.noise if first else None, unembed)
            if first and sched.noop:  # the unpatched base run's metric
                value = block_means(metric, logits[:n], prompts, 1, at, self.blockwise)[0]
                index.append(torch.tensor(sched.noop, dtype=torch.long))
                values.append(value.double().expand(len(sched.noop)).clone())
            if len(done):
                rows = logits[(n + nb if first else 0) :]
                index.append(done)
                values.append(block_means(metric, rows, prompts, len(done), at, self.blockwise).double().clone())
        self.ran = number
        if not index:
            return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.float64)
        return torch.cat(index), torch.cat(values)


@dataclass(frozen=True)
class _Schedule:
    """How a sweep runs, from its shape alone: the no-op cells, the passes (segments), each pass's
    writes and the cells it computes (in row order), and what the first pass must record."""

    noop: list[int]
    passes: list[list[_Seg]]
    edits: list[_Edits]
    done: list[Tensor]
    late: bool
    want_src: frozenset[tuple[str, int]]
    split: bool  # the source prompts are a segment of their own, from the first differing position


@functools.lru_cache(maxsize=8)
def _schedule(
    cells: tuple[tuple[Site, ...], ...], n: int, S: int, ans: int, same: int, only_answer: bool, L: int,
    per_chunk: int, flops: float, nb: int,
) -> _Schedule:
    """The `_Schedule` of a sweep (cached: it depends on the sites and sizes only; every part is read,
    never written, by the runs that share it)."""
    cells = tuple(tuple(map(sweep.as_z, cell)) for cell in cells)  # head_out patched as z (same effect)
    # Sites before ``same`` patch a value with itself: dropped (a cell with nothing else is a no-op).
    live = [tuple(s for s in cell if s.pos is None or s.pos % S >= same) for cell in cells]
    order, noop = _order(live, S, ans, same, only_answer, L)
    # The source prompts equal the base prompts before ``same``: computing them from there on saves
    # that work at every layer, and costs attention calls of their own (at least at layer 0).
    p0 = min(same, ans)
    split = nb > 0 and p0 > 0 and _split_pays(nb * p0 * L * flops)
    first = [_Seg(0, 0, [], n), _Seg(0, p0, [], nb, source=True)] if split else [_Seg(0, 0, [], n + nb)]
    passes = _plan_passes(order, per_chunk, n, S, flops, first)
    if only_answer:
        _narrow_first_layers(passes, live, S, L)
    edits = [_Edits([live[i] for seg in segs for i in seg.cells], segs, n, S, number == 0) for number, segs in enumerate(passes)]
    done = [torch.tensor([i for seg in segs for i in seg.cells], dtype=torch.long) for segs in passes]
    return _Schedule(
        noop, passes, edits, done, late=any(seg.late for segs in passes for seg in segs),
        want_src=frozenset((s.kind, s.layer) for cell in cells for s in cell), split=split,
    )


def _narrow_first_layers(passes: list[list[_Seg]], live, S: int, L: int) -> None:
    """Set ``p1`` of the late segments (first layer before the last) whose sites at their first layer
    all have positions: the last of them (patching z, attn_out, resid_mid, mlp_out or resid_post at
    position p changes only position p of that layer's residual stream)."""
    for seg in (seg for segs in passes for seg in segs):
        if not (seg.late and seg.cells and seg.start < L - 1):
            continue
        at_start = [site for i in seg.cells for site in live[i] if site.layer == seg.start]
        if at_start and all(site.pos is not None for site in at_start):
            p1 = max(site.pos % S for site in at_start)
            if p1 < S - 1:
                seg.p1 = p1


def _split_pays(saved_flops: float) -> bool:
    """Whether running the source prompts as a segment of their own pays: it saves ``saved_flops`` and
    costs about one segment's overhead (its own attention call at layer 0)."""
    return saved_flops > SEGMENT_OVERHEAD_FLOPS


def _order(cells, S: int, ans: int, same: int, only_answer: bool, L: int) -> tuple[list[tuple[int, bool, int, int]], list[int]]:
    """Each intervention (its live sites, none before ``same``) as (first layer, late, -first position, cell
    index), *late* when it patches nothing at its first layer before z (it can start from the base run's
    z there); and the empty cells (no-ops: their value is the base run's)."""
    order, noop = [], []
    for i, live in enumerate(cells):
        if not live:
            noop.append(i)
            continue
        start = min(s.layer for s in live)
        p0 = min(same if s.pos is None else s.pos % S for s in live) if only_answer else 0
        if only_answer and all(s.layer == L - 1 and s.kind in AFTER_QKV for s in live):
            p0 = ans  # the last layer's keys and values are unchanged: only the answer query matters
        late = all(s.kind in LATE_KINDS for s in live if s.layer == start)
        order.append((start, late, -min(p0, ans), i))
    order.sort()
    return order, noop


# =============================================================================== one pass through the anatomy
def _run_flat(net: anatomy.Anatomy, segs: list[_Seg], tokens: Tensor | None, store: _Store, edits: _Edits, ans: int | None,
             noise: Tensor | None = None, unembed: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """One pass of ``segs`` through the layers (the module's points 1-3), their tokens side by side in
    one ``[tokens d_model]`` tensor: a segment of r sequences computing query positions p0..S-1 holds
    r * (S - p0) tokens (row-major). With ``tokens`` (the first pass: the base prompts, then the
    source prompts, from their own p0 where ``store.src_seg``) the base and source runs fill ``store``
    as they go; later passes read it. With ``ans``, the result is the answer logits ``[rows vocab]``
    (``unembed`` replaces the unembedding), else ``[rows S vocab]``; rows in segment order. ``noise``
    (``[n S d_model]``, first pass) is added to the base prompts' embedding."""
    S, L, d = store.S, net.n_layers, net.d_model
    x, layout = None, []  # layout: [seg, first token, tokens per row, first position]
    if tokens is not None:  # the base prompts, then the source prompts (all positions, or from p0 on)
        x = net.embed(tokens)
        if noise is not None:
            x = torch.cat([x[: store.n] + noise, x[store.n :]])
        layout.append([segs[0], 0, S, 0])
        if store.src_seg:
            src = segs[1]
            layout.append([src, store.n * S, S - src.p0, src.p0])
            x = torch.cat([x[: store.n].reshape(-1, d), x[store.n :, src.p0 :].reshape(-1, d)])
        else:
            x = x.reshape(-1, d)
    for lay in range(min(seg.start for seg in segs), L):
        last = ans is not None and lay == L - 1
        if tokens is not None:
            store.record_base("resid_pre", lay, x[: store.n * S].view(store.n, S, d))
        if any(entry[0].p1 is not None and entry[0].start == lay - 1 for entry in layout):
            x = _widen(x, layout, store, lay)
        early = [seg for seg in segs if seg.cells and seg.start == lay and not seg.late]
        if early:  # each intervention's copy of the base run from p0 on
            x = _join(x, layout, early, [(store.resid_pre[lay][:, seg.p0 :], seg.p0) for seg in early], store.n)
        zs = []
        if layout:
            x = edits.point("resid_pre", lay, x, layout, store)
            index = _answer_index(layout, ans, x.device) if last else None
            zs = _attention(net, lay, x, layout, store, edits, ans if last else None, index)
        if last and layout:  # from here on each row holds its answer position alone
            x = _to_answers(x, layout, ans, index)
        late = [seg for seg in segs if seg.cells and seg.start == lay and seg.late]
        if late:
            x = _join_late(net, x, zs, layout, late, store, lay, ans if last else None)
        blk = net.layers[lay]
        z = edits.point("z", lay, torch.cat(zs), layout, store)  # a new tensor (edits write in place)
        pre = x
        x = x + edits.point("attn_out", lay, net.o(lay, z.view(z.shape[0], -1)), layout, store)
        if not net.attn_only:  # the MLP reads resid_pre (parallel) or resid_mid, where ln2's input is patched only
            mlp_in = pre if net.parallel else edits.point("resid_mid", lay, x, layout, store, copy=True)
            x = x + edits.point("mlp_out", lay, blk["mlp"](blk["ln2"](mlp_in)), layout, store)
        x = edits.point("resid_post", lay, x, layout, store)
    rows = sum(entry[0].rows for entry in layout)
    if ans is not None and unembed is not None:
        return unembed(x)
    return net.unembed(x if ans is not None else x.view(rows, S, d))


def _join_late(net: anatomy.Anatomy, x: Tensor | None, zs: list[Tensor], layout: list, late: list[_Seg], store: _Store, lay: int,
               ans: int | None) -> Tensor:
    """Late segments join after layer ``lay``'s attention: each intervention's rows start as the base
    run's residual stream (``x``) and z (appended to ``zs``) from p0 on, or at the answer position
    alone on the last layer (``ans``)."""
    S, n = store.S, store.n
    windows = [(ans, 1) if ans is not None else (seg.p0, (S if seg.p1 is None else seg.p1 + 1) - seg.p0) for seg in late]
    x = _join(x, layout, late, [(store.resid_pre[lay].narrow(1, *w), w[0]) for w in windows], n)
    z, z_first = store.z[lay]  # [n positions z_first.. head d_head]
    for seg, (first, tok) in zip(late, windows, strict=True):
        zs += [z.narrow(1, first - z_first, tok).reshape(-1, net.n_heads, net.d_head)] * (seg.rows // n)
    return x


def _attention(net: anatomy.Anatomy, lay: int, x: Tensor, layout: list, store: _Store, edits: _Edits, ans: int | None,
               index: Tensor | None = None) -> list[Tensor]:
    """The z of all tokens at layer ``lay``, as a list of ``[rows * queries, head, d_head]`` parts in
    layout order: queries, keys and values of all segments' tokens at once, attention per group of
    consecutive intervention segments computing the same positions (the base segment records the
    base run's keys, values and z). With ``ans`` (the last layer), the answer query alone; ``index``
    (each row's answer token, `_answer_index`) computes queries for those tokens only."""
    S, H, dh = store.S, net.n_heads, net.d_head
    blk = net.layers[lay]
    h = blk["ln1"](x)
    q, k, v = net.qkv(lay, h, index)  # [tokens heads d_head]; q of the answer tokens only with index
    zs, row0 = [], 0
    for base, off, tok, rows, pattern_edit in _attention_groups(layout, lay, edits, store, ans):
        kg, vg = (t[off : off + rows * tok].reshape(rows, tok, -1, dh).transpose(1, 2) for t in (k, v))
        first = S - tok
        if index is not None:  # [rows head 1 d_head]: the answer query of each row
            qg = q[row0 : row0 + rows].reshape(rows, 1, H, dh).transpose(1, 2)
            row0 += rows
        else:
            qg = q[off : off + rows * tok].reshape(rows, tok, H, dh).transpose(1, 2)
        qg, kg = net.rope(lay, qg, first if index is None else ans), net.rope(lay, kg, first)
        if base:  # the base segment: record the base run's keys and values (its first n rows)
            store.record_base("k", lay, kg[: store.n])
            store.record_base("v", lay, vg[: store.n])
        elif tok < S:  # earlier positions' keys / values: the base run's, shared by every copy
            kg, vg = (anatomy.with_prefix(store.kv[lay][j][:, :, : S - tok], t) for j, t in ((0, kg), (1, vg)))
        if index is not None:
            first = ans
        mixed = net.attend(lay, qg, kg, vg, first, pattern_edit)
        zs.append(mixed.transpose(1, 2).reshape(-1, H, dh))
        if base and store.late:
            store.record_base("z", lay, zs[-1].view(rows, -1, H, dh)[: store.n], first)
    return zs


def _attention_groups(layout: list, lay: int, edits: _Edits, store: _Store, ans: int | None) -> list[list]:
    """``[base?, first token, tokens per row, rows, pattern edit]`` per attention call: consecutive
    intervention segments that compute the same positions (their tokens are adjacent) share one call
    unless one of them reads or writes its pattern there; a source segment of its own counts as one."""
    groups: list[list] = []
    for gi, (seg, off, tok, _) in enumerate(layout):
        pattern_edit = edits.pattern_edit(lay, gi, store.S - tok if ans is None else ans, store)
        last = groups[-1] if groups else None
        base = not seg.cells and not seg.source  # the base prompts (and the source prompts, unless on their own)
        if last and not base and not last[0] and last[2] == tok and last[4] is None and pattern_edit is None:
            last[3] += seg.rows
        else:
            groups.append([base, off, tok, seg.rows, pattern_edit])
    return groups


def _join(x: Tensor | None, layout: list, segs: list[_Seg], starts: list[tuple[Tensor, int]], n: int) -> Tensor:
    """``x`` with ``segs`` appended (and entered in ``layout``): each of a segment's rows // n
    interventions starts as a copy of its entry in ``starts``: the base run's ``[n tok d_model]`` and
    the position of its first token. A new tensor even for one part (edits write into x in place)."""
    at = 0 if x is None else x.shape[0]
    parts = [] if x is None else [x]
    for seg, (start, first) in zip(segs, starts, strict=True):
        tok = start.shape[1]
        parts += [start.reshape(-1, start.shape[-1])] * (seg.rows // n)
        layout.append([seg, at, tok, first])
        at += seg.rows * tok
    return torch.cat(parts)


def _to_answers(x: Tensor, layout: list, ans: int, index: Tensor) -> Tensor:
    """Each row's answer token of the flat ``x`` (rows in segment order; ``index`` from `_answer_index`);
    ``layout`` updated to one token per row."""
    x = x[index]
    at = 0
    for entry in layout:
        entry[1], entry[2], entry[3] = at, 1, ans
        at += entry[0].rows
    return x


def _widen(x: Tensor, layout: list, store: _Store, lay: int) -> Tensor:
    """The flat ``x`` with each narrow segment that started at layer ``lay - 1`` (computing positions
    p0..p1 there) widened to positions p0..S-1 at layer ``lay``: positions after p1 are the base run's
    resid_pre of layer ``lay`` (unchanged: nothing has read the patched positions yet)."""
    S, n, d = store.S, store.n, x.shape[-1]
    parts, at = [], 0
    for entry in layout:
        seg, off, tok, first = entry
        part = x[off : off + seg.rows * tok]
        if seg.p1 is not None and seg.start == lay - 1 and first + tok < S:
            rest = store.resid_pre[lay][:, first + tok :]  # [n, S - first - tok, d]
            part = torch.cat([part.view(seg.rows, tok, d), rest.repeat(seg.rows // n, 1, 1)], dim=1).reshape(-1, d)
            entry[2] = S - first
        entry[1] = at
        at += part.shape[0]
        parts.append(part)
    return torch.cat(parts)


def _answer_index(layout: list, ans: int, device) -> Tensor:
    """The flat token index of each row's answer position, rows in segment order."""
    index = [off + (ans - p) + tok * r for seg, off, tok, p in layout for r in range(seg.rows)]
    return torch.tensor(index, device=device)


# =============================================================================== plans, base run, edits
@dataclass
class _Seg:
    """Sequences computed together: ``cells`` (interventions, ``n`` prompts each; none for the base
    and source prompts themselves), from layer ``start`` and query position ``p0``."""

    start: int
    p0: int
    cells: list[int]
    rows: int
    late: bool = False  # joins after the attention of layer ``start``, from the base run's z
    source: bool = False  # the source prompts alone (from p0 on, the base run's keys / values before)
    # a late segment whose sites at layer ``start`` all lie at positions p0..p1 computes only those
    # there (later positions are unchanged until the next attention), then widens to p0..S-1
    p1: int | None = None


#: the smallest vocabulary for which `logit_diff` unembeds two columns per row instead of all of them
COLUMNS_MIN_VOCAB = 1024

#: fixed cost of one segment through one layer (its attention's Python and kernel launches), in
#: floating-point operations: about 50 microseconds at 30 GFLOP/s on one CPU core.
SEGMENT_OVERHEAD_FLOPS = 1.5e6


def _plan_passes(
    order: list[tuple[int, bool, int, int]], per_chunk: int, n: int, S: int, flops: float, first: list[_Seg],
) -> list[list[_Seg]]:
    """Segments (per first layer, split by `_chunk`) packed into passes of at most ``per_chunk``
    interventions; the first pass starts with the base and source segments ``first`` (it may hold
    nothing else)."""
    segs = []
    for start, late in sorted({o[:2] for o in order}):
        group = [o for o in order if o[:2] == (start, late)]
        for chunk in _chunk(group, per_chunk, n, S, flops):
            segs.append(_Seg(start, -chunk[-1][2], [o[3] for o in chunk], len(chunk) * n, late))
    passes: list[list[_Seg]] = [list(first)]
    count = 0
    for seg in segs:
        if count + len(seg.cells) > per_chunk:
            passes.append([])
            count = 0
        passes[-1].append(seg)
        count += len(seg.cells)
    return passes


def _chunk(group: list[tuple[int, bool, int, int]], per_chunk: int, n: int, S: int, flops: float) -> list[list]:
    """Split one layer's interventions (sorted by first position, latest first) into chunks of at most
    ``per_chunk``, minimising sum(overhead + rows * (S - p0) * flops) by dynamic programming: a
    chunk computes positions p0.. of its earliest-starting intervention for all its rows."""
    m = len(group)
    best = [0.0] + [float("inf")] * m
    cut = [0] * (m + 1)
    for j in range(1, m + 1):
        p0 = -group[j - 1][2]  # the chunk group[i:j] starts at the smallest p0, its last entry
        for i in range(max(0, j - per_chunk), j):
            cost = best[i] + SEGMENT_OVERHEAD_FLOPS + (j - i) * n * (S - p0) * flops
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], m
    while j > 0:
        chunks.append(group[cut[j] : j])
        j = cut[j]
    return chunks[::-1]


@dataclass
class _Store:
    """What the first pass's base and source prompts leave for the edits and the later passes: per layer
    the base run's resid_pre ``[n S d_model]`` and keys / values ``[n head S d_head]``, and the source
    activations of the swept kinds with the position of their first entry."""

    n: int
    nb: int
    S: int
    mean: bool
    keep: bool  # copy what is kept (later passes read it after the first pass's tensors are gone)
    want_src: set[tuple[str, int]]
    late: bool = False  # keep the base run's z too (late segments start from it)
    src_seg: int = 0  # the layout entry of the source rows: after the base rows in entry 0, or entry 1 alone
    resid_pre: dict[int, Tensor] = field(default_factory=dict)
    kv: dict[int, list[Tensor]] = field(default_factory=dict)
    z: dict[int, tuple[Tensor, int]] = field(default_factory=dict)
    src: dict[tuple[str, int], tuple[Tensor, int]] = field(default_factory=dict)

    @property
    def src_row(self) -> int:
        """The first source row (sequence) within its layout entry `src_seg`."""
        return 0 if self.src_seg else self.n

    def record_base(self, kind: str, layer: int, act: Tensor, first: int = 0) -> None:
        act = act.clone() if self.keep else act
        if kind == "resid_pre":
            self.resid_pre[layer] = act
        elif kind == "z":
            self.z[layer] = (act, first)
        else:
            self.kv.setdefault(layer, [None, None])[int(kind == "v")] = act

    def record_src(self, kind: str, layer: int, act: Tensor, first: int) -> None:
        """``act``: the source rows ``[nb pos ...]`` (pattern: ``[nb head q k]``), positions from ``first``."""
        if self.mean:
            act = act.mean(0, keepdim=True)
        elif self.keep:
            act = act.clone()
        self.src[(kind, layer)] = (act, first)


class _Edits:
    """The writes of one pass: intervention j of segment g overwrites its own n rows of each of its sites
    with the source activation (or zero) at the same positions. Writes are batched: per (kind, layer)
    and segment, the interventions that select the same axes (a position or not, a head or not) are
    written by one indexed assignment, or by one strided copy on a diagonal (`_Writes.diagonal`)."""

    def __init__(self, cells, segs: list[_Seg], n: int, S: int, first_pass: bool):
        self.n, self.S, self.first_pass = n, S, first_pass
        groups: dict[tuple[str, int], dict[tuple[int, bool, bool], tuple[list, list, list]]] = {}
        k = 0
        for gi, seg in enumerate(segs):
            for j in range(len(seg.cells)):
                for site in cells[k]:
                    key = (gi, site.pos is not None, site.head is not None)
                    js, ps, hs = groups.setdefault((site.kind, site.layer), {}).setdefault(key, ([], [], []))
                    js.append(j)
                    ps.append(None if site.pos is None else site.pos % S)
                    hs.append(site.head)
                k += 1
        self.groups = {key: {g: _Writes(*lists) for g, lists in by_axes.items()} for key, by_axes in groups.items()}

    def _record(self, kind: str, layer: int, act: Tensor, layout: list, store: _Store) -> None:
        if self.first_pass and store.nb and (kind, layer) in store.want_src:
            _, off, tok, first = layout[store.src_seg]  # flat tokens
            off += store.src_row * tok
            store.record_src(kind, layer, act[off : off + store.nb * tok].view(store.nb, tok, *act.shape[1:]), first)

    def point(self, kind: str, layer: int, act: Tensor, layout: list, store: _Store, copy: bool = False) -> Tensor:
        """The flat activation ``[tokens ...]`` of (kind, layer) after this pass's writes (in place, or on a
        copy with ``copy``); the first pass records the source rows first."""
        self._record(kind, layer, act, layout, store)
        groups = self.groups.get((kind, layer))
        if not groups:
            return act
        if copy:
            act = act.clone()
        for (gi, _, _), entries in groups.items():
            seg, off, tok, first = layout[gi]
            block = act[off : off + seg.rows * tok].view(seg.rows // self.n, self.n, tok, *act.shape[1:])
            self._write(block, entries, kind, layer, first, tok, store, pos_axis=0, head_axis=1)
        return act

    def pattern_edit(self, layer: int, gi: int, first: int, store: _Store):
        """The pattern edit of segment ``gi`` at ``layer`` (queries from ``first``), or None if nothing
        reads or writes that pattern."""
        groups = {key: e for key, e in self.groups.get(("pattern", layer), {}).items() if key[0] == gi}
        record = gi == store.src_seg and self.first_pass and store.nb and ("pattern", layer) in store.want_src
        if not groups and not record:
            return None

        def edit(pattern: Tensor) -> Tensor:  # [rows head q k]
            if record:
                store.record_src("pattern", layer, pattern[store.src_row : store.src_row + store.nb], first)
            block = pattern.view(pattern.shape[0] // self.n, self.n, *pattern.shape[1:])
            for entries in groups.values():
                self._write(block, entries, "pattern", layer, first, pattern.shape[2], store, pos_axis=1, head_axis=0)
            return pattern

        return edit

    def _write(self, block: Tensor, w: _Writes, kind: str, layer: int, first: int, tok: int, store: _Store,
               pos_axis: int, head_axis: int) -> None:
        """``block[j, :, <site>] = source[<site>]`` for every write (j, position, head) at once. ``block``:
        ``[interventions n *row]``; in a row, the position axis (from ``first``, ``tok`` long) and the
        head axis are ``pos_axis`` and ``head_axis``."""
        js, hs, ps = w.js, w.hs, w.ps
        in_window = ps is None or (first <= w.p_min and w.p_max < first + tok)
        if w.diagonal is not None and in_window:
            self._write_diagonal(block, w, kind, layer, first, tok, store, pos_axis, head_axis)
            return
        if not in_window:
            # drop positions outside the computed window: they cannot reach the answer
            keep = [i for i, p in enumerate(w.pos) if first <= p < first + tok]
            if not keep:
                return
            keep_t = torch.tensor(keep)
            js, ps = js[keep_t], ps[keep_t]
            hs = None if hs is None else hs[keep_t]
        row: list = [slice(None)] * (block.ndim - 2)
        if ps is not None:
            row[pos_axis] = ps - first
        if hs is not None:
            row[head_axis] = hs
        index = (js, slice(None), *row)
        window = _source_window(store, kind, layer, pos_axis, first, tok)
        if window is None:  # zero ablation
            block[index] = 0.0
            return
        m = len(js)
        rows = w.arange if m == len(w.js) else torch.arange(m)
        value = window.unsqueeze(0).expand(m, *window.shape)[(rows, *index[1:])]
        block[index] = value.to(block.dtype)

    def _write_diagonal(self, block: Tensor, w: _Writes, kind: str, layer: int, first: int, tok: int, store: _Store,
                        pos_axis: int, head_axis: int) -> None:
        """`_write` for writes on a diagonal (`_Writes.diagonal`): intervention ``j0 + i`` writes position
        (or head) ``start + i``, through one strided view of ``block`` and of the source."""
        axis, start = w.diagonal
        ax = pos_axis if axis == "pos" else head_axis
        lo, m = (start - first if axis == "pos" else start), len(w.pos)
        target = block.narrow(0, w.j0, m).narrow(2 + ax, lo, m).diagonal(dim1=0, dim2=2 + ax)  # [n, *row w/o ax, m]
        window = _source_window(store, kind, layer, pos_axis, first, tok)
        if window is None:  # zero ablation
            target.zero_()
            return
        target.copy_(window.narrow(1 + ax, lo, m).movedim(1 + ax, -1))


def _source_window(store: _Store, kind: str, layer: int, pos_axis: int, first: int, tok: int) -> Tensor | None:
    """The source activation of (kind, layer) at positions first..first+tok-1: ``[b *row]`` (b = n, or 1 for
    the mean; the position axis is ``pos_axis`` of a row); None for zero ablation (nothing recorded)."""
    if (kind, layer) not in store.src:
        return None
    act, src_first = store.src[(kind, layer)]
    return act.narrow(pos_axis + 1, first - src_first, tok)


class _Writes:
    """The writes of one (kind, layer) and segment that select the same axes: intervention ``js[i]``
    writes position ``pos[i]`` (or every position) of head ``heads[i]`` (or every head).

    ``diagonal``: ("pos" | "head", first index) where consecutive interventions write consecutive
    positions (or heads) and nothing else varies, as in a sweep: one strided copy does them all."""

    def __init__(self, js: list[int], pos: list[int | None], heads: list[int | None]):
        self.pos = pos
        self.js, self.arange = torch.tensor(js), torch.arange(len(js))
        self.ps = None if pos[0] is None else torch.tensor(pos)
        self.p_min, self.p_max = (None, None) if pos[0] is None else (min(pos), max(pos))
        self.hs = None if heads[0] is None else torch.tensor(heads)
        self.j0, self.diagonal = js[0], None
        if js == list(range(js[0], js[0] + len(js))):
            for axis, values, other in (("pos", pos, heads), ("head", heads, pos)):
                if values[0] is not None and other[0] is None and values == list(range(values[0], values[0] + len(js))):
                    self.diagonal = (axis, values[0])

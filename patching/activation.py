"""Activation patching: which activations carry the difference between two prompts?

Take a *clean* prompt, on which the model does the task ("... Paris"), and a *corrupted* one that
differs in a key detail and changes the answer. Run one of them, but overwrite a single activation
(a residual-stream vector at one layer and position, one head's output, ...) with its value from
the other run, and measure with a metric how much the output moves.

- **Denoising** (``direction="denoise"``): run the corrupted prompt and patch in *clean*
  activations. A site that restores the clean behaviour is *sufficient* to carry the information.
- **Noising** (``direction="noise"``): run the clean prompt and patch in *corrupted* activations.
  A site that destroys the clean behaviour is *necessary*.
- ``source="mean"`` patches in the mean of the source activation over the prompt set (mean
  ablation), ``source="zero"`` patches in zeros (zero ablation).

Method: Meng et al. 2022 (causal tracing), Wang et al. 2022 (IOI); conventions from
Heimersheim & Nanda 2024, "How to use and interpret activation patching".

    result = activation_patch(model, prompts, "resid_pre", logit_diff)            # [layer pos]
    result = activation_patch(model, prompts, "z", logit_diff)                    # [layer head]
    result = activation_patch(model, prompts, "head_out", logit_diff, by_pos=True)  # [layer pos head]
    result = activation_patch(model, prompts, [Site("z", 1, head=2), Site("attn_out", 0)], prob)
    result = activation_patch(model, prompts, [[Site("z", 1, head=0), Site("z", 1, head=3)]], prob)  # a set

The value of each cell is the metric averaged over the prompt set. The engine is batched: K
interventions run as one forward over the base prompts repeated K times, each intervention
patching only its own rows; ``batch_size`` bounds the sequences per forward.
`reference_patch` is the plain loop (one forward per intervention), kept to check the engine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import einops
import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.interventions import Replace
from interp.sites import HEAD_KINDS, MLP_KINDS, Site, as_site
from interp.tasks import PromptSet
from patching.metrics import Metric, check_values, metric_name
from patching.results import PatchResult

DIRECTIONS = ("denoise", "noise")
SOURCES = ("other", "mean", "zero")
ENGINES = ("auto", "fast", "hooks")
#: kinds a string sweep accepts: [layer pos] (or [layer]) for vectors, [layer head] (or [layer pos head]) for heads.
POS_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")
SWEEP_KINDS = (*POS_KINDS, "z", "head_out", "q", "k", "v", "pattern")


@dataclass
class _Plan:
    """The interventions of a sweep, each a tuple of sites patched together, laid out on named axes."""

    cells: Sequence[tuple[Site, ...]]
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    kind: str


# =============================================================================== public
def activation_patch(
    model,
    prompts: PromptSet,
    sites: str | Sequence[Site | str] | Sequence[Sequence[Site | str]],
    metric: Metric,
    direction: str = "denoise",
    source: str = "other",
    by_pos: bool | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int | None = 64,
    progress: bool = True,
    engine: str = "auto",
    executor=None,
) -> PatchResult:
    """Patch each site (or each set of sites) separately and return the mean metric per intervention.

    ``sites``: a kind name for a sweep over the whole model — ``"resid_pre"`` etc. give axes
    ``(layer, pos)`` (``(layer,)`` with ``by_pos=False``); head kinds ``"z" | "head_out" | "q" |
    "k" | "v" | "pattern"`` give ``(layer, head)`` (``(layer, pos, head)`` with ``by_pos=True``;
    for pattern, pos is the query position) — or a list of Sites / hook names (axis ``site``), or a
    list of lists of Sites (each inner list is patched together as one intervention).
    ``metric(logits, prompts) -> [batch]``; ``direction``: "denoise" (run corrupted, patch in
    clean) or "noise" (run clean, patch in corrupted); ``source``: "other" (the other run's
    activation), "mean" (its mean over the prompt set) or "zero". ``batch_size``: sequences per
    forward (at least one intervention's prompts always run together); None runs everything at once.
    ``engine``: "hooks" (the batched hook engine below, any backend), "fast" (`patching.fast`:
    native TransformerLens models, and Hugging Face GPT-2, GPT-NeoX and Llama-family models on either
    backend (`patching.architectures`); reuses the cached prefix, skips unchanged earlier
    positions and unembeds only the answer position; an error where it does not apply) or "auto"
    (fast where it applies, else hooks). Both give the same numbers (to float rounding).
    ``executor``: None runs here; an `interp.distributed.RayExecutor` splits the interventions
    into chunks of whole forwards run by its workers, with the same result (exactly).
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}.")
    if executor is not None:
        return _patch_on(executor, model, prompts, sites, metric, direction, source, by_pos, layers, batch_size,
                         progress, engine)
    if engine != "hooks":
        from patching import fast

        result = fast.try_fast_patch(
            model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, progress, required=engine == "fast"
        )
        if result is not None:
            return result
    plan, base, source_acts = _prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size)
    per_chunk = _per_chunk(plan, prompts, batch_size)
    out = torch.empty(len(plan.cells), dtype=torch.float64)
    for start in tqdm(range(0, len(plan.cells), per_chunk), desc=f"patching {plan.kind}", disable=not progress):
        out[start : start + per_chunk] = _hook_forward(model, prompts, metric, plan, base, source_acts, start, per_chunk)
    return _result(model, prompts, plan, out, metric, direction, source, by_pos)


def _per_chunk(plan: _Plan, prompts: PromptSet, batch_size: int | None) -> int:
    """Interventions per forward of the hook engine."""
    return len(plan.cells) if batch_size is None else max(1, batch_size // len(prompts))


def _hook_forward(model, prompts, metric, plan, base, source_acts, start: int, per_chunk: int) -> Tensor:
    """The mean metric of interventions ``start .. start + per_chunk - 1``, run as one forward."""
    n = len(prompts)
    cells = plan.cells[start : start + per_chunk]
    out = torch.empty(len(cells), dtype=torch.float64)
    with torch.no_grad():
        tokens = einops.repeat(base, "b p -> (k b) p", k=len(cells))
        logits, _ = model.run(tokens, edits=_row_edits(cells, source_acts, n))
        for k in range(len(cells)):
            out[k] = check_values(metric(logits[k * n : (k + 1) * n], prompts), n, metric).double().mean()
    return out


# =============================================================================== on an executor
def _patch_on(executor, model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, progress, engine):
    """`activation_patch` on an executor: every input is checked here, then the workers run chunks of
    whole forwards (the hook engine's batches, or the fast engine's passes), so each intervention is
    computed exactly as in one process; the values are put back in plan order."""
    from interp.distributed import chunk_ranges
    from patching import fast

    plan, _, _ = _prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, map_heads=False)
    use_fast = False
    if engine != "hooks":
        reason = fast.unsupported_reason(model, [s for cell in plan.cells for s in cell], prompts.seq_len)
        if reason is not None and engine == "fast":
            raise fast.FastEngineError(f"engine='fast' cannot run this sweep: {reason}. Use engine='auto' or engine='hooks'.")
        use_fast = reason is None
    args = (prompts, sites, metric, direction, source, by_pos, layers, batch_size)
    if use_fast:
        run = fast.FastRun.setup(model, *args)  # the schedule only: nothing runs here
        units, multiple = run.n_passes, 1
        weights_of = [len(d) + (len(run.sched.noop) if i == 0 else 0) for i, d in enumerate(run.sched.done)]
    else:
        per_chunk = _per_chunk(plan, prompts, batch_size)
        units, multiple = len(plan.cells), per_chunk
    chunks = chunk_ranges(units, executor.chunks, multiple)
    weights = [sum(weights_of[i] for i in c) for c in chunks] if use_fast else [len(c) for c in chunks]
    out = torch.empty(len(plan.cells), dtype=torch.float64)

    def put(_, value):
        index, values = value
        out[index] = values

    desc = f"patching {plan.kind}{' (fast)' if use_fast else ''} on {executor.num_workers} workers"
    executor.map(_patch_chunk, chunks, shared=(use_fast, args), model=model, progress=progress, desc=desc,
                 weights=weights, on_result=put)
    result = _result(model, prompts, plan, out, metric, direction, source, by_pos)
    if use_fast:
        result.settings["engine"] = "fast"
    return result


def _patch_chunk(model, shared, chunk: range, memo: dict) -> tuple[Tensor, Tensor]:
    """A worker's share: fast-engine passes ``chunk`` (pass 0 first, once per worker: it fills the
    store later passes read), or hook-engine interventions ``chunk`` in batches of the single-process run."""
    use_fast, (prompts, sites, metric, direction, source, by_pos, layers, batch_size) = shared
    args = (prompts, sites, metric, direction, source, by_pos, layers, batch_size)
    if use_fast:
        from patching import fast

        if "run" not in memo:
            memo["run"] = run = fast.FastRun.setup(model, *args, required=True)
            memo["pass0"] = run.run_pass(0)
        run = memo["run"]
        index, values = [], []
        for number in chunk:
            if number == 0:
                i, v = memo["pass0"]
            else:
                i, v = run.run_pass(number)
            index.append(i)
            values.append(v)
        return torch.cat(index), torch.cat(values)
    if "prepared" not in memo:
        memo["prepared"] = _prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size)
    plan, base, source_acts = memo["prepared"]
    per_chunk = _per_chunk(plan, prompts, batch_size)
    values = [_hook_forward(model, prompts, metric, plan, base, source_acts, start, per_chunk)
              for start in range(chunk.start, chunk.stop, per_chunk)]
    return torch.arange(chunk.start, chunk.stop), torch.cat(values)[: len(chunk)]


def reference_patch(
    model,
    prompts: PromptSet,
    sites: str | Sequence[Site | str] | Sequence[Sequence[Site | str]],
    metric: Metric,
    direction: str = "denoise",
    source: str = "other",
    by_pos: bool | None = None,
    layers: Sequence[int] | None = None,
    progress: bool = False,
) -> PatchResult:
    """`activation_patch` as a plain loop: one forward per intervention, each site edited with
    ``Replace`` through `HookedModel.run` (head_out through the model's own head_out edit). Slow;
    it exists to check the batched engine."""
    plan, base, _ = _prepare(model, prompts, sites, metric, direction, source, by_pos, layers, 1, map_heads=False)
    n = len(prompts)
    full = sorted({s.full for cell in plan.cells for s in cell})
    source_tokens = prompts.clean if direction == "denoise" else prompts.corrupted
    out = torch.empty(len(plan.cells), dtype=torch.float64)
    with torch.no_grad():
        _, cache = model.run_with_cache(source_tokens, full)
        for i, cell in enumerate(tqdm(plan.cells, desc="reference patching", disable=not progress)):
            edits = []
            for site in cell:
                act = cache[site.full]
                if source == "mean":
                    act = act.mean(0, keepdim=True)
                elif source == "zero":
                    act = torch.zeros_like(act[:1])
                edits.append((site, Replace(site.select(act))))
            logits, _ = model.run(base, edits=edits)
            out[i] = check_values(metric(logits, prompts), n, metric).double().mean()
    return _result(model, prompts, plan, out, metric, direction, source, by_pos)


# =============================================================================== internals
def _prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, map_heads=True):
    """Validate everything before any forward; build the plan and the source activations."""
    if not isinstance(prompts, PromptSet):
        raise InputError(f"prompts must be an interp.tasks.PromptSet, got {type(prompts).__name__}.")
    if prompts.clean.shape != prompts.corrupted.shape:
        raise InputError(
            f"Clean tokens {tuple(prompts.clean.shape)} and corrupted tokens {tuple(prompts.corrupted.shape)} "
            f"differ in shape; patching pairs positions one to one, so give both the same shape."
        )
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    if source not in SOURCES:
        raise InputError(f"source must be one of {SOURCES}, got {source!r}.")
    if not callable(metric):
        raise InputError(f"metric must be a function (logits, prompts) -> [batch], got {type(metric).__name__}.")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise InputError(f"batch_size must be a positive int (sequences per forward) or None, got {batch_size!r}.")
    if (prompts.clean.device, prompts.clean.dtype) == (prompts.corrupted.device, prompts.corrupted.dtype):
        both = model.check_tokens(torch.cat([prompts.clean, prompts.corrupted]))  # one check for the two
        clean, corrupted = both[: len(prompts)], both[len(prompts) :]
    else:  # (each gets its own message)
        clean, corrupted = model.check_tokens(prompts.clean), model.check_tokens(prompts.corrupted)
    plan = _plan(model, prompts, sites, by_pos, layers)
    seq = prompts.seq_len
    # A sweep's sites are in range by construction (its layers were checked): one site checks its kind.
    checked = plan.cells[:1] if isinstance(sites, str) else plan.cells
    for cell in checked:
        for site in cell:
            (_as_z(site) if map_heads else site).validate(model, seq)
    base = corrupted if direction == "denoise" else clean
    source_acts: dict[Site, Tensor] = {}
    if not map_heads:
        return plan, base, source_acts
    keys = sorted({_as_z(s).full for cell in plan.cells for s in cell})
    if source == "zero":
        return plan, base, {key: None for key in keys}
    with torch.no_grad():
        _, cache = model.run_with_cache(clean if direction == "denoise" else corrupted, keys)
    for key in keys:
        act = cache[key]
        source_acts[key] = act.mean(0, keepdim=True) if source == "mean" else act
    return plan, base, source_acts


def _as_z(site: Site) -> Site:
    """Patching head_out (z @ W_O of one head) is patching that head's z: same effect, no W_O needed."""
    return Site("z", site.layer, site.head, site.pos) if site.kind == "head_out" else site


def _row_edits(cells: list[tuple[Site, ...]], source_acts: dict[Site, Tensor | None], n: int) -> dict[Site, Callable]:
    """One function edit per (kind, layer): intervention k overwrites only rows k*n .. (k+1)*n - 1."""
    by_key: dict[Site, list[tuple[int, Site]]] = {}
    for k, cell in enumerate(cells):
        for site in cell:
            site = _as_z(site)
            by_key.setdefault(site.full, []).append((k, site))

    def make(key: Site, entries: list[tuple[int, Site]]):
        src = source_acts[key]

        def patch(act: Tensor) -> Tensor:
            out = act.clone()
            for k, site in entries:
                rows = out[k * n : (k + 1) * n]  # a view: writing into it writes into out
                index = site.index()
                rows[index] = 0.0 if src is None else src[index].to(out.dtype)
            return out

        return patch

    return {key: make(key, entries) for key, entries in by_key.items()}


def _plan(model, prompts: PromptSet, sites, by_pos, layers) -> _Plan:
    if isinstance(sites, str) and sites in SWEEP_KINDS:
        return _sweep_plan(model, prompts, sites, by_pos, layers)
    if isinstance(sites, Site | str):
        sites = [sites]
    if not isinstance(sites, Sequence) or isinstance(sites, str):
        raise InputError(
            f"sites must be a kind name ({', '.join(SWEEP_KINDS)}), a list of Sites, or a list of lists "
            f"of Sites; got {type(sites).__name__}."
        )
    if len(sites) == 0:
        raise InputError("No sites to patch: give at least one Site, or a kind name such as 'resid_pre' for a sweep.")
    if by_pos is not None or layers is not None:
        raise InputError("by_pos and layers shape a sweep given by a kind name; with a list of sites, list exactly the sites you want.")
    cells = []
    for entry in sites:
        group = [entry] if isinstance(entry, Site | str) else list(entry)
        if not group:
            raise InputError("An inner list of sites is empty; each set of sites must name at least one site.")
        cells.append(tuple(as_site(s) for s in group))
    labels = [" + ".join(str(s) for s in cell) for cell in cells]
    kinds = sorted({s.kind for cell in cells for s in cell})
    return _Plan(cells, (len(cells),), ("site",), {"site": labels}, "+".join(kinds))


def _sweep_plan(model, prompts: PromptSet, kind: str, by_pos, layers) -> _Plan:
    if kind in MLP_KINDS and not model.has_mlp:
        raise InputError(f"This model is attention-only, so it has no {kind!r} to sweep; choose one of {', '.join(k for k in SWEEP_KINDS if k not in MLP_KINDS)}.")
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    if not layers:
        raise InputError("layers is empty; give at least one layer to sweep (or None for all).")
    for layer in layers:
        if not isinstance(layer, int) or not 0 <= layer < model.n_layers:
            raise InputError(f"layer {layer!r} is out of range; this model has layers 0 to {model.n_layers - 1}.")
    S, H = prompts.seq_len, model.n_heads
    by_pos = bool(by_pos) if kind in HEAD_KINDS else by_pos is None or bool(by_pos)
    if kind in ("k", "v"):  # one per key/value head under grouped-query attention
        H = getattr(model, "n_kv_heads", H)
    cells = _sweep_cells(kind, tuple(layers), S, H, by_pos)
    labels = {"layer": [str(layer) for layer in layers]}
    if by_pos:
        labels["pos"] = _pos_labels(model, prompts)
    if kind in HEAD_KINDS:
        labels["head"] = [str(h) for h in range(H)]
    axes = tuple(labels)
    return _Plan(cells, tuple(len(labels[a]) for a in axes), axes, labels, kind)


@functools.lru_cache(maxsize=8)
def _sweep_cells(kind: str, layers: tuple[int, ...], S: int, H: int, by_pos: bool) -> tuple[tuple[Site], ...]:
    """The one-site cells of a sweep in [layer (pos) (head)] order (cached: Sites are immutable)."""
    positions = range(S) if by_pos else [None]
    heads = range(H) if kind in HEAD_KINDS else [None]
    return tuple((Site(kind, layer, head=h, pos=p),) for layer in layers for p in positions for h in heads)


def _pos_labels(model, prompts: PromptSet) -> list[str]:
    """``"i tok"`` from the first clean prompt when the model has a tokenizer, else ``"i"``."""
    positions = range(prompts.seq_len)
    if model.tokenizer is None:
        return [str(p) for p in positions]
    try:
        toks = model.to_str_tokens(prompts.clean[0])
    except Exception:  # a tokenizer that cannot name these ids: fall back to indices
        return [str(p) for p in positions]
    return [f"{p} {t}" for p, t in zip(positions, toks, strict=False)]


def _result(model, prompts, plan: _Plan, out: Tensor, metric, direction, source, by_pos) -> PatchResult:
    settings = {
        "method": "activation_patch",
        "kind": plan.kind,
        "direction": direction,
        "source": source,
        "by_pos": by_pos,
        "metric": metric_name(metric),
        "n_prompts": len(prompts),
        "seq_len": prompts.seq_len,
        "model": getattr(model, "name", None),
        "backend": getattr(model, "backend_name", None),
    }
    return PatchResult(out.reshape(plan.shape).float(), plan.axes, plan.labels, settings)

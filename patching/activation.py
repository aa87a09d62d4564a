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

The value of each cell is the metric averaged over the prompt set. The hook engine runs K
interventions as one forward over the base prompts repeated K times, each patching its own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import einops
import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp.distributed import chunk_ranges
from interp.interventions import Replace
from interp.sites import Site
from interp.tasks import PromptSet
from patching import fast, sweep
from patching.metrics import Metric, block_means, check_values
from patching.results import PatchResult
from patching.sweep import DIRECTIONS, POS_KINDS, SOURCES, SWEEP_KINDS, Plan  # noqa: F401  (the public names stay here too)


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
    ``engine``: "hooks" (the batched hook engine below, any backend), "fast" (`patching.fast`, on
    every model with an anatomy, `patching.anatomy`: reuses the cached prefix, skips unchanged earlier
    positions, unembeds only the answer position; an error where it does not apply) or "auto" (fast
    where it applies, else hooks). Both give the same numbers (to float rounding).
    ``executor``: None runs here; an `interp.distributed.RayExecutor` splits the interventions
    into chunks of whole forwards run by its workers, with the same result (exactly).
    """
    if executor is not None:
        return _patch_on(executor, model, prompts, sites, metric, direction, source, by_pos, layers, batch_size,
                         progress, engine)
    result = fast.try_fast_patch(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, progress, engine)
    if result is not None:
        return result
    plan, base, source_acts = sweep.prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size)
    per_chunk = _per_chunk(plan, prompts, batch_size)
    out = torch.empty(len(plan.cells), dtype=torch.float64)
    for start in tqdm(range(0, len(plan.cells), per_chunk), desc=f"patching {plan.kind}", disable=not progress):
        out[start : start + per_chunk] = _hook_forward(model, prompts, metric, plan, base, source_acts, start, per_chunk)
    return sweep.result(model, prompts, plan, out, metric, direction, source, by_pos)


def _per_chunk(plan: Plan, prompts: PromptSet, batch_size: int | None) -> int:
    """Interventions per forward of the hook engine."""
    return len(plan.cells) if batch_size is None else max(1, batch_size // len(prompts))


def _hook_forward(model, prompts, metric, plan, base, source_acts, start: int, per_chunk: int) -> Tensor:
    """The mean metric of interventions ``start .. start + per_chunk - 1``, run as one forward."""
    cells = plan.cells[start : start + per_chunk]
    with torch.no_grad():
        tokens = einops.repeat(base, "b p -> (k b) p", k=len(cells))
        logits, _ = model.run(tokens, edits=_row_edits(cells, source_acts, len(prompts)))
        return block_means(metric, logits, prompts, len(cells), None)


# =============================================================================== on an executor
def _patch_on(executor, model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, progress, engine):
    """`activation_patch` on an executor: every input is checked here, then the workers run chunks of
    whole forwards (the hook engine's batches, or the fast engine's passes), so each intervention is
    computed exactly as in one process; the values are put back in plan order."""
    plan, _, _ = sweep.prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, map_heads=False)
    use_fast = fast.runs_fast(model, [s for cell in plan.cells for s in cell], prompts.seq_len, engine)
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
    result = sweep.result(model, prompts, plan, out, metric, direction, source, by_pos)
    if use_fast:
        result.settings["engine"] = "fast"
    return result


def _patch_chunk(model, shared, chunk: range, memo: dict) -> tuple[Tensor, Tensor]:
    """A worker's share: fast-engine passes ``chunk`` (pass 0 first, once per worker: it fills the
    store later passes read), or hook-engine interventions ``chunk`` in batches of the single-process run."""
    use_fast, args = shared  # activation_patch's (prompts, sites, metric, direction, source, by_pos, layers, batch_size)
    prompts, metric, batch_size = args[0], args[2], args[7]
    if use_fast:
        if "run" not in memo:
            memo["run"] = run = fast.FastRun.setup(model, *args, engine="fast")
            memo["pass0"] = run.run_pass(0)
        parts = [memo["pass0"] if number == 0 else memo["run"].run_pass(number) for number in chunk]  # in order
        return torch.cat([index for index, _ in parts]), torch.cat([values for _, values in parts])
    if "prepared" not in memo:
        memo["prepared"] = sweep.prepare(model, *args)
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
    plan, base, _ = sweep.prepare(model, prompts, sites, metric, direction, source, by_pos, layers, 1, map_heads=False)
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
    return sweep.result(model, prompts, plan, out, metric, direction, source, by_pos)


# =============================================================================== internals
def _row_edits(cells: list[tuple[Site, ...]], source_acts: dict[Site, Tensor | None], n: int) -> dict[Site, Callable]:
    """One function edit per (kind, layer): intervention k overwrites only rows k*n .. (k+1)*n - 1."""
    by_key: dict[Site, list[tuple[int, Site]]] = {}
    for k, cell in enumerate(cells):
        for site in cell:
            site = sweep.as_z(site)
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



"""Attribution patching: a first-order estimate of every activation patch from one backward pass.

Exact activation patching needs one forward per site. Attribution patching (Nanda 2023, "Attribution
patching"; Syed, Rager & Conmy 2023) linearises the metric around the *base* run instead: patching
activation a from its base value a_base to a source value a_src changes the metric by about

    (a_src - a_base) · d metric / d a        (gradient taken on the base run)

so one forward on the source prompts, plus one forward and one backward on the base prompts, estimate
every site at once. Denoising: the base run is the corrupted one and the source is clean; noising:
the other way round (as in `patching.activation`). The estimate is exact where the metric is linear
in the activation (e.g. logit difference read from the final residual stream of a model without a
final LayerNorm) and can be poor across saturated nonlinearities; `agreement` measures how close it
comes to exact patching.

    estimate = attribution_patch(model, prompts, "resid_pre", logit_diff)     # [layer pos]
    exact = activation_patch(model, prompts, "resid_pre", logit_diff)
    agreement(estimate, exact)   # {"pearson": ..., "spearman": ..., "topk_overlap": ...}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InputError
from interp.sites import Site
from interp.tasks import PromptSet
from patching import anatomy, fast, sweep
from patching.metrics import Metric, answer_only, check_values, expand_answer
from patching.results import PatchResult


def attribution_patch(
    model,
    prompts: PromptSet,
    sites: str | Sequence[Site | str] | Sequence[Sequence[Site | str]],
    metric: Metric,
    direction: str = "denoise",
    source: str = "other",
    by_pos: bool | None = None,
    layers: Sequence[int] | None = None,
    engine: str = "auto",
) -> PatchResult:
    """Estimated metric value (mean over prompts) of patching each site, laid out as in
    `activation_patch`: base value + (source activation - base activation) · gradient.

    Arguments mean what they mean in `activation_patch`. ``settings["baseline"]`` holds the metric
    on the unpatched base run. Works on both backends (the gradient flows through the model's
    forward; parameters get no ``.grad``). ``engine``: "auto" (the model's anatomy, `patching.anatomy`,
    where it has one, else hooks), "fast" or "hooks"; both give the same numbers. The products are
    reduced per site kind and layer, so a sweep costs no per-cell loop.
    """
    plan, base, _ = sweep.prepare(model, prompts, sites, metric, direction, source, by_pos, layers, None, map_heads=False)
    keys = sorted({sweep.as_z(s).full for cell in plan.cells for s in cell})
    net = anatomy.of(model) if fast.runs_fast(model, keys, prompts.seq_len, engine) else None  # one for both runs
    other = model.check_tokens(prompts.clean if direction == "denoise" else prompts.corrupted)
    src = {key: None for key in keys} if source == "zero" else _activations(model, other, keys, net)
    if source == "mean":
        src = {key: act.mean(0, keepdim=True) for key, act in src.items()}
    acts, grads, values = _gradients(model, base, keys, metric, prompts, net)
    baseline = float(values.double().mean())
    reduced = {key: _reduce(key, -acts[key] if src[key] is None else src[key].to(acts[key].dtype) - acts[key], grads[key])
               for key in keys}
    if isinstance(sites, str) and plan.axes[0] == "layer":  # a sweep: whole rows of the reduced products
        rows = [reduced[sweep.as_z(Site(plan.kind, int(label))).full] for label in plan.labels["layer"]]
        sums = {("layer", "head"): lambda r: r.sum(0), ("layer",): lambda r: r.sum()}.get(plan.axes, lambda r: r)
        out = baseline + torch.stack([sums(r) for r in rows]).reshape(-1)
    else:
        out = baseline + torch.stack([sum((_cell_part(reduced, site) for site in cell), torch.zeros((), dtype=torch.float64))
                                      for cell in plan.cells])
    result = sweep.result(model, prompts, plan, out, metric, direction, source, by_pos)
    result.settings.update(method="attribution_patch", baseline=baseline)
    return result


def _reduce(key: Site, diff: Tensor, grad: Tensor) -> Tensor:
    """``diff * grad`` summed over prompts (and d_head / d_model / key positions), float64, laid out
    ``[pos head]`` for head kinds (pattern: ``[query head]``), ``[pos]`` otherwise."""
    prod = (diff * grad).double()
    if key.kind == "pattern":  # [batch head q k]
        return prod.sum((0, 3)).T
    return prod.sum((0, 3)) if prod.ndim == 4 else prod.sum((0, 2))


def _cell_part(reduced: dict, site: Site) -> Tensor:
    site = sweep.as_z(site)
    index = site.index()[1:]
    return reduced[site.full][index[::-1] if site.kind == "pattern" else index].sum()


def _activations(model, tokens: Int[Tensor, "batch pos"], keys: list[Site], net: anatomy.Anatomy | None) -> dict[Site, Tensor]:
    """The activations at ``keys`` on ``tokens`` (no grad): on the anatomy ``net``, stopped after the last layer read, or hooks."""
    with torch.no_grad():
        if net is None:
            return model.run_with_cache(tokens, keys)[1]
        out = {}
        record = _tap({(k.kind, k.layer) for k in keys}, lambda key, act: out.setdefault(key, act))
        resid = net.embed(tokens)
        for layer in range(max(k.layer for k in keys) + 1):
            resid = net.block(layer, resid, 0, None, record)
        return out


def _tap(wanted: set[tuple[str, int]], fn: Callable[[Site, Tensor], Tensor]) -> anatomy.Edit:
    """An anatomy edit that hands the activation of each wanted (kind, layer) to ``fn(site, act)``."""

    def edit(kind: str, layer: int, act: Tensor) -> Tensor:
        return fn(Site(kind, layer), act) if (kind, layer) in wanted else act

    edit.kinds = {kind for kind, _ in wanted}
    return edit


def activation_gradients(
    model, tokens: Int[Tensor, "batch pos"], sites: Sequence[Site], metric: Metric, prompts: PromptSet, engine: str = "auto",
) -> tuple[dict[Site, Tensor], dict[Site, Tensor], Float[Tensor, " batch"]]:
    """One forward and one backward: each site's activation on ``tokens`` and the gradient of
    ``mean(metric(logits, prompts))`` with respect to it (zeros where the metric does not depend on
    it), both shaped like the site's activation, and the metric's values ``[batch]`` (checked: finite,
    one per sequence). A zero probe is added at every site, so the gradient is the activation's, not a
    parameter's (parameters are frozen meanwhile). ``engine`` as in `attribution_patch` (on the
    anatomy the answer position alone is unembedded when the metric reads only it). Shared by `attribution_patch` and `probes.sae`'s feature attribution."""
    net = anatomy.of(model) if fast.runs_fast(model, sites, tokens.shape[1], engine) else None
    return _gradients(model, tokens, sites, metric, prompts, net)


def _gradients(model, tokens: Tensor, sites: Sequence[Site], metric: Metric, prompts: PromptSet, net: anatomy.Anatomy | None):
    """`activation_gradients` on the anatomy ``net`` (None: on hooks)."""
    probes: dict[Site, Tensor] = {}
    acts: dict[Site, Tensor] = {}

    def tap(key: Site, act: Tensor) -> Tensor:
        acts[key] = act.detach()
        probes[key] = torch.zeros_like(act, requires_grad=True)
        return act + probes[key]

    with model.frozen(), torch.enable_grad():
        if net is not None:
            S = tokens.shape[1]
            edit = _tap({(k.kind, k.layer) for k in sites}, tap)
            resid = net.embed(tokens)
            for layer in range(net.n_layers):
                resid = net.block(layer, resid, 0, None, edit)
            ans = prompts.answer_pos % S if answer_only(metric) else None  # unembed the answer position only
            logits = expand_answer(net.unembed(resid if ans is None else resid[:, ans]), S, ans)
        else:
            logits, _ = model.run(tokens, edits={key: (lambda act, key=key: tap(key, act)) for key in sites})
        values = check_values(metric(logits, prompts), len(prompts), metric)
        grads = torch.autograd.grad(values.mean(), [probes[k] for k in sites], allow_unused=True)
    grads = {k: torch.zeros_like(acts[k]) if g is None else g for k, g in zip(sites, grads, strict=True)}
    return acts, grads, values.detach()


def agreement(estimate: PatchResult | Tensor, exact: PatchResult | Tensor, k: int = 10, baseline: float | None = None) -> dict[str, float]:
    """How well an estimate (e.g. attribution patching) matches exact patching, cell by cell.

    ``pearson`` and ``spearman`` correlations of the values (ties ranked by order, not averaged),
    and ``topk_overlap``: the fraction of the k cells of largest effect |value - baseline| that both
    pick. ``baseline`` defaults to the estimate's ``settings["baseline"]`` (the unpatched run's
    metric, which attribution_patch records), else 0.
    """
    if baseline is None and isinstance(estimate, PatchResult):
        baseline = estimate.settings.get("baseline")
    a = (estimate.values if isinstance(estimate, PatchResult) else estimate).detach().double().flatten()
    b = (exact.values if isinstance(exact, PatchResult) else exact).detach().double().flatten()
    if a.shape != b.shape:
        raise InputError(f"agreement needs results of the same shape; got {a.numel()} and {b.numel()} cells.")
    if a.numel() < 2:
        raise InputError("agreement needs at least 2 cells to correlate.")
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive int, got {k!r}.")
    k = min(k, a.numel())
    base = 0.0 if baseline is None else float(baseline)
    top_a = set((a - base).abs().topk(k).indices.tolist())
    top_b = set((b - base).abs().topk(k).indices.tolist())
    return {
        "pearson": _pearson(a, b),
        "spearman": _pearson(_ranks(a), _ranks(b)),
        "topk_overlap": len(top_a & top_b) / k,
    }


def _ranks(x: Tensor) -> Tensor:
    return x.argsort().argsort().double()


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else float("nan")

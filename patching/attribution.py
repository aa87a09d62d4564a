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

from collections.abc import Sequence

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
) -> PatchResult:
    """Estimated metric value (mean over prompts) of patching each site, laid out as in
    `activation_patch`: base value + (source activation - base activation) · gradient.

    Arguments mean what they mean in `activation_patch`. ``settings["baseline"]`` holds the metric
    on the unpatched base run. Works on both backends (the gradient flows through the model's
    forward; parameters get no ``.grad``).
    """
    result = _attribution_fast(model, prompts, sites, metric, direction, source, by_pos, layers)
    if result is not None:
        return result
    plan, base, source_acts = sweep.prepare(model, prompts, sites, metric, direction, source, by_pos, layers, None)
    acts, grads, values = activation_gradients(model, base, list(source_acts), metric, prompts)
    products = {}
    for key, grad in grads.items():
        src = source_acts[key]
        diff = -acts[key] if src is None else src.to(acts[key].dtype) - acts[key]
        products[key] = diff * grad
    baseline = float(values.double().mean())
    out = torch.empty(len(plan.cells), dtype=torch.float64)
    for i, cell in enumerate(plan.cells):
        out[i] = baseline + sum(float(sweep.as_z(s).select(products[sweep.as_z(s).full]).double().sum()) for s in cell)
    result = sweep.result(model, prompts, plan, out, metric, direction, source, by_pos)
    result.settings.update(method="attribution_patch", baseline=baseline)
    return result


def activation_gradients(
    model, tokens: Int[Tensor, "batch pos"], sites: Sequence[Site], metric: Metric, prompts: PromptSet,
) -> tuple[dict[Site, Tensor], dict[Site, Tensor], Float[Tensor, " batch"]]:
    """One forward and one backward through hooks: each site's activation on ``tokens`` and the
    gradient of ``mean(metric(logits, prompts))`` with respect to it (zeros where the metric does not depend on
    it), both shaped like the site's activation, and the metric's values ``[batch]`` (checked: finite,
    one per sequence). A zero probe is added at every site, so the gradient is the activation's, not a
    parameter's. Shared by `attribution_patch` and `probes.sae`'s feature attribution."""
    probes: dict[Site, Tensor] = {}
    acts: dict[Site, Tensor] = {}

    def make(key: Site):
        def tap(act: Tensor) -> Tensor:
            acts[key] = act.detach()
            probes[key] = torch.zeros_like(act, requires_grad=True)
            return act + probes[key]

        return tap

    with torch.enable_grad():
        logits, _ = model.run(tokens, edits={key: make(key) for key in sites})
        values = check_values(metric(logits, prompts), len(prompts), metric)
        grads = torch.autograd.grad(values.mean(), [probes[k] for k in sites], allow_unused=True)
    grads = {k: torch.zeros_like(acts[k]) if g is None else g for k, g in zip(sites, grads, strict=True)}
    return acts, grads, values.detach()


def _attribution_fast(model, prompts, sites, metric, direction, source, by_pos, layers) -> PatchResult | None:
    """`attribution_patch` on native TransformerLens models through the model anatomy's (`patching.anatomy`) block
    driving (no hooks): the source activations from one no-grad run stopped at the last layer read,
    one forward of the base prompts with a zero probe added at every site kind read (parameters
    temporarily ``requires_grad=False``, so the backward computes activation gradients only), one
    ``torch.autograd.grad`` for all probes, and the products reduced per layer (no per-site loop for
    sweeps). None where the fast engine does not apply (the hook path below runs instead)."""
    plan, base, _ = sweep.prepare(model, prompts, sites, metric, direction, source, by_pos, layers, None, map_heads=False)
    keys = sorted({sweep.as_z(s).full for cell in plan.cells for s in cell})
    if fast.unsupported_reason(model, keys, prompts.seq_len) is not None:
        return None
    net = anatomy.of(model)
    n, S = len(prompts), prompts.seq_len
    wanted = {(k.kind, k.layer) for k in keys}
    top = max(k.layer for k in keys)
    frozen = [p for p in model.module.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with torch.no_grad():
            if source == "zero":
                src: dict = {key: None for key in wanted}
            else:
                other = model.check_tokens(prompts.clean if direction == "denoise" else prompts.corrupted)
                src = {}

                def record(kind: str, layer: int, act: Tensor) -> Tensor:
                    if (kind, layer) in wanted:
                        src[(kind, layer)] = act.mean(0, keepdim=True) if source == "mean" else act
                    return act

                record.kinds = {kind for kind, _ in wanted}
                resid = net.embed(other)
                for lay in range(top + 1):
                    resid = net.block(lay, resid, 0, None, record)
        acts: dict = {}
        probes: dict = {}

        def tap(kind: str, layer: int, act: Tensor) -> Tensor:
            if (kind, layer) in wanted:
                acts[(kind, layer)] = act
                probes[(kind, layer)] = probe = torch.zeros_like(act, requires_grad=True)
                return act + probe
            return act

        tap.kinds = {kind for kind, _ in wanted}
        with torch.enable_grad():
            resid = net.embed(base)
            for lay in range(net.n_layers):
                resid = net.block(lay, resid, 0, None, tap)
            ans = prompts.answer_pos % S if answer_only(metric) else None  # unembed the answer position only
            logits = expand_answer(net.unembed(resid if ans is None else resid[:, ans]), S, ans)
            values = check_values(metric(logits, prompts), n, metric)
            order = list(probes)
            grads = torch.autograd.grad(values.mean(), [probes[k] for k in order], allow_unused=True)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    baseline = float(values.detach().double().mean())
    # per (kind, layer): sum over prompts (and d_head / d_model / key positions) of (src - base) * grad,
    # laid out [pos head] for head kinds (pattern: [query head]), [pos] otherwise
    reduced: dict = {}
    for key, grad in zip(order, grads, strict=True):
        act = acts[key].detach()
        diff = -act if src[key] is None else src[key].to(act.dtype) - act
        prod = (diff * grad).double() if grad is not None else torch.zeros_like(act, dtype=torch.float64)
        if key[0] == "pattern":  # [batch head q k]
            reduced[key] = prod.sum((0, 3)).T
        elif prod.ndim == 4:  # [batch pos head d]
            reduced[key] = prod.sum((0, 3))
        else:  # [batch pos d]
            reduced[key] = prod.sum((0, 2))
    is_sweep = isinstance(sites, str) and plan.axes[0] == "layer"
    if is_sweep:
        rows = [reduced[(sweep.as_z(Site(plan.kind, 0)).kind, int(lab))] for lab in plan.labels["layer"]]
        if plan.axes == ("layer", "head"):
            rows = [r.sum(0) for r in rows]
        elif plan.axes == ("layer",):
            rows = [r.sum() for r in rows]
        out = baseline + torch.stack(rows).reshape(-1)
    else:
        parts = []
        for cell in plan.cells:
            total = torch.zeros((), dtype=torch.float64)
            for site in cell:
                site = sweep.as_z(site)
                index = site.index()[1:]
                if site.kind == "pattern":
                    index = index[::-1]
                total = total + reduced[(site.kind, site.layer)][index].sum()
            parts.append(total)
        out = baseline + torch.stack(parts)
    result = sweep.result(model, prompts, plan, out, metric, direction, source, by_pos)
    result.settings.update(method="attribution_patch", baseline=baseline)
    return result


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

"""A sweep's plan, shared by every patching method: which interventions (cells of sites patched
together) run, on which named axes, checked before any forward; and the `PatchResult` they fill.

`prepare` validates a call of `patching.activation_patch` (or attribution / path patching: the same
arguments); `result` lays the cells' values out on the plan's axes.

    plan, base, sources = prepare(model, prompts, "z", logit_diff, "denoise", "other", None, None, None)
    plan.axes, plan.shape, len(plan.cells)      # ('layer', 'head'), (L, H), L * H
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.errors import InputError
from interp.sites import HEAD_KINDS, MLP_KINDS, Site, as_site
from interp.tasks import PromptSet
from patching.metrics import metric_name
from patching.results import PatchResult

DIRECTIONS = ("denoise", "noise")
SOURCES = ("other", "mean", "zero")
#: kinds a string sweep accepts: [layer pos] (or [layer]) for vectors, [layer head] (or [layer pos head]) for heads.
POS_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")
SWEEP_KINDS = (*POS_KINDS, "z", "head_out", "q", "k", "v", "pattern")


@dataclass
class Plan:
    """The interventions of a sweep, each a tuple of sites patched together, laid out on named axes."""

    cells: Sequence[tuple[Site, ...]]
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    kind: str


def prepare(model, prompts, sites, metric, direction, source, by_pos, layers, batch_size, map_heads=True):
    """Validate everything before any forward; the plan, the base tokens and (``map_heads``: for the hook
    engine) the source activations (`source_acts`)."""
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
            (as_z(site) if map_heads else site).validate(model, seq)
    base = corrupted if direction == "denoise" else clean
    return plan, base, source_acts(model, plan, clean if direction == "denoise" else corrupted, source) if map_heads else {}


def source_acts(model, plan: Plan, other: Tensor, source: str) -> dict[Site, Tensor | None]:
    """The source activation of each site ``plan`` patches (head_out as z), from the run on ``other``
    (checked tokens): ``[n ...]``, its mean over the prompts ``[1 ...]`` (``source="mean"``) or None ("zero")."""
    keys = sorted({as_z(s).full for cell in plan.cells for s in cell})
    if source == "zero":
        return dict.fromkeys(keys)
    with torch.no_grad():
        _, cache = model.run_with_cache(other, keys)
    return {key: cache[key].mean(0, keepdim=True) if source == "mean" else cache[key] for key in keys}


def as_z(site: Site) -> Site:
    """Patching head_out (z @ W_O of one head) is patching that head's z: same effect, no W_O needed."""
    return Site("z", site.layer, site.head, site.pos) if site.kind == "head_out" else site


def _plan(model, prompts: PromptSet, sites, by_pos, layers) -> Plan:
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
    return Plan(cells, (len(cells),), ("site",), {"site": labels}, "+".join(kinds))


def _sweep_plan(model, prompts: PromptSet, kind: str, by_pos, layers) -> Plan:
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
    return Plan(cells, tuple(len(labels[a]) for a in axes), axes, labels, kind)


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


def result(model, prompts, plan: Plan, out: Tensor, metric, direction, source, by_pos) -> PatchResult:
    """The `PatchResult` of a sweep: the cells' values ``out [cell]`` on the plan's axes, and the settings."""
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

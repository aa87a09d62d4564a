"""Path patching: how much of a sender's effect travels along one path, to chosen receivers?

Activation patching a head measures its *total* effect: everything downstream of it moves. Path
patching (Wang et al. 2022, "Interpretability in the Wild: a Circuit for Indirect Object
Identification in GPT-2 small", appendix B; Goldowsky-Dill et al. 2023) isolates the effect that
flows from a *sender* (an attention head) into chosen *receivers* (the query, key or value input of
later heads, or the final residual stream, i.e. the logits) through the residual stream only.

Following Wang et al., with a *base* run and an *other* run (noising: base = clean, other =
corrupted, the paper's setting; denoising: the reverse):

1. run base and other; cache every head's output (z) on the base run and the senders' on the other;
2. run base with the sender heads set to their *other* values and every other head's output
   frozen at its base value (MLPs are recomputed, as in the paper; ``freeze_mlps=True`` freezes
   them too), and cache the receivers' q / k / v (or the final residual stream);
3. run base with only the receivers replaced by the values from step 2, and measure the metric.

A path that does not exist has exactly no effect: a receiver in the sender's layer or earlier is
computed before the sender, so step 2 caches its base value and the result is the base run's
metric (this is not an error; it is what the method says). With receiver = the final residual
stream (``"logits"``), path patching a head is patching its *direct* effect on the logits.

    result = path_patch(model, prompts, [Site("z", 0, head=1)], [Site("k", 1, head=2)], logit_diff)
    result = path_patch(model, prompts, "z", "logits", logit_diff)           # [layer head]: direct effects
    result = path_patch(model, prompts, "z", [Site("k", 1, head=h) for h in range(4)], logit_diff)

Senders follow `activation_patch`'s conventions (`path_patch` says how); all receivers form one
receiver set. ``settings["baseline"]`` holds the unpatched base run's metric. Works on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import einops
import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.sites import Site, as_site
from interp.tasks import PromptSet
from patching import sweep
from patching.metrics import Metric, block_means, check_values
from patching.results import PatchResult

SENDER_KINDS = ("z", "head_out")
RECEIVER_KINDS = ("q", "k", "v", "resid_post")


class PathError(InputError):
    """Senders or receivers that path patching cannot use."""


def path_patch(
    model,
    prompts: PromptSet,
    senders: str | Site | Sequence[Site | str] | Sequence[Sequence[Site | str]],
    receivers: str | Site | Sequence[Site | str],
    metric: Metric,
    direction: str = "noise",
    source: str = "other",
    by_pos: bool | None = None,
    layers: Sequence[int] | None = None,
    freeze_mlps: bool = False,
    batch_size: int | None = 64,
    progress: bool = True,
) -> PatchResult:
    """Mean metric after patching each sender (or sender set) along its paths into ``receivers`` only.

    ``senders``: "z" / "head_out" (sweep over every head; ``layers`` / ``by_pos`` shape it), a
    Site, a list of Sites (each a separate intervention), or a list of lists (sets patched
    together); every sender is a head output: ``Site("z", l, head=h)`` (optionally with ``pos``).
    ``receivers``: ``"logits"`` (= ``Site("resid_post", n_layers - 1)``, the direct path) or a
    list of ``Site("q" | "k" | "v", l, head=h)`` (optionally with ``pos``), patched together.
    ``direction``: "noise" (base = clean, senders get corrupted values; Wang et al.) or
    "denoise" (base = corrupted, senders get clean values). ``source``: "other" / "mean" / "zero",
    what the senders get, as in `activation_patch`. ``batch_size``: sequences per forward.
    """
    receivers = _receivers(model, receivers)
    if isinstance(senders, Site):
        senders = [senders]
    plan, base, _ = sweep.prepare(model, prompts, senders, metric, direction, source, by_pos, layers, batch_size, map_heads=False)
    for cell in plan.cells:
        for site in cell:
            if site.kind not in SENDER_KINDS or site.head is None:
                raise PathError(
                    f"Sender {site} is not one attention head's output. Senders are heads: "
                    f"Site('z', layer, head=h) (or 'head_out'); for other sites use activation_patch."
                )
    for r in receivers:
        r.validate(model, prompts.seq_len)
    if not isinstance(freeze_mlps, bool):
        raise InputError(f"freeze_mlps must be True or False, got {freeze_mlps!r}.")
    n, L = len(prompts), model.n_layers
    other = prompts.clean if direction == "denoise" else prompts.corrupted
    z_keys = [Site("z", layer) for layer in range(L)]
    mlp_keys = [Site("mlp_out", layer) for layer in range(L)] if (freeze_mlps and model.has_mlp) else []
    with torch.no_grad():
        # (1) base and other runs: every head's output on base, the senders' on other.
        base_logits, base_cache = model.run_with_cache(base, z_keys + mlp_keys)
        baseline = float(check_values(metric(base_logits, prompts), n, metric).double().mean())
        src = sweep.source_acts(model, plan, model.check_tokens(other), source)
        per_chunk = len(plan.cells) if batch_size is None else max(1, batch_size // n)
        out = torch.empty(len(plan.cells), dtype=torch.float64)
        for start in tqdm(range(0, len(plan.cells), per_chunk), desc="path patching", disable=not progress):
            cells = plan.cells[start : start + per_chunk]
            k = len(cells)
            tokens = einops.repeat(base, "b p -> (k b) p", k=k)
            # (2) senders from other, all other heads (and optionally MLPs) frozen at base; read receivers.
            freeze = {key: _frozen(base_cache[key], key.layer, cells, src, n) for key in z_keys}
            freeze.update({key: _constant(base_cache[key], k) for key in mlp_keys})
            reads = sorted({r.full for r in receivers})
            _, step2 = model.run(tokens, reads=reads, edits=freeze)
            # (3) base run with only the receivers replaced by their step-2 values.
            edits = {key: _receive(step2[key], [r for r in receivers if r.full == key]) for key in reads}
            out[start : start + k] = block_means(metric, model.run(tokens, edits=edits)[0], prompts, k, None)
    result = sweep.result(model, prompts, plan, out, metric, direction, source, by_pos)
    result.settings.update(
        method="path_patch", receivers=[str(r) for r in receivers], freeze_mlps=freeze_mlps, baseline=baseline
    )
    return result


# =============================================================================== internals
def _receivers(model, receivers) -> list[Site]:
    last = model.n_layers - 1
    if isinstance(receivers, str) and receivers == "logits":
        return [Site("resid_post", last)]
    if isinstance(receivers, Site | str):
        receivers = [receivers]
    if not isinstance(receivers, Sequence) or len(receivers) == 0:
        raise PathError("receivers is empty: give 'logits' or a list of Site('q' | 'k' | 'v', layer, head=h).")
    out = []
    for r in receivers:
        if not isinstance(r, Site | str):
            raise PathError(f"A receiver must be a Site or a hook name, got {type(r).__name__}.")
        site = as_site(r)
        if site.kind not in RECEIVER_KINDS:
            raise PathError(
                f"Receiver {site} is not a path endpoint. Receivers are heads' inputs "
                f"(Site('q' | 'k' | 'v', layer, head=h)) or the final residual stream ('logits')."
            )
        if site.kind == "resid_post" and site.layer != last:
            raise PathError(
                f"Receiver {site}: only the last layer's resid_post (layer {last}, the logits' input) is a "
                f"receiver; to end a path in a head, give its q, k or v."
            )
        out.append(site)
    return out


def _frozen(base_act: Tensor, layer: int, cells: list[tuple[Site, ...]], src: dict[Site, Tensor | None], n: int) -> Callable:
    """z of one layer: every head at its base value, except each cell's senders in this layer at their source value."""
    senders = [(j, sweep.as_z(s)) for j, cell in enumerate(cells) for s in cell if s.layer == layer]

    def edit(act: Tensor) -> Tensor:
        new = einops.repeat(base_act, "b ... -> (k b) ...", k=len(cells)).to(act.dtype)
        for j, site in senders:
            rows = new[j * n : (j + 1) * n]  # a view: writing into it writes into new
            value = src[site.full]
            rows[site.index()] = 0.0 if value is None else value[site.index()].to(act.dtype)
        return new

    return edit


def _constant(base_act: Tensor, k: int) -> Callable:
    def edit(act: Tensor) -> Tensor:
        return einops.repeat(base_act, "b ... -> (k b) ...", k=k).to(act.dtype)

    return edit


def _receive(values: Tensor, sites: list[Site]) -> Callable:
    def edit(act: Tensor) -> Tensor:
        new = act.clone()
        for site in sites:
            new[site.index()] = values[site.index()].to(act.dtype)
        return new

    return edit

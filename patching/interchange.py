"""Interchange interventions: run the base input, but take one site's value (or part of it) from a source input.

    logits = interchange(model, base, source, Site("resid_post", 1, pos=-1))            # whole site
    logits = interchange(model, base, source, site, subspace=basis)                      # basis [d k]
    logits = interchange(model, base, source, site, subspace=rotated_subspace_module)    # learned (DAS)

An interchange intervention (Geiger et al. 2021, "Causal Abstractions of Neural Networks"; Geiger
et al. 2023, "Finding Alignments Between Interpretable Causal Variables and Distributed Neural
Representations", DAS) asks: if a site encodes a high-level variable, then running the model on a
*base* input while setting that site to the value it takes on a *source* input should make the
model behave as if the variable had the source's value. Exchanging the whole activation is
activation patching; DAS exchanges only a linear subspace of it. With an orthonormal basis
``B [d k]`` of that subspace and projector ``P = B Bᵀ`` the patched activation is

    h = h_base + P (h_source − h_base)

(the components of ``h_base`` in span(B) are replaced by those of ``h_source``; the orthogonal
complement is kept from the base). The subspace acts on the last axis of the site's slice, at
every position the site covers (give ``Site(..., pos=p)`` to exchange at one position only).
"""

from __future__ import annotations

from collections.abc import Callable

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp import HookedModel, InputError, Site
from interp.sites import as_site

#: A subspace: an orthonormal basis ``[d k]`` or a function ``(h_base, h_source) -> h_patched``.
Subspace = Tensor | Callable[[Tensor, Tensor], Tensor]


def check_basis(basis, d: int, atol: float = 1e-4) -> Float[Tensor, "d k"]:
    """Validate an orthonormal basis ``[d k]`` of a subspace of a width-``d`` site; return it as float."""
    if not isinstance(basis, Tensor):
        basis = torch.as_tensor(basis)
    if basis.ndim == 1:
        basis = basis[:, None]
    if basis.ndim != 2:
        raise InputError(
            f"A subspace basis must be a matrix [d k] (one column per direction), got shape "
            f"{tuple(basis.shape)}. Stack the directions as columns."
        )
    if basis.shape[0] != d:
        raise InputError(
            f"The subspace basis has {basis.shape[0]} rows but the site's activations have width {d}. "
            f"Give a basis of shape [{d} k] (columns are directions in the site's space)."
        )
    if basis.shape[1] < 1 or basis.shape[1] > d:
        raise InputError(f"A basis of a subspace of R^{d} needs 1 to {d} columns, got {basis.shape[1]}.")
    basis = basis.float()
    gram = basis.T @ basis
    err = float((gram - torch.eye(gram.shape[0], device=basis.device)).abs().max())
    if err > atol:
        raise InputError(
            f"The subspace basis is not orthonormal (max |BᵀB − I| = {err:.3g}), so B Bᵀ is not a "
            f"projector. Orthonormalise it first: basis = torch.linalg.qr(basis).Q."
        )
    return basis


def project_exchange(
    base: Float[Tensor, "... d"], source: Float[Tensor, "... d"], basis: Float[Tensor, "d k"]
) -> Float[Tensor, "... d"]:
    """``base + B Bᵀ (source − base)``: exchange the components in span(basis), keep the rest of base.

    Computed in float32 (or wider) and returned in ``base``'s dtype, so a half-precision model's
    activations are projected without rounding the basis to 8 bits; only the written value is cast.
    """
    work = torch.promote_types(base.dtype, torch.float32)
    b, B = base.to(work), basis.to(base.device, work)
    coords = einops.einsum(source.to(work) - b, B, "... d, d k -> ... k")
    return (b + einops.einsum(coords, B, "... k, d k -> ... d")).to(base.dtype)


def exchange_fn(subspace: Subspace | None, d: int) -> Callable[[Tensor, Tensor], Tensor]:
    """The function ``(h_base, h_source) -> h_patched`` for ``subspace`` (None: the whole activation)."""
    if subspace is None:
        return lambda base, source: source
    if isinstance(subspace, Tensor):
        basis = check_basis(subspace, d)
        return lambda base, source: project_exchange(base, source, basis.to(base.device))
    if callable(subspace):
        return subspace
    raise InputError(
        f"subspace must be None, an orthonormal basis tensor [d k], or a function "
        f"(h_base, h_source) -> h_patched; got {type(subspace).__name__}."
    )


def site_activations(model: HookedModel, tokens: Int[Tensor, "batch pos"], site: Site | str, chunk: int = 256) -> Tensor:
    """The (detached) activation of ``site``'s slice for ``tokens``, ``chunk`` prompts per forward."""
    site = as_site(site)
    with torch.no_grad():
        return torch.cat([model.run_with_cache(tokens[i : i + chunk], [site])[1][site] for i in range(0, len(tokens), chunk)])


def interchange_with(
    model: HookedModel,
    base_tokens: Int[Tensor, "batch pos"],
    source_acts: Tensor,
    site: Site | str,
    subspace: Subspace | None = None,
) -> Float[Tensor, "batch pos vocab"]:
    """Like `interchange`, with the source's activation at ``site`` already computed (e.g. cached once).

    Gradients flow into ``subspace`` when it is a module (used to train DAS)."""
    site = as_site(site)
    fn = exchange_fn(subspace, source_acts.shape[-1])

    def edit(base_act: Tensor) -> Tensor:
        if base_act.shape != source_acts.shape:
            raise InputError(
                f"At {site} the base activation has shape {tuple(base_act.shape)} but the source's has "
                f"{tuple(source_acts.shape)}. Give base and source token batches of the same shape "
                f"(same number of prompts; same length unless the site selects one position)."
            )
        return fn(base_act, source_acts.to(base_act.dtype))

    logits, _ = model.run(base_tokens, edits=[(site, edit)])
    return logits


def interchange(
    model: HookedModel,
    base_tokens: Int[Tensor, "batch pos"],
    source_tokens: Int[Tensor, "batch pos"],
    site: Site | str,
    subspace: Subspace | None = None,
) -> Float[Tensor, "batch pos vocab"]:
    """Logits of the base run with ``site`` (or its ``subspace``) set to its value on the source run.

    ``subspace``: None (exchange the whole slice), an orthonormal basis ``[d k]`` (exchange the
    components in its span: ``h_base + B Bᵀ (h_source − h_base)``), or a function
    ``(h_base, h_source) -> h_patched`` such as a trained `patching.das.RotatedSubspace`.
    """
    site = as_site(site)
    base_tokens = model.check_tokens(base_tokens)
    source_tokens = model.check_tokens(source_tokens)
    if base_tokens.shape[0] != source_tokens.shape[0]:
        raise InputError(
            f"Base and source batches pair up one to one, but there are {base_tokens.shape[0]} base and "
            f"{source_tokens.shape[0]} source prompts. Give the same number of each."
        )
    if site.pos is None and base_tokens.shape != source_tokens.shape:
        raise InputError(
            f"Base tokens {tuple(base_tokens.shape)} and source tokens {tuple(source_tokens.shape)} differ "
            f"in length, and {site} covers every position. Pad them to the same length, or choose one "
            f"position with Site(..., pos=p)."
        )
    source_acts = site_activations(model, source_tokens, site)
    return interchange_with(model, base_tokens, source_acts, site, subspace)

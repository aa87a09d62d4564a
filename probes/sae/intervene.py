"""SAE features at a model's sites: read them, and edit them inside `HookedModel.edit`.

    f = features(model, sae, Site("resid_post", 1), tokens)          # [batch pos d_sae]
    with model.edit({Site("resid_post", 1): ablate_features(sae, [3, 17])}):
        logits = model(tokens)
    with model.edit({Site("resid_post", 1, pos=-1): steer_features(sae, 3, 8.0)}): ...
    with model.edit({Site("resid_post", 1): clamp_features(sae, [3], 5.0)}): ...
    with model.edit({Site("resid_post", 1): splice_sae(sae)}): ...   # the reconstruction replaces x

A feature edit keeps the SAE's reconstruction error: with ``f = encode(x)`` and the edited
``f'``, the activation becomes ``x' = x - decode(f) + decode(f') = x + (f' - f) @ W_dec``, so an
edit changes the activation only along the edited features' decoder rows, exactly by
``(f'_i - f_i) * W_dec[i]``, and an edit that changes no feature changes nothing (Marks et al.
2024, "Sparse feature circuits", keep the error term the same way). `splice_sae` instead replaces
the activation by the reconstruction ``decode(encode(x))``: what the model does with only what
the SAE explains (the "spliced-in" loss of `probes.sae.evaluate_sae`).

The SAE reads the site's slice with its feature axes flattened as `probes.collect` stores them:
one axis for residual / MLP sites and for a site with ``head=``; ``head d_head`` flattened to
``(head d_head)`` for ``z`` / ``q`` / ``k`` / ``v`` / ``head_out`` without a head. Nothing here
changes `Site` or `HookedModel`: reading goes through ``run_with_cache``, editing through ``edit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InputError
from interp.models import HookedModel
from interp.sites import Site, SiteLike, as_site
from probes.sae.model import SAE


def to_feature_axis(act: Tensor, d_in: int, where: str = "the site's activation") -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """``act`` with its feature axes flattened to one last axis of width ``d_in``, and the function
    that puts a tensor of that shape back into ``act``'s shape."""
    if act.ndim >= 1 and act.shape[-1] == d_in:
        return act, lambda y: y
    if act.ndim >= 2 and act.shape[-2] * act.shape[-1] == d_in:
        tail = act.shape[-2:]
        return act.flatten(-2), lambda y: y.unflatten(-1, tail)
    raise InputError(
        f"The SAE reads d_in={d_in} features, but {where} has shape {tuple(act.shape)} (last axis "
        f"{act.shape[-1] if act.ndim else '-'}). Use an SAE trained at this site (probes.collect stores "
        f"z without a head as head*d_head features), or pick the site the SAE was trained on."
    )


def _site(sae: SAE, site: SiteLike | None) -> Site:
    if site is None:
        if not sae.metadata.get("hook_name"):
            raise InputError("This SAE does not record the site it was trained on; pass site= (e.g. "
                             "Site('resid_post', 1) or 'blocks.1.hook_resid_post').")
        return as_site(sae.metadata["hook_name"])
    return as_site(site)


def features(
    model: HookedModel,
    sae: SAE,
    site: SiteLike | None,
    tokens: Int[Tensor, "batch pos"] | Any,
    return_logits: bool = False,
) -> Float[Tensor, "batch pos d_sae"] | tuple[Tensor, Tensor]:
    """The SAE's latent activations at ``site`` for ``tokens``: ``[batch pos d_sae]`` for a site
    without ``pos`` (``[batch d_sae]`` with one). ``site=None`` uses the site recorded in
    ``sae.metadata["hook_name"]``. Enclosing ``model.edit`` blocks apply (the features of an edited
    run). ``return_logits=True`` gives ``(logits, features)`` from the same forward."""
    site = _site(sae, site)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, [site])
        x, _ = to_feature_axis(cache[site], sae.d_in, f"{site}'s activation")
        f = sae.encode(x.to(sae.device))
    return (logits, f) if return_logits else f


def _ids(sae: SAE, ids: Any) -> Tensor:
    if isinstance(ids, int) and not isinstance(ids, bool):
        ids = [ids]
    try:
        ids = torch.as_tensor(ids) if len(ids) else torch.zeros(0, dtype=torch.long)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"Feature ids must be an int, a list of ints or a LongTensor, got {type(ids).__name__}.") from None
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.ndim > 1:
        raise InputError(f"Feature ids must be ints (a 1-D list), got dtype {ids.dtype} shape {tuple(ids.shape)}.")
    ids = ids.long().reshape(-1)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= sae.d_sae):
        raise InputError(f"Feature ids must lie in [0, {sae.d_sae}) for this SAE (d_sae={sae.d_sae}); got "
                         f"{ids.tolist()[:10]}.")
    if ids.unique().numel() != ids.numel():
        raise InputError(f"Feature ids repeat in {ids.tolist()[:10]}; give each feature once.")
    return ids


def _values(value: Any, n: int, what: str) -> Tensor:
    if isinstance(value, bool):
        raise InputError(f"{what} must be a number or a tensor, got a bool.")
    try:
        value = torch.as_tensor(value, dtype=torch.float32) if not isinstance(value, Tensor) else value.detach()
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{what} must be a number, a list of numbers (one per feature) or a tensor [..., n_features], "
                         f"got {type(value).__name__}.") from None
    if value.ndim and value.shape[-1] not in (1, n):
        raise InputError(f"{what} has {value.shape[-1]} entries on its last axis but {n} features are edited; give one "
                         f"value, or one per feature.")
    if not torch.isfinite(value).all():
        raise InputError(f"{what} contains NaN/inf.")
    return value


@dataclass(frozen=True, eq=False)
class FeatureEdit:
    """An intervention that sets (``mode="set"``) or shifts (``mode="add"``) chosen SAE features
    and moves the activation by exactly the change they decode to, keeping the reconstruction
    error: ``x' = x + (f'[ids] - f[ids]) @ W_dec[ids]``. Build with `ablate_features`,
    `clamp_features` or `steer_features`."""

    sae: SAE
    ids: Tensor
    values: Tensor
    mode: str = "set"

    def __call__(self, act: Tensor) -> Tensor:
        x, back = to_feature_axis(act, self.sae.d_in)
        if self.ids.numel() == 0:
            return act
        if x.device != self.sae.device:
            raise InputError(f"The activation is on {x.device} but the SAE is on {self.sae.device}; move the SAE with "
                             f"sae.to({str(x.device)!r}).")
        ids = self.ids.to(x.device)
        values = self.values.to(x.device, self.sae.dtype)
        if self.mode == "add":
            delta_f = values.expand(*x.shape[:-1], ids.numel())
        else:
            delta_f = values - self.sae.encode(x)[..., ids]
        delta = delta_f @ self.sae.W_dec[ids]
        return back(x + delta.to(x.dtype))


def ablate_features(sae: SAE, ids: int | Sequence[int] | Tensor) -> FeatureEdit:
    """Set features ``ids`` to 0 (keeping the reconstruction error), for `HookedModel.edit`."""
    ids = _ids(sae, ids)
    return FeatureEdit(sae, ids, torch.zeros(ids.numel()), "set")


def clamp_features(sae: SAE, ids: int | Sequence[int] | Tensor, values: float | Sequence[float] | Tensor) -> FeatureEdit:
    """Set features ``ids`` to ``values`` (a number, one per feature, or a tensor broadcasting to
    ``[..., n_ids]``, e.g. per token), keeping the reconstruction error."""
    ids = _ids(sae, ids)
    return FeatureEdit(sae, ids, _values(values, ids.numel(), "values"), "set")


def steer_features(sae: SAE, ids: int | Sequence[int] | Tensor, alphas: float | Sequence[float] | Tensor) -> FeatureEdit:
    """Add ``alphas`` to features ``ids``: the activation moves by ``sum_i alpha_i * W_dec[i]``."""
    ids = _ids(sae, ids)
    return FeatureEdit(sae, ids, _values(alphas, ids.numel(), "alphas"), "add")


@dataclass(frozen=True, eq=False)
class SAESplice:
    """An intervention that replaces the activation with the SAE's reconstruction
    ``decode(encode(x))`` (no error term). Build with `splice_sae`."""

    sae: SAE

    def __call__(self, act: Tensor) -> Tensor:
        x, back = to_feature_axis(act, self.sae.d_in)
        return back(self.sae(x).to(x.dtype))


def splice_sae(sae: SAE) -> SAESplice:
    """The intervention that splices ``sae``'s reconstruction into the model at a site."""
    if not isinstance(sae, SAE):
        raise InputError(f"splice_sae needs an SAE, got {type(sae).__name__}.")
    return SAESplice(sae)

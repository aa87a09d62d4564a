"""Interventions along a probe's direction: test whether the model *uses* what a probe reads.

    u = probe.direction()                                   # [d], e.g. from a LinearProbe
    with model.edit({Site("resid_post", 1): ablate_direction(u)}):   # remove the component along u
        logits = model(tokens)
    with model.edit({Site("resid_post", 1, pos=-1): steer(u, 4.0)}): # add 4 * u
        logits = model(tokens)
    edit_effect(model, prompts, site, ablate_direction(u), metric)   # {"before", "after", "effect"}

A probe shows that information is decodable; an intervention shows whether it matters
(Ravfogel et al. 2020 remove probe directions; Elazar et al. 2021 "amnesic probing" measure the
behavioural effect of doing so; Hewitt & Liang 2019 warn that decodable is not used).
`ablate_direction` projects ``x -> x - (x·u - value) u`` for the unit vector ``u`` (``value=0``
removes the component; a mean value gives mean-ablation along ``u``); `steer` adds ``alpha * u``.
Both act on the last axis of the site's activation slice, so a direction of width ``d_head`` on a
``z`` site without a head acts on every head alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InputError
from interp.interventions import Add, as_intervention
from interp.models import HookedModel
from interp.sites import SiteLike, as_site


def unit_vector(direction: Any) -> Float[Tensor, " d"]:
    """``direction`` as a 1-D float tensor of unit length (numpy arrays and tensors accepted)."""
    if not isinstance(direction, Tensor):
        try:
            direction = torch.as_tensor(direction)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"A direction must be a 1-D tensor or array, got {type(direction).__name__}.") from None
    direction = direction.detach()
    if direction.ndim != 1:
        raise InputError(f"A direction must be 1-D [d], got shape {tuple(direction.shape)}.")
    if not direction.is_floating_point():
        direction = direction.float()
    if not torch.isfinite(direction).all():
        raise InputError("The direction contains NaN/inf values.")
    norm = direction.norm()
    if norm == 0:
        raise InputError("The direction is the zero vector, so it has no direction to ablate or steer along.")
    return direction / norm


def _check_width(u: Tensor, act: Tensor, what: str) -> Tensor:
    if act.shape[-1] != u.shape[0]:
        raise InputError(
            f"{what}: the direction has {u.shape[0]} entries but the site's activation has {act.shape[-1]} "
            f"features on its last axis (shape {tuple(act.shape)}). Use a direction from a probe fitted "
            f"at this site (e.g. width d_model for resid sites, d_head for z with a head)."
        )
    return u.to(device=act.device, dtype=act.dtype)


@dataclass(frozen=True)
class DirectionAblation:
    """Set the component of the activation along ``direction`` to ``value`` (0: project it out)."""

    direction: Tensor
    value: float | Tensor = 0.0

    def __call__(self, act: Tensor) -> Tensor:
        u = _check_width(self.direction, act, "ablate_direction")
        coord = act @ u
        value = torch.as_tensor(self.value, dtype=act.dtype, device=act.device)
        return act - (coord - value)[..., None] * u


@dataclass(frozen=True)
class Steer(Add):
    """``Add(alpha * unit_direction)`` that checks the direction's width against the activation."""

    def __call__(self, act: Tensor) -> Tensor:
        _check_width(self.value, act, "steer")
        return super().__call__(act)


def ablate_direction(direction: Float[Tensor, " d"] | Any, value: float | Tensor = 0.0) -> DirectionAblation:
    """An intervention (for `HookedModel.edit`) that sets the activation's coordinate along the
    unit ``direction`` to ``value`` (default 0: the component is projected out)."""
    return DirectionAblation(unit_vector(direction), value)


def steer(direction: Float[Tensor, " d"] | Any, alpha: float) -> Steer:
    """``Add(alpha * unit_direction)`` for `HookedModel.edit`, with a width check on use."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | Tensor):
        raise InputError(f"alpha must be a number (the steering strength, e.g. 4.0), got {alpha!r} ({type(alpha).__name__}).")
    return Steer(float(alpha) * unit_vector(direction))


def edit_effect(
    model: HookedModel,
    prompts: Any,
    site: SiteLike,
    intervention: Any,
    metric: Callable[[Tensor, Any], Tensor],
) -> dict[str, Any]:
    """The metric before and after an edit: ``{"before", "after", "effect" (= after - before),
    "before_per_prompt", "after_per_prompt"}``, means taken over prompts.

    ``prompts``: token ids ``[batch pos]`` or a `PromptSet` (its clean tokens are run);
    ``metric(logits, prompts) -> Tensor[batch]`` is called with the same ``prompts`` object.
    """
    if not callable(metric):
        raise InputError(f"metric must be a function (logits, prompts) -> Tensor[batch], got {type(metric).__name__}.")
    tokens = prompts.clean if hasattr(prompts, "clean") and isinstance(prompts.clean, Tensor) else prompts
    site = as_site(site)
    iv = as_intervention(intervention)
    with torch.no_grad():
        before = _metric(metric, model(tokens), prompts)
        with model.edit({site: iv}):
            after = _metric(metric, model(tokens), prompts)
    return {
        "before": float(before.mean()), "after": float(after.mean()), "effect": float((after - before).mean()),
        "before_per_prompt": before, "after_per_prompt": after,
    }


def _metric(metric, logits: Tensor, prompts) -> Tensor:
    value = torch.as_tensor(metric(logits, prompts)).detach().float()
    if value.ndim > 1:
        raise InputError(f"metric must return a scalar or a Tensor[batch], got shape {tuple(value.shape)}.")
    return value.reshape(-1)

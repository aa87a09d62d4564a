"""Interventions: what `HookedModel.edit` does to the activation at a site.

    Replace(clean_act)        # the site's slice becomes this tensor (broadcast over batch)
    Add(alpha * direction)    # steering
    Scale(0.0)                # zero-ablation
    lambda act: act.flip(0)   # any function of the site's slice -> tensor of the same shape

A bare tensor means Replace; a bare callable means a function intervention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.errors import InputError
from interp.sites import Site


@dataclass(frozen=True)
class Replace:
    """Set the site's slice to ``value`` (broadcast to the slice's shape)."""

    value: Tensor

    def __call__(self, act: Tensor) -> Tensor:
        return _broadcast(self.value, act, "Replace").expand_as(act)


@dataclass(frozen=True)
class Add:
    """Add ``value`` to the site's slice (broadcast to the slice's shape)."""

    value: Tensor

    def __call__(self, act: Tensor) -> Tensor:
        return act + _broadcast(self.value, act, "Add")


@dataclass(frozen=True)
class Scale:
    """Multiply the site's slice by ``factor`` (0 is zero-ablation)."""

    factor: float | Tensor

    def __call__(self, act: Tensor) -> Tensor:
        factor = self.factor
        if isinstance(factor, Tensor):
            factor = _broadcast(factor, act, "Scale")
        return act * factor


@dataclass(frozen=True)
class Fn:
    """Any function of the site's slice that returns a tensor of the same shape."""

    fn: Callable[[Tensor], Tensor]

    def __call__(self, act: Tensor) -> Tensor:
        return self.fn(act)


Intervention = Replace | Add | Scale | Fn


def as_intervention(x) -> Intervention:
    """A tensor means Replace, a number means Scale, a callable means Fn."""
    if isinstance(x, Replace | Add | Scale | Fn):
        return x
    if isinstance(x, Tensor):
        return Replace(x)
    if isinstance(x, int | float) and not isinstance(x, bool):
        return Scale(float(x))
    if callable(x):
        return Fn(x)
    raise InputError(
        f"Cannot use {_short_repr(x)} ({type(x).__name__}) as an intervention. Give Replace(tensor), Add(tensor), "
        f"Scale(factor), or a function of the activation."
    )


def _broadcast(value: Tensor, act: Tensor, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    try:
        torch.broadcast_shapes(value.shape, act.shape)
    except RuntimeError:
        raise InputError(
            f"{what}: a value of shape {tuple(value.shape)} does not broadcast to the site's "
            f"activation of shape {tuple(act.shape)}. Give a tensor of that shape (or without the "
            f"batch axis)."
        ) from None
    if value.device != act.device:
        raise InputError(
            f"{what}: the value is on {value.device} but the activation is on {act.device}; "
            f"move it with .to({str(act.device)!r})."
        )
    return value.to(act.dtype)


def apply_at(site: Site, intervention: Intervention, act: Tensor) -> Tensor:
    """Apply ``intervention`` to ``site``'s slice of the full activation ``act``; returns a new tensor."""
    index = site.index()
    part = act[index]
    new_part = intervention(part)
    if not isinstance(new_part, Tensor) or new_part.shape != part.shape:
        got = tuple(new_part.shape) if isinstance(new_part, Tensor) else type(new_part).__name__
        raise InputError(
            f"The intervention at {site} returned {got}; it must return a tensor of the slice's "
            f"shape {tuple(part.shape)}."
        )
    if all(isinstance(i, slice) and i == slice(None) for i in index):
        return new_part
    out = act.clone()
    out[index] = new_part
    return out


def _short_repr(x, limit: int = 60) -> str:
    """``repr(x)``, cut to ``limit`` characters (a bad value named in an error, not dumped)."""
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Sites: the one name for "an activation at this layer / head / position".

    Site("resid_pre", 3)                  # blocks.3.hook_resid_pre, every position
    Site("z", 1, head=2, pos=-1)          # head 2's z at the last position
    Site.parse("blocks.1.attn.hook_z")    # TransformerLens hook names are accepted too
    grid("resid_pre", layers=range(2), positions=range(5))   # a sweep

A site with ``head`` or ``pos`` selects that slice of the activation. Shapes of the full
activation (before slicing), by kind:

    embed, resid_pre, resid_mid, resid_post, attn_out, mlp_out   [batch pos d_model]
    mlp_post                                                     [batch pos d_mlp]
    q, k, v, z                                                   [batch pos head d_head]
    head_out (each head's write into the residual stream)        [batch pos head d_model]
    pattern                                                      [batch head query_pos key_pos]

``pos`` indexes the query position for ``pattern``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from interp.errors import SiteError, closest

if TYPE_CHECKING:
    from interp.models import HookedModel

#: site kind -> TransformerLens hook name ("{layer}" is filled in).
HOOK_NAMES: dict[str, str] = {
    "embed": "hook_embed",
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "z": "blocks.{layer}.attn.hook_z",
    "head_out": "blocks.{layer}.attn.hook_result",
    "pattern": "blocks.{layer}.attn.hook_pattern",
    "q": "blocks.{layer}.attn.hook_q",
    "k": "blocks.{layer}.attn.hook_k",
    "v": "blocks.{layer}.attn.hook_v",
    "mlp_post": "blocks.{layer}.mlp.hook_post",
}
KINDS: tuple[str, ...] = tuple(HOOK_NAMES)
#: kinds with a head axis (index 2 of the activation; 1 for pattern).
HEAD_KINDS = frozenset({"z", "head_out", "pattern", "q", "k", "v"})
#: kinds that exist only in models with MLPs.
MLP_KINDS = frozenset({"resid_mid", "mlp_out", "mlp_post"})
#: order in which the kinds of one layer are computed in a forward pass.
EXECUTION_ORDER: dict[str, int] = {
    "embed": 0, "resid_pre": 1, "q": 2, "k": 3, "v": 4, "pattern": 5, "z": 6,
    "head_out": 7, "attn_out": 8, "resid_mid": 9, "mlp_post": 10, "mlp_out": 11,
    "resid_post": 12,
}
_HOOK_PATTERNS = {
    kind: re.compile("^" + re.escape(name).replace(r"\{layer\}", r"(\d+)") + "$")
    for kind, name in HOOK_NAMES.items()
}
# Aliases TransformerLens also accepts for the same activations.
_ALIASES = {
    "blocks.{layer}.hook_in": "resid_pre",
    "blocks.{layer}.hook_out": "resid_post",
    "blocks.{layer}.attn.hook_out": "attn_out",
    "blocks.{layer}.mlp.hook_out": "mlp_out",
    "blocks.{layer}.attn.o.hook_in": "z",
    "blocks.{layer}.mlp.out.hook_in": "mlp_post",
    "embed.hook_out": "embed",
}
_ALIAS_PATTERNS = {
    re.compile("^" + re.escape(a).replace(r"\{layer\}", r"(\d+)") + "$"): k for a, k in _ALIASES.items()
}


@dataclass(frozen=True, order=True)
class Site:
    """An activation of a model, optionally one head's or one position's slice of it.

        Site("resid_post", 1)             -> blocks.1.hook_resid_post
        Site("pattern", 1, head=3)        -> head 3's attention pattern, [batch q k]
        Site.parse("blocks.0.attn.hook_z", head=2)

    ``layer`` is required for every kind except ``embed`` (which lives before layer 0).
    """

    kind: str
    layer: int | None = None
    head: int | None = None
    pos: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in HOOK_NAMES:
            raise SiteError(
                f"Unknown site kind {self.kind!r}.{closest(self.kind, KINDS)} "
                f"Valid kinds: {', '.join(KINDS)}."
            )
        if self.kind == "embed":
            if self.layer not in (None, 0):
                raise SiteError(f"Site('embed') has no layer (got layer={self.layer}); leave it out.")
            object.__setattr__(self, "layer", None)
        elif not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
            raise SiteError(
                f"Site({self.kind!r}) needs a layer: a non-negative int, got {self.layer!r}. "
                f"Example: Site({self.kind!r}, 0)."
            )
        if self.head is not None:
            if self.kind not in HEAD_KINDS:
                raise SiteError(
                    f"Site kind {self.kind!r} has no head axis, so head={self.head} is meaningless. "
                    f"Kinds with heads: {', '.join(sorted(HEAD_KINDS))}."
                )
            if not isinstance(self.head, int) or self.head < 0:
                raise SiteError(f"head must be a non-negative int, got {self.head!r}.")
        if self.pos is not None and not isinstance(self.pos, int):
            raise SiteError(f"pos must be an int (negative counts from the end), got {self.pos!r}.")

    # ----------------------------------------------------------------- names
    @property
    def hook_name(self) -> str:
        """The TransformerLens hook name of the full activation (head and pos are not part of it)."""
        return HOOK_NAMES[self.kind].format(layer=self.layer)

    @property
    def full(self) -> Site:
        """The same site without the head / position selection."""
        return Site(self.kind, self.layer)

    @classmethod
    def parse(cls, name: str | Site, head: int | None = None, pos: int | None = None) -> Site:
        """A Site from a TransformerLens hook name (``blocks.3.hook_resid_pre``) or a Site."""
        if isinstance(name, Site):
            return name if head is None and pos is None else cls(name.kind, name.layer, head, pos)
        if not isinstance(name, str):
            raise SiteError(f"Expected a Site or a hook name string, got {type(name).__name__}.")
        for kind, pattern in _HOOK_PATTERNS.items():
            m = pattern.match(name)
            if m:
                return cls(kind, int(m.group(1)) if m.groups() else None, head, pos)
        for pattern, kind in _ALIAS_PATTERNS.items():
            m = pattern.match(name)
            if m:
                return cls(kind, int(m.group(1)) if m.groups() else None, head, pos)
        examples = [n.format(layer=0) for n in HOOK_NAMES.values()]
        generic = re.sub(r"\d+", "0", name)
        raise SiteError(
            f"Unknown hook name {name!r}.{closest(generic, examples)} "
            f"Hook names look like 'blocks.3.hook_resid_pre' or 'blocks.1.attn.hook_z'; "
            f"or build a Site directly: Site('resid_pre', 3)."
        )

    def __str__(self) -> str:
        extra = "".join(f"[{a}={getattr(self, a)}]" for a in ("head", "pos") if getattr(self, a) is not None)
        return self.hook_name + extra

    # ----------------------------------------------------------------- slicing
    def index(self) -> tuple:
        """Index into the full activation that selects this site's head / position."""
        if self.kind == "pattern":  # [batch head q k]
            return (slice(None), _sel(self.head), _sel(self.pos))
        if self.kind in HEAD_KINDS:  # [batch pos head d]
            return (slice(None), _sel(self.pos), _sel(self.head))
        return (slice(None), _sel(self.pos))

    def select(self, activation):
        """This site's slice of a full activation (a view)."""
        return activation[self.index()]

    # ----------------------------------------------------------------- validation
    def validate(self, model: HookedModel, seq_len: int | None = None) -> Site:
        """Check the site against a model (and a sequence length); return it, or raise SiteError."""
        if self.kind in MLP_KINDS and not model.has_mlp:
            raise SiteError(
                f"{self}: this model is attention-only, so it has no {self.kind!r}. "
                f"Use one of: {', '.join(k for k in KINDS if k not in MLP_KINDS)}."
            )
        if self.kind not in model.supported_kinds:
            why = getattr(model, "why_unsupported", lambda kind: "")(self.kind)
            raise SiteError(
                f"{self}: the {model.backend_name} backend of this model does not expose {self.kind!r}. "
                + (f"{why} " if why else "")
                + f"It exposes: {', '.join(model.supported_kinds)}."
            )
        if self.layer is not None and not 0 <= self.layer < model.n_layers:
            raise SiteError(
                f"{self}: layer {self.layer} is out of range; this model has {model.n_layers} layers "
                f"(valid: 0 to {model.n_layers - 1})."
            )
        n_heads = getattr(model, "n_kv_heads", model.n_heads) if self.kind in ("k", "v") else model.n_heads
        if self.head is not None and not 0 <= self.head < n_heads:
            what = "key/value heads (grouped-query attention)" if n_heads != model.n_heads else "heads"
            raise SiteError(
                f"{self}: head {self.head} is out of range; this model has {n_heads} {what} per "
                f"layer (valid: 0 to {n_heads - 1})."
            )
        if self.pos is not None and seq_len is not None and not -seq_len <= self.pos < seq_len:
            raise SiteError(
                f"{self}: position {self.pos} is out of range for sequences of {seq_len} tokens "
                f"(valid: 0 to {seq_len - 1}, or -{seq_len} to -1 from the end)."
            )
        return self


def _sel(i: int | None):
    return slice(None) if i is None else i


SiteLike = Site | str


def as_site(site: SiteLike) -> Site:
    """Accept a Site or a TransformerLens hook name."""
    return Site.parse(site)


def grid(
    kinds: str | Sequence[str],
    layers: Iterable[int],
    heads: Iterable[int | None] | None = None,
    positions: Iterable[int | None] | None = None,
) -> list[Site]:
    """Every combination of kind × layer × head × position, in that nesting order.

        grid("resid_pre", layers=range(2), positions=range(5))      # 10 sites
        grid("z", layers=range(2), heads=range(4))                    # 8 sites, all positions
    """
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    heads_ = [None] if heads is None else list(heads)
    positions_ = [None] if positions is None else list(positions)
    return [
        Site(kind, None if kind == "embed" else layer, head, pos)
        for kind, layer, head, pos in itertools.product(kinds, list(layers), heads_, positions_)
        if not (kind == "embed" and layer != 0)
    ]

"""Attention-head detectors on repeated random tokens (Elhage et al. 2021; Olsson et al. 2022).

    patterns = attention_patterns(model, repeated_tokens(50, 20, model.d_vocab))   # [layer head b q k]
    previous_token_scores(patterns)     # [layer head]: mean attention from each token to the one before
    induction_scores(patterns, half)    # [layer head]: attention from r[i] in the 2nd copy to r[i+1] in the 1st
    duplicate_token_scores(patterns, half)   # attention from r[i] in the 2nd copy to r[i] in the 1st

Each score is the average attention weight on the target key, so it lies in [0, 1].
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.models import HookedModel
from interp.sites import Site


@torch.no_grad()
def attention_patterns(model: HookedModel, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer head batch q k"]:
    """Every head's attention pattern on ``tokens``."""
    sites = [Site("pattern", layer) for layer in range(model.n_layers)]
    _, cache = model.run_with_cache(tokens, sites)
    return torch.stack([cache[s].transpose(0, 1) for s in sites])


def _diagonal_score(patterns: Tensor, queries: Tensor, keys: Tensor) -> Tensor:
    return patterns[..., queries, keys].mean(dim=(-1, -2))


def previous_token_scores(patterns: Float[Tensor, "layer head batch q k"]) -> Float[Tensor, "layer head"]:
    """Mean attention from position i to i-1 (over i >= 1)."""
    q = torch.arange(1, patterns.shape[-2])
    return _diagonal_score(patterns, q, q - 1)


def induction_scores(patterns: Float[Tensor, "layer head batch q k"], half: int) -> Float[Tensor, "layer head"]:
    """For ``BOS r r``: mean attention from r[i] in the second copy to r[i+1] in the first."""
    q = torch.arange(half + 1, 2 * half + 1)  # second copy, r[0]..r[half-1]
    return _diagonal_score(patterns[..., :-1, :], q[:-1], q[:-1] - half + 1)


def duplicate_token_scores(patterns: Float[Tensor, "layer head batch q k"], half: int) -> Float[Tensor, "layer head"]:
    """For ``BOS r r``: mean attention from r[i] in the second copy to r[i] in the first."""
    q = torch.arange(half + 1, 2 * half + 1)
    return _diagonal_score(patterns, q, q - half)


def head_weights(model: HookedModel) -> dict[str, Float[Tensor, "layer head ..."]]:
    """Per-head weight matrices of a native model, in the ``x @ W`` convention:
    ``W_Q, W_K, W_V``: ``[layer head d_model d_head]``; ``W_O``: ``[layer head d_head d_model]``."""
    import einops

    blocks = getattr(model.module, "blocks", None)
    if blocks is None or not hasattr(blocks[0], "attn") or not hasattr(blocks[0].attn, "q"):
        from interp.errors import InputError

        raise InputError("head_weights needs a native model (interp.build_native / a shipped model) with q/k/v/o projections.")
    out: dict[str, list[Tensor]] = {"W_Q": [], "W_K": [], "W_V": [], "W_O": []}
    for block in blocks:
        for name, proj in [("W_Q", "q"), ("W_K", "k"), ("W_V", "v")]:
            w = getattr(block.attn, proj).weight.detach()  # [head*d_head, d_model]
            out[name].append(einops.rearrange(w, "(h d) m -> h m d", h=model.n_heads))
        w_o = block.attn.o.weight.detach()  # [d_model, head*d_head]
        out["W_O"].append(einops.rearrange(w_o, "m (h d) -> h d m", h=model.n_heads))
    return {k: torch.stack(v) for k, v in out.items()}


def composition_scores(model: HookedModel, mode: str) -> Float[Tensor, "layer head layer2 head2"]:
    """Elhage et al. (2021) composition scores of every head pair (earlier -> later layer).

    ``score[l1, h1, l2, h2] = ||W_OV(l1,h1) @ M(l2,h2)||_F / (||W_OV(l1,h1)||_F ||M(l2,h2)||_F)`` with
    ``M = W_QK`` (mode "Q"), ``W_QKᵀ`` ("K") or ``W_OV`` ("V"), where ``W_OV = W_V W_O`` and
    ``W_QK = W_Q W_Kᵀ`` are ``[d_model d_model]``. Pairs with ``l2 <= l1`` are 0. Layer norms are
    not folded in (as in TransformerLens' ``all_composition_scores``).
    """
    if mode not in ("Q", "K", "V"):
        from interp.errors import InputError

        raise InputError(f"mode must be 'Q', 'K' or 'V' (which input of the later head), got {mode!r}.")
    w = head_weights(model)
    ov = w["W_V"] @ w["W_O"]  # [layer head m m]
    qk = w["W_Q"] @ w["W_K"].transpose(-1, -2)
    right = {"Q": qk, "K": qk.transpose(-1, -2), "V": ov}[mode]
    prod = torch.einsum("abij,cdjk->abcdik", ov, right)
    scores = prod.flatten(-2).norm(dim=-1) / (
        ov.flatten(-2).norm(dim=-1)[:, :, None, None] * right.flatten(-2).norm(dim=-1)[None, None]
    )
    layers = torch.arange(model.n_layers)
    return scores * (layers[:, None, None, None] < layers[None, None, :, None])

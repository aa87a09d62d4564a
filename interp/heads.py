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

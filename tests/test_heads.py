"""Head detectors and composition scores, the latter against TransformerLens on the same weights."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InputError
from interp.heads import composition_scores, head_weights


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_composition_scores_match_transformer_lens(attn_only_model, mode):
    ours = composition_scores(attn_only_model, mode)
    theirs = attn_only_model.module.all_composition_scores(mode)
    theirs = getattr(theirs, "scores", theirs).detach()
    assert ours.shape == theirs.shape == (attn_only_model.n_layers, attn_only_model.n_heads) * 2
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    assert ours[1, :, 0, :].abs().max() == 0  # no composition backwards in depth
    assert ours[0, :, 1, :].min() > 0


def test_head_weights_reproduce_the_attention_output(attn_only_model, tokens):
    """z @ W_O summed over heads (plus the bias) is what the attention block writes."""
    from interp.sites import Site

    w = head_weights(attn_only_model)
    _, cache = attn_only_model.run_with_cache(tokens, [Site("z", 0), Site("attn_out", 0)])
    rebuilt = torch.einsum("bphd,hdm->bpm", cache[Site("z", 0)], w["W_O"][0]) + attn_only_model.module.blocks[0].attn.o.bias
    torch.testing.assert_close(rebuilt, cache[Site("attn_out", 0)], atol=1e-5, rtol=1e-4)


def test_composition_mode_is_checked(attn_only_model):
    with pytest.raises(InputError, match="'Q', 'K' or 'V'"):
        composition_scores(attn_only_model, "O")

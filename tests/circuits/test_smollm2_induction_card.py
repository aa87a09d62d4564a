"""The smollm2-induction card (interp/circuits/smollm2-induction.md): every claim on SmolLM2-135M's real weights.

The last tests check the pieces the claims rest on (the word tokens, the fast composition score
against the dense product) and show that the claims can fail: on sequences that never repeat, no
head is an induction head; an ablation that removes nothing, or a control that removes as much,
fails the ablation claim; composition at the random pairs' level fails the K-composition claim, and a
drop carried by the queries fails the key-path claim.
"""

from __future__ import annotations

import pytest
import torch

from interp import circuits
from interp.circuits import smollm2_induction as card
from interp.errors import InputError

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-smollm2-induction")]  # one worker measures the card once
CARD = "smollm2-induction"


@pytest.fixture(scope="module")
def model():
    import interp

    return interp.load("smollm2-135m")


def test_previous_token_heads(check_claim):
    check_claim(CARD, "previous_token_heads")


def test_induction_heads(check_claim):
    check_claim(CARD, "induction_heads")


def test_ablation(check_claim):
    check_claim(CARD, "ablation")


def test_k_composition(check_claim):
    check_claim(CARD, "k_composition")


def test_key_path(check_claim):
    check_claim(CARD, "key_path")


def test_card_table_is_what_the_real_weights_give(check_table):
    check_table(CARD)


def test_repeated_word_tokens_are_seeded_words_repeated(model):
    tokens = card.repeated_word_tokens(model, 3, half=6, seed=5)
    assert tokens.shape == (3, 13)
    assert torch.equal(tokens[:, 1:7], tokens[:, 7:])
    assert torch.equal(tokens, card.repeated_word_tokens(model, 3, half=6, seed=5))
    assert not torch.equal(tokens, card.repeated_word_tokens(model, 3, half=6, seed=6))
    words = model.to_str_tokens(tokens[0])[1:]
    assert all(w.startswith(" ") and w[1:].isalpha() and w[1:].islower() and len(w) >= 4 for w in words), words


def test_composition_scores_equal_the_dense_products(model):
    """The QR shortcut against ‖W_OV W_QKᵀ‖_F / (‖W_OV‖_F ‖W_QK‖_F) formed as 576 × 576 matrices."""
    mats = card.head_matrices(model)
    pairs = [((16, 0), (17, 3)), ((2, 1), (23, 8)), ((0, 4), (1, 7))]
    fast_k = card.composition_score_pairs(mats, pairs, "K")
    fast_q = card.composition_score_pairs(mats, pairs, "Q")
    for i, ((a, h), (b, g)) in enumerate(pairs):
        ov = mats["W_V"][a, h].double() @ mats["W_O"][a, h].double()
        qk = mats["W_Q"][b, g].double() @ mats["W_K"][b, g].double().T
        for fast, right in ((fast_k, qk.T), (fast_q, qk)):
            dense = (ov @ right).norm() / (ov.norm() * right.norm())
            assert float(fast[i]) == pytest.approx(float(dense), rel=1e-4)
    with pytest.raises(InputError, match="earlier layer"):
        card.composition_score_pairs(mats, [((5, 0), (5, 1))])
    with pytest.raises(InputError, match="'K' or 'Q'"):
        card.composition_score_pairs(mats, pairs, "V")


def test_grouped_query_heads_share_their_key_weights(model):
    mats = card.head_matrices(model)
    assert mats["W_Q"].shape == (30, 9, 576, 64) and mats["W_O"].shape == (30, 9, 64, 576)
    assert torch.equal(mats["W_K"][3, 0], mats["W_K"][3, 2]) and not torch.equal(mats["W_K"][3, 2], mats["W_K"][3, 3])


def test_induction_claim_fails_on_sequences_that_never_repeat(model):
    words = card.word_tokens(model.tokenizer)
    gen = torch.Generator().manual_seed(0)
    body = words[torch.randint(0, len(words), (4, 2 * card.HALF), generator=gen)]
    tokens = torch.cat([model.to_tokens("")[:1, :1].expand(4, 1), body], dim=1)
    scores = card.head_scores(model, tokens)["induction"]
    numbers = card._detector_numbers(scores, model.n_heads)
    numbers.update(first_layer=float("nan"), n_layers=model.n_layers)
    assert numbers["best_score"] < 0.2
    assert not circuits.get(CARD).claim("induction_heads").passes(numbers)


def test_ablation_and_composition_claims_can_fail():
    ablation = circuits.get(CARD).claim("ablation")
    clean, halved = {"first": 13.0, "repeated": 3.0}, {"first": 13.0, "repeated": 8.0}
    assert ablation.passes(card.ablation_numbers([clean, halved, clean, clean]))
    assert not ablation.passes(card.ablation_numbers([clean, clean, clean, clean]))  # nothing removed
    assert not ablation.passes(card.ablation_numbers([clean, halved, halved, clean]))  # a random set removes as much
    composition = circuits.get(CARD).claim("k_composition")
    numbers = {"n_induction": 12, "prev_k_mean": 0.13, "prev_q_mean": 0.05, "random_mean": 0.045, "random_p99": 0.07,
               "ratio": 2.9, "share_above_p99": 0.8}
    assert composition.passes(numbers)
    assert not composition.passes({**numbers, "prev_k_mean": 0.05, "ratio": 1.1, "share_above_p99": 0.1})
    assert not composition.passes({**numbers, "prev_q_mean": 0.2})  # more through the queries than the keys
    key_path = circuits.get(CARD).claim("key_path")
    numbers = {"n_prev": 6, "clean": 0.57, "ablated": 0.14, "keys": 0.13, "queries": 0.43, "drop_share": 0.76,
               "key_share": 1.02, "query_share": 0.32}
    assert key_path.passes(numbers)
    assert not key_path.passes({**numbers, "key_share": 0.3, "query_share": 0.9})  # the queries carry it
    assert not key_path.passes({**numbers, "drop_share": 0.1})  # the previous-token heads do not matter


def test_head_matrices_need_a_llama_family_model():
    from interp import zoo

    with pytest.raises(InputError, match="Llama-family"):
        card.head_matrices(zoo.load_model("induction-2l"))

"""The induction card (interp/circuits/induction.md): every claim on the shipped induction-2l weights.

The last tests show that the claims can fail: on a re-initialised model of the same shape, and, for
the training-dynamics claim, on a trajectory whose two curves jump at different times.
"""

from __future__ import annotations

import numpy as np
import pytest

from interp import circuits, zoo
from interp.circuits import induction
from interp.models import build_native
from interp.recipes import INDUCTION_CONFIG

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-induction")]  # one worker measures the card once
CARD = "induction"


def test_previous_token_head(check_claim):
    check_claim(CARD, "previous_token_head")


def test_induction_head(check_claim):
    check_claim(CARD, "induction_head")


def test_k_composition(check_claim):
    check_claim(CARD, "k_composition")


def test_ablation(check_claim):
    check_claim(CARD, "ablation")


def test_key_path(check_claim):
    check_claim(CARD, "key_path")


def test_phase_change(check_claim):
    check_claim(CARD, "phase_change")


def test_discovered(check_claim):
    check_claim(CARD, "discovered")


def test_discovery_budget(check_claim):
    check_claim(CARD, "discovery_budget")


def test_discovery_budget_claim_fails_when_a_small_circuit_suffices():
    claim = circuits.get(CARD).claim("discovery_budget")
    numbers = {"n_edges": 81, "budget": 8, "n_candidates": 38, "best_in_budget": 0.31, "best_n_prev": 2,
               "best_n_induction": 2, "mechanism_edges": 14, "mechanism": 0.9, "acdc_edges": 14,
               "acdc_faithfulness": 0.9, "acdc_is_mechanism": 1}
    assert claim.passes(numbers)
    assert not claim.passes({**numbers, "best_in_budget": 0.93})  # a mechanism-shaped circuit within 10% is enough
    assert not claim.passes({**numbers, "mechanism_edges": 8})  # the mechanism itself fits the budget
    assert not claim.passes({**numbers, "mechanism": 0.6})  # the mechanism does not explain the behaviour


def test_discovery_agreement(check_claim):
    check_claim(CARD, "discovery_agreement")


def test_card_table_is_what_the_shipped_weights_give(check_table):
    check_table(CARD)


def test_claims_fail_on_a_reinitialised_model():
    shipped = zoo.load_model("induction-2l")
    fresh = build_native(INDUCTION_CONFIG, shipped.tokenizer, seed=1, name="untrained")
    # phase_change reads checkpoints; discovery_agreement compares two scoring methods, not the
    # model's mechanism (on random weights EAP-IG also tracks exact patching better than EAP)
    weight_claims = [c.key for c in induction.CLAIMS if c.key not in ("phase_change", "discovery_agreement")]
    result = circuits.evaluate(CARD, model=fresh, keys=weight_claims)
    assert [r.claim.key for r in result.results if r.passed] == [], result.table()


def test_phase_change_claim_fails_when_the_curves_jump_apart():
    steps = np.array([0, 100, 200, 400, 800])
    induction_score = np.array([0.0, 0.05, 0.8, 0.85, 0.9])  # jumps between 100 and 200
    icl = np.array([0.0, -0.1, -0.2, -0.3, -3.5])  # jumps between 400 and 800
    numbers = induction.phase_change_numbers(steps, induction_score, icl)
    assert not circuits.get(CARD).claim("phase_change").passes(numbers)
    together = induction.phase_change_numbers(steps, induction_score, np.array([0.0, -0.1, -3.0, -3.3, -3.5]))
    assert circuits.get(CARD).claim("phase_change").passes(together)


def test_phase_change_needs_checkpoints():
    from interp.errors import InputError

    with pytest.raises(InputError, match="checkpoints"):
        circuits.evaluate(CARD, model=zoo.load_model("induction-2l"), keys=["phase_change"])


def test_unknown_card_and_claim_are_clear_errors():
    from interp.errors import InputError

    with pytest.raises(InputError, match="induction"):
        circuits.get("inducton")
    with pytest.raises(InputError, match="Claims: previous_token_head"):
        circuits.get(CARD).claim("nope")

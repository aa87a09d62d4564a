"""The fact-recall card (interp/circuits/facts.md): every claim on the shipped facts-4l weights.

The last tests show that the claims can fail: on a re-initialised model of the same shape, and, for
the training-dynamics claim, on a history with a long plateau.
"""

from __future__ import annotations

import pytest

from interp import circuits, zoo
from interp.circuits import facts
from interp.models import build_native
from interp.recipes import FACTS_CONFIG

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-facts")]  # one worker measures the card once
CARD = "facts"


def test_mlp_site(check_claim):
    check_claim(CARD, "mlp_site")


def test_attention_depth(check_claim):
    check_claim(CARD, "attention_depth")


def test_severing(check_claim):
    check_claim(CARD, "severing")


def test_probe(check_claim):
    check_claim(CARD, "probe")


def test_last_token_attention(check_claim):
    check_claim(CARD, "last_token_attention")


def test_dynamics(check_claim):
    check_claim(CARD, "dynamics")


def test_discovered(check_claim):
    check_claim(CARD, "discovered")


def test_card_table_is_what_the_shipped_weights_give(check_table):
    check_table(CARD)


def test_claims_fail_on_a_reinitialised_model():
    shipped = zoo.load_model("facts-4l")
    fresh = build_native({**FACTS_CONFIG, "d_vocab": shipped.d_vocab}, shipped.tokenizer, seed=1, name="untrained")
    weight_claims = [c.key for c in facts.CLAIMS if c.key != "dynamics"]
    result = circuits.evaluate(CARD, model=fresh, keys=weight_claims)
    assert [r.claim.key for r in result.results if r.passed] == [], result.table()


def test_dynamics_claim_fails_on_a_plateau():
    baseline = 2.6
    plateau = [{"step": s, "answer_loss": 2.6 if 100 <= s <= 1500 else (5.0 if s < 100 else 0.1),
                "recall": 0.05 if s <= 1500 else 1.0} for s in range(0, 3001, 50)]
    numbers = facts.plateau_numbers(plateau, baseline)
    assert numbers["plateau_steps"] == 1400
    assert not circuits.get(CARD).claim("dynamics").passes(numbers)

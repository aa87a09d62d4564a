"""The binding card (interp/circuits/binding.md): every claim on the shipped binding-4l weights.

The last test shows that the claims can fail: on a re-initialised model of the same shape.
"""

from __future__ import annotations

import pytest

from interp import circuits, zoo
from interp.circuits import binding
from interp.models import build_native
from interp.recipes import BINDING_CONFIG

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-binding")]  # one worker measures the card once
CARD = "binding"


def test_accuracy(check_claim):
    check_claim(CARD, "accuracy")


def test_positional(check_claim):
    check_claim(CARD, "positional")


def test_das(check_claim):
    check_claim(CARD, "das")


def test_lexical(check_claim):
    check_claim(CARD, "lexical")


def test_by_slot(check_claim):
    check_claim(CARD, "by_slot")


def test_discovered(check_claim):
    check_claim(CARD, "discovered")


def test_card_table_is_what_the_shipped_weights_give(check_table):
    check_table(CARD)


def test_claims_fail_on_a_reinitialised_model():
    shipped = zoo.load_model("binding-4l")
    fresh = build_native({**BINDING_CONFIG, "d_vocab": shipped.d_vocab}, shipped.tokenizer, seed=1, name="untrained")
    result = circuits.evaluate(CARD, model=fresh, keys=[c.key for c in binding.CARD.claims])
    assert [r.claim.key for r in result.results if r.passed] == [], result.table()

"""The binding-ef card (interp/circuits/binding_ef.md): every claim on the shipped binding-ef-4l weights.

The last test shows that the claims can fail: on a re-initialised model of the same shape.
"""

from __future__ import annotations

import pytest

from interp import circuits, zoo
from interp.circuits import binding_ef
from interp.models import build_native
from interp.recipes import BINDING_EF_CONFIG

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-binding-ef")]  # one worker measures the card once
CARD = "binding-ef"


def test_accuracy(check_claim):
    check_claim(CARD, "accuracy")


def test_positional(check_claim):
    check_claim(CARD, "positional")


def test_retrieval(check_claim):
    check_claim(CARD, "retrieval")


def test_card_table_is_what_the_shipped_weights_give(check_table):
    check_table(CARD)


def test_claims_fail_on_a_reinitialised_model():
    shipped = zoo.load_model("binding-ef-4l")
    fresh = build_native({**BINDING_EF_CONFIG, "d_vocab": shipped.d_vocab}, shipped.tokenizer, seed=1, name="untrained")
    result = circuits.evaluate(binding_ef.CARD, model=fresh)
    assert [r.claim.key for r in result.results if r.passed] == [], result.table()

"""The facts-bio card (interp/circuits/facts-bio.md): every claim on the shipped facts-bio weights.

The last tests show that the claims can fail: on a re-initialised model of the same shape (every
claim measured on weights alone), on facts-4l's route (the tracing claims' verdicts on its numbers),
and, for the dynamics claim, on a history where recall rises before the attention forms.
"""

from __future__ import annotations

import pytest

from interp import circuits, zoo
from interp.circuits import facts_bio
from interp.models import build_native
from interp.recipes import FACTS_CONFIG

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-facts-bio")]  # one worker measures the card once
CARD = "facts-bio"


def test_recall(check_claim):
    check_claim(CARD, "recall")


def test_mlp_site(check_claim):
    check_claim(CARD, "mlp_site")


def test_attention_site(check_claim):
    check_claim(CARD, "attention_site")


def test_probe(check_claim):
    check_claim(CARD, "probe")


def test_extraction(check_claim):
    check_claim(CARD, "extraction")


def test_dynamics(check_claim):
    check_claim(CARD, "dynamics")


def test_card_table_is_what_the_shipped_weights_give(check_table):
    check_table(CARD)


def test_claims_fail_on_a_reinitialised_model():
    shipped = zoo.load_model("facts-bio")
    fresh = build_native({**FACTS_CONFIG, "d_vocab": shipped.d_vocab, "n_ctx": shipped.n_ctx}, shipped.tokenizer, seed=1,
                         name="untrained")
    weight_claims = [c.key for c in facts_bio.CLAIMS if c.key != "dynamics"]
    result = circuits.evaluate(CARD, model=fresh, keys=weight_claims)
    assert [r.claim.key for r in result.results if r.passed] == [], result.table()


def test_tracing_claims_reject_facts_4l_route():
    """facts-4l's committed trace numbers (last-token MLPs in every layer, attention early) fail both stages."""
    stored = circuits.committed_numbers(circuits.get("facts"))
    mlp, attn = stored["mlp_site"], stored["attention_depth"]
    numbers = {"subject_peak_layer": 0, "subject_peak": mlp["subject_layer0"][0], "subject_late_max": mlp["subject_later_max"][0],
               "last_early_max": mlp["min_last_token"][0], "n_layers": 4}
    assert not circuits.get(CARD).claim("mlp_site").passes(numbers)
    attention = {"peak_layer": attn["argmax_layer"][0], "peak": attn["peak"][0], "early_mean": attn["first_layer"][0],
                 "late_mean": attn["last_layer"][0], "subject_mlp_peak_layer": 0, "n_layers": 4}
    assert not circuits.get(CARD).claim("attention_site").passes(attention)


def test_dynamics_claim_fails_when_recall_comes_first():
    claim = circuits.get(CARD).claim("dynamics")
    numbers = {"attention_half_step": 900.0, "recall_half_step": 450.0, "attention_final": 0.9}
    assert not claim.passes(numbers)
    assert claim.passes({**numbers, "attention_half_step": 300.0})


def test_dynamics_claim_needs_the_training_record():
    """A bare HookedModel has no history.json or checkpoints: the dynamics claim says what to pass instead."""
    from interp.errors import InputError

    with pytest.raises(InputError, match="interp train facts-bio --out DIR"):
        circuits.evaluate(CARD, model=zoo.load_model("facts-bio"), keys=["dynamics"])

"""The card check survives another machine: numbers are compared within the tolerance each card
states, verdicts do not flip inside those tolerances, and a number moved beyond its tolerance is
caught. These tests read the committed cards only (no measurement), so they are fast."""

from __future__ import annotations

import dataclasses
import math

import pytest

from interp import circuits
from interp.circuits import EXACT, RELATIVE, SHARE, Tolerance

pytestmark = pytest.mark.circuits


@pytest.mark.parametrize("name", circuits.names())
def test_every_committed_number_states_the_claims_tolerance(name):
    card = circuits.get(name)
    stored = circuits.committed_numbers(card)
    assert set(stored) == {c.key for c in card.claims}
    for claim in card.claims:
        assert stored[claim.key], f"{name}/{claim.key} has no committed numbers"
        for number, (_, tol) in stored[claim.key].items():
            assert tol == claim.tolerance(number), f"{name}/{claim.key}/{number}"


@pytest.mark.parametrize("name", circuits.names())
def test_committed_card_is_consistent_with_its_own_numbers(name):
    """The committed table renders from the committed numbers (so summaries and verdicts agree with them)."""
    card = circuits.get(name)
    assert circuits.card_differences(card, circuits.committed_result(card)) == []


@pytest.mark.parametrize("name", circuits.names())
def test_no_verdict_flips_inside_its_tolerance(name):
    result = circuits.committed_result(circuits.get(name))
    assert circuits.unstable_numbers(result) == []


@pytest.mark.parametrize("name", circuits.names())
def test_a_failing_claim_is_a_finding_the_card_discusses(name):
    """A claim whose threshold was committed before the measurement may fail (cards on a pretrained
    model record what the paper's mechanism does *not* do there). Such a row stays in the table as
    FAIL, and the card's prose, outside the table, names the claim (its key) and says what was
    measured instead; a card of a model trained here passes every claim."""
    card = circuits.get(name)
    failing = [r.claim.key for r in circuits.committed_result(card).results if not r.passed]
    if not failing:
        return
    from interp import pretrained

    assert card.model in pretrained.PRETRAINED, f"{name}: claims {failing} fail on a model trained here"
    text = card.path.read_text()
    prose = text[:text.index(circuits.START)] + text[text.index(circuits.END):]
    missing = [key for key in failing if f"`{key}`" not in prose]
    assert not missing, f"{name}: failing claims {missing} are not discussed (by key, in backticks) outside the claims table"


def _perturbed(result: circuits.CardResult, key: str, pattern: str, factor: float) -> tuple[circuits.CardResult, list[str]]:
    """``result`` with every number of claim ``key`` whose name contains ``pattern`` moved up by
    ``factor`` × its tolerance (as if the measurement had given that), and the names moved."""
    out, moved = circuits.CardResult(result.card), []
    for r in result.results:
        if r.claim.key == key:
            numbers = dict(r.numbers)
            for name, value in numbers.items():
                if pattern in name:
                    numbers[name] = value + factor * r.claim.tolerance(name).width(value)
                    moved.append(name)
            r = dataclasses.replace(r, numbers=numbers, passed=bool(r.claim.passes(numbers)))
        out.results.append(r)
    return out, moved


def test_das_numbers_within_half_the_tolerance_pass_and_twice_it_fail():
    card = circuits.get("binding")
    committed = circuits.committed_result(card)
    half, moved = _perturbed(committed, "das", "_iia_", 0.5)
    assert sorted(moved) == ["lexical_iia_1", "lexical_iia_2", "lexical_iia_4", "lexical_iia_8", "positional_iia_8"]
    assert circuits.card_differences(card, half) == []
    half_down, _ = _perturbed(committed, "das", "_iia_", -0.5)
    assert circuits.card_differences(card, half_down) == []
    twice, _ = _perturbed(committed, "das", "_iia_", 2.0)
    problems = circuits.card_differences(card, twice)
    assert len(problems) == len(moved) and all("tolerance ±0.03" in p for p in problems), problems


def test_a_changed_statement_or_verdict_is_caught_exactly():
    card = circuits.get("induction")
    committed = circuits.committed_result(card)
    flipped = circuits.CardResult(card, [dataclasses.replace(r, passed=not r.passed) if r.claim.key == "ablation" else r
                                         for r in committed.results])
    assert any("table row differs" in p and "ablation" in p for p in circuits.card_differences(card, flipped))
    reworded = circuits.get("induction")
    claims = tuple(dataclasses.replace(c, statement=c.statement + " (reworded)") if c.key == "key_path" else c for c in reworded.claims)
    changed = circuits.CardResult(dataclasses.replace(card, claims=claims),
                                  [dataclasses.replace(r, claim=claims[i]) for i, r in enumerate(committed.results)])
    assert any("reworded" in p for p in circuits.card_differences(card, changed))


def test_exact_numbers_must_match_exactly():
    card = circuits.get("facts")
    committed = circuits.committed_result(card)
    moved = circuits.CardResult(card, [dataclasses.replace(r, numbers={**r.numbers, "argmax_layer": r.numbers["argmax_layer"] + 1})
                                       if r.claim.key == "attention_depth" else r for r in committed.results])
    assert any("attention_depth/argmax_layer" in p and "exact" in p for p in circuits.card_differences(card, moved))


def test_tolerance_reads_back_what_it_writes():
    for tol in (SHARE, RELATIVE, EXACT, Tolerance("abs", 0.001)):
        assert Tolerance.parse(str(tol)) == tol
    assert str(SHARE) == "±0.03" and str(RELATIVE) == "±5%" and str(EXACT) == "exact"
    assert RELATIVE.allows(2.0, 2.09) and not RELATIVE.allows(2.0, 2.11)
    assert SHARE.allows(0.5, 0.53) and not SHARE.allows(0.5, 0.531)
    assert EXACT.allows(3, 3.0) and not EXACT.allows(3, 4)
    assert SHARE.allows(math.nan, math.nan) and not SHARE.allows(math.nan, 0.1)
    with pytest.raises(circuits.InputError, match="±0.03, ±5% or exact"):
        Tolerance.parse("about 0.03")

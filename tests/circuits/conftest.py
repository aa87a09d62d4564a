"""Circuit-card tests: each claim of each card measured once per session on the shipped weights."""

from __future__ import annotations

import pytest

from interp import circuits

_RESULTS: dict[str, circuits.CardResult] = {}


def _card_result(name: str) -> circuits.CardResult:
    if name not in _RESULTS:
        _RESULTS[name] = circuits.evaluate(name)
    return _RESULTS[name]


@pytest.fixture
def card_result():
    """``card_result(card)``: the card's claims measured once per worker (the same memo as `check_claim`;
    importing this conftest by module path would make a second memo and measure the card again)."""
    return _card_result


@pytest.fixture
def check_claim():
    """``check_claim(card, key)`` fails with the claim and the measured numbers unless the claim holds."""

    def check(name: str, key: str) -> None:
        result = _card_result(name)[key]
        assert result.passed, f"{name}/{key}: {result.claim.statement} -- measured: {result.summary}"

    return check


@pytest.fixture
def check_table():
    """``check_table(card)`` fails unless the card's committed table is what the shipped weights give:
    statements and verdicts exactly, every number within the tolerance the card states for it."""

    def check(name: str) -> None:
        card = circuits.get(name)
        problems = circuits.card_differences(card, _card_result(name))
        assert not problems, (f"{card.path} differs from the shipped weights beyond its tolerances:\n  " + "\n  ".join(problems)
                              + f"\nIf the change is real, regenerate the table with `interp circuits {name} --write`.")

    return check


@pytest.fixture(autouse=True)
def _marked_circuits(request):
    """Every test in tests/circuits is a circuit test (``pytest -m circuits`` selects them)."""
    assert request.node.get_closest_marker("circuits") is not None, "mark circuit tests with pytestmark = pytest.mark.circuits"

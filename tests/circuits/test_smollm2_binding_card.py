"""The smollm2-binding card (interp/circuits/smollm2-binding.md): every claim on SmolLM2-135M.

The claims decide on the stored answers (assets/cards/smollm2-binding/choices.json) and re-run a
sample of them on the weights. The last tests show that the claims can fail (numbers above chance
fail the negative claims, a control at chance fails the control, a stored file the weights do not
reproduce fails all) and check the stored file, the prompt set and the interval.
"""

from __future__ import annotations

import pytest
import torch

from interp import circuits
from interp.circuits import smollm2_binding as card
from interp.errors import InputError

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-smollm2-binding")]
CARD = "smollm2-binding"


def test_question_at_chance(check_claim):
    check_claim(CARD, "question_at_chance")


def test_cloze_weak(check_claim):
    check_claim(CARD, "cloze_weak")


def test_copy_control(check_claim):
    check_claim(CARD, "copy_control")


def test_card_table_is_what_the_weights_give(check_table):
    check_table(CARD)


def _numbers(accuracies: dict[int, float], agreement: float = 1.0) -> dict[str, float]:
    return {**{f"acc_{k}": a for k, a in accuracies.items()}, **{f"chance_{k}": 1 / k for k in accuracies},
            "recheck_agreement": agreement}


def test_negative_claims_fail_above_chance_and_control_fails_at_chance():
    question, control = circuits.get(CARD).claim("question_at_chance"), circuits.get(CARD).claim("copy_control")
    at_chance = _numbers({2: 0.5, 3: 0.34, 4: 0.25})
    assert question.passes(at_chance) and not control.passes(at_chance)
    one_above = _numbers({2: 0.5, 3: 0.34, 4: 0.25 + card.MARGIN + 0.05})
    assert not question.passes(one_above)
    solved = _numbers({2: 0.95, 3: 0.9, 4: 0.85})
    assert control.passes(solved) and not question.passes(solved)
    # a stored file the weights do not reproduce fails every claim
    assert not question.passes({**at_chance, "recheck_agreement": 0.5}) and not control.passes(_numbers({2: 0.95, 3: 0.9, 4: 0.85}, 0.5))


def test_stored_choices_cover_every_layout_size_and_slot():
    data = card.stored()
    assert data["seed"] == card.SEED and data["n"] == card.N_PROMPTS
    for layout in card.LAYOUTS:
        for k in card.PAIRS:
            rows = data["choices"][layout][str(k)]
            assert rows["slot"] == [i % k for i in range(card.N_PROMPTS)]
            assert len(rows["chosen"]) == card.N_PROMPTS and set(rows["chosen"]) <= set(range(k))


def test_prompts_ask_every_slot_with_distinct_single_token_names():
    from interp.models import load

    model = load(card.MODEL)
    for layout in card.LAYOUTS:
        p = card.binding_prompts(model, layout, 3, n=6, seed=5)
        assert len(p["tokens"]) == 6 and p["slot"].tolist() == [0, 1, 2, 0, 1, 2]
        for row, names in zip(p["tokens"], p["names"], strict=True):
            assert len(set(names.tolist())) == 3
            text = model.tokenizer.decode(row)
            assert all(model.tokenizer.decode([int(i)]).strip() in text for i in names)
        again = card.binding_prompts(model, layout, 3, n=6, seed=5)
        assert all(torch.equal(a, b) for a, b in zip(p["tokens"], again["tokens"], strict=True))
        if layout != "copy":
            assert len({len(row) for row in p["tokens"]}) == 1
    with pytest.raises(InputError, match="layout"):
        card.binding_prompts(model, "attribute_first", 3)
    with pytest.raises(InputError, match="pairs"):
        card.binding_prompts(model, "question", 1)


def test_wilson_interval():
    lo, hi = card.wilson(60, 120)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * (0.25 / 120) ** 0.5, rel=0.05)
    assert card.wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and card.wilson(10, 10)[1] == pytest.approx(1.0)

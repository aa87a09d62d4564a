"""The smollm2-agreement card (interp/circuits/smollm2-agreement.md): every claim on SmolLM2-135M's real weights.

The claims read the stored DAS sweep (assets/cards/smollm2-agreement/das_sweep.json) and re-score
its directions live. The last tests check the data split (held-out pairs use only held-out nouns),
that the stored sweep's file is complete, and that the claims can fail: a direction at the BOS token
(identical in every prompt) changes nothing, and random-direction numbers fail the baselines claim.
"""

from __future__ import annotations

import pytest
import torch

from interp import circuits
from interp.circuits import smollm2_agreement as card

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-smollm2-agreement")]  # one worker measures the card once
CARD = "smollm2-agreement"


@pytest.fixture(scope="module")
def model():
    import interp

    return interp.load("smollm2-135m")


def test_das_site(card_result):
    """The claim FAILS on the held-out nouns, and the card's table says so: the number sits at the subject token
    (IIA 1.0 at the best cell, re-scored live) and is absent from the last token in layer 2, as claimed, but the
    last token in layer 26 reaches IIA 0.75 of the 0.8 claimed (0.8 was set from the development pairs' 1.0). The
    test checks that the live measurement reproduces exactly that finding: the parts that hold, and the one that fails."""
    result = card_result(CARD)["das_site"]
    n = result.numbers
    assert n["best_pos"] == 2 and n["best_held_out"] >= 0.9 and abs(n["best_rescored"] - n["best_held_out"]) <= 0.03, result.summary
    assert n["last_first_layer"] <= 0.2, result.summary
    assert not result.passed and n["last_last_layer"] < 0.8, result.summary


def test_baselines(check_claim):
    check_claim(CARD, "baselines")


def test_card_table_is_what_the_real_weights_give(check_table):
    check_table(CARD)


def test_held_out_pairs_use_only_held_out_nouns(model):
    data = card.datasets(model)
    nouns = card.nouns_of(model)
    words = lambda pool: {model.to_tokens(" " + w)[0, -1].item() for pair in pool for w in pair}  # noqa: E731
    train_words, held_out_words = words(nouns[: card.N_TRAIN_NOUNS]), words(nouns[card.N_TRAIN_NOUNS :])
    for split, allowed in (("train", train_words), ("dev", train_words), ("held_out", held_out_words)):
        d = data[split]
        used = set(torch.cat([d.base, d.source])[:, [2, 6]].flatten().tolist())
        assert used <= allowed, split
        assert (d.labels != d.base_labels).all()  # every pair flips the verb


def test_stored_sweep_is_complete():
    sweep = card.stored()
    cells = {(c["layer"], c["pos"]) for c in sweep["cells"]}
    assert cells == {(a, p) for a in card.SWEEP_LAYERS for p in card.SWEEP_POSITIONS}
    for c in sweep["cells"]:
        assert len(c["das_direction"]) == 576
        assert abs(torch.tensor(c["das_direction"]).norm().item() - 1) < 1e-4
        assert set(c["held_out"]) == {"das", *card.SWEEP_METHODS}


def test_a_direction_at_the_bos_token_changes_nothing(model):
    """The claim's re-scoring on a site that holds no number: IIA 0 (every pair needs the verb to flip)."""
    best = card.best_cell(card.stored())
    at_bos = {**best, "pos": 0}
    assert card.rescore(model, card.datasets(model)["held_out"], at_bos) == 0.0


def test_claims_fail_on_numbers_without_the_variable():
    das_site = circuits.get(CARD).claim("das_site")
    numbers = {"best_layer": 5, "best_pos": 2, "best_held_out": 1.0, "best_rescored": 1.0, "subject_last_layer": 0.0,
               "last_first_layer": 0.0, "last_last_layer": 1.0, "last_rescored": 1.0}
    assert das_site.passes(numbers)
    assert not das_site.passes({**numbers, "best_held_out": 0.5, "best_rescored": 0.5})
    assert not das_site.passes({**numbers, "best_rescored": 0.8})  # the stored direction no longer does what it did
    baselines = circuits.get(CARD).claim("baselines")
    ok = {"layer": 5, "pos": 2, "das": 1.0, "probe": 1.0, "mean_diff": 0.98, "pca": 0.0, "random": 0.0}
    assert baselines.passes(ok)
    assert not baselines.passes({**ok, "random": 0.9})
    assert not baselines.passes({**ok, "das": 0.1, "probe": 0.1, "mean_diff": 0.1})


def test_a_missing_sweep_names_the_command(tmp_path):
    from interp.errors import InputError

    with pytest.raises(InputError, match="--measure"):
        card.stored(tmp_path / "none.json")

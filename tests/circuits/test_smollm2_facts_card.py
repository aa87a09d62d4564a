"""The smollm2-facts card (interp/circuits/smollm2-facts.md): every claim on SmolLM2-135M.

The tracing claims read the stored measurement (assets/cards/smollm2-facts/held_out.json) and
re-measure a sample of its cells on the weights; the probe is measured live. The last tests show
that the claims can fail (facts-4l's last-token route, a stored file whose cells the weights do not
give) and check the pieces: the split, the selection, the fast and hook restorations against each
other (the stored file came from the fast engine, as `patching.causal_trace`'s grid does).
"""

from __future__ import annotations

import copy

import pytest
import torch

from interp import circuits
from interp.circuits import Subject
from interp.circuits import smollm2_facts as card
from interp.tasks import world_facts as wf

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-smollm2-facts")]
CARD = "smollm2-facts"


def test_known(check_claim):
    check_claim(CARD, "known")


def test_mlp_site(check_claim):
    check_claim(CARD, "mlp_site")


def test_attention_site(check_claim):
    check_claim(CARD, "attention_site")


def test_severing(check_claim):
    check_claim(CARD, "severing")


def test_probe(check_claim):
    check_claim(CARD, "probe")


def test_facts_bio(check_claim):
    check_claim(CARD, "facts_bio")


def test_card_table_is_what_the_weights_give(check_table):
    check_table(CARD)


def test_held_out_facts_are_other_subjects_and_spread_over_relations():
    train, held_out = card.split_facts("train"), card.split_facts("held_out")
    assert {(f.relation, f.subject) for f in train}.isdisjoint({(f.relation, f.subject) for f in held_out})
    data = card.stored()
    traced = [(f["relation"], f["subject"]) for f in data["facts"]]
    assert len(traced) >= 60 and len(set(traced)) == len(traced)
    assert set(traced) <= {(f.relation, f.subject) for f in held_out}
    assert {r for r, _ in traced} == set(wf.RELATIONS)
    assert all(data["ranks"][f["prompt"]] == 0 for f in data["facts"])


def test_tracing_claims_reject_facts_4l_route_and_late_enrichment():
    """facts-4l's committed trace (attention at the last token in its first layers) fails the second stage;
    subject MLPs that peak in the second half fail the first."""
    attn = circuits.committed_numbers(circuits.get("facts"))["attention_depth"]
    claims = circuits.get(CARD)
    attention = {"peak_layer": attn["argmax_layer"][0], "peak": attn["peak"][0], "early_mean": attn["first_layer"][0],
                 "late_mean": attn["last_layer"][0], "subject_mlp_peak_layer": 0, "n_layers": 4, "resample_max_diff": 0.0}
    assert not claims.claim("attention_site").passes(attention)
    early = {"peak_layer": 3, "peak": 0.08, "early_mean": 0.02, "late_mean": 0.002, "last_token_early_max": 0.0,
             "n_layers": 30, "resample_max_diff": 0.0}
    assert claims.claim("mlp_site").passes(early)
    assert not claims.claim("mlp_site").passes({**early, "peak_layer": 20, "early_mean": 0.002, "late_mean": 0.02})
    assert not claims.claim("mlp_site").passes({**early, "last_token_early_max": 0.1})  # facts-4l: last-token MLPs early
    assert not claims.claim("mlp_site").passes({**early, "resample_max_diff": 2 * card.AGREE})


@pytest.fixture(scope="module")
def subject():
    return Subject.shipped(card.MODEL)


def test_claims_fail_when_the_stored_cells_are_not_what_the_weights_give(subject):
    """A stored file whose first fact's MLP effects are shifted: the re-measurement catches it."""
    data = copy.deepcopy(card.stored())
    entry = data["facts"][0]
    entry["effects"]["mlp"][card.LAST_SUBJECT] = [v + 0.05 for v in entry["effects"]["mlp"][card.LAST_SUBJECT]]
    fake = Subject(subject.model)
    fake._memo["stored"] = data
    numbers = card.measure_mlp_site(fake)
    assert numbers["resample_max_diff"] > card.AGREE and not circuits.get(CARD).claim("mlp_site").passes(numbers)


def test_fast_and_hook_restorations_agree(subject):
    """restore_fast (fast engine) and restore_cells (hooks) give the same cells for one fact (same noise)."""
    fact = next(f for f in wf.FACTS if f.subject == "Toyota")
    cells = [("mlp", 3, card.LAST_SUBJECT), ("attn", 20, card.LAST), ("resid", 2, card.LAST_SUBJECT)]
    fast = card.restore_fast(subject.model, fact, cells, samples=2)
    hooks = card.restore_cells(subject.model, fact, cells, samples=2)
    for cell in cells:
        assert fast[cell] == pytest.approx(hooks["cells"][cell], abs=1e-5)
    # severing nothing (the last layer has no later MLPs) is plain restoration
    last = subject.model.n_layers - 1
    both = card.restore_cells(subject.model, fact, [("resid", last, card.LAST_SUBJECT), ("resid_severed_mlp", last, card.LAST_SUBJECT)], 2)
    assert both["cells"][("resid", last, card.LAST_SUBJECT)] == pytest.approx(both["cells"][("resid_severed_mlp", last, card.LAST_SUBJECT)], abs=1e-6)


def test_restorations_refuse_unknown_kinds(subject):
    from interp.errors import InputError

    fact = next(f for f in wf.FACTS if f.subject == "Toyota")
    with pytest.raises(InputError, match="kind"):
        card.restore_cells(subject.model, fact, [("mlp_post", 0, card.LAST)])
    with pytest.raises(InputError, match="severed"):
        card.restore_fast(subject.model, fact, [("resid_severed_mlp", 0, card.LAST)])


def test_noise_is_seeded_by_the_prompt():
    a, b = wf.FACTS[0], wf.FACTS[1]
    assert card.fact_seed(a) == card.fact_seed(a) != card.fact_seed(b)
    assert torch.equal(torch.tensor(card.fact_seed(a)), torch.tensor(card.fact_seed(wf.Fact(a.subject, a.relation, a.answer, a.template))))

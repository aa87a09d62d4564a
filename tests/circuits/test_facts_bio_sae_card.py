"""The facts-bio-sae card (interp/circuits/facts-bio-sae.md): every claim on the shipped SAE
(assets/sae/facts-bio-L3) over the shipped facts-bio weights, and that the claims can fail."""

from __future__ import annotations

import pytest
import torch

from interp import circuits, zoo
from interp.circuits import Subject
from interp.circuits import facts_bio_sae as card
from probes.sae import SAE

pytestmark = [pytest.mark.circuits, pytest.mark.xdist_group("card-facts-bio-sae")]  # one worker measures the card once
CARD = "facts-bio-sae"


def test_reconstruction(check_claim):
    check_claim(CARD, "reconstruction")


def test_loss_recovered(check_claim):
    check_claim(CARD, "loss_recovered")


def test_features_above_chance(check_claim):
    check_claim(CARD, "features_above_chance")


def test_probe_beats_features(check_claim):
    check_claim(CARD, "probe_beats_features")


def test_feature_edit(check_claim):
    check_claim(CARD, "feature_edit")


def test_card_table_is_what_the_shipped_weights_give(check_table):
    check_table(CARD)


def test_shipped_sae_is_small_and_at_the_probe_site():
    sae = card.load_sae()
    assert sae.metadata["hook_name"] == card.SITE.hook_name == "blocks.3.hook_resid_post"
    assert (sae.kind, sae.d_in, sae.d_sae, sae.k) == ("topk", 128, card.D_SAE, card.K)
    assert sum(f.stat().st_size for f in card.shipped_dir().iterdir()) < 2 * 2**20


def test_claims_fail_on_a_random_sae():
    """A TopK SAE with random unit decoder rows (encoder = decoder transposed) has no trained features: the
    reconstruction, above-chance and edit claims fail on it. The loss claim passes on it too (the card says
    so): 16 of 512 random directions in 128 dimensions already rebuild enough of the activation."""
    gen = torch.Generator().manual_seed(0)
    sae = SAE(128, card.D_SAE, "topk", k=card.K, metadata={"hook_name": card.SITE.hook_name})
    with torch.no_grad():
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(card.D_SAE, 128, generator=gen), dim=-1))
        sae.W_enc.copy_(sae.W_dec.T)
    s = Subject(zoo.load_model("facts-bio"), name=str(zoo.model_dir("facts-bio")))
    s.memo("sae", lambda: sae)
    claims = circuits.get(CARD)
    verdicts = {c.key: bool(c.passes(c.measure(s))) for c in claims.claims}
    assert verdicts == {"reconstruction": False, "loss_recovered": True, "features_above_chance": False,
                        "probe_beats_features": True, "feature_edit": False}, verdicts

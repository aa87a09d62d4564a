"""Tests of patching.path (path patching, Wang et al. 2022) on tiny models built here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

from interp import InputError, Site, SiteError
from interp.models import build_native
from interp.tasks import PromptSet
from patching import activation_patch, logit_diff, path_patch, prob
from patching.path import PathError

V = 32
CFG = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=V, n_ctx=32,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)



@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer  # the session tokenizer of conftest: ids t1..t31


@pytest.fixture(scope="module")
def attn_model(tok):
    return build_native({**CFG, "attn_only": True}, tok, seed=0, name="pp-attn")


@pytest.fixture(scope="module")
def mlp_model(tok):
    return build_native({**CFG, "n_layers": 3, "attn_only": False, "d_mlp": 64}, tok, seed=4, name="pp-mlp")


@pytest.fixture(scope="module")
def routed_model(tok):
    """No LayerNorm; layer-0 head 0 writes only into residual dims 24..31, which the unembedding
    ignores: its only path to the logits runs through the layer-1 heads' q, k and v."""
    m = build_native({**CFG, "attn_only": True, "normalization_type": None}, tok, seed=2, name="pp-routed")
    om = m.module.original_model
    with torch.no_grad():
        om.layers[0].attn.o.weight[:24, 0:8] = 0.0  # head 0's columns of W_O
        om.head.weight[:, 24:] = 0.0  # W_U reads dims 0..23 only
        for p in om.layers[1].attn.parameters():  # make layer 1 sensitive enough to measure
            p.mul_(3.0)
    return m


def make_prompts(n=3, seq=6, seed=0) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, V, (n, seq), generator=g)
    corrupted = torch.randint(1, V, (n, seq), generator=g)
    clean[:, 0] = corrupted[:, 0] = 0
    answers = torch.randint(1, V, (n,), generator=g)
    wrong = (answers + torch.randint(1, V - 1, (n,), generator=g) - 1) % (V - 1) + 1
    return PromptSet(clean, corrupted, answers, wrong)


@pytest.fixture(scope="module")
def prompts():
    return make_prompts()


@pytest.mark.parametrize("model_name", ["attn_model", "mlp_model"])
@pytest.mark.parametrize("direction", ["noise", "denoise"])
def test_last_layer_sender_to_logits_equals_activation_patching(request, model_name, direction, prompts):
    model = request.getfixturevalue(model_name)
    last = model.n_layers - 1
    senders = [Site("z", last, head=h) for h in range(model.n_heads)] + [Site("head_out", last, head=1, pos=-1)]
    got = path_patch(model, prompts, senders, "logits", logit_diff, direction=direction, progress=False)
    exact = activation_patch(model, prompts, senders, logit_diff, direction=direction, engine="hooks", progress=False)
    assert got.axes == ("site",)
    assert (got.values - exact.values).abs().max() <= 1e-5
    assert (got.values - got.settings["baseline"]).abs().max() > 1e-3  # the heads do something


def test_freezing_mlps_cuts_the_path_through_them(mlp_model, prompts):
    # A layer-0 head reaches the logits directly and through every later head and MLP. Its direct
    # path alone (MLPs frozen) differs from the path that also runs through the MLPs.
    s = [Site("z", 0, head=2)]
    direct = path_patch(mlp_model, prompts, s, "logits", logit_diff, freeze_mlps=True, progress=False)
    via_mlps = path_patch(mlp_model, prompts, s, "logits", logit_diff, freeze_mlps=False, progress=False)
    total = activation_patch(mlp_model, prompts, s, logit_diff, direction="noise", progress=False)
    assert abs(float(direct.values[0] - via_mlps.values[0])) > 1e-4
    assert abs(float(via_mlps.values[0] - total.values[0])) > 1e-4  # later heads are frozen


def test_a_sender_whose_only_path_runs_through_the_receivers(routed_model, prompts):
    model = routed_model
    sender = [Site("z", 0, head=0)]
    layer1_inputs = [Site(kind, 1, head=h) for kind in ("q", "k", "v") for h in range(model.n_heads)]
    for direction in ("noise", "denoise"):
        total = activation_patch(model, prompts, sender, logit_diff, direction=direction, progress=False)
        through = path_patch(model, prompts, sender, layer1_inputs, logit_diff, direction=direction, progress=False)
        direct = path_patch(model, prompts, sender, "logits", logit_diff, direction=direction, progress=False)
        baseline = through.settings["baseline"]
        assert abs(float(total.values[0]) - baseline) > 1e-2  # the sender matters ...
        assert abs(float(through.values[0] - total.values[0])) <= 1e-5  # ... only through layer 1's inputs
        assert abs(float(direct.values[0]) - baseline) <= 1e-5  # and not directly
        # through the values alone: a part of the effect, not all of it
        values_only = path_patch(model, prompts, sender, [s for s in layer1_inputs if s.kind == "v"], logit_diff,
                                 direction=direction, progress=False)
        assert abs(float(values_only.values[0] - total.values[0])) > 1e-4


def test_two_step_reference_for_a_key_receiver(attn_model, prompts):
    # In a 2-layer model, freezing the other heads changes nothing upstream of layer 1's keys, so the
    # method reduces to: cache k after patching the sender; rerun base with only that head's k patched.
    model = attn_model
    sender, receiver = Site("z", 0, head=3), Site("k", 1, head=2)
    got = path_patch(model, prompts, [sender], [receiver], prob, progress=False)
    _, other = model.run_with_cache(prompts.corrupted, [sender])
    _, step2 = model.run(prompts.clean, reads=[Site("k", 1)], edits={sender: other[sender]})
    logits, _ = model.run(prompts.clean, edits={receiver: receiver.select(step2[Site("k", 1)])})
    expected = prob(logits, prompts).mean().detach()
    assert abs(float(got.values[0] - expected)) <= 1e-6
    assert abs(float(expected) - got.settings["baseline"]) > 1e-4


def test_receivers_at_or_before_the_sender_layer_have_exactly_no_effect(mlp_model, prompts):
    late = [Site("z", 2, head=0), Site("z", 1, head=3)]
    early = [Site("k", 1, head=h) for h in range(4)] + [Site("q", 0, head=1), Site("v", 1, head=0)]
    r = path_patch(mlp_model, prompts, late, early, logit_diff, progress=False)
    assert (r.values - r.settings["baseline"]).abs().max() == 0.0
    # the same senders into the logits do have an effect: the zero above is not a dead sweep
    live = path_patch(mlp_model, prompts, late, "logits", logit_diff, progress=False)
    assert (live.values - live.settings["baseline"]).abs().min() > 1e-4


def test_sweep_over_every_sender_head_matches_single_calls(mlp_model, prompts):
    receivers = [Site("v", 2, head=h) for h in range(4)]
    sweep = path_patch(mlp_model, prompts, "z", receivers, logit_diff, direction="denoise", batch_size=7, progress=False)
    assert sweep.axes == ("layer", "head") and sweep.shape == (3, 4)
    assert sweep.settings["method"] == "path_patch"
    for layer, head in [(0, 1), (1, 3), (2, 0)]:
        one = path_patch(mlp_model, prompts, Site("z", layer, head=head), receivers, logit_diff, direction="denoise", progress=False)
        assert abs(float(one.values[0] - sweep.values[layer, head])) <= 1e-5
    assert (sweep.values[2] - sweep.settings["baseline"]).abs().max() == 0.0  # same-layer senders: no path
    assert (sweep.values[:2] - sweep.settings["baseline"]).abs().max() > 1e-4
    together = path_patch(mlp_model, prompts, [[Site("z", 0, head=1), Site("z", 1, head=3)]], receivers, logit_diff,
                          direction="denoise", progress=False)
    assert together.shape == (1,)


def test_mean_and_zero_sources(attn_model, prompts):
    s = [Site("z", 1, head=0)]
    for source in ("mean", "zero"):
        got = path_patch(attn_model, prompts, s, "logits", logit_diff, source=source, progress=False)
        exact = activation_patch(attn_model, prompts, s, logit_diff, direction="noise", source=source, progress=False)
        assert abs(float(got.values[0] - exact.values[0])) <= 1e-5


def test_bad_senders_and_receivers_are_refused(attn_model, prompts):
    ok = [Site("z", 0, head=0)]
    cases = [
        (dict(senders=[Site("resid_pre", 0)], receivers="logits"), PathError, "not one attention head"),
        (dict(senders=[Site("z", 0)], receivers="logits"), PathError, "not one attention head"),
        (dict(senders=ok, receivers=[Site("resid_post", 0)]), PathError, "last layer"),
        (dict(senders=ok, receivers=[Site("attn_out", 1)]), PathError, "not a path endpoint"),
        (dict(senders=ok, receivers=[]), PathError, "empty"),
        (dict(senders=ok, receivers=[Site("k", 1, head=7)]), SiteError, "head 7"),
        (dict(senders=ok, receivers="logits", direction="up"), InputError, "direction"),
        (dict(senders=ok, receivers="logits", freeze_mlps="yes"), InputError, "freeze_mlps"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            path_patch(attn_model, prompts, metric=logit_diff, progress=False, **kwargs)

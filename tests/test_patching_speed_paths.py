"""The speed paths of patching: attribution patching through the fast engine gives the hook path's
numbers; the fast engine's first-difference position skipping and merged source / base run keep the
hook engine's numbers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp import InputError, Site
from interp.models import build_native
from interp.tasks import PromptSet
from patching import activation_patch, attribution_patch, logit_diff, prob, reference_patch
from patching import fast as fast_engine
from patching.fast import FAST_KINDS

V = 32
CFG = dict(
    n_layers=3, d_model=32, n_heads=4, d_head=8, d_vocab=V, n_ctx=32,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)


@pytest.fixture(scope="module")
def models(tokenizer):
    return {
        "attn": build_native({**CFG, "attn_only": True}, tokenizer, seed=0, name="s-attn"),
        "mlp": build_native({**CFG, "attn_only": False, "d_mlp": 64}, tokenizer, seed=1, name="s-mlp"),
    }


def make_prompts(n=3, seq=8, seed=0, same_until=0) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, V, (n, seq), generator=g)
    corrupted = torch.randint(1, V, (n, seq), generator=g)
    corrupted[:, :same_until] = clean[:, :same_until]
    answers = torch.randint(1, V, (n,), generator=g)
    wrong = (answers + torch.randint(1, V - 1, (n,), generator=g) - 1) % (V - 1) + 1
    return PromptSet(clean, corrupted, answers, wrong)


def every_position(logits, prompts):
    return logits[:, :, 3].sum(1) - logits[:, 1:, 5].mean(1)


@pytest.fixture(params=["cost model", "source split"])
def source_split(request, monkeypatch):
    """Run a test twice: with the engine's own choice (these tiny models never split the source
    prompts off: too little work to save) and with the source prompts always a segment of their own
    where they can be (records how often that happened)."""
    forced, splits = request.param == "source split", []
    if forced:
        monkeypatch.setattr(fast_engine, "_split_pays", lambda saved: splits.append(saved) or True)
    fast_engine._schedule.cache_clear()  # schedules are cached by shape: plan afresh under either rule
    yield dict(forced=forced, splits=splits)
    fast_engine._schedule.cache_clear()


MODEL_KINDS = [("attn", k) for k in ("resid_pre", "attn_out", "z", "head_out", "pattern")] + [
    ("mlp", k) for k in ("resid_pre", "resid_mid", "attn_out", "z", "head_out", "pattern", "mlp_out")
]  # the attention-only model has no resid_mid / mlp_out


@pytest.mark.parametrize(("model_name", "kind"), MODEL_KINDS)
@pytest.mark.parametrize("by_pos", [False, True])
@pytest.mark.parametrize(("direction", "source", "metric"), [
    ("denoise", "other", logit_diff), ("noise", "mean", prob), ("denoise", "zero", every_position),
])
def test_fast_attribution_equals_hook_attribution(models, model_name, kind, by_pos, direction, source, metric):
    model = models[model_name]
    prompts = make_prompts()
    fast = attribution_patch(model, prompts, kind, metric, direction=direction, source=source, by_pos=by_pos, engine="fast")
    hooks = attribution_patch(model, prompts, kind, metric, direction=direction, source=source, by_pos=by_pos, engine="hooks")
    assert fast.axes == hooks.axes and fast.values.shape == hooks.values.shape
    torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)
    assert fast.settings["baseline"] == pytest.approx(hooks.settings["baseline"], abs=1e-5)
    assert all(p.requires_grad and p.grad is None for p in model.module.original_model.parameters())


def test_fast_attribution_site_lists(models):
    model = models["mlp"]
    prompts = make_prompts()
    sites = [[Site("z", 1, head=2), Site("resid_pre", 2, pos=3)], [Site("pattern", 0, head=1, pos=5)], [Site("head_out", 2)]]
    fast = attribution_patch(model, prompts, sites, logit_diff, engine="fast")
    hooks = attribution_patch(model, prompts, sites, logit_diff, engine="hooks")
    torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)
    with pytest.raises(fast_engine.FastEngineError, match="engine='fast' cannot run this.*not covered"):
        attribution_patch(model, prompts, [Site("q", 0)], logit_diff, engine="fast")
    with pytest.raises(InputError, match="engine must be one of"):
        attribution_patch(model, prompts, sites, logit_diff, engine="turbo")


@pytest.mark.parametrize("model_name", ["attn", "mlp"])
@pytest.mark.parametrize("kind", ["resid_pre", "z", "head_out", "pattern", "attn_out"])
@pytest.mark.parametrize("by_pos", [False, True])
@pytest.mark.parametrize("same_until", [0, 4, 8])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_fast_engine_with_shared_prefix_equals_hooks(models, source_split, model_name, kind, by_pos, same_until, direction):
    model = models[model_name]
    prompts = make_prompts(same_until=same_until)
    fast = activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, direction=direction, engine="fast", progress=False)
    hooks = activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, direction=direction, engine="hooks", progress=False)
    torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)
    for source in ("mean", "zero"):
        fast = activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, source=source, engine="fast", progress=False)
        hooks = activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, source=source, engine="hooks", progress=False)
        torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)
    if source_split["forced"]:  # a shared prefix (and a source run) is what a split needs
        assert bool(source_split["splits"]) == (same_until > 0)


@pytest.mark.parametrize("batch_size", [3, 6, 9, None])
@pytest.mark.parametrize("kind", ["resid_pre", "head_out", "resid_post"])
def test_stacked_passes_equal_hooks_at_every_batch_size(models, source_split, kind, batch_size):
    model = models["mlp"]
    prompts = make_prompts(same_until=3)
    for by_pos in (False, True):
        fast = activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, batch_size=batch_size, engine="fast", progress=False)
        hooks = activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, engine="hooks", progress=False)
        torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)
    sites = [[Site("z", 0, head=1), Site("resid_pre", 2, pos=5)], [Site("attn_out", 1, pos=1)], [Site("mlp_out", 2)], [Site("z", 1, head=3, pos=6)]]
    fast = activation_patch(model, prompts, sites, logit_diff, batch_size=batch_size, engine="fast", progress=False)
    hooks = activation_patch(model, prompts, sites, logit_diff, engine="hooks", progress=False)
    torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)
    assert source_split["splits"] or not source_split["forced"]


def test_sites_in_the_shared_prefix_before_a_later_first_layer(models):
    """A set whose only site at an earlier layer lies in the shared prefix (a no-op) starts at the later
    layer; found by the random-set test below."""
    model = models["mlp"]
    prompts = make_prompts(same_until=3)
    sets = [[Site("attn_out", 1), Site("attn_out", 0, pos=0)], [Site("resid_pre", 1, pos=2), Site("z", 1, head=2)],
            [Site("resid_pre", 0, pos=1)], [Site("pattern", 0, head=1, pos=2), Site("mlp_out", 2)]]
    for batch_size in (3, None):
        got = activation_patch(model, prompts, sets, logit_diff, batch_size=batch_size, engine="fast", progress=False)
        ref = reference_patch(model, prompts, sets, logit_diff)
        torch.testing.assert_close(got.values, ref.values, atol=1e-5, rtol=1e-4)


def check_random_site_sets(model, kinds: list[str], *, examples: int, batch_sizes: list, max_cells: int) -> None:
    """The fast engine equals the one-site-at-a-time reference loop on random sets of sites of ``kinds``
    (one to three per intervention, any layer, head and position), random shared prefixes, sources,
    metrics and batch sizes (hypothesis, derandomised: the same examples every run)."""
    L, H = model.n_layers, model.n_heads

    @st.composite
    def site(draw):
        kind = draw(st.sampled_from(kinds))
        head = draw(st.one_of(st.none(), st.integers(0, H - 1))) if kind in ("z", "head_out", "pattern") else None
        return Site(kind, draw(st.integers(0, L - 1)), head, draw(st.one_of(st.none(), st.integers(-8, 7))))

    groups = st.lists(st.lists(site(), min_size=1, max_size=3), min_size=1, max_size=max_cells)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(groups=groups, same_until=st.integers(0, 7), batch_size=st.sampled_from(batch_sizes),
           source=st.sampled_from(["other", "mean", "zero"]), metric=st.sampled_from([logit_diff, every_position]))
    def check(groups, same_until, batch_size, source, metric):
        prompts = make_prompts(same_until=same_until)
        got = activation_patch(model, prompts, groups, metric, source=source, batch_size=batch_size, engine="fast", progress=False)
        ref = reference_patch(model, prompts, groups, metric, source=source)
        torch.testing.assert_close(got.values, ref.values, atol=1e-5, rtol=1e-4)

    check()


def test_fast_engine_equals_the_reference_loop_on_random_site_sets(models, source_split):
    """Random sets of the fast engine's kinds (so it runs, not the hook fallback), random shared
    prefixes and batch sizes (one or many passes, early and late starts, skipped positions)."""
    model = models["mlp"]
    # head_out is patched as z by both engines, but the reference edits it as a change to attn_out; with
    # zero sources that can feed LayerNorm a residual of rounding noise, where the two legitimately differ.
    kinds = sorted(FAST_KINDS - {"head_out"})

    check_random_site_sets(model, kinds, examples=15, batch_sizes=[3, 6, 9, None], max_cells=6)
    assert source_split["splits"] or not source_split["forced"]  # some examples ran a split source


@pytest.mark.parametrize("kind", ["z", "attn_out", "resid_mid", "mlp_out", "resid_post"])
@pytest.mark.parametrize("same_until", [0, 3])
def test_narrow_first_layers_equal_hooks(models, monkeypatch, kind, same_until):
    """A late segment whose sites at its first layer lie at positions p0..p1 computes only those there and
    widens to p0..S-1 at the next layer (`_widen`). Forced for every segment by making segments free (each
    first position its own segment), and checked against the hook engine and the reference loop."""
    widened = []
    original = fast_engine._widen
    monkeypatch.setattr(fast_engine, "SEGMENT_OVERHEAD_FLOPS", 0.0)
    monkeypatch.setattr(fast_engine, "_widen", lambda *a: widened.append(a[3]) or original(*a))
    fast_engine._schedule.cache_clear()
    model = models["mlp"]
    prompts = make_prompts(same_until=same_until)
    try:
        got = activation_patch(model, prompts, kind, logit_diff, by_pos=True, engine="fast", progress=False)
        hooks = activation_patch(model, prompts, kind, logit_diff, by_pos=True, engine="hooks", progress=False)
        sets = [[Site(kind, 0, pos=2), Site(kind, 1, pos=5)], [Site(kind, 1, pos=3), Site(kind, 1, pos=6)]]
        pairs = activation_patch(model, prompts, sets, logit_diff, engine="fast", progress=False)
    finally:
        fast_engine._schedule.cache_clear()
    assert sorted(set(widened)) == [1, 2]  # segments starting at layers 0 and 1 widened at the next layer
    torch.testing.assert_close(got.values, hooks.values, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pairs.values, reference_patch(model, prompts, sets, logit_diff).values, atol=1e-5, rtol=1e-4)

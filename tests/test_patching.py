"""Tests of patching.metrics, patching.results and patching.activation on tiny models built here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch
import transformer_lens.patching as tlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import interp
from interp import InputError, InterpError, Site, SiteError
from interp.models import build_native
from interp.tasks import PromptSet
from patching import (
    MetricError,
    PatchResult,
    activation_patch,
    agreement,
    attribution_patch,
    kl_to,
    log_prob,
    logit_diff,
    metrics,
    normalized,
    normalized_for,
    prob,
    reference_patch,
)

V = 32
CFG = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=V, n_ctx=32,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)


# =============================================================================== fixtures
@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer  # the session tokenizer of conftest: ids t1..t31


@pytest.fixture(scope="module")
def attn_model(tok):
    return build_native({**CFG, "attn_only": True}, tok, seed=0, name="p-attn")


@pytest.fixture(scope="module")
def mlp_model(tok):
    return build_native({**CFG, "attn_only": False, "d_mlp": 64}, tok, seed=3, name="p-mlp")


@pytest.fixture(scope="module")
def gpt2_path(tmp_path_factory, tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=V, bos_token_id=0, eos_token_id=0,
        pad_token_id=0, initializer_range=0.3,  # larger weights than GPT-2's 0.02: patterns that vary
    )
    path = tmp_path_factory.mktemp("patch-gpt2")
    GPT2LMHeadModel(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gpt2_bridge(gpt2_path):
    return interp.load(gpt2_path, backend="transformer_lens")


@pytest.fixture(scope="module")
def gpt2_nnsight(gpt2_path):
    return interp.load(gpt2_path, backend="nnsight")


def make_prompts(n=2, seq=4, seed=0) -> PromptSet:
    """Random clean / corrupted tokens (BOS first) that differ everywhere, random answers."""
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


def hooks_on(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


# =============================================================================== metrics
def test_metrics_read_the_answer_position_per_prompt():
    p = PromptSet(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), [1, 2], [3, 0], answer_pos=1)
    logits = torch.zeros(2, 3, 4)
    logits[0, 1] = torch.tensor([0.0, 5.0, 0.0, 2.0])
    logits[1, 1] = torch.tensor([1.0, 0.0, 4.0, 0.0])
    logits[:, 2] = 100.0 * torch.arange(4)  # another position: must be ignored
    assert torch.allclose(logit_diff(logits, p), torch.tensor([3.0, 3.0]))
    expected = logits[:, 1].log_softmax(-1)[torch.arange(2), torch.tensor([1, 2])]
    assert torch.allclose(log_prob(logits, p), expected)
    assert torch.allclose(prob(logits, p), expected.exp())
    assert torch.allclose(kl_to(logits)(logits, p), torch.zeros(2), atol=1e-6)
    other = logits.clone()
    other[0, 1, 0] += 3.0
    kl = kl_to(logits)(other, p)
    assert kl[0] > 1e-3 and abs(kl[1]) < 1e-6
    assert metrics.mean(logit_diff, p)(logits).shape == ()
    with pytest.raises(MetricError, match="wrong answers"):
        logit_diff(logits, PromptSet(p.clean, p.corrupted, p.answers))
    with pytest.raises(InputError, match="do not match"):
        logit_diff(logits[:1], p)


def test_normalized_is_zero_at_corrupted_one_at_clean_and_refuses_an_empty_range():
    p = PromptSet(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), [0, 0], [1, 1])
    logits = torch.zeros(2, 2, 3)
    logits[:, -1, 0] = torch.tensor([2.0, 4.0])  # logit_diff = 2, 4
    m = normalized(logit_diff, clean_value=4.0, corrupted_value=2.0)
    assert torch.allclose(m(logits, p), torch.tensor([0.0, 1.0]))
    with pytest.raises(InterpError, match="undefined"):
        normalized(logit_diff, 1.5, 1.5)
    with pytest.raises(InterpError, match="undefined"):
        normalized(logit_diff, torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0]))


# =============================================================================== vs TransformerLens
TL_SWEEPS = {
    # name: (our kind, by_pos, TL function)
    "resid_pre": ("resid_pre", None, tlp.get_act_patch_resid_pre),
    "resid_mid": ("resid_mid", None, tlp.get_act_patch_resid_mid),
    "attn_out": ("attn_out", None, tlp.get_act_patch_attn_out),
    "mlp_out": ("mlp_out", None, tlp.get_act_patch_mlp_out),
    "head_out_all_pos": ("head_out", False, tlp.get_act_patch_attn_head_out_all_pos),
    "pattern_all_pos": ("pattern", False, tlp.get_act_patch_attn_head_pattern_all_pos),
    "head_out_by_pos": ("head_out", True, None),  # TL's own setter on a sample of cells, below
}


@pytest.mark.parametrize("model_name", ["native", "gpt2_bridge"])
@pytest.mark.parametrize("sweep", list(TL_SWEEPS))
def test_sweeps_equal_transformer_lens(request, model_name, sweep, prompts):
    model = request.getfixturevalue("mlp_model" if model_name == "native" else "gpt2_bridge")
    kind, by_pos, tl_fn = TL_SWEEPS[sweep]
    ours = activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, batch_size=16, progress=False)
    _, clean_cache = model.module.run_with_cache(prompts.clean)
    tl_metric = metrics.mean(logit_diff, prompts)
    if tl_fn is not None:
        expected = tl_fn(model.module, prompts.corrupted, clean_cache, tl_metric)
        got = ours.values
    else:
        # TL's head_out_by_pos is one forward per (layer, pos, head) = 32 slow bridge forwards here;
        # run TL's generic patcher with the same setter (hook_z, [layer pos head]) on 8 sampled cells.
        import pandas as pd

        g = torch.Generator().manual_seed(0)
        pos, head = torch.randint(0, prompts.seq_len, (2, 4), generator=g), torch.randint(0, 4, (2, 4), generator=g)
        cells = [(layer, int(pos[layer, i]), int(head[layer, i])) for layer in range(2) for i in range(4)]
        index_df = pd.DataFrame(cells, columns=["layer", "pos", "head"])
        expected = tlp.generic_activation_patch(
            model.module, prompts.corrupted, clean_cache, tl_metric,
            patch_setter=tlp.layer_pos_head_vector_patch_setter, activation_name="z", index_df=index_df,
        )
        got = torch.stack([ours.values[c] for c in cells])
        assert ours.values.shape == (2, prompts.seq_len, 4)
    assert got.shape == expected.shape
    assert (got - expected.float()).abs().max() <= 1e-5
    assert ours.values.std() > 1e-3  # the sweep measured something that varies
    assert ours.axes[0] == "layer" and ours.settings["kind"] == kind


# =============================================================================== properties
def test_denoising_identical_prompts_changes_nothing(attn_model):
    p = make_prompts(seed=1)
    same = PromptSet(p.clean, p.clean.clone(), p.answers, p.wrong)
    clean_value = logit_diff(attn_model(p.clean), p).mean()
    for kind, by_pos in [("resid_pre", None), ("head_out", True), ("pattern", False)]:
        r = activation_patch(attn_model, same, kind, logit_diff, by_pos=by_pos, progress=False)
        assert (r.values - clean_value).abs().max() <= 1e-5, kind


def test_denoising_all_positions_of_layer0_resid_pre_gives_the_clean_logits(mlp_model, prompts):
    clean_logits = mlp_model(prompts.clean)

    def max_gap(logits, p):
        return (logits - clean_logits).abs().amax(dim=(1, 2))

    everything = [[Site("resid_pre", 0, pos=i) for i in range(prompts.seq_len)]]
    one_pos = [Site("resid_pre", 0, pos=2)]
    r = activation_patch(mlp_model, prompts, everything, max_gap, progress=False)
    assert r.values.shape == (1,) and r.values[0] <= 1e-5
    assert activation_patch(mlp_model, prompts, one_pos, max_gap, progress=False).values[0] > 1e-2
    assert max_gap(mlp_model(prompts.corrupted), prompts).min() > 1e-2


@pytest.mark.parametrize("model_name", ["attn_model", "mlp_model"])
def test_normalized_metric_is_one_when_denoising_and_zero_when_noising_the_final_state(request, model_name, prompts):
    model = request.getfixturevalue(model_name)
    metric = normalized_for(model, prompts, logit_diff)
    last = Site("resid_post", model.n_layers - 1, pos=prompts.answer_pos)
    den = activation_patch(model, prompts, [last], metric, direction="denoise", progress=False)
    noi = activation_patch(model, prompts, [last], metric, direction="noise", progress=False)
    assert abs(float(den.values[0]) - 1.0) <= 1e-5
    assert abs(float(noi.values[0])) <= 1e-5
    # and an early site is somewhere else: the metric is not trivially constant
    early = activation_patch(model, prompts, [Site("resid_pre", 0, pos=1)], metric, progress=False)
    assert abs(float(early.values[0]) - 1.0) > 1e-3


def test_mean_and_zero_sources_and_noising(attn_model, prompts):
    kinds = [Site("z", 1, head=2), Site("resid_pre", 1, pos=3)]
    results = {}
    for source in ("other", "mean", "zero"):
        for direction in ("denoise", "noise"):
            got = activation_patch(attn_model, prompts, kinds, logit_diff, direction=direction, source=source, progress=False)
            ref = reference_patch(attn_model, prompts, kinds, logit_diff, direction=direction, source=source)
            assert (got.values - ref.values).abs().max() <= 1e-5
            results[source, direction] = got.values
    # zero ablation does not depend on where the (absent) source comes from, mean/other do
    assert not torch.allclose(results["mean", "denoise"], results["other", "denoise"])
    assert not torch.allclose(results["zero", "denoise"], results["zero", "noise"])  # different base runs


def _site_strategy(model):
    kinds = list(model.supported_kinds)

    @st.composite
    def site(draw):
        kind = draw(st.sampled_from(kinds))
        layer = None if kind == "embed" else draw(st.integers(0, model.n_layers - 1))
        head = draw(st.one_of(st.none(), st.integers(0, model.n_heads - 1))) if kind in ("z", "head_out", "pattern", "q", "k", "v") else None
        pos = draw(st.one_of(st.none(), st.integers(-5, 4)))
        return Site(kind, layer, head, pos)

    return site()


def test_batched_engine_equals_reference_loop_on_random_sites(mlp_model):
    p = make_prompts(n=2, seq=5, seed=2)
    groups = st.lists(st.lists(_site_strategy(mlp_model), min_size=1, max_size=3), min_size=1, max_size=4)

    @settings(max_examples=8, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(groups=groups, direction=st.sampled_from(["denoise", "noise"]), source=st.sampled_from(["other", "mean", "zero"]),
           batch_size=st.integers(1, 9))
    def check(groups, direction, source, batch_size):
        got = activation_patch(mlp_model, p, groups, prob, direction=direction, source=source, batch_size=batch_size, progress=False)
        ref = reference_patch(mlp_model, p, groups, prob, direction=direction, source=source)
        assert got.values.shape == (len(groups),)
        assert (got.values - ref.values).abs().max() <= 1e-5

    check()


def test_nnsight_backend_gives_the_same_sweeps_as_the_bridge(gpt2_bridge, gpt2_nnsight, prompts):
    for kind, by_pos in [("resid_pre", None), ("pattern", False)]:
        a = activation_patch(gpt2_bridge, prompts, kind, logit_diff, by_pos=by_pos, progress=False)
        b = activation_patch(gpt2_nnsight, prompts, kind, logit_diff, by_pos=by_pos, progress=False)
        assert (a.values - b.values).abs().max() <= 1e-5, kind
        assert a.values.std() > 1e-3
    est_a = attribution_patch(gpt2_bridge, prompts, "resid_pre", logit_diff)
    est_b = attribution_patch(gpt2_nnsight, prompts, "resid_pre", logit_diff)
    assert (est_a.values - est_b.values).abs().max() <= 1e-5  # gradients flow through nnsight too


def test_no_hooks_remain_after_a_sweep_even_when_the_metric_fails(attn_model, prompts):
    before = hooks_on(attn_model.module)
    activation_patch(attn_model, prompts, "head_out", logit_diff, progress=False)
    with pytest.raises(MetricError):
        activation_patch(attn_model, prompts, "resid_pre", lambda logits, p: logits.sum() * float("nan"), progress=False)
    assert hooks_on(attn_model.module) == before


# =============================================================================== bad input
def test_bad_input_is_refused_before_any_forward(attn_model, prompts, monkeypatch):
    calls = []
    real = attn_model.backend.run
    monkeypatch.setattr(attn_model.backend, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    bad = [
        (dict(sites="resid_pre", batch_size=0), InputError, "batch_size"),
        (dict(sites="resid_pre", batch_size=-3), InputError, "batch_size"),
        (dict(sites=[]), InputError, "No sites"),
        (dict(sites=[[]]), InputError, "empty"),
        (dict(sites=[Site("resid_pre", 5)]), SiteError, "layer 5 is out of range"),
        (dict(sites=[Site("z", 0, head=9)]), SiteError, "head 9"),
        (dict(sites=[Site("resid_pre", 0, pos=40)]), SiteError, "position 40"),
        (dict(sites="mlp_out"), InputError, "attention-only"),
        (dict(sites="resid_pre", direction="sideways"), InputError, "direction"),
        (dict(sites="resid_pre", source="noise"), InputError, "source"),
        (dict(sites="resid_pre", layers=[7]), InputError, "out of range"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            activation_patch(attn_model, prompts, metric=logit_diff, progress=False, **kwargs)
    mismatched = make_prompts()
    mismatched.corrupted = mismatched.corrupted[:, :-1]  # broken after construction: re-checked
    with pytest.raises(InputError, match="differ in shape"):
        activation_patch(attn_model, mismatched, "resid_pre", logit_diff, progress=False)
    assert calls == []


def test_bad_metric_outputs_raise_clear_errors(attn_model, prompts):
    cases = [
        (lambda logits, p: logit_diff(logits, p).mean(), "one value per prompt"),
        (lambda logits, p: logit_diff(logits, p) * float("nan"), "non-finite"),
        (lambda logits, p: 1.0, "returned float"),
    ]
    for metric, match in cases:
        with pytest.raises(MetricError, match=match):
            activation_patch(attn_model, prompts, [Site("resid_pre", 0)], metric, progress=False)


# =============================================================================== results
def test_result_table_top_plot_and_file_round_trip(attn_model, prompts, tmp_path):
    import matplotlib.figure

    r = activation_patch(attn_model, prompts, "resid_pre", logit_diff, progress=False)
    assert r.axes == ("layer", "pos") and r.shape == (2, prompts.seq_len)
    assert r.labels["pos"][0] == "0 <bos>"  # token strings on the position axis
    df = r.to_dataframe()
    assert len(df) == r.values.numel()
    row = df[(df.layer == 1) & (df.pos == 3)].iloc[0]
    assert row.value == pytest.approx(float(r.values[1, 3]))
    top = r.top(3)
    assert len(top) == 3
    assert list(top.value.abs()) == sorted(r.values.abs().flatten().tolist(), reverse=True)[:3]
    assert float(r.values[top.layer[0], top.pos[0]]) == pytest.approx(top.value[0])

    fig = r.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    image = fig.axes[0].images[0]
    lo, hi = image.get_clim()
    assert lo == -hi and hi == pytest.approx(float(r.values.abs().max()))
    assert image.get_cmap().name == "RdBu"
    assert fig.axes[0].get_xlabel() == "pos" and fig.axes[0].get_ylabel() == "layer"
    assert len(fig.axes) == 2  # heatmap + colour bar

    r3 = activation_patch(attn_model, prompts, "z", logit_diff, by_pos=True, progress=False)
    fig3 = r3.plot()
    assert sum(1 for ax in fig3.axes if ax.images) == attn_model.n_heads

    path = r3.save(tmp_path / "r.pt")
    back = PatchResult.load(path)
    assert torch.equal(back.values, r3.values)
    assert back.axes == r3.axes and back.labels == r3.labels and back.settings == r3.settings
    import matplotlib.pyplot as plt

    plt.close("all")


# =============================================================================== attribution
@pytest.fixture(scope="module")
def no_ln_model(tok):
    return build_native({**CFG, "attn_only": True, "normalization_type": None}, tok, seed=0, name="p-noln")


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_attribution_is_exact_where_the_metric_is_linear_in_the_activation(no_ln_model, prompts, direction):
    # No final LayerNorm: logits are linear in the last residual stream and in the last attn_out.
    last = no_ln_model.n_layers - 1
    for kind in ("resid_post", "attn_out"):
        est = attribution_patch(no_ln_model, prompts, kind, logit_diff, layers=[last], direction=direction)
        exact = activation_patch(no_ln_model, prompts, kind, logit_diff, layers=[last], direction=direction, progress=False)
        assert est.axes == exact.axes == ("layer", "pos")
        assert (est.values - exact.values).abs().max() <= 1e-5, kind
        assert exact.values.std() > 1e-3
    base = logit_diff(no_ln_model(prompts.corrupted if direction == "denoise" else prompts.clean), prompts).mean()
    assert est.settings["baseline"] == pytest.approx(float(base.detach()), abs=1e-5)
    assert all(p.grad is None for p in no_ln_model.parameters())  # no gradient left on the weights


def test_attribution_is_approximate_but_correlated_through_nonlinearities(attn_model, prompts):
    est = attribution_patch(attn_model, prompts, "z", logit_diff)
    exact = activation_patch(attn_model, prompts, "z", logit_diff, progress=False)
    assert (est.values - exact.values).abs().max() > 1e-3  # LayerNorm makes it non-linear
    scores = agreement(est, exact, k=3)
    assert scores["pearson"] > 0.9 and scores["spearman"] > 0.8


def test_agreement_scores():
    a = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    assert agreement(a, a, k=2) == pytest.approx({"pearson": 1.0, "spearman": 1.0, "topk_overlap": 1.0})
    flipped = agreement(a, -a, k=2)
    assert flipped["pearson"] == pytest.approx(-1.0) and flipped["spearman"] == pytest.approx(-1.0)
    assert flipped["topk_overlap"] == 1.0  # same cells of largest |effect|
    other = torch.tensor([10.0, 3.0, 2.0, 1.0, 0.0])
    assert agreement(a, other, k=1)["topk_overlap"] == 0.0
    with pytest.raises(InputError, match="same shape"):
        agreement(a, a[:3])

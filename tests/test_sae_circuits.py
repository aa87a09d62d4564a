"""Sparse feature circuits (probes.sae.circuits, Marks et al. 2024) on tiny models: the SAE + error
decomposition is exact, attribution is gradient x difference (checked against a hand-written
gradient taken with respect to the latents and errors themselves), integrated gradients converge to
the exact effect, exact node patches match hand-made edits, faithfulness is 1 with every node and 0
with none, bad input raises and leaves nothing on the model, and the same call repeats exactly."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InputError, InterpError
from interp.models import build_native
from interp.sites import Site
from interp.tasks import PromptSet
from patching.metrics import MetricError, logit_diff
from probes import (
    SAE,
    FeatureAttribution,
    Node,
    check_top_nodes,
    circuit_faithfulness,
    clamp_features,
    collect,
    faithfulness_curve,
    feature_attribution,
    node_patch_effects,
    train_sae,
)
from probes.sae.circuits import CircuitAblation, ErrorSwap
from tests.conftest import TINY, hook_count

S0, S1 = Site("resid_post", 0), Site("mlp_out", 1)


def random_sae(d_in: int, d_sae: int, seed: int) -> SAE:
    """A ReLU SAE with random weights: a poor dictionary, so both latents and errors matter."""
    g = torch.Generator().manual_seed(seed)
    sae = SAE(d_in, d_sae, kind="relu")
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) * 0.3)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) * 0.3)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
    return sae


@pytest.fixture(scope="module")
def saes(mlp_model):
    tokens = torch.randint(1, 32, (32, 16), generator=torch.Generator().manual_seed(2))
    store = collect(mlp_model, tokens, S0, positions="all", progress=False)
    trained, _ = train_sae(store, 64, kind="topk", k=6, steps=40, batch_size=128, seed=0, progress=False)
    return {S0: trained, S1: random_sae(32, 48, seed=1)}


def make_prompts(seed: int = 0, n: int = 4, seq: int = 8) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 32, (n, seq), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(1, 32, (n, 2), generator=g)  # a different "subject"
    return PromptSet(clean, corrupted, torch.randint(1, 32, (n,), generator=g), torch.randint(1, 32, (n,), generator=g))


@pytest.fixture(scope="module")
def prompts():
    return make_prompts()


def split(sae, x):
    f = sae.encode(x)
    return f, x - sae.decode(f)


def hand_attribution(model, prompts, saes, alphas=(0.0,)):
    """Marks et al.'s formulation written out: at one site at a time, the activation is replaced by
    ``decode(f) + e`` with ``f``, ``e`` leaves on the line from the clean to the corrupted values; the
    gradient is taken with respect to them, averaged over ``alphas``, times (corrupted - clean)."""
    _, clean = model.run_with_cache(prompts.clean, list(saes))
    _, corr = model.run_with_cache(prompts.corrupted, list(saes))
    out = {}
    for site, sae in saes.items():
        f_c, e_c = (t.detach() for t in split(sae, clean[site]))
        f_x, e_x = (t.detach() for t in split(sae, corr[site]))
        gf, ge = torch.zeros_like(f_c), torch.zeros_like(e_c)
        for a in alphas:
            f = (f_c + a * (f_x - f_c)).requires_grad_(True)
            e = (e_c + a * (e_x - e_c)).requires_grad_(True)
            with torch.enable_grad(), model.edit({site: lambda act, f=f, e=e, sae=sae: sae.decode(f) + e}):
                value = logit_diff(model(prompts.clean), prompts).mean()
                g1, g2 = torch.autograd.grad(value, [f, e])
            gf, ge = gf + g1 / len(alphas), ge + g2 / len(alphas)
        out[site] = (((f_x - f_c) * gf).sum(0), ((e_x - e_c) * ge).sum((0, -1)))  # the gradient of the mean over prompts
    return out


def swap_error(sae, error):
    def edit(act):
        return sae(act) + error

    return edit


def test_sae_plus_error_at_every_site_leaves_the_logits_unchanged(mlp_model, saes, prompts):
    clean = mlp_model(prompts.clean)
    _, cache = mlp_model.run_with_cache(prompts.clean, list(saes))
    keep_all = {}
    for site, sae in saes.items():
        f, e = split(sae, cache[site])
        assert e.abs().max() > 1e-2  # the SAEs are imperfect: the error node carries something
        keep_all[site] = CircuitAblation(sae, torch.ones(8, sae.d_sae, dtype=torch.bool), torch.ones(8, dtype=torch.bool),
                                         torch.zeros(sae.d_sae), torch.zeros(32))
    with torch.no_grad(), mlp_model.edit(keep_all):
        assert (mlp_model(prompts.clean) - clean).abs().max() <= 1e-5
    # patching a node to its own value (latent through clamp_features, error through ErrorSwap) changes nothing
    f0, e0 = split(saes[S0], cache[S0])
    with torch.no_grad(), mlp_model.edit({Site("resid_post", 0, pos=3): clamp_features(saes[S0], [5], f0[:, 3, 5:6]),
                                          Site("mlp_out", 1): ErrorSwap(saes[S1], split(saes[S1], cache[S1])[1])}):
        assert (mlp_model(prompts.clean) - clean).abs().max() <= 1e-5


def test_attribution_is_gradient_times_difference(mlp_model, saes, prompts):
    attr = feature_attribution(mlp_model, prompts, saes, logit_diff, method="atp", progress=False)
    hand = hand_attribution(mlp_model, prompts, saes)
    for site in saes:
        assert attr.features[site].shape == (8, saes[site].d_sae) and attr.errors[site].shape == (8,)
        scale = hand[site][0].abs().max()
        assert (attr.features[site] - hand[site][0]).abs().max() <= 1e-5 * scale
        assert (attr.errors[site] - hand[site][1]).abs().max() <= 1e-5 * hand[site][1].abs().max()
    with torch.no_grad():
        assert attr.baseline == pytest.approx(float(logit_diff(mlp_model(prompts.clean), prompts).mean()), abs=1e-6)
        assert attr.source_value == pytest.approx(float(logit_diff(mlp_model(prompts.corrupted), prompts).mean()), abs=1e-6)
    # integrated gradients: the same, averaged over the path of each site (left Riemann sum)
    ig = feature_attribution(mlp_model, prompts, saes, logit_diff, method="ig", steps=3, batch_size=8, progress=False)
    hand_ig = hand_attribution(mlp_model, prompts, saes, alphas=(0.0, 1 / 3, 2 / 3))
    for site in saes:
        assert (ig.features[site] - hand_ig[site][0]).abs().max() <= 1e-5 * hand_ig[site][0].abs().max()
        assert (ig.errors[site] - hand_ig[site][1]).abs().max() <= 1e-5 * hand_ig[site][1].abs().max()
    one = feature_attribution(mlp_model, prompts, saes, logit_diff, method="ig", steps=1, progress=False)
    assert all(torch.allclose(one.features[s], attr.features[s], atol=1e-7) for s in saes)  # steps=1 is ATP
    # summed over positions: the per-position estimates summed
    summed = feature_attribution(mlp_model, prompts, saes, logit_diff, method="atp", by_pos=False, progress=False)
    for site in saes:
        assert torch.allclose(summed.features[site], attr.features[site].sum(0), atol=1e-6)
        assert summed.errors[site].shape == () and summed.errors[site] == pytest.approx(float(attr.errors[site].sum()), abs=1e-6)
    # denoising swaps the runs
    den = feature_attribution(mlp_model, prompts, saes, logit_diff, method="atp", direction="denoise", progress=False)
    assert den.baseline == pytest.approx(attr.source_value) and den.source_value == pytest.approx(attr.baseline)


def test_exact_when_the_metric_is_linear_in_the_nodes(tokenizer):
    """No final LayerNorm: the logit difference is linear in the last residual stream, so every node
    there has estimate == exact effect."""
    model = build_native({**TINY, "normalization_type": None, "attn_only": False, "d_mlp": 64}, tokenizer, seed=3)
    site = Site("resid_post", 1)
    saes = {site: random_sae(32, 40, seed=4)}
    prompts = make_prompts(1)
    attr = feature_attribution(model, prompts, saes, logit_diff, method="atp", progress=False)
    check = check_top_nodes(model, prompts, saes, attr, logit_diff, n=12, progress=False)
    assert any(node.is_error for node in check.nodes) and not all(node.is_error for node in check.nodes)
    assert (check.estimate - check.exact).abs().max() <= 1e-4 * check.exact.abs().max()
    assert check.agreement["pearson"] > 0.9999 and check.agreement["sign_agreement"] == 1.0


def test_integrated_gradients_converge_to_the_exact_effect(mlp_model, saes, prompts):
    """Completeness: a site's latents and error summed give the effect of patching the whole site,
    approached as the number of steps grows (plain attribution patching is further off)."""
    _, corr = mlp_model.run_with_cache(prompts.corrupted, list(saes))
    with torch.no_grad():
        base = float(logit_diff(mlp_model(prompts.clean), prompts).mean())
    errors = {}
    for steps in (1, 4, 32):
        attr = feature_attribution(mlp_model, prompts, saes, logit_diff, method="ig", steps=steps, progress=False)
        for site in saes:
            with torch.no_grad(), mlp_model.edit({site: corr[site]}):
                exact = float(logit_diff(mlp_model(prompts.clean), prompts).mean()) - base
            total = float(attr.features[site].sum() + attr.errors[site].sum())
            errors[(site, steps)] = abs(total - exact) / abs(exact)
    for site in saes:
        assert errors[(site, 32)] < errors[(site, 1)] and errors[(site, 32)] < 0.05
        assert errors[(site, 32)] <= errors[(site, 4)] + 1e-6


def test_exact_node_effects_equal_hand_made_edits(mlp_model, saes, prompts):
    attr = feature_attribution(mlp_model, prompts, saes, logit_diff, method="atp", progress=False)
    nodes = attr.top_nodes(6) + [Node(S1, None, 5), Node(S0, 3, None)]
    exact = node_patch_effects(mlp_model, prompts, saes, nodes, logit_diff, progress=False)
    _, corr = mlp_model.run_with_cache(prompts.corrupted, list(saes))
    base = logit_diff(mlp_model(prompts.clean), prompts).mean()
    for node, value in zip(nodes, exact, strict=True):
        sae = saes[node.site]
        f_x, e_x = split(sae, corr[node.site])
        if node.pos is None:  # every position at once
            site, edit = node.site, clamp_features(sae, [node.feature], f_x[..., node.feature:node.feature + 1])
        elif node.is_error:
            site = Site(node.site.kind, node.site.layer, pos=node.pos)
            edit = swap_error(sae, e_x[:, node.pos].detach())
        else:
            site = Site(node.site.kind, node.site.layer, pos=node.pos)
            edit = clamp_features(sae, [node.feature], f_x[:, node.pos, node.feature:node.feature + 1].detach())
        with torch.no_grad(), mlp_model.edit({site: edit}):
            hand = logit_diff(mlp_model(prompts.clean), prompts).mean() - base
        assert float(value) == pytest.approx(float(hand), abs=1e-6)
    check = check_top_nodes(mlp_model, prompts, saes, attr, logit_diff, n=6, progress=False)
    assert torch.allclose(check.exact, exact[:6], atol=1e-7) and check.nodes == nodes[:6]
    assert set(check.agreement) == {"pearson", "spearman", "sign_agreement", "relative_error"}
    assert len(check.to_dataframe()) == 6 and check.plot() is not None


@pytest.mark.parametrize("ablation", ["mean", "corrupted"])
def test_faithfulness_is_one_with_every_node_and_zero_with_none(mlp_model, saes, prompts, ablation):
    attr = feature_attribution(mlp_model, prompts, saes, logit_diff, method="atp", progress=False)
    total = attr.n_nodes
    assert total == 8 * (64 + 1) + 8 * (48 + 1)
    curve = faithfulness_curve(mlp_model, prompts, saes, attr, logit_diff, sizes=[0, 10, total], ablation=ablation,
                               progress=False)
    assert float(curve.faithfulness[0]) == 0.0 and float(curve.faithfulness[-1]) == pytest.approx(1.0, abs=1e-4)
    assert curve.full_metric == pytest.approx(attr.baseline, abs=1e-6)
    assert float(curve.circuit_metric[-1]) == pytest.approx(curve.full_metric, abs=1e-4)
    # the ablated model by hand: every node of both sites at its reference value
    _, cache = mlp_model.run_with_cache(prompts.clean if ablation == "mean" else prompts.corrupted, list(saes))
    edits = {}
    for site, sae in saes.items():
        f, e = (t.detach() for t in split(sae, cache[site]))
        ablated = sae.decode(f.mean(0)) + e.mean(0) if ablation == "mean" else sae.decode(f) + e
        edits[site] = ablated.expand(4, 8, 32).detach().clone()  # a tensor replaces the activation
    with torch.no_grad(), mlp_model.edit(edits):
        assert curve.empty_metric == pytest.approx(float(logit_diff(mlp_model(prompts.clean), prompts).mean()), abs=1e-5)
    assert circuit_faithfulness(mlp_model, prompts, saes, attr, logit_diff, 10, ablation=ablation) == pytest.approx(
        float(curve.faithfulness[1]), abs=1e-7)
    default = faithfulness_curve(mlp_model, prompts, saes, attr, logit_diff, ablation=ablation, progress=False)
    assert default.sizes[0] == 0 and default.sizes[-1] == total and default.plot() is not None
    summed = feature_attribution(mlp_model, prompts, saes, logit_diff, method="atp", by_pos=False, progress=False)
    ends = faithfulness_curve(mlp_model, prompts, saes, summed, logit_diff, sizes=[0, summed.n_nodes], ablation=ablation,
                              progress=False)
    assert ends.faithfulness.tolist() == pytest.approx([0.0, 1.0], abs=1e-4)


def test_results_rank_label_plot_and_save(mlp_model, saes, prompts, tmp_path):
    attr = feature_attribution(mlp_model, prompts, saes, logit_diff, method="ig", steps=2, progress=False)
    effects = attr.effects()
    assert effects.shape == (attr.n_nodes,) and isinstance(attr, FeatureAttribution)
    top = attr.top(5)
    assert list(top.columns) == ["site", "layer", "node", "feature", "pos", "token", "effect"]
    assert top["effect"].abs().tolist() == sorted(effects.abs().topk(5).values.tolist(), reverse=True)
    for i in (0, 8 * 64 - 1, 8 * 64, 8 * 65, attr.n_nodes - 1):  # node(i) and effect_of agree with the flat tensor
        assert attr.effect_of(attr.node(i)) == pytest.approx(float(effects[i]))
    assert attr.node(8 * 64) == Node(S0, None, 0) and attr.node(8 * 65) == Node(S1, 0, 0)
    assert "mlp_out 1 err @2" in Node(S1, None, 2).label() and "f3" in Node(S0, 3, 1).label()
    fig = attr.plot(n=12)
    bars = fig.axes[0].patches
    assert len(bars) == 12 and sum(bool(b.get_hatch()) for b in bars) == sum(n.is_error for n in attr.top_nodes(12))
    assert "2 sites" in repr(attr)
    back = FeatureAttribution.load(attr.save(tmp_path / "attr.pt"))
    assert back.sites == attr.sites and torch.equal(back.effects(), effects) and back.settings == attr.settings
    assert back.top_nodes(5) == attr.top_nodes(5) and back.baseline == attr.baseline


def test_bad_input_raises_and_leaves_nothing_behind(mlp_model, saes, prompts):
    hooks = hook_count(mlp_model.module)
    attr = feature_attribution(mlp_model, prompts, saes, logit_diff, method="atp", progress=False)

    def nan_metric(logits, p):
        return logit_diff(logits, p) * float("nan")

    bad = [
        (InputError, lambda: feature_attribution(mlp_model, prompts, {S0: random_sae(16, 20, 0)}, logit_diff)),  # d_in
        (InterpError, lambda: feature_attribution(mlp_model, prompts, {"blocks.7.hook_resid_post": saes[S0]}, logit_diff)),
        (InterpError, lambda: feature_attribution(mlp_model, prompts, {"resid_middle.0": saes[S0]}, logit_diff)),
        (InputError, lambda: feature_attribution(mlp_model, prompts, {Site("resid_post", 0, pos=1): saes[S0]}, logit_diff)),
        (InputError, lambda: feature_attribution(mlp_model, prompts, {}, logit_diff)),
        (InputError, lambda: feature_attribution(mlp_model, prompts, {S0: "sae"}, logit_diff)),
        (MetricError, lambda: feature_attribution(mlp_model, prompts, saes, nan_metric, method="atp")),
        (MetricError, lambda: feature_attribution(mlp_model, prompts, saes, nan_metric, method="ig", steps=2)),
        (MetricError, lambda: faithfulness_curve(mlp_model, prompts, saes, attr, nan_metric, sizes=[3])),
        (MetricError, lambda: check_top_nodes(mlp_model, prompts, saes, attr, nan_metric, n=2)),
        (InputError, lambda: feature_attribution(mlp_model, prompts, saes, logit_diff, steps=0)),
        (InputError, lambda: feature_attribution(mlp_model, prompts, saes, logit_diff, method="exact")),
        (InputError, lambda: feature_attribution(mlp_model, prompts, saes, logit_diff, direction="sideways")),
        (InputError, lambda: check_top_nodes(mlp_model, prompts, saes, attr, logit_diff, n=0)),
        (InputError, lambda: attr.top_nodes(-1)),
        (InputError, lambda: circuit_faithfulness(mlp_model, prompts, saes, attr, logit_diff, 0)),
        (InputError, lambda: faithfulness_curve(mlp_model, prompts, saes, attr, logit_diff, sizes=[attr.n_nodes + 1])),
        (InputError, lambda: faithfulness_curve(mlp_model, prompts, {S0: saes[S0]}, attr, logit_diff)),  # other sites
        (InputError, lambda: node_patch_effects(mlp_model, prompts, saes, [Node(S0, 64, 0)], logit_diff)),
        (InputError, lambda: node_patch_effects(mlp_model, prompts, saes, [Node(Site("resid_post", 1), 0, 0)], logit_diff)),
        (InputError, lambda: PromptSet(prompts.clean, prompts.corrupted[:, :6], prompts.answers, prompts.wrong)),
    ]
    for error, call in bad:
        with pytest.raises(error) as info:
            call()
        assert len(str(info.value)) > 30  # a sentence that names the problem
        assert hook_count(mlp_model.module) == hooks and not mlp_model._edits
        assert all(p.requires_grad for p in mlp_model.module.parameters())
    mismatched = make_prompts()
    object.__setattr__(mismatched, "corrupted", mismatched.corrupted[:, :6])  # built around PromptSet's own check
    with pytest.raises(InputError, match="differ in shape"):
        feature_attribution(mlp_model, mismatched, saes, logit_diff)
    with pytest.raises(InputError, match="d_in=16 but the site.s activation has width 32"):
        feature_attribution(mlp_model, prompts, {S0: random_sae(16, 20, 0)}, logit_diff, method="atp")


def test_same_call_twice_gives_the_same_numbers(mlp_model, saes, prompts):
    runs = [feature_attribution(mlp_model, prompts, saes, logit_diff, method="ig", steps=3, batch_size=8, progress=False)
            for _ in range(2)]
    assert all(torch.equal(runs[0].features[s], runs[1].features[s]) and torch.equal(runs[0].errors[s], runs[1].errors[s])
               for s in saes)
    curves = [faithfulness_curve(mlp_model, prompts, saes, runs[0], logit_diff, sizes=[5, 50], progress=False) for _ in range(2)]
    assert torch.equal(curves[0].faithfulness, curves[1].faithfulness)
    # stacking every site's path in one forward or one job per forward gives the same estimates
    apart = feature_attribution(mlp_model, prompts, saes, logit_diff, method="ig", steps=3, batch_size=4, progress=False)
    assert all(torch.allclose(apart.features[s], runs[0].features[s], atol=1e-6) for s in saes)


def test_both_backends_give_the_same_circuit(gpt2_dir):
    """A Hugging Face GPT-2 through TransformerLens and through nnsight: same estimates, same exact
    effects, same faithfulness (sites at two layers, attn_out and resid_post)."""
    import interp

    prompts = make_prompts(3)
    saes = {Site("attn_out", 0): random_sae(32, 40, seed=5), Site("resid_post", 1): random_sae(32, 40, seed=6)}
    out = []
    for backend in ("transformer_lens", "nnsight"):
        model = interp.load(gpt2_dir, backend=backend)
        attr = feature_attribution(model, prompts, saes, logit_diff, method="ig", steps=2, progress=False)
        check = check_top_nodes(model, prompts, saes, attr, logit_diff, n=4, progress=False)
        curve = faithfulness_curve(model, prompts, saes, attr, logit_diff, sizes=[20], progress=False)
        out.append((attr.effects(), check.exact, curve.faithfulness))
    assert out[0][0].abs().max() > 1e-3 and out[0][1].abs().max() > 1e-3  # something to agree on
    for a, b in zip(*out, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)

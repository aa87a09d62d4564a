"""Circuit discovery (`patching.discovery`): the graph, EAP / EAP-IG / exact edge scores, circuits,
faithfulness and ACDC, checked against a planted circuit, an independent per-edge reference loop,
path patching and attribution patching, on tiny models."""

from __future__ import annotations

import einops
import pytest
import torch

from interp.interventions import Add, Replace
from interp.models import build_native
from interp.sites import Site
from interp.tasks import PromptSet
from patching import attribution_patch, logit_diff, path_patch
from patching.discovery import (
    Circuit,
    DiscoveryError,
    EdgeScores,
    acdc,
    build_graph,
    edge_scores,
    faithfulness,
    faithfulness_curve,
    plot_faithfulness_curve,
)
from patching.metrics import MetricError
from tests.conftest import D_VOCAB, TINY, hook_count


# =============================================================================== fixtures
@pytest.fixture(scope="module")
def mlp_model(tokenizer):
    return build_native({**TINY, "attn_only": False, "d_mlp": 48}, tokenizer, seed=2, name="disc-mlp")


@pytest.fixture(scope="module")
def no_ln_model(tokenizer):
    return build_native({**TINY, "attn_only": True, "normalization_type": None}, tokenizer, seed=0, name="disc-noln")


def _prompts(n: int = 4, seq: int = 8, seed: int = 0) -> PromptSet:
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, D_VOCAB, (n, seq), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2:5] = torch.randint(1, D_VOCAB, (n, 3), generator=gen)
    answers = torch.randint(1, D_VOCAB, (n,), generator=gen)
    wrong = (answers % (D_VOCAB - 1)) + 1
    return PromptSet(clean, corrupted, answers, wrong)


@pytest.fixture(scope="module")
def prompts():
    return _prompts()


# =============================================================================== the planted circuit
D, H, DH = 20, 2, 4  # residual channels: A 0-3 (token), B 4-7 (MLP), C 8-11 (answer), D 12-15, E 16-19 (decoy)


class _Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(D, H * DH) for _ in range(3))
        self.o = torch.nn.Linear(H * DH, D, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (einops.rearrange(f(x), "b s (h e) -> b h s e", h=H) for f in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) / DH**0.5
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
        z = einops.rearrange(scores.softmax(-1) @ v, "b h s e -> b s (h e)")
        return self.o(z)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _Attention()
        self.norm = torch.nn.Identity()  # the MLP's input (resid_mid): changing it leaves the residual stream
        self.mlp_in, self.mlp_out = torch.nn.Linear(D, 8), torch.nn.Linear(8, D, bias=False)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp_out(torch.nn.functional.gelu(self.mlp_in(self.norm(x))))


class _Planted(torch.nn.Module):
    """embed writes the token into A; MLP 0 reads A, writes B; head a1.h1 reads B (values) and writes C;
    the logits read C only. A decoy: a0.h0 reads A, writes D; a1.h0 reads D, writes E (read by nothing).
    Queries and keys are zero (uniform attention); every other weight is zero."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Embedding(D_VOCAB, D)
        self.blocks = torch.nn.ModuleList(_Block() for _ in range(2))
        self.unembed = torch.nn.Linear(D, D_VOCAB, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.embed.weight[:, 0:4] = torch.randn(D_VOCAB, 4, generator=gen)
            b0, b1 = self.blocks
            b0.mlp_in.weight[:, 0:4] = torch.randn(8, 4, generator=gen)
            b0.mlp_out.weight[4:8] = torch.randn(4, 8, generator=gen)
            b1.mlp_in.bias[:] = 1.0  # MLP 1 writes a constant into D: no edge into it matters
            b1.mlp_out.weight[12:16] = torch.randn(4, 8, generator=gen)
            b0.attn.v.weight[0:4, 0:4] = torch.eye(4)  # a0.h0: values read A
            b0.attn.o.weight[12:16, 0:4] = torch.eye(4)  # ... written into D
            b1.attn.v.weight[0:4, 12:16] = torch.eye(4)  # a1.h0: values read D
            b1.attn.o.weight[16:20, 0:4] = torch.eye(4)  # ... written into E
            b1.attn.v.weight[4:8, 4:8] = torch.eye(4)  # a1.h1: values read B
            b1.attn.o.weight[8:12, 4:8] = 2 * torch.eye(4)  # ... written into C
            self.unembed.weight[:, 8:12] = torch.randn(D_VOCAB, 4, generator=gen)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(x)


def _split(n_heads):
    return dict(get=lambda raw: einops.rearrange(raw, "b p (h d) -> b p h d", h=n_heads),
                put=lambda raw, new: einops.rearrange(new, "b p h d -> b p (h d)"))


@pytest.fixture(scope="module")
def planted():
    from interp import HookedModel, SiteMap
    from interp.models import Tap

    module = _Planted().eval()
    block, attn = "blocks.{layer}", "blocks.{layer}.attn"
    taps = {
        "embed": "embed", "resid_pre": Tap(block, "input"),
        "q": Tap(f"{attn}.q", **_split(H)), "k": Tap(f"{attn}.k", **_split(H)), "v": Tap(f"{attn}.v", **_split(H)),
        "z": Tap(f"{attn}.o", "input", **_split(H)), "attn_out": attn, "resid_mid": Tap(f"{block}.norm", "input"),
        "mlp_out": f"{block}.mlp_out", "resid_post": block,
    }
    site_map = SiteMap(taps, n_layers=2, n_heads=H, d_model=D, d_head=DH, d_vocab=D_VOCAB, n_ctx=16, d_mlp=8,
                       W_O=lambda m, layer: m.blocks[layer].attn.o.weight.T.reshape(H, DH, D))
    return HookedModel.from_module(module, site_map)


PLANTED = {"input -> m0", "m0 -> a1.h1.v", "a1.h1 -> logits"}


@pytest.mark.parametrize("method", ["eap", "eap_ig", "exact"])
def test_every_method_ranks_the_planted_edges_first(planted, method):
    prompts = _prompts(n=6, seq=8, seed=1)
    scores = edge_scores(planted, prompts, logit_diff, method, progress=False)
    assert scores.settings["engine"] == "hooks"
    top = scores.top(3)
    assert set(top["edge"]) == PLANTED
    before = hook_count(planted.module)
    ranked = scores.scores.abs()[scores.order()]
    assert ranked[2] > 1e-2 and ranked[3] < 1e-4 * ranked[2]  # nothing else carries the signal (the decoy neither)
    planted(prompts.clean)
    assert hook_count(planted.module) == before == 0


def test_acdc_recovers_the_planted_circuit(planted):
    circuit = acdc(planted, _prompts(n=6, seq=8, seed=1), logit_diff, tau=1e-3, progress=False)
    assert set(circuit.edge_names) == PLANTED
    assert circuit.faithfulness(planted, _prompts(n=6, seq=8, seed=1), logit_diff) == pytest.approx(1.0, abs=1e-5)


# =============================================================================== the graph
def test_graph_counts_and_prints(mlp_model, attn_only_model):
    g = build_graph(mlp_model)
    # senders: input, 4 heads + 1 MLP per layer; receivers: 12 head inputs + 1 MLP per layer, the logits
    assert (len(g.senders), len(g.receivers)) == (11, 27)
    per_layer = [1 + 5 * layer for layer in range(2)]
    expected = sum(12 * k + (k + 4) for k in per_layer) + 11
    assert g.n_edges == expected == len(set(g.edges))
    assert "m0 -> a1.h2.k" in g.edge_names and "a0.h1 -> m0" in g.edge_names
    assert "m1 -> a1.h0.q" not in g.edge_names and "a1.h0 -> a1.h1.q" not in g.edge_names
    assert f"n_edges={expected}" in str(g) and "a1.h3" in str(g)
    # attention-only, 2 layers x 4 heads: 12 embed->L0 inputs, 12 x 5 into L1, 9 into logits
    assert build_graph(attn_only_model).n_edges == 12 + 60 + 9


# =============================================================================== exact = a reference loop
def _reference(model, prompts, edge: str) -> float:
    """The edge patched by hand with model.run / edits, one forward (two for q/k/v) per edge."""
    sender, receiver = (x.strip() for x in edge.split("->"))
    L = model.n_layers
    reads = [Site("resid_pre", 0)] + [Site("head_out", layer) for layer in range(L)]
    reads += [Site("mlp_out", layer) for layer in range(L)] if model.has_mlp else []
    with torch.no_grad():
        _, clean = model.run_with_cache(prompts.clean, reads)
        _, corr = model.run_with_cache(prompts.corrupted, reads)

        def out(cache):
            if sender == "input":
                return cache[Site("resid_pre", 0)]
            if sender.startswith("m"):
                return cache[Site("mlp_out", int(sender[1:]))]
            layer, head = (int(x) for x in sender[1:].split(".h"))
            return cache[Site("head_out", layer)][:, :, head]

        diff = out(corr) - out(clean)
        base = logit_diff(model(prompts.clean), prompts).double().mean()
        if receiver == "logits":
            edits = {Site("resid_post", L - 1): Add(diff)}
        elif receiver.startswith("m"):
            edits = {Site("resid_mid", int(receiver[1:])): Add(diff)}
        else:
            head_part, kind = receiver.rsplit(".", 1)
            layer, head = (int(x) for x in head_part[1:].split(".h"))
            _, step = model.run(prompts.clean, reads=[Site(kind, layer, head=head)], edits={Site("resid_pre", layer): Add(diff)})
            edits = {Site(kind, layer, head=head): Replace(step[Site(kind, layer, head=head)])}
        logits, _ = model.run(prompts.clean, edits=edits)
        return float(logit_diff(logits, prompts).double().mean() - base)


def test_exact_scores_equal_each_edge_patched_on_its_own(mlp_model, prompts):
    scores = edge_scores(mlp_model, prompts, logit_diff, "exact", batch_size=16, progress=False)
    assert scores.settings["engine"] == "fast"
    gen = torch.Generator().manual_seed(0)
    picked = torch.randperm(scores.graph.n_edges, generator=gen)[:24].tolist()
    names = scores.graph.edge_names
    for i in picked + [names.index("a0.h1 -> a1.h2.k"), names.index("m0 -> m1"), names.index("m1 -> logits")]:
        assert scores.scores[i] == pytest.approx(_reference(mlp_model, prompts, names[i]), abs=2e-5), names[i]
    assert scores.scores.abs().max() > 1e-2
    hooks = edge_scores(mlp_model, prompts, logit_diff, "exact", engine="hooks", progress=False)
    assert (hooks.scores - scores.scores).abs().max() < 2e-5  # the hook engine gives the same numbers


@pytest.mark.parametrize("engine", ["fast", "hooks"])
def test_exact_scores_of_chosen_edges_equal_the_full_run_and_leave_the_rest_nan(mlp_model, prompts, engine):
    full = edge_scores(mlp_model, prompts, logit_diff, "exact", engine=engine, progress=False)
    chosen = torch.randperm(full.graph.n_edges, generator=torch.Generator().manual_seed(3))[:9]
    mask = torch.zeros(full.graph.n_edges, dtype=torch.bool)
    mask[chosen] = True
    for edges in (chosen.tolist(), mask):
        part = edge_scores(mlp_model, prompts, logit_diff, "exact", engine=engine, progress=False, edges=edges)
        torch.testing.assert_close(part.scores[mask], full.scores[mask], atol=2e-6, rtol=0)
        assert part.scores[~mask].isnan().all()
    for bad, message in (([full.graph.n_edges], "must lie in"), ([], "non-empty"), (mask[:-1], "one entry per edge")):
        with pytest.raises(DiscoveryError, match=message):
            edge_scores(mlp_model, prompts, logit_diff, "exact", engine=engine, progress=False, edges=bad)
    with pytest.raises(DiscoveryError, match="method='exact' only"):
        edge_scores(mlp_model, prompts, logit_diff, "eap", engine=engine, edges=[0])


def test_head_to_head_edges_equal_path_patching_with_frozen_mlps(mlp_model, prompts):
    scores = edge_scores(mlp_model, prompts, logit_diff, "exact", progress=False)
    for sender, receiver in (((0, 1), ("k", 1, 2)), ((0, 3), ("q", 1, 0)), ((0, 0), ("v", 1, 3))):
        res = path_patch(mlp_model, prompts, [Site("z", *sender)], [Site(receiver[0], receiver[1], head=receiver[2])],
                         logit_diff, freeze_mlps=True, progress=False)
        name = f"a{sender[0]}.h{sender[1]} -> a{receiver[1]}.h{receiver[2]}.{receiver[0]}"
        expected = float(res.values[0]) - res.settings["baseline"]
        assert scores.scores[scores.graph.index(name)] == pytest.approx(expected, abs=2e-5), name


# =============================================================================== EAP = attribution
def test_eap_sums_to_attribution_patching_of_each_sender(mlp_model, prompts):
    scores = edge_scores(mlp_model, prompts, logit_diff, "eap", progress=False)
    g = scores.graph
    sites = [Site("resid_pre", 0)] + [Site("z", s.layer, head=s.head) if s.kind == "head" else Site("mlp_out", s.layer)
                                      for s in g.senders[1:]]
    est = attribution_patch(mlp_model, prompts, sites, logit_diff, direction="noise")
    per_sender = torch.zeros(len(g.senders), dtype=torch.float64)
    for (u, _), value in zip(g.edges, scores.scores, strict=True):
        per_sender[u] += value
    expected = est.values - est.settings["baseline"]
    assert (per_sender - expected).abs().max() < 1e-4 * max(1.0, float(expected.abs().max()))
    hooks = edge_scores(mlp_model, prompts, logit_diff, "eap", engine="hooks", progress=False)
    assert (hooks.scores - scores.scores).abs().max() < 1e-5


def test_eap_is_exact_where_the_metric_is_linear(no_ln_model, prompts):
    # No layer norm, attention only: the logits are linear in their input, and so are they in the
    # last layer's values (the pattern does not depend on them); earlier values feed later queries and keys.
    eap = edge_scores(no_ln_model, prompts, logit_diff, "eap", progress=False)
    exact = edge_scores(no_ln_model, prompts, logit_diff, "exact", progress=False)
    last = no_ln_model.n_layers - 1
    receivers = [eap.graph.receivers[v] for _, v in eap.graph.edges]
    linear = torch.tensor([r.kind == "logits" or (r.kind == "v" and r.layer == last) for r in receivers])
    assert (eap.scores[linear] - exact.scores[linear]).abs().max() < 1e-6
    assert exact.scores[linear].abs().max() > 1e-3
    assert (eap.scores[~linear] - exact.scores[~linear]).abs().max() > 1e-6  # queries and keys go through softmax


def test_eap_ig_with_one_step_is_eap_and_more_steps_move_towards_exact(mlp_model, prompts):
    eap = edge_scores(mlp_model, prompts, logit_diff, "eap", progress=False)
    one = edge_scores(mlp_model, prompts, logit_diff, "eap_ig", steps=1, progress=False)
    assert (eap.scores - one.scores).abs().max() < 1e-6  # alpha = 1 is the clean run
    ig = edge_scores(mlp_model, prompts, logit_diff, "eap_ig", steps=5, progress=False)
    assert ig.settings["steps"] == 5 and (ig.scores - eap.scores).abs().max() > 1e-4


@pytest.fixture(scope="module")
def rms_rope_model(tokenizer):
    cfg = {**TINY, "attn_only": False, "d_mlp": 48, "normalization_type": "RMS", "positional_embedding_type": "rotary"}
    return build_native(cfg, tokenizer, seed=3, name="disc-rms-rope")


def _two_positions(logits, prompts):
    """A metric that reads two positions (so the direct engine computes full logits)."""
    return logit_diff(logits, prompts) + 0.5 * (logits[:, -2, 1] - logits[:, -2, 2])


@pytest.mark.parametrize("metric", [logit_diff, _two_positions])
def test_direct_engine_equals_the_hook_engine_with_rms_norm_rotary_and_any_metric(rms_rope_model, metric):
    # the direct engine (RMSNorm closed form, rotary queries and keys, full logits for a metric that
    # reads two positions) against the hook engine, on prompts that differ from position 0 on (no shared
    # prefix; prompts with one: tests/test_anatomy.py, on every architecture)
    for prompts in (_first_token_corrupted(),):
        for method in ("eap", "eap_ig", "exact"):
            fast = edge_scores(rms_rope_model, prompts, metric, method, steps=3, progress=False)
            hooks = edge_scores(rms_rope_model, prompts, metric, method, steps=3, engine="hooks", progress=False)
            assert fast.settings["engine"] == "fast" and hooks.settings["engine"] == "hooks"
            assert (fast.scores - hooks.scores).abs().max() < 2e-5, method
            assert fast.settings["clean_value"] == pytest.approx(hooks.settings["clean_value"], abs=1e-5)
            assert fast.settings["corrupted_value"] == pytest.approx(hooks.settings["corrupted_value"], abs=1e-5)
        assert fast.scores.abs().max() > 1e-3
    # circuits on the whole-graph engine, with and without a shared prefix (p0 = 2: its keys, values and,
    # for the metric reading two positions, its logits are computed once), against the hook engine
    for prompts in (_first_token_corrupted(), _prompts(n=3, seq=6, seed=5)):
        ranked = edge_scores(rms_rope_model, prompts, metric, "eap", progress=False)
        circuits = [ranked.circuit(k=k) for k in (5, 40, ranked.graph.n_edges - 30)]
        fast = faithfulness(rms_rope_model, prompts, metric, circuits)
        hooks = faithfulness(rms_rope_model, prompts, metric, circuits, engine="hooks")
        assert (fast - hooks).abs().max() < 1e-4 and fast.abs().max() > 0.05


def _first_token_corrupted() -> PromptSet:
    p = _prompts(n=3, seq=6, seed=5)
    corrupted = p.clean.clone()
    corrupted[:, 0] = (p.clean[:, 0] % (D_VOCAB - 1)) + 1
    return PromptSet(p.clean, corrupted, p.answers, p.wrong)


def test_norm_contractions_equal_autograd_on_every_route():
    # _NormDot's routes (one difference through the projections, forward mode, backward mode, and the
    # autograd fallback for a norm module it does not know) against the Jacobian taken by autograd
    from patching.anatomy import norm_spec
    from patching.discovery import _NormDot

    gen = torch.Generator().manual_seed(0)
    n, s, d, R, dh = 3, 4, 8, 6, 2
    norm = torch.nn.LayerNorm(d)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d, generator=gen))

    class Wrapped(torch.nn.Module):  # an unknown norm type: the autograd route
        def forward(self, x):
            return norm(x)

    def jvp(x, v):
        with torch.no_grad():
            return torch.func.jvp(norm, (x,), (v,))[1]

    W = torch.randn(R, dh, d, generator=gen)
    for U, C in ((1, 1), (2, 1), (9, 1), (13, 1), (2, 3)):
        x = torch.randn(C * n, s, d, generator=gen)
        diffs = torch.randn(U, n, s, d, generator=gen)
        grads = torch.randn(C * n, s, R, dh, generator=gen)  # at q / k / v of R heads
        at_norm = torch.randn(C * n, s, d, generator=gen)  # at the norm's output itself (an MLP's input)
        expected = torch.zeros(U, R, dtype=torch.float64)
        expected_mlp = torch.zeros(U, dtype=torch.float64)
        for u in range(U):
            for c in range(C):
                rows = slice(c * n, (c + 1) * n)
                jd = jvp(x[rows], diffs[u])  # [n s d]
                expected[u] += torch.einsum("nsd,red,nsre->r", jd, W, grads[rows]).double()
                expected_mlp[u] += float((jd * at_norm[rows]).sum())
        for module in (norm, Wrapped()):
            got = _NormDot(norm_spec(module), norm)(x, diffs, C, grads, W)
            assert (got - expected).abs().max() < 1e-4 * expected.abs().max(), (U, C, type(module).__name__)
            got = _NormDot(norm_spec(module), norm)(x, diffs, C, at_norm)[:, 0]
            assert (got - expected_mlp).abs().max() < 1e-4 * expected_mlp.abs().max(), (U, C, type(module).__name__)


# =============================================================================== circuits
def test_faithfulness_is_one_for_the_full_graph_and_zero_for_the_empty_circuit(mlp_model, prompts):
    scores = edge_scores(mlp_model, prompts, logit_diff, "eap", progress=False)
    n = scores.graph.n_edges
    full, empty = scores.circuit(k=n), scores.circuit(k=0)
    values = faithfulness(mlp_model, prompts, logit_diff, [full, empty, full.edges])
    assert values.tolist() == [1.0, 0.0, 1.0]
    # every edge patched is the corrupted run (up to float rounding), none patched the clean run
    from patching.discovery import _setup

    s = _setup(mlp_model, prompts, logit_diff, "auto")
    ends = s.run(torch.stack([torch.ones(n), torch.zeros(n)]))
    assert ends.tolist() == pytest.approx([s.corrupted_value, s.clean_value], abs=1e-5)
    # ... and those ends are the model's own clean and corrupted runs
    clean = logit_diff(mlp_model(prompts.clean), prompts).detach().double().mean()
    corrupted = logit_diff(mlp_model(prompts.corrupted), prompts).detach().double().mean()
    assert scores.settings["clean_value"] == pytest.approx(float(clean), abs=1e-5)
    assert scores.settings["corrupted_value"] == pytest.approx(float(corrupted), abs=1e-5)
    top = scores.circuit(k=n // 4)
    assert top.n_edges == n // 4 and 0.0 < abs(top.faithfulness(mlp_model, prompts, logit_diff)) < 10
    kept = scores.circuit(threshold=float(scores.scores.abs().median()))
    assert kept.n_edges >= n // 2


def test_acdc_with_tau_zero_keeps_everything_that_matters(mlp_model, prompts):
    circuit = acdc(mlp_model, prompts, logit_diff, tau=0.0, progress=False)
    assert circuit.faithfulness(mlp_model, prompts, logit_diff) >= 1.0 - 1e-9
    loose = acdc(mlp_model, prompts, logit_diff, tau=0.05, progress=False)
    assert loose.n_edges < circuit.n_edges
    assert loose.faithfulness(mlp_model, prompts, logit_diff) > 0.5


def test_faithfulness_curve_and_figures(mlp_model, prompts):
    import matplotlib

    methods = [edge_scores(mlp_model, prompts, logit_diff, m, progress=False) for m in ("eap", "exact")]
    curve = faithfulness_curve(mlp_model, prompts, logit_diff, methods, ks=[0, 10, methods[0].graph.n_edges])
    assert list(curve.columns) == ["method", "k", "fraction", "faithfulness"]
    assert curve.groupby("method")["faithfulness"].first().tolist() == [0.0, 0.0]
    assert curve.groupby("method")["faithfulness"].last().tolist() == [1.0, 1.0]
    fig = plot_faithfulness_curve(curve)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes[0].lines) == 4  # 2 methods + 2 guides
    circuit = methods[1].circuit(k=8)
    fig = circuit.draw()
    assert len(fig.axes[0].patches) + len(fig.axes[0].texts) >= 8
    df = methods[1].to_dataframe()
    assert len(df) == methods[1].graph.n_edges and set(df["input"]) == {"q", "k", "v", "resid"}
    assert "eap" in repr(methods[0]) and "8 of" in repr(circuit)


# =============================================================================== bad inputs
def test_bad_inputs_are_clear_errors_and_leave_no_hook(mlp_model, prompts):
    scores = edge_scores(mlp_model, prompts, logit_diff, "eap", progress=False)
    edge_scores(mlp_model, prompts, logit_diff, "eap", engine="hooks", progress=False)
    hooks = hook_count(mlp_model.module)  # the bridge's own capture hooks, wired at its first forward
    n = scores.graph.n_edges
    with pytest.raises(DiscoveryError, match="'eap2'"):
        edge_scores(mlp_model, prompts, logit_diff, "eap2")
    with pytest.raises(DiscoveryError, match="-0.1"):
        acdc(mlp_model, prompts, logit_diff, tau=-0.1)
    with pytest.raises(DiscoveryError, match="nan"):
        acdc(mlp_model, prompts, logit_diff, tau=float("nan"))
    with pytest.raises(DiscoveryError, match=f"k must be an int from 0 to {n} .*got {n + 1}"):
        scores.circuit(k=n + 1)
    with pytest.raises(DiscoveryError, match="got 0"):
        scores.top(0)
    with pytest.raises(DiscoveryError, match="steps"):
        edge_scores(mlp_model, prompts, logit_diff, "eap_ig", steps=0)
    with pytest.raises(DiscoveryError, match="engine"):
        edge_scores(mlp_model, prompts, logit_diff, "eap", engine="turbo")
    with pytest.raises(DiscoveryError, match="exactly one"):
        scores.circuit(k=3, threshold=0.1)
    with pytest.raises(DiscoveryError, match=r"shape \(" + str(n)):
        faithfulness(mlp_model, prompts, logit_diff, [torch.ones(3, dtype=torch.bool)])

    def nan_metric(logits, p):
        return logit_diff(logits, p) * float("nan")

    for method in ("eap", "exact"):
        for engine in ("auto", "hooks"):
            with pytest.raises(MetricError, match="nan"):
                edge_scores(mlp_model, prompts, nan_metric, method, engine=engine, progress=False)
    assert hook_count(mlp_model.module) == hooks and all(p.grad is None for p in mlp_model.parameters())
    assert isinstance(scores, EdgeScores) and isinstance(scores.circuit(k=1), Circuit)

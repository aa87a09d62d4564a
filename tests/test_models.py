import pytest
import torch

import interp
from interp import Add, InputError, LoadError, Replace, Scale, Site, SiteError
from interp.sites import KINDS
from tests.conftest import hook_count


def all_sites(model):
    return [Site(k) if k == "embed" else Site(k, layer) for k in model.supported_kinds for layer in range(model.n_layers) if not (k == "embed" and layer)]


SHAPES = {
    "embed": ("b", "p", "m"), "resid_pre": ("b", "p", "m"), "resid_mid": ("b", "p", "m"),
    "resid_post": ("b", "p", "m"), "attn_out": ("b", "p", "m"), "mlp_out": ("b", "p", "m"),
    "z": ("b", "p", "h", "d"), "q": ("b", "p", "h", "d"), "k": ("b", "p", "h", "d"), "v": ("b", "p", "h", "d"),
    "head_out": ("b", "p", "h", "m"), "pattern": ("b", "h", "p", "p"), "mlp_post": ("b", "p", "f"),
}


def test_run_with_cache_returns_exactly_the_requested_sites_with_documented_shapes(mlp_model, tokens):
    model = mlp_model
    assert set(model.supported_kinds) == set(KINDS)
    sites = all_sites(model) + [Site("z", 1, head=2), Site("resid_post", 0, pos=-1), Site("pattern", 1, head=0, pos=3)]
    logits, cache = model.run_with_cache(tokens, sites)
    assert set(cache) == set(sites)
    sizes = dict(b=3, p=12, m=model.d_model, h=model.n_heads, d=model.d_head, f=model.d_mlp)
    for site in all_sites(model):
        assert tuple(cache[site].shape) == tuple(sizes[a] for a in SHAPES[site.kind]), site
    assert cache[Site("z", 1, head=2)].shape == (3, 12, model.d_head)
    assert cache[Site("resid_post", 0, pos=-1)].shape == (3, model.d_model)
    assert cache[Site("pattern", 1, head=0, pos=3)].shape == (3, 12)
    assert logits.shape == (3, 12, model.d_vocab)
    assert torch.equal(cache["blocks.0.hook_resid_pre"], cache[Site("resid_pre", 0)])
    with pytest.raises(SiteError, match="was not cached"):
        cache[Site("resid_pre", 1, pos=2)]


def test_run_with_cache_equals_transformer_lens(mlp_model, tokens):
    model = mlp_model
    sites = [s for s in all_sites(model) if s.kind != "head_out"]
    logits, cache = model.run_with_cache(tokens, sites)
    tl_logits, tl_cache = model.module.run_with_cache(tokens)
    assert torch.equal(logits, tl_logits)
    for site in sites:
        assert torch.equal(cache[site], tl_cache[site.hook_name]), site
    # head_out is each head's write: summing heads and adding b_O gives attn_out.
    _, c = model.run_with_cache(tokens, [Site("head_out", 1), Site("attn_out", 1)])
    b_O = model.module.blocks[1].attn.b_O
    torch.testing.assert_close(c[Site("head_out", 1)].sum(2) + b_O, c[Site("attn_out", 1)], atol=1e-5, rtol=0)


def test_backends_agree_on_every_site_kind(gpt2_dir, tokens):
    tl = interp.load(gpt2_dir, backend="transformer_lens")
    nn = interp.load(gpt2_dir, backend="nnsight")
    assert tl.backend_name == "transformer_lens" and nn.backend_name == "nnsight"
    assert set(tl.supported_kinds) == set(nn.supported_kinds) == set(KINDS)
    for attr in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx", "d_mlp"):
        assert getattr(tl, attr) == getattr(nn, attr), attr
    sites = all_sites(tl)
    la, ca = tl.run_with_cache(tokens, sites)
    lb, cb = nn.run_with_cache(tokens, sites)
    assert (la - lb).abs().max() <= 1e-5
    for site in sites:
        assert (ca[site] - cb[site]).abs().max() <= 1e-5, site


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_backends_agree_on_edits(gpt2_dir, tokens, backend):
    ref = interp.load(gpt2_dir, backend="transformer_lens")
    model = interp.load(gpt2_dir, backend=backend)
    uniform = lambda p: torch.ones_like(p) / p.shape[-1]  # noqa: E731
    edits = {Site("pattern", 1, head=2): uniform, Site("mlp_post", 0, pos=3): Scale(0.0), Site("q", 0, head=1): Add(torch.ones(8))}
    with ref.edit(edits):
        expected = ref(tokens)
    with model.edit(edits):
        got = model(tokens)
    assert (expected - ref(tokens)).abs().max() > 1e-3  # the edits do something
    assert (expected - got).abs().max() <= 1e-5


@pytest.mark.parametrize("fixture", ["attn_only_model", "gpt2_nnsight"])
def test_edit_removes_every_hook_on_exit_and_on_error(request, fixture, gpt2_dir, tokens):
    model = interp.load(gpt2_dir, backend="nnsight") if fixture == "gpt2_nnsight" else request.getfixturevalue(fixture)
    clean = model(tokens)
    before_hooks = hook_count(model.module)  # the backend's own steady state (TL wires capture hooks once)
    with model.edit({Site("resid_pre", 1): Scale(0.0), "blocks.0.attn.hook_z": lambda z: z * 2}):
        edited = model(tokens)
    assert (edited - clean).abs().max() > 1e-3
    assert torch.equal(model(tokens), clean) and hook_count(model.module) == before_hooks

    def explode(act):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), model.edit({Site("resid_post", 0): explode}):
        model(tokens)
    assert torch.equal(model(tokens), clean) and hook_count(model.module) == before_hooks
    with pytest.raises(KeyboardInterrupt), model.edit({Site("resid_post", 0): Scale(0.0)}):
        raise KeyboardInterrupt
    assert torch.equal(model(tokens), clean) and model._edits == []


def test_interventions_do_what_they_say(attn_only_model, tokens):
    model = attn_only_model
    site = Site("resid_pre", 1, pos=4)
    _, cache = model.run_with_cache(tokens, [site])
    value = torch.randn(model.d_model)
    checks = {
        "replace": (Replace(value), lambda a: value.expand_as(a)),
        "tensor": (value, lambda a: value.expand_as(a)),
        "add": (Add(value), lambda a: a + value),
        "scale": (Scale(0.5), lambda a: a * 0.5),
        "number": (0.0, lambda a: a * 0.0),
        "function": (lambda a: -a, lambda a: -a),
    }
    for name, (iv, expected) in checks.items():
        _, edited = model.run(tokens, reads=[site, Site("resid_pre", 1, pos=3)], edits={site: iv})
        torch.testing.assert_close(edited[site], expected(cache[site]), msg=name)
    # other positions untouched
    _, c2 = model.run_with_cache(tokens, [Site("resid_pre", 1, pos=3)])
    assert torch.equal(edited[Site("resid_pre", 1, pos=3)], c2[Site("resid_pre", 1, pos=3)])


def test_head_out_edit_equals_z_edit(attn_only_model, tokens):
    model = attn_only_model
    with model.edit({Site("head_out", 1, head=3): 0.0}):
        a = model(tokens)
    with model.edit({Site("z", 1, head=3): 0.0}):
        b = model(tokens)
    assert (a - b).abs().max() <= 1e-5 and (a - model(tokens)).abs().max() > 1e-3


def test_edits_nest_and_unwind(attn_only_model, tokens):
    model = attn_only_model
    clean = model(tokens)
    with model.edit({Site("resid_post", 0): Scale(0.5)}):
        outer = model(tokens)
        with model.edit({Site("resid_post", 1): Scale(0.5)}):
            inner = model(tokens)
        assert torch.equal(model(tokens), outer)
    assert not torch.equal(outer, inner) and torch.equal(model(tokens), clean)


def test_frozen_freezes_parameters_and_restores_each_one_also_on_error(attn_only_model, tokens):
    model = attn_only_model
    params = list(model.module.parameters())
    for p in params:
        p.grad = None
    params[0].requires_grad_(False)  # frozen by the user before: stays frozen after the block
    try:
        with pytest.raises(RuntimeError, match="inside"), model.frozen():
            assert not any(p.requires_grad for p in params)
            raise RuntimeError("inside")
        assert not params[0].requires_grad and all(p.requires_grad for p in params[1:])
        with model.frozen():
            probe = torch.zeros(1, requires_grad=True)
            (model(tokens).sum() * probe).backward()  # the gradient reaches the probe, no parameter
        assert probe.grad is not None and all(p.grad is None for p in params)
    finally:
        params[0].requires_grad_(True)


def test_to_tokens_and_str_tokens(attn_only_model):
    toks = attn_only_model.to_tokens(["t1 t2 t3", "t4"])
    assert toks.tolist() == [[0, 1, 2, 3], [0, 4, 0, 0]]
    assert attn_only_model.to_str_tokens(toks[0]) == ["<bos>", "t1", "t2", "t3"]
    assert attn_only_model.to_str_tokens("t5 t6") == ["<bos>", "t5", "t6"]


BAD_TOKENS = [
    (torch.rand(2, 5), "must be integers"),
    (torch.zeros(2, 3, 4, dtype=torch.long), "rank 2"),
    (torch.full((1, 5), 99), r"must lie in \[0, 32\)"),
    (torch.zeros(1, 40, dtype=torch.long), "exceed this model's context of 32"),
    ([1, 2, 3], "Expected token ids"),
]


@pytest.mark.parametrize("bad, message", BAD_TOKENS)
def test_bad_tokens_get_clear_errors(attn_only_model, bad, message):
    with pytest.raises(InputError, match=message):
        attn_only_model(bad)


def test_bad_sites_in_edit_and_cache_change_nothing(attn_only_model, tokens):
    model = attn_only_model
    clean = model(tokens)
    baseline = hook_count(model.module)
    for bad, message in [("blocks.9.hook_resid_pre", "layer 9 is out of range"), ("blocks.0.hook_mlp_out", "attention-only"), ("blocks.0.hook_resid_pr", "Did you mean")]:
        with pytest.raises(SiteError, match=message), model.edit({bad: Scale(0.0)}):
            pass
        with pytest.raises(SiteError, match=message):
            model.run_with_cache(tokens, [bad])
    with pytest.raises(SiteError, match="position 20 is out of range"):
        model.run_with_cache(tokens, [Site("resid_pre", 0, pos=20)])
    with pytest.raises(InputError, match="does not broadcast"):
        model.run(tokens, edits={Site("resid_pre", 0): torch.zeros(5)})
    assert torch.equal(model(tokens), clean) and model._edits == [] and hook_count(model.module) == baseline


def test_load_errors(tmp_path):
    with pytest.raises(LoadError, match="Unknown backend 'jax'"):
        interp.load("induction-2l", backend="jax")
    with pytest.raises(LoadError, match="neither a shipped model"):
        interp.load(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(LoadError, match="is not a model directory"):
        interp.load(tmp_path)


def test_generic_module_through_nnsight(tokens):
    from interp import HookedModel, SiteMap

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 8)

        def forward(self, h):
            return h + torch.tanh(self.linear(h))

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(32, 8)
            self.layers = torch.nn.ModuleList(Block() for _ in range(2))
            self.out = torch.nn.Linear(8, 32)

        def forward(self, x):
            h = self.embed(x)
            for layer in self.layers:
                h = layer(h)
            return self.out(h)

    torch.manual_seed(0)
    toy = Toy().eval()
    model = HookedModel.from_module(toy, SiteMap(taps={"embed": "embed", "resid_post": "layers.{layer}"}, n_layers=2, n_heads=1, d_model=8, d_head=8, d_vocab=32, n_ctx=64))
    assert model.supported_kinds == ("embed", "resid_post")
    logits, cache = model.run_with_cache(tokens, [Site("embed"), Site("resid_post", 1)])
    assert torch.equal(logits, toy(tokens))
    assert torch.equal(cache[Site("embed")], toy.embed(tokens))
    with pytest.raises(SiteError, match="does not expose 'z'"):
        model.run_with_cache(tokens, [Site("z", 0)])
    with model.edit({Site("resid_post", 1): Scale(0.0)}):  # the last residual state zeroed
        edited = model(tokens)
    torch.testing.assert_close(edited, toy.out(torch.zeros(3, 12, 8)).expand_as(edited))
    with pytest.raises(LoadError, match="site_map"):
        HookedModel.from_module(toy)


def _live_tensors() -> int:
    import gc

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_memory_stays_flat_across_repeated_edits_and_caches(gpt2_dir, tokens, backend):
    model = interp.load(gpt2_dir, backend=backend)
    site = Site("resid_pre", 1, pos=2)

    def once():
        _, cache = model.run_with_cache(tokens, [site, Site("pattern", 0)])
        with model.edit({site: cache[site] * 0.5, Site("z", 0, head=1): Scale(0.0)}):
            model(tokens)

    for _ in range(3):  # warm-up: lazily built state of the backends
        once()
    before = _live_tensors()
    for _ in range(15):
        once()
    assert _live_tensors() - before <= 2

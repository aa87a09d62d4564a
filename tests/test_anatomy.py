"""The model anatomy (`patching.anatomy`) and the methods on it, shared over every adapter: the
anatomy's own forward equals the model's; circuit discovery's fast engines (EAP, EAP-IG, exact edge
scores, faithfulness, ACDC) equal the hook engine on every family; a parallel-residual block (which
the hook engine cannot run) agrees between the direct engine, the whole-graph engine and autograd;
and the method modules of `patching` import each other one way, with no private name crossing.

A new architecture's adapter joins by adding its builder to ``FAMILIES`` below (and to
``tests/test_patching_fast_hf.py``'s builder for the patching sweeps): no method changes."""

from __future__ import annotations

import ast
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import interp
from interp.interventions import Scale
from interp.models import build_native
from interp.sites import Site
from patching import anatomy, logit_diff
from patching.discovery import (
    DiscoveryError,
    _gradient,
    _setup,
    acdc,
    build_graph,
    edge_scores,
    faithfulness,
)
from tests.conftest import TINY
from tests.test_patching_fast_hf import _build
from tests.test_patching_speed_paths import every_position, make_prompts

#: family -> backends it is checked on (the Hugging Face builders are `tests.test_patching_fast_hf._build`)
FAMILIES = {
    "native-gqa": ("transformer_lens",),
    "gpt2": ("transformer_lens", "nnsight"),
    "neox-sequential": ("transformer_lens",),
    "neox-parallel": ("transformer_lens",),
    "llama-gqa": ("transformer_lens", "nnsight"),
    "qwen2": ("transformer_lens",),
    "gemma": ("transformer_lens", "nnsight"),
    "phi3": ("nnsight",),
}
CASES = [(family, backend) for family, backends in FAMILIES.items() for backend in backends]


@pytest.fixture(scope="module")
def model_of(tmp_path_factory, tokenizer):
    """(family, backend) -> a tiny random model of that family (seeded), built once per module."""
    dirs, models = {}, {}

    def get(family: str, backend: str):
        if (family, backend) in models:
            return models[(family, backend)]
        if family == "native-gqa":  # RMSNorm, rotary, gated MLP, 2 key/value heads for 4 query heads
            cfg = {**TINY, "attn_only": False, "d_mlp": 48, "normalization_type": "RMS", "gated_mlp": True,
                   "positional_embedding_type": "rotary", "n_key_value_heads": 2}
            model = build_native(cfg, tokenizer, seed=4, name="anatomy-gqa")
        else:
            if family not in dirs:
                torch.manual_seed(0)
                dirs[family] = path = tmp_path_factory.mktemp(family)
                _build(family).eval().save_pretrained(path)
                tokenizer.save_pretrained(path)
            model = interp.load(dirs[family], backend=backend)
        models[(family, backend)] = model
        return model

    return get


# =============================================================================== the anatomy itself
@pytest.mark.parametrize(("family", "backend"), CASES)
def test_anatomy_forward_and_weights_equal_the_model(model_of, family, backend):
    model = model_of(family, backend)
    assert anatomy.unsupported(model) is None
    net = anatomy.of(model)
    tokens = make_prompts(n=2, seq=7, seed=1).clean
    with torch.no_grad():
        x = net.embed(tokens)
        for layer in range(net.n_layers):
            x = net.block(layer, x, 0, None, lambda kind, layer, act: act)
        torch.testing.assert_close(net.unembed(x), model.forward(tokens), atol=1e-5, rtol=1e-5)
        # the forward's q, k, v (net.qkv) and qkv_weights as one linear map (what discovery projects with)
        # are the queries, keys and values the model's own hooks see, in that order
        W, b = net.qkv_weights(0)
        assert W.shape == (net.n_heads + 2 * net.n_kv_heads, net.d_head, net.d_model)
        _, cache = model.run_with_cache(tokens, [Site(kind, 0) for kind in ("resid_pre", "q", "k", "v")])
        h = net.layers[0]["ln1"](cache[Site("resid_pre", 0)]).flatten(0, 1)
        mapped = torch.einsum("td,red->tre", h, W) + (0 if b is None else b)
        for got, rows, kind in zip(net.qkv(0, h), mapped.split([net.n_heads, net.n_kv_heads, net.n_kv_heads], 1), "qkv", strict=True):
            torch.testing.assert_close(got, cache[Site(kind, 0)].flatten(0, 1), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(rows, cache[Site(kind, 0)].flatten(0, 1), atol=1e-5, rtol=1e-5)
        index = torch.tensor([1, 4])
        torch.testing.assert_close(net.qkv(0, h, index)[0], cache[Site("q", 0)].flatten(0, 1)[index], atol=1e-5, rtol=1e-5)
    assert anatomy.norm_spec(net.layers[0]["norm1"]) is not None  # every family's norm has a closed form


def test_an_active_edit_block_has_no_anatomy_and_discovery_falls_back_to_hooks(model_of):
    model = model_of("llama-gqa", "transformer_lens")
    prompts = make_prompts(n=2, seq=6, seed=5, same_until=1)
    with model.edit({Site("z", 0, head=0): Scale(0.0)}):
        assert "model.edit" in anatomy.unsupported(model)
        assert edge_scores(model, prompts, logit_diff, "eap", progress=False).settings["engine"] == "hooks"
        with pytest.raises(DiscoveryError, match="model.edit"):
            edge_scores(model, prompts, logit_diff, "eap", engine="fast", progress=False)
    assert anatomy.unsupported(model) is None


# =============================================================================== discovery on every family
#: discovery on nnsight once (llama-gqa): its anatomy is the same adapter, checked on every family above
DISCOVERY_CASES = [c for c in CASES if c[0] != "neox-parallel" and (c[1] == "transformer_lens" or c[0] == "llama-gqa")]


@pytest.mark.parametrize(("family", "backend"), DISCOVERY_CASES)
def test_discovery_fast_engine_equals_the_hook_engine(model_of, family, backend):
    model = model_of(family, backend)
    prompts = make_prompts(n=3, seq=7, seed=2, same_until=2)
    metrics = (logit_diff, every_position) if family == "llama-gqa" and backend == "transformer_lens" else (logit_diff,)
    for metric in metrics:
        for method in ("eap", "eap_ig", "exact"):
            fast = edge_scores(model, prompts, metric, method, steps=3, progress=False)
            hooks = edge_scores(model, prompts, metric, method, steps=3, engine="hooks", progress=False)
            assert fast.settings["engine"] == "fast" and hooks.settings["engine"] == "hooks"
            scale = float(hooks.scores.abs().max())
            assert scale > 1e-3
            assert float((fast.scores - hooks.scores).abs().max()) < 2e-5 * max(1.0, scale), (method, metric.__name__)
            assert fast.settings["clean_value"] == pytest.approx(hooks.settings["clean_value"], abs=1e-5)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "neox-parallel"])  # (no hook site at a parallel MLP's input)
def test_circuits_on_the_anatomy_equal_the_hook_engine(model_of, family):
    model = model_of(family, "transformer_lens")
    prompts = make_prompts(n=3, seq=7, seed=3, same_until=1)
    g = build_graph(model)
    # circuits keeping a half, a tenth (most senders patched: the engine sums over the kept ones) and
    # nine tenths of the edges
    masks = [torch.rand(g.n_edges, generator=torch.Generator().manual_seed(i)) < keep for i, keep in enumerate((0.5, 0.5, 0.1, 0.9))]
    fast = faithfulness(model, prompts, logit_diff, masks)
    hooks = faithfulness(model, prompts, logit_diff, masks, engine="hooks")
    torch.testing.assert_close(fast, hooks, atol=1e-4, rtol=1e-4)
    if family == "gpt2":  # ACDC on the anatomy; the circuit it returns has the same faithfulness on hooks
        circuit = acdc(model, prompts, logit_diff, tau=0.05, progress=False)
        assert 0 < circuit.n_edges < g.n_edges
        assert circuit.faithfulness(model, prompts, logit_diff) == pytest.approx(
            circuit.faithfulness(model, prompts, logit_diff, engine="hooks"), abs=1e-4)
        assert circuit.value == pytest.approx(circuit.faithfulness(model, prompts, logit_diff), abs=1e-5)  # as reported
        # the speculative batches give the one-at-a-time algorithm's circuit and drops
        single = acdc(model, prompts, logit_diff, tau=0.05, progress=False, batch_size=1)
        assert torch.equal(single.edges, circuit.edges)
        torch.testing.assert_close(single.scores, circuit.scores, atol=1e-5, rtol=1e-5)


def test_parallel_residual_blocks_agree_across_the_fast_engines(model_of):
    """GPT-NeoX with ``use_parallel_residual``: the MLP reads the layer's input, so it receives no edge
    from its own layer's heads; the hook engine has no site there, so the direct engine (EAP, exact)
    is checked against the whole-graph engine (each edge patched on its own) and autograd through it."""
    model = model_of("neox-parallel", "transformer_lens")
    g = build_graph(model)
    assert "a0.h1 -> m0" not in g.edge_names and "a0.h1 -> m1" in g.edge_names and "m0 -> a1.h0.q" in g.edge_names
    prompts = make_prompts(n=3, seq=7, seed=2, same_until=2)
    exact = edge_scores(model, prompts, logit_diff, "exact", progress=False)
    s = _setup(model, prompts, logit_diff, "fast")
    picks = torch.randperm(g.n_edges, generator=torch.Generator().manual_seed(0))[:24]
    patched = torch.zeros(len(picks), g.n_edges)
    patched[torch.arange(len(picks)), picks] = 1.0
    torch.testing.assert_close(exact.scores[picks], s.run(patched) - s.clean_value, atol=2e-5, rtol=1e-4)
    assert float(exact.scores.abs().max()) > 1e-3
    for steps in (None, 3):
        fast = edge_scores(model, prompts, logit_diff, "eap" if steps is None else "eap_ig", steps=steps or 5, progress=False)
        generic = _gradient(_setup(model, prompts, logit_diff, "fast", clean_run=steps is not None), steps, 128)
        torch.testing.assert_close(fast.scores, generic, atol=2e-5, rtol=1e-4)
    with pytest.raises(Exception, match="resid_mid"):
        edge_scores(model, prompts, logit_diff, "eap", engine="hooks", progress=False)


# =============================================================================== import direction
PATCHING = Path(__file__).resolve().parents[1] / "patching"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(patching module, names used from it) for every import of a patching module anywhere in ``path``
    (functions included): the names imported from it, and the attributes read through its alias."""
    tree = ast.parse(path.read_text())
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "patching":
            if node.module == "patching":  # from patching import fast, metrics as m, ...
                for a in node.names:
                    if (PATCHING / f"{a.name}.py").exists():
                        found.append((f"patching.{a.name}", []))
                        aliases[a.asname or a.name] = f"patching.{a.name}"
            else:
                found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("patching.")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            found.append((aliases[node.value.id], [node.attr]))
    return found


def test_method_modules_import_one_way_and_no_private_names():
    graph, private = {}, []
    for path in sorted(PATCHING.glob("*.py")):
        if path.name == "__init__.py":
            continue
        me = f"patching.{path.stem}"
        graph[me] = set()
        for module, names in _imports(path):
            if module != me:
                graph[me].add(module)
            private += [f"{me} imports {module}.{n}" for n in names if n.startswith("_") and module != me]
    assert not private, private
    # no cycle: a depth-first search finds no module on its own import path
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph.get(m, ()):
            assert state.get(n) != 1, " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
    assert graph["patching.anatomy"] <= {"patching.metrics"}, graph["patching.anatomy"]

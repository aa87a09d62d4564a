"""SmolLM2-135M (`interp.load("smollm2-135m")`), a real pretrained model, through every method.

Both backends against transformers itself; the fast engine, fast causal tracing and exact edge
scores against the hook engine or a hand-made reference on sampled cells (the hook side of a
30-layer sweep is slow); the read-outs (lens, DLA, collect, attention view in a browser) and one
DAS fit. One xdist group: the model is converted (on a fresh machine) and loaded once per run.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import interp
from interp import Site
from interp.tasks.agreement import SUBJECT_POS, agreement_task
from interp.tasks.ioi import ioi_prompts

pytestmark = pytest.mark.xdist_group("real")

NAME = "smollm2-135m"
TEXTS = ["The capital of France is", "When Mary and John went to the store, John gave a drink to",
         "import numpy as np\nx = np.zeros(3)\nprint(", "Water boils at one hundred degrees"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return interp.load(NAME)


@pytest.fixture(scope="module")
def nnsight_model():
    return interp.load(NAME, backend="nnsight")


@pytest.fixture(scope="module")
def reference():
    """transformers' own model on the same converted directory."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(interp.pretrained.local_dir(NAME)), dtype=torch.float32,
                                              attn_implementation="eager", local_files_only=True)
    return hf.eval()


@pytest.fixture(scope="module")
def ioi(model):
    return ioi_prompts(model, n=4, seed=0)


def test_both_backends_equal_transformers_logits(model, nnsight_model, reference):
    tokens = model.to_tokens(TEXTS)
    assert tokens[:, 0].eq(0).all()  # <|endoftext|>, the pretraining document separator, first
    with torch.no_grad():
        expected = reference(tokens).logits
    for m in (model, nnsight_model):
        with torch.no_grad():
            got = m(tokens)
        assert (got - expected).abs().max() <= 1e-4, m.backend_name
    assert (m.n_layers, m.n_heads, m.n_kv_heads, m.d_model, m.d_vocab) == (30, 9, 3, 576, 49152)
    assert model.to_str_tokens(tokens[2])[:6] == ["<|endoftext|>", "import", " numpy", " as", " np", "\n"]
    model.prepend_bos = False  # the model's default for to_tokens / to_str_tokens
    try:
        assert torch.equal(model.to_tokens(TEXTS[0]), tokens[:1, 1:6]) and model.to_str_tokens(TEXTS[0])[0] == "The"
    finally:
        model.prepend_bos = True


def test_greedy_generation_equals_transformers_and_knows_paris(model, nnsight_model, reference):
    tokens = model.to_tokens("The capital of France is")
    with torch.no_grad():
        expected = reference.generate(tokens, max_new_tokens=6, do_sample=False, pad_token_id=2)
    for m in (model, nnsight_model):
        out = m.generate(tokens, max_new_tokens=6)
        assert torch.equal(out.cpu(), expected), m.backend_name
    assert m.tokenizer.decode(out[0, tokens.shape[1]:]).startswith(" Paris")


def test_loads_in_bfloat16_and_remembers_how_to_load_again(model):
    half = interp.load(NAME, backend="nnsight", dtype=torch.bfloat16)
    tokens = model.to_tokens("The capital of France is")
    with torch.no_grad():
        logits = half(tokens)
    assert half.dtype == torch.bfloat16 and logits.dtype == torch.bfloat16
    assert model.to_str_tokens(logits[0, -1].argmax()[None])[0] == " Paris"
    assert half.reload_arguments() == dict(name_or_path=NAME, backend="nnsight", device=None, dtype="bfloat16")
    assert half.info["licence"] == "Apache-2.0"


def _sample(values: torch.Tensor, k: int, seed: int) -> list[tuple[int, ...]]:
    """``k`` cells: the largest |value| and ``k - 1`` drawn at random (seeded)."""
    flat = values.abs().flatten()
    picks = [int(flat.argmax())] + torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[: k - 1].tolist()
    return [tuple(int(i) for i in torch.unravel_index(torch.tensor(p), values.shape)) for p in picks]


@pytest.mark.parametrize(("kind", "by_pos"), [("resid_pre", True), ("z", False), ("attn_out", True)])
def test_fast_engine_equals_the_hook_engine_on_sampled_cells(model, ioi, kind, by_pos):
    from patching import activation_patch, logit_diff

    fast = activation_patch(model, ioi, kind, logit_diff, by_pos=by_pos, progress=False)
    assert fast.settings["engine"] == "fast"
    assert fast.values.shape == ((30, ioi.seq_len) if by_pos else (30, 9))
    cells = _sample(fast.values, 4, seed=1)
    sites = [Site(kind, c[0], pos=c[1]) if by_pos else Site(kind, c[0], head=c[1]) for c in cells]
    hooks = activation_patch(model, ioi, sites, logit_diff, engine="hooks", progress=False)
    expected = torch.stack([fast.values[c] for c in cells])
    torch.testing.assert_close(hooks.values.to(expected.dtype), expected, atol=2e-4, rtol=1e-4)
    assert fast.values.abs().max() > 0.5  # the sweep moves the logit difference


def test_causal_tracing_fast_equals_hooks(model, monkeypatch):
    from patching import causal_trace, causal_tracing

    tokens = model.to_tokens(["The Eiffel Tower is in"])
    with torch.no_grad():
        answer = model(tokens)[:, -1].argmax(-1)
    args = dict(samples=1, window=5, kinds=("resid", "mlp"), seed=0, progress=False)
    quick = causal_trace(model, tokens, [1, 2, 3], answer, **args)
    monkeypatch.setattr(causal_tracing, "_restored_fast", lambda *a, **k: None)
    hooks = causal_trace(model, tokens, [1, 2, 3], answer, **args)
    for kind in ("resid", "mlp"):
        torch.testing.assert_close(quick.probs[kind], hooks.probs[kind], atol=1e-4, rtol=1e-3)
    assert float(quick.p_clean[0] - quick.p_corrupted[0]) > 0.05  # the noise hides the subject
    assert len(repr(quick).splitlines()) == 1


def test_lens_and_dla_read_out_text_and_sum_to_the_logit_difference(model, ioi):
    from patching import logit_diff
    from probes import direct_logit_attribution, logit_lens

    lens = logit_lens(model, model.to_tokens("The capital of France is"), k=3)
    top = lens.top_tokens(pos=-1)
    assert top[top.state == "final_post"].iloc[0].token == " Paris"
    assert not any("Ġ" in t or "Ċ" in t for t in top.token)
    assert len(repr(lens)) < 300
    dla = direct_logit_attribution(model, ioi)
    with torch.no_grad():
        actual = logit_diff(model(ioi.clean), ioi)
    torch.testing.assert_close(dla.total, actual.float(), atol=2e-3, rtol=1e-4)
    assert dla.heads.shape == (30, 9) and len(repr(dla).splitlines()) == 1


def test_collect_equals_the_cache(model):
    from probes import collect

    tokens = model.to_tokens(TEXTS[:2])
    sites = [Site("resid_post", layer) for layer in (3, 15, 29)]
    store = collect(model, tokens, sites, positions="last", progress=False)
    _, cache = model.run_with_cache(tokens, sites)
    for site in sites:
        torch.testing.assert_close(store[site], cache[site][:, -1].float())


def test_das_warm_started_from_the_mean_difference_holds_the_subject_number(model):
    """One DAS fit on the real model: the subject's number at the subject token (CausalGym's agreement,
    scored on `` is`` / `` are``). From a random start a few steps do not find it in 576 dimensions;
    started from the difference of class means, DAS keeps and refines it, and the same start at the
    BOS token (identical in every prompt) does nothing."""
    from patching import baseline_directions, counterfactual_dataset, train_das

    sampler, causal_model, choices = agreement_task(model)
    data = counterfactual_dataset(sampler, causal_model, n=40, seed=0, require_change=True, choices=choices)
    site = Site("resid_post", 4, pos=SUBJECT_POS)
    _, cache = model.run_with_cache(torch.cat([data.base, data.source]), [site])
    plural = torch.tensor([v[0] for v in data.base_vars + data.source_vars])
    start = baseline_directions(cache[site], plural, methods=["mean_diff"])["mean_diff"]
    args = dict(k=1, epochs=2, batch_size=8, lr=1e-2, seed=0, progress=False, init=start)
    result = train_das(model, site, data, **args)
    assert result.iia >= 0.85 and result.log_odds > 1.0, result
    assert float(torch.nn.functional.cosine_similarity(result.basis[:, 0], start, dim=0).abs()) > 0.5
    at_bos = train_das(model, Site("resid_post", 4, pos=0), data, **args)
    assert at_bos.iia == 0.0 and at_bos.log_odds == pytest.approx(0.0, abs=1e-4)
    assert all(p.grad is None for p in model.module.parameters())


def test_edge_scores_of_sampled_edges_equal_their_effect_patched_by_hand(model, ioi):
    """EAP on the anatomy equals the hook engine; the exact scores of EAP's top edges and of random ones,
    each against the edge patched by hand."""
    from patching import edge_scores, logit_diff
    from tests.test_discovery import _reference

    prompts = ioi[:2]
    eap = edge_scores(model, prompts, logit_diff, "eap", progress=False)
    assert eap.graph.n_edges == 70651 and eap.settings["engine"] == "fast"  # the Llama anatomy (3 kv heads)
    hooks = edge_scores(model, prompts, logit_diff, "eap", engine="hooks", progress=False)
    assert float((eap.scores - hooks.scores).abs().max()) < 1e-4 * float(hooks.scores.abs().max())
    top = eap.order()[:2].tolist()
    names = eap.graph.edge_names
    rand = torch.randperm(eap.graph.n_edges, generator=torch.Generator().manual_seed(0))[:2].tolist()
    picked = top + rand + [names.index("a23.h3 -> logits")]
    exact = edge_scores(model, prompts, logit_diff, "exact", progress=False, edges=picked)
    assert exact.scores.isnan().sum() == eap.graph.n_edges - len(set(picked))
    for i in picked:
        assert float(exact.scores[i]) == pytest.approx(_reference(model, prompts, names[i]), abs=2e-4), names[i]
    assert abs(float(exact.scores[names.index("a23.h3 -> logits")])) > 0.3  # a name mover's direct path


def test_attention_view_in_a_browser_shows_the_tokens_as_text(model, tmp_path):
    from probes import attention_view
    from tests.browser import dump_dom

    tokens = model.to_tokens("When Mary and John went to the store, John gave a drink to")
    view = attention_view(model, tokens)
    assert len(view.labels) == 270 and len(repr(view).splitlines()) == 1
    page = view.save(tmp_path / "smollm2.html")
    assert page.stat().st_size < 300_000
    dom = dump_dom(page.as_uri() + "?layer=23&head=3&pos=14")
    root = re.search(r'<div id="interp-attn-[0-9a-f]+"[^>]*>', dom).group(0)
    assert 'data-shown="L23H3"' in root, root
    assert "·Mary" in dom and "Ġ" not in dom
    strip = re.search(r'<div class="ia-strip ia-row">(.*?)</div>', dom, re.S).group(1)
    shown = torch.tensor([float(w) for w in re.findall(r'data-weight="([0-9.]+)"', strip)])
    expected = view.patterns[view.labels.index("L23H3"), 14]
    torch.testing.assert_close(shown, expected, atol=0.01, rtol=0)
    assert int(shown.argmax()) == int(expected.argmax())

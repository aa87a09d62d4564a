"""Tests of patching.fast: the fast engine gives the hook engine's numbers, and knows where it applies."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

import interp
from interp import Site
from interp.interventions import Scale
from interp.models import build_native
from interp.tasks import PromptSet
from patching import activation_patch, anatomy, kl_to, logit_diff, normalized_for, prob
from patching.fast import FastEngineError, answer_only, unsupported_reason

V = 32
CFG = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=V, n_ctx=32,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)
ALL_KINDS = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z", "head_out", "pattern"]



@pytest.fixture(scope="module")
def tok(tokenizer):
    return tokenizer  # the session tokenizer of conftest: ids t1..t31


@pytest.fixture(scope="module")
def models(tok):
    return {
        "attn": build_native({**CFG, "attn_only": True}, tok, seed=0, name="f-attn"),
        "mlp": build_native({**CFG, "attn_only": False, "d_mlp": 64}, tok, seed=1, name="f-mlp"),
        "rotary": build_native({**CFG, "attn_only": False, "d_mlp": 64, "positional_embedding_type": "rotary"}, tok, seed=2),
        "gqa": build_native({**CFG, "attn_only": False, "d_mlp": 64, "positional_embedding_type": "rotary", "n_key_value_heads": 2,
                             "normalization_type": "RMS", "act_fn": "silu", "gated_mlp": True}, tok, seed=3),
    }


def make_prompts(n=3, seq=7, seed=0, answer_pos=-1) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, V, (n, seq), generator=g)
    corrupted = torch.randint(1, V, (n, seq), generator=g)
    clean[:, 0] = corrupted[:, 0] = 0
    answers = torch.randint(1, V, (n,), generator=g)
    wrong = (answers + torch.randint(1, V - 1, (n,), generator=g) - 1) % (V - 1) + 1
    return PromptSet(clean, corrupted, answers, wrong, answer_pos=answer_pos)


def every_position(logits, prompts):
    """A metric that reads every position: the fast engine must give it full logits."""
    return logits[:, :, 3].sum(1) - logits[:, 1:, 5].mean(1)


@pytest.mark.parametrize(("model_name", "direction"), [
    ("attn", "denoise"), ("attn", "noise"), ("mlp", "denoise"), ("mlp", "noise"), ("rotary", "noise"), ("gqa", "denoise"),
])
def test_fast_engine_equals_hook_engine_for_every_kind(models, model_name, direction):
    model = models[model_name]
    p = make_prompts(n=2, seq=5, seed=len(model_name))
    kinds = [k for k in ALL_KINDS if model.has_mlp or k not in ("resid_mid", "mlp_out")]
    if model_name in ("rotary", "gqa"):  # rotary embeddings touch only queries and keys: the kinds around them
        kinds = ["resid_pre", "z", "pattern", "mlp_out"]
    for kind in kinds:
        for by_pos in (False, True):
            for metric in (logit_diff, every_position) if by_pos else (logit_diff,):
                kw = dict(direction=direction, by_pos=by_pos, progress=False)
                fast = activation_patch(model, p, kind, metric, engine="fast", batch_size=7, **kw)
                hooks = activation_patch(model, p, kind, metric, engine="hooks", batch_size=None, **kw)
                assert fast.settings["engine"] == "fast" and "engine" not in hooks.settings
                assert not fast.values.is_inference()  # the engine runs in inference mode; its result is ordinary
                assert fast.shape == hooks.shape and fast.axes == hooks.axes
                assert (fast.values - hooks.values).abs().max() <= 1e-5, (kind, by_pos, metric.__name__)
                if by_pos:  # (a whole-layer residual patch is the clean run everywhere: constant)
                    assert hooks.values.std() > 1e-4, kind  # the comparison is not between constants


@pytest.mark.parametrize("columns", [False, True])
def test_fast_engine_reads_every_weight_including_buffers(tok, monkeypatch, columns):
    """Biases that are buffers (the unembedding's) and LayerNorm scales start at 0 / 1 in a fresh model;
    with random values, a fast path that skipped any of them would differ from the hook engine. With
    ``columns``, logit_diff unembeds two columns per row (`Anatomy.unembed_at`; on this 32-token vocabulary only
    when forced) and must read the same weights."""
    from patching import fast as fast_engine

    calls = []
    if columns:
        monkeypatch.setattr(fast_engine, "COLUMNS_MIN_VOCAB", 0)
        original = anatomy.Anatomy.unembed_at
        monkeypatch.setattr(anatomy.Anatomy, "unembed_at", lambda self, *a: calls.append(1) or original(self, *a))
    model = build_native({**CFG, "attn_only": False, "d_mlp": 64}, tok, seed=3, name="f-buffers")
    g = torch.Generator().manual_seed(0)
    touched = 0
    with torch.no_grad():
        for module in model.module.original_model.modules():
            for store in (module._parameters, module._buffers):
                for name, t in store.items():
                    if t is not None and t.is_floating_point() and (name == "bias" or isinstance(module, torch.nn.LayerNorm)):
                        t.copy_(torch.randn(t.shape, generator=g))
                        touched += 1
    assert touched >= 10
    p = make_prompts(n=2, seq=6, seed=9)
    for kind, by_pos in (("resid_pre", True), ("head_out", False), ("mlp_out", True)):
        for metric in (logit_diff, every_position):
            fast = activation_patch(model, p, kind, metric, by_pos=by_pos, engine="fast", progress=False)
            hooks = activation_patch(model, p, kind, metric, by_pos=by_pos, engine="hooks", progress=False)
            assert (fast.values - hooks.values).abs().max() <= 1e-5, (kind, metric.__name__)
    assert bool(calls) == columns


def test_position_skipping_with_an_early_answer_position_sets_and_sources(models):
    model = models["mlp"]
    p = make_prompts(n=2, seq=9, seed=5, answer_pos=4)  # positions after the answer cannot matter
    for metric in (prob, normalized_for(model, p, logit_diff), kl_to(model(p.clean))):
        assert answer_only(metric)
        for source in ("other", "mean", "zero"):
            a = activation_patch(model, p, "resid_pre", metric, source=source, engine="fast", batch_size=4, progress=False)
            b = activation_patch(model, p, "resid_pre", metric, source=source, engine="hooks", progress=False)
            assert (a.values - b.values).abs().max() <= 1e-5
    for kind in ("z", "pattern", "attn_out"):  # last-layer sites before / at / after the answer position
        a2 = activation_patch(model, p, kind, prob, by_pos=True, engine="fast", batch_size=8, progress=False)
        b2 = activation_patch(model, p, kind, prob, by_pos=True, engine="hooks", batch_size=None, progress=False)
        assert (a2.values - b2.values).abs().max() <= 1e-5, kind
        last = b2.values[1]  # the last layer: only the answer position (4) can move the answer's logits
        assert (last[4] - last[0]).abs().max() > 1e-4, kind
        assert (torch.cat([last[:4], last[5:]]) - last.flatten()[0]).abs().max() <= 1e-6, kind
    late = a.values[:, 5:]  # patched after the answer position: the base run's value exactly
    assert (late - late[0, 0]).abs().max() <= 1e-6
    sets = [[Site("z", 1, head=1, pos=6), Site("resid_pre", 1, pos=-2)], [Site("pattern", 0, head=3, pos=3), Site("mlp_out", 1)],
            [Site("head_out", 1, head=0)], [Site("resid_mid", 0, pos=8), Site("attn_out", 1, pos=4)]]
    for direction in ("denoise", "noise"):
        a = activation_patch(model, p, sets, logit_diff, direction=direction, engine="fast", batch_size=2, progress=False)
        b = activation_patch(model, p, sets, logit_diff, direction=direction, engine="hooks", progress=False)
        assert (a.values - b.values).abs().max() <= 1e-5


def test_auto_picks_the_fast_engine_only_where_it_applies(models, tok, tmp_path):
    model = models["attn"]
    p = make_prompts()
    assert activation_patch(model, p, "resid_pre", logit_diff, progress=False).settings.get("engine") == "fast"
    # q / k / v are not covered: auto falls back, fast refuses with a message that says what to do
    assert "engine" not in activation_patch(model, p, "k", logit_diff, progress=False).settings
    with pytest.raises(FastEngineError, match="engine='hooks'"):
        activation_patch(model, p, "k", logit_diff, engine="fast", progress=False)
    with pytest.raises(interp.InputError, match="engine"):
        activation_patch(model, p, "resid_pre", logit_diff, engine="turbo", progress=False)
    # an active edit block is honoured by falling back to hooks
    with model.edit({Site("z", 0, head=0): Scale(0.0)}):
        assert unsupported_reason(model) is not None
        edited = activation_patch(model, p, "resid_pre", logit_diff, progress=False)
    assert "engine" not in edited.settings
    plain = activation_patch(model, p, "resid_pre", logit_diff, progress=False)
    assert (edited.values - plain.values).abs().max() > 1e-4


def test_falls_back_to_hooks_for_a_module_without_an_adapter(tok):
    """A plain torch module through nnsight (no Hugging Face config): the hook engine, and the reason."""
    from interp.models import SiteMap

    torch.manual_seed(0)
    emb, blocks, head = torch.nn.Embedding(V, 16), torch.nn.ModuleList([torch.nn.Linear(16, 16) for _ in range(2)]), torch.nn.Linear(16, V)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.blocks, self.head = emb, blocks, head

        def forward(self, tokens):
            x = self.emb(tokens)
            for b in self.blocks:
                x = x + torch.tanh(b(x))
            return self.head(x)

    site_map = SiteMap({"resid_post": "blocks.{layer}"}, n_layers=2, n_heads=1, d_model=16, d_head=16, d_vocab=V, n_ctx=32)
    model = interp.HookedModel.from_module(Tiny().eval(), site_map)
    assert "neither a native TransformerLens model nor a Hugging Face model" in unsupported_reason(model)
    p = make_prompts(n=2, seq=5)
    r = activation_patch(model, p, "resid_post", logit_diff, progress=False)
    assert "engine" not in r.settings and r.values.shape == (2, 5)
    with pytest.raises(FastEngineError, match="Hugging Face"):
        activation_patch(model, p, "resid_post", logit_diff, engine="fast", progress=False)


def test_answer_only_recognises_metrics():
    assert answer_only(logit_diff) and answer_only(prob)
    assert not answer_only(every_position)
    assert not answer_only(lambda logits, p: logit_diff(logits, p))

    def marked(logits, p):
        return prob(logits, p)

    marked.answer_only = True
    assert answer_only(marked)
    from patching import normalized

    assert answer_only(normalized(logit_diff, 2.0, 1.0))
    assert not answer_only(normalized(every_position, 2.0, 1.0))

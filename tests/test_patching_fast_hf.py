"""The fast engine on Hugging Face models (`patching.anatomy`): GPT-2, GPT-NeoX (sequential and
parallel residual, partial rotary) and the Llama family (RMSNorm, rotary, gated MLP, grouped-query
attention), on both backends, against the hook engine and the one-site-at-a-time reference loop;
attribution patching through it; and the cases it leaves to the hook engine, with the reason."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import interp
from interp import Site
from patching import activation_patch, anatomy, attribution_patch, logit_diff, prob
from patching.fast import FAST_KINDS, FastEngineError, unsupported_reason
from tests.conftest import D_VOCAB
from tests.test_patching_speed_paths import check_random_site_sets, every_position
from tests.test_patching_speed_paths import make_prompts as _make_prompts

V = D_VOCAB
BACKENDS = ("transformer_lens", "nnsight")
FAMILIES = ("gpt2", "neox-sequential", "neox-parallel", "llama-gqa", "qwen2", "gemma", "phi3")
PARALLEL = {"neox-parallel"}


def _build(arch: str):
    import transformers as T

    common = dict(vocab_size=V, bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.3)
    llama = dict(num_hidden_layers=3, hidden_size=32, intermediate_size=64, max_position_embeddings=32,
                 num_attention_heads=4, num_key_value_heads=2, **common)
    if arch == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(n_layer=3, n_embd=32, n_head=4, n_positions=32, **common))
    if arch.startswith("neox"):
        return T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
            num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32, rotary_pct=0.25, use_parallel_residual=arch == "neox-parallel", **common,
        ))
    if arch == "llama-gqa":
        return T.LlamaForCausalLM(T.LlamaConfig(**llama))
    if arch == "qwen2":
        return T.Qwen2ForCausalLM(T.Qwen2Config(**llama))
    if arch == "gemma":  # 1 + w RMSNorm, a scaled embedding, GeGLU
        return T.GemmaForCausalLM(T.GemmaConfig(**llama, head_dim=8))
    if arch == "phi3":  # fused qkv_proj and gate_up_proj
        return T.Phi3ForCausalLM(T.Phi3Config(**llama))
    if arch == "mistral-window":  # a sliding window shorter than the prompts: not mirrored
        return T.MistralForCausalLM(T.MistralConfig(**llama, sliding_window=4))
    if arch == "gptj":  # no adapter
        return T.GPTJForCausalLM(T.GPTJConfig(n_layer=2, n_embd=32, n_head=4, n_positions=32, rotary_dim=4, **common))
    raise KeyError(arch)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tokenizer):
    """(arch, backend) -> model, each Hugging Face dir built once (seeded) and loaded on demand."""
    dirs, models = {}, {}

    def get(arch: str, backend: str):
        if arch not in dirs:
            torch.manual_seed(0)
            dirs[arch] = path = tmp_path_factory.mktemp(arch)
            _build(arch).eval().save_pretrained(path)
            tokenizer.save_pretrained(path)
        if (arch, backend) not in models:
            models[(arch, backend)] = interp.load(dirs[arch], backend=backend)
        return models[(arch, backend)]

    return get


def make_prompts(n=3, seq=8, seed=0, same_until=1):
    """Random prompts sharing their first ``same_until`` tokens (`tests.test_patching_speed_paths`'s builder)."""
    return _make_prompts(n, seq, seed, same_until)


def kinds_of(arch: str) -> list[str]:
    return sorted(FAST_KINDS - ({"resid_mid"} if arch in PARALLEL else set()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", FAMILIES)
def test_fast_engine_equals_hook_engine_for_every_kind(loaded, arch, backend):
    model = loaded(arch, backend)
    assert unsupported_reason(model) is None
    for kind in kinds_of(arch):
        for by_pos, direction, metric in ((False, "denoise", logit_diff), (True, "noise", every_position)):
            prompts = make_prompts(same_until=3 if by_pos else 1)
            args = dict(direction=direction, by_pos=by_pos, progress=False)
            fast = activation_patch(model, prompts, kind, metric, engine="fast", **args)
            hooks = activation_patch(model, prompts, kind, metric, engine="hooks", **args)
            assert fast.settings["engine"] == "fast" and fast.axes == hooks.axes
            torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4, msg=f"{kind} by_pos={by_pos}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", FAMILIES)
def test_fast_engine_equals_the_reference_loop_on_random_site_sets(loaded, arch, backend):
    """Random sets of sites (one or several per intervention, any layer, head and position), random
    shared prefixes, sources, metrics and batch sizes, against one hooked forward per intervention."""
    model = loaded(arch, backend)
    kinds = sorted(set(kinds_of(arch)) - {"head_out"})  # the reference edits head_out through attn_out
    check_random_site_sets(model, kinds, examples=6, batch_sizes=[3, 6, None], max_cells=5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", FAMILIES)
def test_fast_attribution_equals_hook_attribution(loaded, arch, backend):
    model = loaded(arch, backend)
    prompts = make_prompts(same_until=2)
    for kind, by_pos, metric in (("resid_pre", True, logit_diff), ("z", False, prob), ("attn_out", True, every_position)):
        fast = attribution_patch(model, prompts, kind, metric, by_pos=by_pos, engine="fast")
        hooks = attribution_patch(model, prompts, kind, metric, by_pos=by_pos, engine="hooks")
        torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)
    assert all(p.requires_grad and p.grad is None for p in model.module.parameters())


@pytest.mark.parametrize("arch", FAMILIES)
def test_causal_tracing_restorations_on_the_anatomy_equal_hooks(loaded, monkeypatch, arch):
    """Causal tracing's restorations (one fast-engine sweep per prompt, noise on the base run's
    embedding) equal restoring through hooks on every family, windows and severed paths included."""
    from patching import causal_trace, causal_tracing

    model = loaded(arch, "transformer_lens")
    assert anatomy.unsupported(model) is None
    tokens = torch.randint(1, V, (2, 7), generator=torch.Generator().manual_seed(5))
    answers = model(tokens)[:, -1].argmax(-1)
    args = dict(samples=2, window=2, severed="mlp", seed=0, progress=False)
    ran, original = [], causal_tracing._restored_fast
    monkeypatch.setattr(causal_tracing, "_restored_fast", lambda *a, **k: ran.append(original(*a, **k)) or ran[-1])
    quick = causal_trace(model, tokens, [1, 2], answers, **args)
    assert len(ran) == 2 and all(r is not None for r in ran)  # each prompt's restorations ran on the anatomy
    monkeypatch.setattr(causal_tracing, "_restored_fast", lambda *a, **k: None)
    hooks = causal_trace(model, tokens, [1, 2], answers, **args)
    for kind in ("resid", "mlp", "attn", "resid_severed_mlp"):
        torch.testing.assert_close(quick.probs[kind], hooks.probs[kind], atol=1e-5, rtol=1e-4)
    assert float((quick.probs["resid"] - quick.p_corrupted[:, None, None]).abs().max()) > 1e-4  # restorations move it


def test_weights_are_read_at_every_call(loaded):
    """An in-place weight edit between two sweeps shows in the second (nothing is cached across calls)."""
    model = loaded("llama-gqa", "nnsight")
    prompts = make_prompts()
    before = activation_patch(model, prompts, "resid_pre", logit_diff, engine="fast", progress=False).values
    weight = model.module.model.layers[1].mlp.down_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(3.0)
        fast = activation_patch(model, prompts, "resid_pre", logit_diff, engine="fast", progress=False).values
        hooks = activation_patch(model, prompts, "resid_pre", logit_diff, engine="hooks", progress=False).values
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert (fast - before).abs().max() > 1e-3
    torch.testing.assert_close(fast, hooks, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("arch", "reason"), [
    ("gptj", "model_type 'gptj' has no fast-engine adapter"),
    ("mistral-window", "sliding attention window of 4 tokens"),
])
def test_uncovered_models_fall_back_to_hooks_and_say_why(loaded, arch, reason):
    prompts = make_prompts()
    results = {}
    for backend in BACKENDS:
        model = loaded(arch, backend)
        result = activation_patch(model, prompts, "resid_pre", logit_diff, progress=False)
        assert "engine" not in result.settings  # auto: the hook engine ran
        with pytest.raises(FastEngineError, match=reason):
            activation_patch(model, prompts, "resid_pre", logit_diff, engine="fast", progress=False)
        results[backend] = result.values
    torch.testing.assert_close(results["nnsight"], results["transformer_lens"], atol=1e-5, rtol=1e-4)


def test_short_prompts_inside_the_window_run_fast(loaded):
    model = loaded("mistral-window", "nnsight")
    prompts = make_prompts(seq=4)
    fast = activation_patch(model, prompts, "resid_pre", logit_diff, engine="fast", progress=False)
    hooks = activation_patch(model, prompts, "resid_pre", logit_diff, engine="hooks", progress=False)
    torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)


def test_an_edit_block_falls_back_on_hugging_face_models(loaded):
    model = loaded("gpt2", "nnsight")
    with model.edit({Site("z", 0, head=0): interp.Scale(0.0)}):
        assert "model.edit" in unsupported_reason(model)
        with pytest.raises(FastEngineError, match="model.edit"):
            activation_patch(model, make_prompts(), "resid_pre", logit_diff, engine="fast", progress=False)


def test_a_bridge_in_compatibility_mode_falls_back(tmp_path, tokenizer):
    """TransformerLens's compatibility mode processes the bridge's weights; the fast engine, which reads the
    Hugging Face modules, says so and the hook engine runs."""
    torch.manual_seed(0)
    _build("gpt2").eval().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = interp.load(tmp_path, backend="transformer_lens")
    assert unsupported_reason(model) is None
    model.module.enable_compatibility_mode()
    assert "compatibility mode" in unsupported_reason(model)
    result = activation_patch(model, make_prompts(), "resid_pre", logit_diff, progress=False)
    assert "engine" not in result.settings


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_column_unembedding_equals_the_full_one(loaded, monkeypatch, backend):
    """logit_diff (and normalized logit_diff) on the fast engine unembeds the answer's and the wrong answer's
    columns only (forced here: these vocabularies are below `COLUMNS_MIN_VOCAB`), with the hook engine's values."""
    from patching import fast as fast_engine
    from patching import normalized

    calls = []
    original = anatomy.Anatomy.unembed_at
    monkeypatch.setattr(fast_engine, "COLUMNS_MIN_VOCAB", 0)
    monkeypatch.setattr(anatomy.Anatomy, "unembed_at", lambda self, *a: calls.append(1) or original(self, *a))
    prompts = make_prompts(same_until=3)
    for arch in ("gpt2", "llama-gqa"):
        model = loaded(arch, backend)
        for metric in (logit_diff, normalized(logit_diff, 2.0, -1.0)):
            fast = activation_patch(model, prompts, "z", metric, by_pos=True, engine="fast", progress=False)
            hooks = activation_patch(model, prompts, "z", metric, by_pos=True, engine="hooks", progress=False)
            torch.testing.assert_close(fast.values, hooks.values, atol=1e-5, rtol=1e-4)
    assert calls


def test_a_broadcast_edit_into_a_module_that_views_its_input(loaded):
    """A mean-ablated z of every head is a broadcast tensor; GPT-2's Conv1D ``.view()``s its input, so the
    nnsight backend hands over a contiguous copy (found by the random-set test above)."""
    prompts = make_prompts()
    cell = [[Site("z", 0)]]
    values = {backend: activation_patch(loaded("gpt2", backend), prompts, cell, logit_diff, source="mean", engine="hooks",
                                        progress=False).values for backend in BACKENDS}
    torch.testing.assert_close(values["nnsight"], values["transformer_lens"], atol=1e-5, rtol=1e-4)

"""Every architecture with a built-in nnsight site map, against TransformerLens's bridge.

Per architecture: a tiny random Hugging Face model (2 layers, d_model 32, vocabulary 32, seeded)
saved with ``save_pretrained``, loaded on both backends; every site kind it has equals the
bridge's hook (<= 1e-5, float32), edits at the head-indexed kinds agree, and an activation-patching
sweep equals ``transformer_lens.patching``.
"""

from __future__ import annotations

import types

import pytest
import torch
import transformer_lens.patching as tlp

import interp
from interp import HookedModel, LoadError, Scale, Site, SiteError
from interp.models import BUILT_IN_SITE_MAPS
from interp.tasks import PromptSet
from patching import activation_patch, logit_diff, metrics
from tests.conftest import D_VOCAB

V = D_VOCAB
# initializer_range 0.3 (not HF's 0.02): attention patterns and patching effects that vary.
COMMON = dict(
    num_hidden_layers=2, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32,
    bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.3,
)
GQA = dict(num_attention_heads=4, num_key_value_heads=2)


def _build(arch: str):
    import transformers as T

    if arch == "llama":
        return T.LlamaForCausalLM(T.LlamaConfig(**COMMON, num_attention_heads=4, num_key_value_heads=4))
    if arch == "llama-gqa":
        return T.LlamaForCausalLM(T.LlamaConfig(**COMMON, **GQA))
    if arch == "mistral":
        return T.MistralForCausalLM(T.MistralConfig(**COMMON, **GQA, head_dim=8))
    if arch == "qwen2":
        return T.Qwen2ForCausalLM(T.Qwen2Config(**COMMON, **GQA))
    if arch == "qwen3":  # per-head QK-norm
        return T.Qwen3ForCausalLM(T.Qwen3Config(**COMMON, **GQA, head_dim=8))
    if arch == "gemma":
        return T.GemmaForCausalLM(T.GemmaConfig(**COMMON, **GQA, head_dim=8))
    if arch == "gemma2":  # post-attention / post-MLP norms, logit soft-capping, a sliding window
        return T.Gemma2ForCausalLM(T.Gemma2Config(**COMMON, **GQA, head_dim=8, sliding_window=3, query_pre_attn_scalar=8))
    if arch == "olmo":
        return T.OlmoForCausalLM(T.OlmoConfig(**COMMON, num_attention_heads=4))
    if arch == "olmo2":  # norms after attention and MLP only, QK-norm over all heads
        return T.Olmo2ForCausalLM(T.Olmo2Config(**COMMON, **GQA))
    if arch == "phi3":  # fused qkv_proj and gate_up_proj
        return T.Phi3ForCausalLM(T.Phi3Config(**COMMON, **GQA))
    if arch in ("neox-parallel", "neox-sequential"):
        return T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=V,
            max_position_embeddings=32, bos_token_id=0, eos_token_id=0, rotary_pct=0.25, initializer_range=0.3,
            use_parallel_residual=arch == "neox-parallel",
        ))
    if arch == "gptj":  # parallel attention and MLP, partial rotary
        return T.GPTJForCausalLM(T.GPTJConfig(
            n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=V, rotary_dim=4, bos_token_id=0,
            eos_token_id=0, pad_token_id=0, initializer_range=0.3,
        ))
    raise KeyError(arch)


ARCHS = [
    "llama", "llama-gqa", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "phi3",
    "neox-sequential", "neox-parallel", "gptj",
]
PARALLEL = {"neox-parallel", "gptj"}
KV_HEADS = {"llama-gqa": 2, "mistral": 2, "qwen2": 2, "qwen3": 2, "gemma": 2, "gemma2": 2, "olmo2": 2, "phi3": 2}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tokenizer):
    """arch -> (bridge-backed model, nnsight-backed model), built once per module."""
    models: dict[str, tuple[HookedModel, HookedModel]] = {}

    def get(arch: str) -> tuple[HookedModel, HookedModel]:
        if arch not in models:
            torch.manual_seed(0)
            path = tmp_path_factory.mktemp(arch)
            _build(arch).eval().save_pretrained(path)
            tokenizer.save_pretrained(path)
            models[arch] = interp.load(path, backend="transformer_lens"), interp.load(path, backend="nnsight")
        return models[arch]

    return get


def all_sites(model):
    return [Site("embed")] + [Site(k, layer) for k in model.supported_kinds if k != "embed" for layer in range(model.n_layers)]


def test_built_in_list_covers_the_tested_architectures():
    families = {"llama-gqa": "llama", "neox-sequential": "gpt_neox", "neox-parallel": "gpt_neox"}
    assert {families.get(a, a) for a in ARCHS} <= set(BUILT_IN_SITE_MAPS)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_site_kind_equals_the_bridge(arch, loaded, tokens):
    tl, nn = loaded(arch)
    assert tl.supported_kinds == nn.supported_kinds
    expected = set(interp.sites.KINDS) - ({"resid_mid"} if arch in PARALLEL else set())
    assert set(nn.supported_kinds) == expected
    kv = KV_HEADS.get(arch, 4)
    assert nn.n_kv_heads == tl.n_kv_heads == kv and nn.n_heads == tl.n_heads == 4
    for attr in ("n_layers", "d_model", "d_head", "d_vocab", "n_ctx", "d_mlp"):
        assert getattr(tl, attr) == getattr(nn, attr), attr
    sites = all_sites(nn)
    logits, cache = nn.run_with_cache(tokens, sites)
    tl_logits, tl_cache = tl.module.run_with_cache(tokens)  # the bridge itself, every hook
    assert (logits - tl_logits).abs().max() <= 1e-5
    for site in sites:
        if site.kind == "head_out":  # no bridge hook: z @ W_O per head, on both backends
            continue
        assert cache[site].shape == tl_cache[site.hook_name].shape, site
        assert (cache[site] - tl_cache[site.hook_name]).abs().max() <= 1e-5, site
    assert cache[Site("k", 0)].shape == (*tokens.shape, kv, nn.d_head)
    assert cache[Site("q", 0)].shape == cache[Site("z", 0)].shape == (*tokens.shape, 4, nn.d_head)
    head_out = [s for s in sites if s.kind == "head_out"]
    _, tl_head_out = tl.run_with_cache(tokens, head_out)
    for site in head_out:
        assert (cache[site] - tl_head_out[site]).abs().max() <= 1e-5, site
    # the heads' writes add up to the attention output, before any post-attention norm
    before_norm = tl_cache["blocks.1.attn.o.hook_out"]
    bias = before_norm - torch.einsum("bphd,hdm->bpm", tl_cache["blocks.1.attn.hook_z"], tl.module.blocks[1].attn.W_O)
    assert (cache[Site("head_out", 1)].sum(2) + bias - before_norm).abs().max() <= 1e-5


#: architectures whose TransformerLens bridge reads the pattern after the HF module used it
PATTERN_READ_ONLY_ON_TL = {"gptj"}


@pytest.mark.parametrize("arch", ARCHS)
def test_edits_agree_between_backends(arch, loaded, tokens):
    tl, nn = loaded(arch)
    uniform = lambda p: torch.ones_like(p) / p.shape[-1]  # noqa: E731
    pattern_edit = {Site("pattern", 1, head=3): uniform}  # GQA: head 3 shares key/value head 1
    if arch in PATTERN_READ_ONLY_ON_TL:
        with pytest.raises(SiteError, match="cannot edit attention patterns.*backend='nnsight'"), tl.edit(pattern_edit):
            tl(tokens)
        with nn.edit({Site("pattern", 1): lambda p: p * 1.0}):  # a new tensor, same values
            torch.testing.assert_close(nn(tokens), tl(tokens), atol=1e-5, rtol=0)
        with nn.edit(pattern_edit):
            assert (nn(tokens) - tl(tokens)).abs().max() > 1e-3
    for edits in [
        *([] if arch in PATTERN_READ_ONLY_ON_TL else [pattern_edit]),
        {Site("k", 0, head=1): Scale(0.0), Site("v", 1, head=0): Scale(2.0)},
        {Site("q", 1, pos=2): Scale(-1.0), Site("head_out", 0, head=2): Scale(0.0)},
        {Site("mlp_post", 0): Scale(0.5), Site("attn_out", 1, pos=-1): Scale(0.0)},
    ]:
        with tl.edit(edits):
            expected = tl(tokens)
        with nn.edit(edits):
            got = nn(tokens)
        assert (expected - tl(tokens)).abs().max() > 1e-3, edits  # the edits do something
        assert (expected - got).abs().max() <= 1e-5, edits
    # a head_out edit is the same as the z edit of that head (post-attention norms included)
    for model in (tl, nn):
        with model.edit({Site("head_out", 1, head=1): Scale(0.0)}):
            a = model(tokens)
        with model.edit({Site("z", 1, head=1): Scale(0.0)}):
            b = model(tokens)
        assert (a - b).abs().max() <= 1e-5


def _prompts(seed: int = 0) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    clean, corrupted = torch.randint(1, V, (2, 2, 5), generator=g)
    clean[:, 0] = corrupted[:, 0] = 0
    answers = torch.randint(1, V, (2,), generator=g)
    return PromptSet(clean, corrupted, answers, (answers % (V - 1)) + 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_sweeps_equal_transformer_lens(arch, loaded):
    tl, nn = loaded(arch)
    prompts = _prompts()
    _, clean_cache = tl.module.run_with_cache(prompts.clean)
    tl_metric = metrics.mean(logit_diff, prompts)
    sweeps = [("resid_pre", None, tlp.get_act_patch_resid_pre), ("head_out", False, tlp.get_act_patch_attn_head_out_all_pos)]
    for kind, by_pos, tl_fn in sweeps:
        expected = tl_fn(tl.module, prompts.corrupted, clean_cache, tl_metric)
        ours = activation_patch(nn, prompts, kind, logit_diff, by_pos=by_pos, progress=False)
        assert ours.values.shape == expected.shape
        assert (ours.values - expected.float()).abs().max() <= 1e-5, kind
        assert ours.values.std() > 1e-3, kind  # the sweep measured something that varies
    if KV_HEADS.get(arch):  # a sweep over key/value heads has n_kv_heads cells per layer
        k = activation_patch(nn, prompts, "k", logit_diff, by_pos=False, progress=False)
        assert k.values.shape == (2, KV_HEADS[arch]) and k.values.std() > 1e-4


#: the final norm as `patching.anatomy.read_out` should read it
FINAL_NORM = {"gemma": "rms 1+w", "gemma2": "rms 1+w", "neox-sequential": "layer", "neox-parallel": "layer", "gptj": "layer",
              "olmo": "layer"}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_read_out_of_every_architecture_reproduces_its_logits(arch, loaded, tokens):
    """The logit lens's read-out comes from the model anatomy on every architecture (an adapter's
    modules, or the final norm found by name): its final norm (Gemma's 1 + w, OLMo's parameter-free
    LayerNorm), unembedding and Gemma 2's logit soft-cap give the model's logits on both backends."""
    from patching.anatomy import hf_model, read_out
    from probes.lens import Readout

    for model in loaded(arch):
        norm, W_U, _, cap = read_out(model)
        expected = FINAL_NORM.get(arch, "rms")
        assert norm.kind == expected.split()[0]
        if expected.endswith("1+w"):  # Gemma's weight is stored as w; the read-out applies 1 + w
            stored = hf_model(model).model.norm.weight
            assert torch.equal(norm.weight, 1.0 + stored.detach().float())
        assert (cap is not None) == (arch == "gemma2") and W_U.shape == (V, 32)
        logits, cache = model.run_with_cache(tokens, [Site("resid_post", model.n_layers - 1)])
        ours = Readout.of(model).logits(cache[Site("resid_post", model.n_layers - 1)]).detach()
        logits = logits.detach()
        assert (ours - logits).abs().max() <= 1e-4 * max(1.0, float(logits.abs().max())), model.backend_name


@pytest.mark.parametrize("arch", sorted(PARALLEL))
def test_parallel_blocks_say_why_there_is_no_resid_mid(arch, loaded, tokens):
    for model in loaded(arch):
        with pytest.raises(SiteError, match="in parallel.*use resid_pre"):
            model.run_with_cache(tokens, [Site("resid_mid", 0)])


def test_key_value_heads_are_range_checked(loaded, tokens):
    _, nn = loaded("llama-gqa")
    nn.run_with_cache(tokens, [Site("q", 0, head=3)])
    with pytest.raises(SiteError, match="2 key/value heads"):
        nn.run_with_cache(tokens, [Site("k", 0, head=3)])


def test_an_architecture_without_a_site_map_names_the_built_in_ones_and_the_fallback():
    module = torch.nn.Linear(2, 2)
    module.config = types.SimpleNamespace(model_type="bloom")
    with pytest.raises(LoadError, match=r"'bloom'.*gpt2, gpt_neox, llama.*gptj.*backend='transformer_lens'"):
        HookedModel.from_module(module)

"""Devices and dtypes: ``interp.load(..., device=, dtype=)``, ``model.to``, tokens moved to the model,
float32 metrics on half-precision models, and clear errors for devices and dtypes that cannot be.

Every device present is a parameter: the CPU always, CUDA where ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp

import interp
from interp import DeviceError, DtypeError, InputError, InterpError, Site
from interp.tasks import PromptSet
from patching import activation_patch, kl_to, log_prob, logit_diff, metrics
from tests.conftest import D_VOCAB
from tests.test_architectures import _build

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKENDS = ["transformer_lens", "nnsight"]
#: bfloat16 keeps 8 significant bits: a bfloat16 sweep is within this fraction of the float32 sweep's
#: largest value (measured 1.5-3.7% on tiny random Llama models and the shipped induction-2l).
BF16_TOLERANCE = 0.05
#: the same float32 model on another device: summation order may differ in the last bits.
TOL = {"cpu": 1e-5, "cuda": 1e-4}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama with grouped-query attention, saved with save_pretrained."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llama-devices")
    _build("llama-gqa").eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _prompts() -> PromptSet:
    g = torch.Generator().manual_seed(0)
    clean, corrupted = torch.randint(1, D_VOCAB, (2, 3, 5), generator=g)
    clean[:, 0] = corrupted[:, 0] = 0
    answers = torch.randint(1, D_VOCAB, (3,), generator=g)
    return PromptSet(clean, corrupted, answers, answers % (D_VOCAB - 1) + 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_load_on_a_device_runs_there_and_moves_cpu_tokens(llama_dir, tokens, backend, device):
    ref = interp.load(llama_dir, backend=backend)
    assert ref.device.type == "cpu" and ref.dtype == torch.float32  # the defaults
    model = interp.load(llama_dir, backend=backend, device=device)
    assert model.device.type == device
    logits, cache = model.run_with_cache(tokens, [Site("k", 1), Site("resid_post", 0)])  # tokens on the CPU
    assert logits.device.type == device and cache[Site("k", 1)].device.type == device
    assert (logits.cpu() - ref(tokens)).abs().max() <= TOL[device]
    prompts = _prompts()  # on the CPU too
    got = activation_patch(model, prompts, "resid_pre", logit_diff, progress=False)
    expected = activation_patch(ref, prompts, "resid_pre", logit_diff, progress=False)
    assert got.values.device.type == "cpu"  # results come back for plotting and saving
    assert (got.values - expected.values).abs().max() <= TOL[device]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_model_to_moves_device_and_dtype_and_back(llama_dir, tokens, backend, device):
    model = interp.load(llama_dir, backend=backend)
    clean = model(tokens)
    assert model.to(device, torch.bfloat16) is model
    assert (model.device.type, model.dtype) == (device, torch.bfloat16)
    logits, cache = model.run_with_cache(tokens, [Site("z", 0)])
    assert logits.dtype == cache[Site("z", 0)].dtype == torch.bfloat16 and logits.device.type == device
    model.to("cpu").to(torch.float32)
    assert (model.device.type, model.dtype) == ("cpu", torch.float32)
    fresh = interp.load(llama_dir, backend=backend)
    for (name, p), q in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q.bfloat16().float()), name  # float32 again, each weight rounded once
    assert 0 < (model(tokens) - clean).abs().max() <= BF16_TOLERANCE * clean.abs().max()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_sweep_is_close_to_float32_and_its_metrics_are_float32(llama_dir, backend, device):
    prompts = _prompts()
    f32 = interp.load(llama_dir, backend=backend, device=device)
    bf16 = interp.load(llama_dir, backend=backend, device=device, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    logits = bf16(prompts.clean)
    assert logits.dtype == torch.bfloat16
    for metric in (logit_diff, log_prob, kl_to(f32(prompts.clean))):
        assert metric(logits, prompts).dtype == torch.float32
    expected = activation_patch(f32, prompts, "head_out", logit_diff, by_pos=False, progress=False).values
    got = activation_patch(bf16, prompts, "head_out", logit_diff, by_pos=False, progress=False).values
    assert got.dtype == torch.float32 and expected.std() > 1e-2
    assert (got - expected).abs().max() <= BF16_TOLERANCE * expected.abs().max()
    assert (got - expected).abs().max() > 0  # it really ran in bfloat16
    if device == "cpu":  # and TransformerLens's own sweep on the bfloat16 bridge agrees with ours
        tl = bf16 if backend == "transformer_lens" else interp.load(llama_dir, dtype=torch.bfloat16)
        _, clean_cache = tl.module.run_with_cache(prompts.clean)
        theirs = tlp.get_act_patch_attn_head_out_all_pos(tl.module, prompts.corrupted, clean_cache, metrics.mean(logit_diff, prompts))
        hooks = activation_patch(bf16, prompts, "head_out", logit_diff, by_pos=False, progress=False, engine="hooks").values
        assert (hooks - theirs.float()).abs().max() <= 1e-5  # the same bfloat16 operations
        # the fast engine (batched, fused attention) rounds differently in bfloat16, within its precision
        assert (got - theirs.float()).abs().max() <= BF16_TOLERANCE * expected.abs().max()


def test_bfloat16_native_model_sweep(tokenizer):
    from interp.models import build_native
    from tests.conftest import TINY

    f32 = build_native({**TINY, "attn_only": False, "d_mlp": 64}, tokenizer, seed=1)
    bf16 = build_native({**TINY, "attn_only": False, "d_mlp": 64}, tokenizer, seed=1).to(torch.bfloat16)
    prompts = _prompts()
    expected = activation_patch(f32, prompts, "resid_pre", logit_diff, progress=False).values
    got = activation_patch(bf16, prompts, "resid_pre", logit_diff, progress=False).values  # the fast engine
    assert got.dtype == torch.float32 and expected.std() > 1e-2
    assert 0 < (got - expected).abs().max() <= BF16_TOLERANCE * expected.abs().max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_devices_and_dtypes_that_cannot_be_get_clear_errors(llama_dir, tokens, backend):
    for device, message in [("cuda:7", "'cuda:7' does not exist"), ("tpu", "'tpu' is not a device"), ("meta", "holds no weights")]:
        with pytest.raises(DeviceError, match=rf"{message}.*Devices here: cpu.*device='cpu'"):
            interp.load(llama_dir, backend=backend, device=device)
    for dtype, message in [(torch.int8, "cannot run in torch.int8"), ("float17", "'float17' is not a torch dtype")]:
        with pytest.raises(DtypeError, match=message):
            interp.load(llama_dir, backend=backend, dtype=dtype)
    model = interp.load(llama_dir, backend=backend)
    clean = model(tokens)
    with pytest.raises(DeviceError, match="cuda:7"):
        model.to("cuda:7")
    with pytest.raises(DtypeError, match=r"floating point.*torch.bfloat16"):
        model.to(torch.int8)
    assert (model.device.type, model.dtype) == ("cpu", torch.float32) and torch.equal(model(tokens), clean)
    with pytest.raises(DeviceError, match="cannot be moved to the model's device"):
        model(torch.zeros(2, 3, dtype=torch.long, device="meta"))
    assert issubclass(DeviceError, InputError) and issubclass(DtypeError, InterpError)


def test_native_models_take_device_and_dtype_too():
    model = interp.load("induction-2l", dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    tokens = torch.randint(1, model.d_vocab, (2, 8), generator=torch.Generator().manual_seed(0))
    assert model(tokens).dtype == torch.bfloat16


# =============================================================================== split across devices
#: layer 1 (and, with "auto", everything past the embedding) lives on disk until it runs.
SPLITS = {
    "explicit-map": dict(device_map={
        "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
        "model.norm": "cpu", "lm_head": "cpu",
    }),
    "auto-max-memory": dict(device_map="auto", max_memory={"cpu": 50_000}),  # bytes: about half this model
}


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_split_across_cpu_and_disk_gives_the_same_numbers(llama_dir, tokens, tmp_path, backend, split):
    from patching import causal_trace

    whole = interp.load(llama_dir, backend=backend)
    model = interp.load(llama_dir, backend=backend, offload_folder=str(tmp_path), **SPLITS[split])
    assert model.is_split and not whole.is_split
    hf = getattr(model.module, "original_model", model.module)  # the bridge wraps the HF model
    assert hf.model.layers[1].self_attn.o_proj.weight.device.type == "meta"  # really on disk, not in memory
    assert (model(tokens) - whole(tokens)).abs().max() <= 1e-5
    sites = [Site(k, 1) for k in model.supported_kinds if k != "embed"]
    _, a = whole.run_with_cache(tokens, sites)
    _, b = model.run_with_cache(tokens, sites)
    for site in sites:
        assert (a[site] - b[site]).abs().max() <= 1e-5, site
    prompts = _prompts()
    for kind, by_pos in [("resid_pre", None), ("head_out", False)]:
        expected = activation_patch(whole, prompts, kind, logit_diff, by_pos=by_pos, progress=False).values
        got = activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, progress=False).values
        assert expected.std() > 1e-2 and (got - expected).abs().max() <= 1e-5, kind
    trace = dict(subject_positions=[1, 2], answers=prompts.answers, samples=2, kinds=("resid", "mlp"), progress=False)
    expected = causal_trace(whole, prompts.clean, **trace)
    got = causal_trace(model, prompts.clean, **trace)
    for kind in ("resid", "mlp"):
        assert (got.probs[kind] - expected.probs[kind]).abs().max() <= 1e-5, kind
    with pytest.raises(DeviceError, match="split across devices"):
        model.to("cpu")
    with pytest.raises(DeviceError, match="drop device="):
        interp.load(llama_dir, backend=backend, device="cpu", offload_folder=str(tmp_path), **SPLITS[split])

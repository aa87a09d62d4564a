"""HookedModel: every activation of a model under one naming scheme, whatever runs it.

    model = interp.load("induction-2l")                         # a shipped model (TransformerLens)
    model = interp.load("path/to/hf_dir", backend="nnsight")    # any local Hugging Face causal LM
    logits, cache = model.run_with_cache(tokens, ["blocks.1.attn.hook_pattern", Site("z", 0)])
    with model.edit({Site("resid_pre", 1, pos=3): clean_act}):  # Replace, Add, Scale or a function
        patched = model(tokens)

Backends: ``transformer_lens`` (a TransformerLens 4 ``TransformerBridge``: our small models via
``boot_native``, Hugging Face directories via ``boot_transformers``) and ``nnsight`` (Hugging Face
models of the architectures in ``BUILT_IN_SITE_MAPS``: GPT-2, GPT-NeoX, GPT-J, Llama, Mistral,
Qwen2/3, Gemma/Gemma 2, OLMo/OLMo 2, Phi-3, grouped-query attention included; or any
``torch.nn.Module`` given a site map). Hooks only
live inside a single forward call made through this class, so none can outlive it, even when the
forward raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.errors import InputError, LoadError, SiteError
from interp.interventions import Intervention, apply_at, as_intervention
from interp.sites import EXECUTION_ORDER, HOOK_NAMES, KINDS, MLP_KINDS, Site, SiteLike, as_site

TapFn = Callable[[Tensor], Tensor | None]
Taps = dict[tuple[str, int | None], TapFn]
BACKENDS = ("transformer_lens", "nnsight")
#: A tap kind that is no Site: the sum of the heads' writes where a norm follows the attention
#: (Gemma 2, OLMo 2), which is where ``head_out`` edits apply. Runs between head_out and attn_out.
ATTN_SUM = "attn_sum"
_ORDER = {**EXECUTION_ORDER, ATTN_SUM: EXECUTION_ORDER["head_out"] + 0.5}


# =============================================================================== devices, dtypes
class DeviceError(InputError):
    """A device that does not exist on this machine (``"cuda:7"``, ``"tpu"``), or tokens the model cannot reach."""


class DtypeError(InputError):
    """A dtype the backends cannot run a model in (integer, boolean or complex types)."""


#: dtypes both backends run a model in (float16 on the CPU is slow but works).
RUNNABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def available_devices() -> list[str]:
    """The devices a model can be put on here: ``cpu``, then ``cuda:i`` for each GPU, ``mps`` on Apple."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device if it exists on this machine; a DeviceError naming it otherwise."""
    here = ", ".join(available_devices())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(
            f"{device!r} is not a device torch knows. Devices here: {here}; pass one of them, e.g. device='cpu'."
        ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise DeviceError(
            f"device='meta' holds no weights, so a model cannot run there. Devices here: {here}; pass one of "
            f"them, e.g. device='cpu'."
        )
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= n:
            have = "this machine has no CUDA device" if n == 0 else f"this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}"
            raise DeviceError(f"Device {device!r} does not exist: {have}. Devices here: {here}; pass one of them, e.g. device='cpu'.")
        return dev
    try:
        torch.empty(1, device=dev)
    except Exception:
        raise DeviceError(
            f"Device {device!r} is not available on this machine. Devices here: {here}; pass one of them, e.g. device='cpu'."
        ) from None
    return dev


def check_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``dtype`` (a torch.dtype or its name, ``"bfloat16"``) if the backends can run a model in it."""
    if isinstance(dtype, str):
        named = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(named, torch.dtype):
            raise DtypeError(f"{dtype!r} is not a torch dtype; pass e.g. torch.bfloat16 or 'bfloat16'.")
        dtype = named
    if not isinstance(dtype, torch.dtype):
        raise DtypeError(f"dtype must be a torch.dtype such as torch.bfloat16, got {type(dtype).__name__}.")
    if dtype not in RUNNABLE_DTYPES:
        raise DtypeError(
            f"A model cannot run in {dtype}: its weights and activations must be floating point. Use one of "
            f"{', '.join(str(d) for d in RUNNABLE_DTYPES)}. (For 8- or 4-bit weights, load the Hugging Face "
            f"model with a quantization_config yourself and wrap it with HookedModel.from_module.)"
        )
    return dtype


# =============================================================================== backends
class Backend:
    """What a backend provides: shapes, a tokenizer, a trainable module, and `run` with taps.

    ``run(tokens, taps)`` does one forward pass; ``taps[(kind, layer)]`` is called with the full
    activation of that site (layout as in `interp.sites`) and returns a replacement or None. With
    ``use_cache=True`` it runs ``tokens`` after the keys and values in ``past`` (a Hugging Face
    cache, or None to start one) and returns ``(logits, cache)``: incremental decoding.
    """

    name: str
    module: nn.Module
    tokenizer: Any
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    d_mlp: int | None
    kinds: tuple[str, ...]
    n_kv_heads: int
    #: True where a norm sits between the heads' summed writes and attn_out (see `ATTN_SUM`).
    post_attn_norm: bool = False
    #: Whether `run` takes ``use_cache=True`` (incremental decoding for `HookedModel.generate`).
    supports_kv_cache: bool = False

    def run(self, tokens: Tensor, taps: Taps, past: Any = None, use_cache: bool = False) -> Tensor | tuple[Tensor, Any]:
        raise NotImplementedError

    def W_O(self, layer: int) -> Float[Tensor, "head d_head d_model"]:
        raise NotImplementedError


class TransformerLensBackend(Backend):
    """A TransformerLens 4 ``TransformerBridge``; taps are forward hooks on its HookPoints."""

    name = "transformer_lens"

    def __init__(self, bridge: nn.Module):
        self.bridge = self.module = bridge
        cfg = bridge.cfg
        self.tokenizer = bridge.tokenizer
        self.n_layers, self.n_heads, self.d_model = cfg.n_layers, cfg.n_heads, cfg.d_model
        self.d_head, self.d_vocab, self.n_ctx = cfg.d_head, cfg.d_vocab, cfg.n_ctx
        self.d_mlp = None if cfg.attn_only else cfg.d_mlp
        self.n_kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        present = set(bridge.hook_dict)
        self.kinds = tuple(
            k for k in KINDS if k != "head_out" and HOOK_NAMES[k].format(layer=0) in present
        )
        self.post_attn_norm = "blocks.0.ln1_post.hook_in" in present

    def run(self, tokens: Tensor, taps: Taps, past: Any = None, use_cache: bool = False) -> Tensor:
        if use_cache:  # see supports_kv_cache
            raise NotImplementedError("the transformer_lens backend runs without a key/value cache")
        added = []
        try:
            for (kind, layer), fn in taps.items():
                point = self.bridge.hook_dict[_TL_NAMES[kind].format(layer=layer)]
                # TL's add_hook applies the point's shape conversion (hook_z is flat underneath).
                added.append((point, point.add_hook(_tl_hook(fn))))
            if not any(kind == "pattern" for kind, _ in taps):
                return self.bridge(tokens)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                logits = self.bridge(tokens)
            for w in caught:
                if "edit is discarded" in str(w.message):
                    raise SiteError(
                        "The transformer_lens backend cannot edit attention patterns of this architecture "
                        "(its bridge reads the pattern after the Hugging Face module has used it, so the "
                        "edit would be silently lost). Load the model with backend='nnsight', or edit "
                        "'z' or 'head_out' instead."
                    )
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            return logits
        finally:
            for point, handle in added:
                handle.hook.remove()
                if handle in point.fwd_hooks:
                    point.fwd_hooks.remove(handle)

    def W_O(self, layer: int) -> Tensor:
        return self.bridge.blocks[layer].attn.W_O


_TL_NAMES = {**HOOK_NAMES, ATTN_SUM: "blocks.{layer}.attn.o.hook_out"}


def _tl_hook(fn: TapFn):
    def hook(activation, hook):
        return fn(activation)

    return hook


@dataclass(frozen=True)
class Tap:
    """Where a site kind lives in an nnsight-wrapped module.

    ``path`` is an attribute path with ``{layer}`` (``"transformer.h.{layer}.attn.c_proj"``);
    ``io`` is "input" or "output"; ``get`` turns the raw value into the site layout and
    ``put(raw, new)`` builds the raw value back from an edited activation.
    """

    path: str
    io: str = "output"
    get: Callable[[Any], Tensor] = lambda raw: raw
    put: Callable[[Any, Tensor], Any] = lambda raw, new: new


def _first(raw):
    return raw[0] if isinstance(raw, tuple | list) else raw


def _replace_first(raw, new):
    return (new, *raw[1:]) if isinstance(raw, tuple | list) else new


@dataclass
class SiteMap:
    """How to find each site kind in a module, for the nnsight backend.

    ``taps`` maps kind -> Tap (or a path string, meaning that module's output). ``pattern`` is
    the path of the attention module whose attention function the pattern is read from (a
    Hugging Face ``attention_interface`` call), or None. ``logits`` extracts the logits from the
    module's output. The shape fields describe the model; ``n_kv_heads`` is the number of key/value
    heads under grouped-query attention (None: one per query head). ``attn_sum`` is where the sum
    of the heads' writes (``z @ W_O``) appears when that is not ``attn_out`` (a norm follows the
    attention, as in Gemma 2 and OLMo 2): ``head_out`` edits are applied there.
    """

    taps: dict[str, Tap | str]
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    d_mlp: int | None = None
    W_O: Callable[[nn.Module, int], Tensor] | None = None
    pattern: str | None = None
    logits: Callable[[Any], Tensor] = field(default=lambda out: getattr(out, "logits", out))
    n_kv_heads: int | None = None
    attn_sum: Tap | str | None = None


def _split_heads(n_heads: int) -> dict:
    """Getter/putter pair for a [batch pos (head d)] tensor shown as [batch pos head d]."""
    return dict(
        get=lambda raw: einops.rearrange(raw, "b p (h d) -> b p h d", h=n_heads),
        put=lambda raw, new: einops.rearrange(new, "b p h d -> b p (h d)"),
    )


def _fused_qkv(which: int, n_heads: int, d_head: int, layout: str) -> dict:
    """q, k or v out of a fused projection: GPT-2 packs (3 h d), GPT-NeoX packs (h 3 d)."""
    pattern = f"b p ({layout}) -> b p three h d"

    def get(raw):
        return einops.rearrange(raw, pattern, three=3, h=n_heads)[:, :, which]

    def put(raw, new):
        parts = einops.rearrange(raw, pattern, three=3, h=n_heads).clone()
        parts[:, :, which] = new
        return einops.rearrange(parts, f"b p three h d -> b p ({layout})")

    return dict(get=get, put=put)


def _concat_qkv(which: int, n_heads: int, n_kv_heads: int, d_head: int) -> dict:
    """q, k or v out of a projection that concatenates [q (h d) | k (kv d) | v (kv d)] (Phi-3)."""
    sizes = (n_heads * d_head, n_kv_heads * d_head, n_kv_heads * d_head)
    start, heads = sum(sizes[:which]), (n_heads, n_kv_heads, n_kv_heads)[which]

    def get(raw):
        return einops.rearrange(raw[..., start : start + sizes[which]], "b p (h d) -> b p h d", h=heads)

    def put(raw, new):
        out = raw.clone()
        out[..., start : start + sizes[which]] = einops.rearrange(new, "b p h d -> b p (h d)")
        return out

    return dict(get=get, put=put)


#: Hugging Face ``model_type`` -> architecture family, for the built-in site maps.
_LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "phi3")
BUILT_IN_SITE_MAPS = ("gpt2", "gpt_neox", *_LLAMA_LIKE, "gptj")
#: Llama-style architectures whose attention and MLP outputs pass through a norm before the residual
#: add: (attn_out module, resid_mid tap, mlp_out module), relative to the block.
_POST_NORMS = {
    "gemma2": ("post_attention_layernorm", Tap("{block}.pre_feedforward_layernorm", "input"), "post_feedforward_layernorm"),
    "olmo2": ("post_attention_layernorm", Tap("{block}.mlp", "input"), "post_feedforward_layernorm"),
}


def _block_taps(embed: str, block: str, attn: str, qkv: dict[str, Tap], out_proj: str, mlp: str, mlp_down: str,
                n_heads: int, resid_mid: str | None = None) -> dict[str, Tap | str]:
    """The taps every decoder-block layout shares: ``block`` / ``attn`` / ``mlp`` are module paths
    with ``{layer}``; ``out_proj`` and ``mlp_down`` name the attention's output projection (whose
    input is z) and the MLP's last linear map (whose input is mlp_post); ``resid_mid`` is the
    module whose input is the residual between the two adds (None for parallel blocks)."""
    taps: dict[str, Tap | str] = {
        "embed": embed,
        "resid_pre": Tap(block, "input"),
        **qkv,
        "z": Tap(f"{attn}.{out_proj}", "input", **_split_heads(n_heads)),
        "attn_out": Tap(attn, get=_first, put=_replace_first),
        "mlp_post": Tap(f"{mlp}.{mlp_down}", "input"),
        "mlp_out": mlp,
        "resid_post": Tap(block, get=_first, put=_replace_first),
    }
    if resid_mid is not None:
        taps["resid_mid"] = Tap(resid_mid, "input")
    return taps


def hf_site_map(hf_model: nn.Module) -> SiteMap:
    """The site map of a Hugging Face model of one of the `BUILT_IN_SITE_MAPS` architectures.

    Which tensor each site is follows TransformerLens: ``q, k, v`` are the projections' outputs
    (before rotary embeddings and before any QK-norm); ``k, v`` have one head per key/value head
    (``[batch pos kv_head d_head]``, grouped-query attention), ``q, z, pattern, head_out`` one per
    query head. In Gemma 2 and OLMo 2, whose attention and MLP outputs are normed before the
    residual add, ``attn_out`` and ``mlp_out`` are the normed outputs (what is added to the
    residual), ``resid_mid`` is the residual between the two adds, and ``head_out`` is each head's
    share of the attention output *before* the norm (its edits are applied there). GPT-J and
    GPT-NeoX with ``use_parallel_residual`` have no ``resid_mid``.
    """
    cfg = hf_model.config
    kind = cfg.model_type
    if kind == "gpt2":
        h, dm = cfg.n_head, cfg.n_embd
        dh = dm // h
        block, attn = "transformer.h.{layer}", "transformer.h.{layer}.attn"
        qkv = {name: Tap(f"{attn}.c_attn", **_fused_qkv(i, h, dh, "three h d")) for i, name in enumerate("qkv")}
        taps = _block_taps("transformer.wte", block, attn, qkv, "c_proj", f"{block}.mlp", "c_proj", h, f"{block}.ln_2")
        return SiteMap(
            taps, cfg.n_layer, h, dm, dh, cfg.vocab_size, cfg.n_positions, cfg.n_inner or 4 * dm,
            W_O=lambda m, layer: m.transformer.h[layer].attn.c_proj.weight.reshape(h, dh, dm),
            pattern=attn,
        )
    if kind == "gpt_neox":
        h, dm = cfg.num_attention_heads, cfg.hidden_size
        dh = dm // h
        block, attn = "gpt_neox.layers.{layer}", "gpt_neox.layers.{layer}.attention"
        qkv = {name: Tap(f"{attn}.query_key_value", **_fused_qkv(i, h, dh, "h three d")) for i, name in enumerate("qkv")}
        mid = None if cfg.use_parallel_residual else f"{block}.post_attention_layernorm"  # parallel: no resid_mid
        taps = _block_taps("gpt_neox.embed_in", block, attn, qkv, "dense", f"{block}.mlp", "dense_4h_to_h", h, mid)
        return SiteMap(
            taps, cfg.num_hidden_layers, h, dm, dh, cfg.vocab_size, cfg.max_position_embeddings,
            cfg.intermediate_size,
            W_O=lambda m, layer: m.gpt_neox.layers[layer].attention.dense.weight.T.reshape(h, dh, dm),
            pattern=attn,
        )
    if kind == "gptj":
        h, dm = cfg.n_head, cfg.n_embd
        dh = dm // h
        block, attn = "transformer.h.{layer}", "transformer.h.{layer}.attn"
        qkv = {name: Tap(f"{attn}.{name}_proj", **_split_heads(h)) for name in "qkv"}
        # attention and MLP both read ln_1(resid_pre): no resid_mid
        taps = _block_taps("transformer.wte", block, attn, qkv, "out_proj", f"{block}.mlp", "fc_out", h)
        return SiteMap(
            taps, cfg.n_layer, h, dm, dh, cfg.vocab_size, cfg.n_positions, cfg.n_inner or 4 * dm,
            W_O=lambda m, layer: m.transformer.h[layer].attn.out_proj.weight.T.reshape(h, dh, dm),
            pattern=attn,
        )
    if kind in _LLAMA_LIKE:
        h, dm = cfg.num_attention_heads, cfg.hidden_size
        dh = getattr(cfg, "head_dim", None) or dm // h
        kv = getattr(cfg, "num_key_value_heads", None) or h
        block, attn = "model.layers.{layer}", "model.layers.{layer}.self_attn"
        if kind == "phi3":
            qkv = {name: Tap(f"{attn}.qkv_proj", **_concat_qkv(i, h, kv, dh)) for i, name in enumerate("qkv")}
        else:
            qkv = {
                "q": Tap(f"{attn}.q_proj", **_split_heads(h)),
                "k": Tap(f"{attn}.k_proj", **_split_heads(kv)),
                "v": Tap(f"{attn}.v_proj", **_split_heads(kv)),
            }
        taps = _block_taps("model.embed_tokens", block, attn, qkv, "o_proj", f"{block}.mlp", "down_proj", h,
                           f"{block}.post_attention_layernorm")
        attn_sum = None
        if kind in _POST_NORMS:
            attn_norm, resid_mid, mlp_norm = _POST_NORMS[kind]
            taps["attn_out"] = f"{block}.{attn_norm}"
            taps["resid_mid"] = Tap(resid_mid.path.format(block=block), resid_mid.io)
            taps["mlp_out"] = f"{block}.{mlp_norm}"
            attn_sum = f"{attn}.o_proj"
        return SiteMap(
            taps, cfg.num_hidden_layers, h, dm, dh, cfg.vocab_size, cfg.max_position_embeddings,
            cfg.intermediate_size,
            W_O=lambda m, layer: m.model.layers[layer].self_attn.o_proj.weight.T.reshape(h, dh, dm),
            pattern=attn, n_kv_heads=kv, attn_sum=attn_sum,
        )
    raise LoadError(
        f"No built-in nnsight site map for Hugging Face model_type {kind!r} (built in: "
        f"{', '.join(BUILT_IN_SITE_MAPS)}). Load it with backend='transformer_lens' (TransformerLens "
        f"supports many more architectures), or pass site_map=SiteMap(...) to HookedModel.from_module."
    )


class NNsightBackend(Backend):
    """Any torch module through nnsight; taps are reads and writes inside one ``trace``."""

    name = "nnsight"
    supports_kv_cache = True

    def __init__(self, module: nn.Module, site_map: SiteMap, tokenizer: Any = None):
        from nnsight import NNsight

        self.module = module
        self.envoy = NNsight(module)
        self.site_map = site_map
        self.tokenizer = tokenizer
        for attr in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx", "d_mlp"):
            setattr(self, attr, getattr(site_map, attr))
        self.n_kv_heads = site_map.n_kv_heads or site_map.n_heads
        self.taps = {k: Tap(t) if isinstance(t, str) else t for k, t in site_map.taps.items()}
        unknown = set(self.taps) - set(KINDS)
        if unknown:
            raise SiteError(f"Site map names unknown kinds {sorted(unknown)}; valid kinds: {', '.join(KINDS)}.")
        kinds = set(self.taps)
        if site_map.attn_sum is not None:
            s = site_map.attn_sum
            self.taps[ATTN_SUM] = Tap(s) if isinstance(s, str) else s
            self.post_attn_norm = True
        if site_map.pattern is not None:
            kinds.add("pattern")
        self.kinds = tuple(k for k in KINDS if k in kinds)
        self._attention_call: str | None = None

    def _envoy(self, path: str, layer: int | None):
        obj = self.envoy
        for part in path.format(layer=layer).split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        return obj

    def _attention_op(self, layer: int):
        """The envoy of the attention-function call inside the attention module's source."""
        attn = self._envoy(self.site_map.pattern, layer)
        if self._attention_call is None:
            names = re.findall(r"attention_interface_(\d+)", str(attn.source))
            if not names:
                raise SiteError(
                    "Cannot find the attention function call in this model's attention module, so "
                    "its pattern is not reachable; load it with attn_implementation='eager'."
                )
            self._attention_call = f"attention_interface_{max(int(n) for n in names)}"
        return getattr(attn.source, self._attention_call)

    def run(self, tokens: Tensor, taps: Taps, past: Any = None, use_cache: bool = False) -> Tensor | tuple[Tensor, Any]:
        order = sorted(taps, key=lambda key: (-1 if key[1] is None else key[1], _ORDER[key[0]]))
        # Source operations must be requested before their module starts running.
        ops = {layer: self._attention_op(layer) for kind, layer in order if kind == "pattern"}
        forward = dict(past_key_values=past, use_cache=True) if use_cache else {}
        with self.envoy.trace(tokens, **forward):
            for kind, layer in order:
                fn = taps[(kind, layer)]
                if kind == "pattern":
                    op = ops[layer]
                    args, _ = op.inputs
                    out = op.output
                    new = fn(out[1])
                    if new is not None:  # recompute the heads' outputs from the new pattern and v
                        v = args[3]  # [batch kv_head key d_head]: each serves n_heads / n_kv_heads queries
                        v = v.repeat_interleave(new.shape[1] // v.shape[1], dim=1)
                        z = torch.einsum("bhqk,bhkd->bqhd", new.to(v.dtype), v)
                        op.output = (z, new)
                    continue
                tap = self.taps[kind]
                envoy = self._envoy(tap.path, layer)
                raw = envoy.output if tap.io == "output" else envoy.input
                new = fn(tap.get(raw))
                if new is not None:
                    if tap.io == "output":
                        envoy.output = tap.put(raw, new)
                    else:
                        envoy.input = tap.put(raw, new)
            logits = self.site_map.logits(self.envoy.output).save()
            if use_cache:
                cache = self.envoy.output.past_key_values.save()
        return (logits, cache) if use_cache else logits

    def W_O(self, layer: int) -> Tensor:
        if self.site_map.W_O is None:
            raise SiteError("This site map gives no W_O, so 'head_out' is not available; add W_O to the SiteMap.")
        W_O = self.site_map.W_O(self.module, layer)
        if W_O.device.type == "meta" and "z" in self.taps:  # offloaded by accelerate: load it for a moment
            from accelerate.utils import align_module_device

            with align_module_device(self.module.get_submodule(self.taps["z"].path.format(layer=layer))):
                W_O = self.site_map.W_O(self.module, layer).clone()  # z is the input of W_O's projection
        return W_O


# =============================================================================== the model
class Cache(dict):
    """Activations by Site; also indexable by TransformerLens hook name."""

    def __getitem__(self, key: SiteLike) -> Tensor:
        site = as_site(key)
        if not dict.__contains__(self, site):
            have = ", ".join(str(s) for s in self) or "nothing"
            raise SiteError(f"{site} was not cached (this cache holds: {have}). Request it in run_with_cache.")
        return dict.__getitem__(self, site)

    def __contains__(self, key) -> bool:
        try:
            return dict.__contains__(self, as_site(key))
        except SiteError:
            return False


class HookedModel(nn.Module):
    """A model whose every activation is reachable by `Site`, on either backend.

        model = interp.load("induction-2l")
        logits, cache = model.run_with_cache(tokens, [Site("pattern", 1)])
        with model.edit({Site("z", 1, head=0): Scale(0.0)}): ablated = model(tokens)

    Attributes: ``n_layers, n_heads, d_model, d_head, d_vocab, n_ctx, d_mlp`` (None when
    attention-only), ``tokenizer``, ``backend`` and ``module`` (the underlying torch module).
    """

    def __init__(self, backend: Backend, name: str | None = None, info: Mapping | None = None):
        super().__init__()
        self.backend = backend
        self.module = backend.module  # registered: .parameters(), .to(), .train() reach it
        self.name = name
        self.info = dict(info or {})
        #: how `interp.load` made this model (``interp.load(**model.source)`` loads it again, e.g. in a
        #: Ray worker); None for a model built in memory. See `reload_arguments`.
        self.source: dict | None = None
        self._source_versions: tuple[int, ...] = ()
        self._edits: list[tuple[Site, Intervention]] = []
        #: whether `to_tokens` puts the tokenizer's BOS first when not told (True, as TransformerLens
        #: does; set it to False once for a model that should read texts as they are).
        self.prepend_bos: bool = True

    # ------------------------------------------------------------------ description
    n_layers = property(lambda self: self.backend.n_layers)
    n_heads = property(lambda self: self.backend.n_heads)
    #: key/value heads: fewer than n_heads under grouped-query attention (the head axis of k and v).
    n_kv_heads = property(lambda self: getattr(self.backend, "n_kv_heads", None) or self.backend.n_heads)
    d_model = property(lambda self: self.backend.d_model)
    d_head = property(lambda self: self.backend.d_head)
    d_vocab = property(lambda self: self.backend.d_vocab)
    n_ctx = property(lambda self: self.backend.n_ctx)
    d_mlp = property(lambda self: self.backend.d_mlp)
    tokenizer = property(lambda self: self.backend.tokenizer)
    backend_name = property(lambda self: self.backend.name)

    @property
    def has_mlp(self) -> bool:
        return self.backend.d_mlp is not None

    @property
    def supported_kinds(self) -> tuple[str, ...]:
        kinds = set(self.backend.kinds)
        if {"z", "attn_out"} <= kinds and _has_w_o(self.backend):
            kinds.add("head_out")
        if not self.has_mlp:
            kinds -= MLP_KINDS
        return tuple(k for k in KINDS if k in kinds)

    def why_unsupported(self, kind: str) -> str:
        """A sentence on why this model has no ``kind`` and what to use instead ('' if no reason is known)."""
        if kind == "resid_mid" and self.has_mlp and "resid_pre" in self.supported_kinds:
            return (
                "Its blocks run attention and MLP in parallel (GPT-J, GPT-NeoX with use_parallel_residual), "
                "both reading resid_pre, so there is no residual state between them: use resid_pre (what "
                "the MLP reads), attn_out or mlp_out instead."
            )
        return ""

    @property
    def device(self) -> torch.device:
        """Where the model takes its tokens (the embedding's device when it is split across devices)."""
        p = next(self.module.parameters(), None)
        if p is None or p.device.type == "meta":  # offloaded to disk: accelerate's hooks place inputs
            return torch.device("cpu")
        return p.device

    @property
    def is_split(self) -> bool:
        """True for a model dispatched across devices by accelerate (loaded with ``device_map``)."""
        hf = getattr(self.module, "original_model", self.module)  # the bridge wraps the HF model
        return len(set((getattr(hf, "hf_device_map", None) or {}).values())) > 1

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.module.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def to(self, device: str | torch.device | torch.dtype | None = None, dtype: torch.dtype | str | None = None) -> HookedModel:
        """Move the model to a device and/or dtype: ``model.to("cuda")``, ``model.to(torch.bfloat16)``,
        ``model.to("cuda", torch.bfloat16)``. Checked first: a device that does not exist raises
        DeviceError, a dtype the model cannot run in DtypeError, and then nothing is moved."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        device = None if device is None else check_device(device)
        dtype = None if dtype is None else check_dtype(dtype)
        if self.is_split and (device is not None or dtype is not None):
            raise DeviceError(
                "This model is split across devices (loaded with device_map), so it cannot be moved or cast as a "
                "whole; load it again with device=... instead of device_map, or with dtype=... and the device_map."
            )
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if moves:
            if isinstance(self.backend, TransformerLensBackend):
                self.module.to(**moves, print_details=False)  # the bridge keeps its config in step
            else:
                self.module.to(**moves)
        return self

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, backend={self.backend_name!r}, n_layers={self.n_layers}, "
            f"n_heads={self.n_heads}, d_model={self.d_model}, d_head={self.d_head}, "
            f"d_mlp={self.d_mlp}, d_vocab={self.d_vocab}, n_ctx={self.n_ctx}"
        )

    def __repr__(self) -> str:
        """One line (nn.Module's default prints every submodule: hundreds of lines for a real
        model); ``print(model.module)`` shows the tree."""
        kv = f", n_kv_heads={self.n_kv_heads}" if self.n_kv_heads != self.n_heads else ""
        return f"HookedModel({self.extra_repr()}{kv}, dtype={str(self.dtype).removeprefix('torch.')}, device={self.device})"

    # ------------------------------------------------------------------ tokens
    def to_tokens(self, texts: str | Sequence[str], prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]:
        """Token ids ``[batch pos]``, right-padded to the longest text; BOS first when
        ``prepend_bos`` (None: the model's default, ``model.prepend_bos``)."""
        tok = self._need_tokenizer()
        prepend_bos = self.prepend_bos if prepend_bos is None else prepend_bos
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        if prepend_bos:
            if tok.bos_token_id is None:
                raise InputError("This tokenizer has no BOS token; call to_tokens(..., prepend_bos=False).")
            ids = [[tok.bos_token_id, *i] for i in ids]
        width = max(len(i) for i in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        return torch.tensor([i + [pad] * (width - len(i)) for i in ids], dtype=torch.long, device=self.device)

    def to_str_tokens(self, tokens: str | Tensor | Sequence[int], prepend_bos: bool | None = None) -> list[str] | list[list[str]]:
        """Each token as the text it stands for (a list of lists for a batch): ``" Paris"`` and
        ``"\\n"``, not a byte-level BPE symbol such as ``"ĠParis"`` or ``"Ċ"``."""
        tok = self._need_tokenizer()
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens, prepend_bos=prepend_bos)[0]
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            return [token_texts(tok, row.tolist()) for row in tokens]
        return token_texts(tok, tokens.tolist())

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise InputError("This model has no tokenizer; pass token ids (a LongTensor [batch pos]) instead of text.")
        return self.tokenizer

    def check_tokens(self, tokens) -> Int[Tensor, "batch pos"]:
        """Validate token ids and return them as a LongTensor ``[batch pos]`` (a 1-D input gets a batch axis)."""
        if isinstance(tokens, str) or (isinstance(tokens, list | tuple) and tokens and isinstance(tokens[0], str)):
            return self.to_tokens(tokens)
        if not isinstance(tokens, Tensor):
            raise InputError(f"Expected token ids as a torch.LongTensor [batch pos], got {type(tokens).__name__}.")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise InputError(
                f"Token ids must be integers, got dtype {tokens.dtype}. Convert with tokens.long(), or "
                f"use model.to_tokens(text)."
            )
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2:
            raise InputError(f"Token ids must be [batch pos] (rank 2) or [pos] (rank 1), got shape {tuple(tokens.shape)}.")
        if tokens.shape[1] == 0 or tokens.shape[0] == 0:
            raise InputError(f"Got an empty batch of tokens, shape {tuple(tokens.shape)}.")
        if tokens.shape[1] > self.n_ctx:
            raise InputError(
                f"Sequences of {tokens.shape[1]} tokens exceed this model's context of {self.n_ctx}; truncate them."
            )
        if tokens.device != self.device:  # as TransformerLens does: the model's device wins
            try:
                tokens = tokens.to(self.device)
            except Exception as err:
                raise DeviceError(
                    f"Tokens on {tokens.device} cannot be moved to the model's device {self.device} ({type(err).__name__}: "
                    f"{err}); create them on {self.device} or on the CPU."
                ) from None
        lo, hi = (int(t) for t in torch.aminmax(tokens))
        if lo < 0 or hi >= self.d_vocab:
            raise InputError(f"Token ids must lie in [0, {self.d_vocab}) for this model's vocabulary; got values from {lo} to {hi}.")
        return tokens.long()

    # ------------------------------------------------------------------ running
    def forward(self, tokens) -> Float[Tensor, "batch pos vocab"]:
        """Logits ``[batch pos d_vocab]``, with any interventions of enclosing ``edit`` blocks applied."""
        return self.run(tokens)[0]

    def run_with_cache(
        self, tokens, sites: SiteLike | Iterable[SiteLike], detach: bool = True
    ) -> tuple[Float[Tensor, "batch pos vocab"], Cache]:
        """Logits and only the requested activations, as a `Cache` keyed by Site.

        A site with ``head`` / ``pos`` is cached as that slice (e.g. ``Site("z", 1, head=0)`` ->
        ``[batch pos d_head]``). Activations are detached unless ``detach=False`` (for gradients).
        """
        sites = [sites] if isinstance(sites, Site | str) else list(sites)
        if not sites:
            raise InputError("run_with_cache needs at least one site; for logits alone call model(tokens).")
        return self.run(tokens, reads=sites, detach=detach)

    def run(
        self,
        tokens,
        reads: Iterable[SiteLike] = (),
        edits: Mapping[SiteLike, Any] | Iterable[tuple[SiteLike, Any]] = (),
        detach: bool = True,
    ) -> tuple[Tensor, Cache]:
        """One forward pass with the enclosing ``edit`` blocks' interventions, then ``edits``, applied,
        caching ``reads`` (each read sees the activation after the interventions at its site)."""
        tokens = self.check_tokens(tokens)
        seq = tokens.shape[1]
        reads = [as_site(s).validate(self, seq) for s in reads]
        all_edits = [*self._edits, *self._parse_edits(edits, seq)]
        cache = Cache()
        taps = self._build_taps(reads, all_edits, cache, detach)
        logits = self.backend.run(tokens, taps)
        return logits, cache

    def _parse_edits(self, edits, seq: int | None = None) -> list[tuple[Site, Intervention]]:
        items = edits.items() if isinstance(edits, Mapping) else edits
        return [(as_site(s).validate(self, seq), as_intervention(iv)) for s, iv in items]

    def _build_taps(self, reads: list[Site], edits: list[tuple[Site, Intervention]], cache: Cache, detach: bool) -> Taps:
        by_key: dict[tuple[str, int | None], tuple[list, list]] = {}
        for site, iv in edits:
            by_key.setdefault((site.kind, site.layer), ([], []))[0].append((site, iv))
        for site in reads:
            by_key.setdefault((site.kind, site.layer), ([], []))[1].append(site)

        def store(site: Site, act: Tensor) -> None:
            part = site.select(act)
            cache[site] = part.detach().clone() if detach else part

        def make(key_edits, key_reads) -> TapFn:
            def tap(act: Tensor) -> Tensor | None:
                new = act
                for site, iv in key_edits:
                    new = apply_at(site, iv, new)
                for site in key_reads:
                    store(site, new)
                # an edit may hand over a broadcast (a mean source); modules .view() their input (GPT-2's Conv1D)
                return None if new is act else new.contiguous()

            return tap

        taps: Taps = {}
        head_out_layers = {layer for (kind, layer) in by_key if kind == "head_out"}
        for (kind, layer), (key_edits, key_reads) in by_key.items():
            if kind != "head_out":
                taps[(kind, layer)] = make(key_edits, key_reads)
        for layer in head_out_layers:
            self._head_out_taps(taps, layer, *by_key[("head_out", layer)], store)
        return taps

    def _head_out_taps(self, taps: Taps, layer: int, edits, reads, store) -> None:
        """head_out = z @ W_O per head. Read it at z; apply its edits as a change to attn_out (or,
        where a norm follows the attention, to the heads' summed writes before it)."""
        delta: list[Tensor] = []
        z_tap = taps.get(("z", layer))
        sum_key = (ATTN_SUM if self.backend.post_attn_norm else "attn_out", layer)
        out_tap = taps.get(sum_key)

        def at_z(z: Tensor) -> Tensor | None:
            new_z = z_tap(z) if z_tap is not None else None
            z_used = z if new_z is None else new_z
            # W_O is read during the forward: a layer offloaded by accelerate has its weights only then.
            W_O = self.backend.W_O(layer).to(z_used.device, z_used.dtype)
            result = einops.einsum(z_used, W_O, "b p h d, h d m -> b p h m")
            new = result
            for site, iv in edits:
                new = apply_at(site, iv, new)
            for site in reads:
                store(site, new)
            if new is not result:
                delta.append((new - result).sum(dim=2))
            return new_z

        def at_attn_out(out: Tensor) -> Tensor | None:
            new = out + delta.pop() if delta else out
            if out_tap is not None:
                edited = out_tap(new)
                new = new if edited is None else edited
            return None if new is out else new

        taps[("z", layer)] = at_z
        if edits or out_tap is not None:
            taps[sum_key] = at_attn_out

    # ------------------------------------------------------------------ generation
    def run_step(self, tokens, edits: Iterable[tuple[Site, Intervention]], past: Any = None,
                 use_cache: bool = True) -> tuple[Float[Tensor, "batch pos vocab"], Any]:
        """One forward of ``tokens`` with exactly ``edits`` (parsed; positions relative to ``tokens``),
        not the enclosing ``edit`` blocks. With ``use_cache`` the tokens follow the keys and values in
        ``past`` (None starts a cache): ``(logits, cache)``; without, ``(logits, None)``. The step
        `generate` repeats."""
        tokens = self.check_tokens(tokens)
        taps = self._build_taps([], list(edits), Cache(), True)
        out = self.backend.run(tokens, taps, past=past, use_cache=use_cache)
        return out if use_cache else (out, None)

    def generate(self, tokens, max_new_tokens: int = 10, temperature: float = 0.0, top_k: int | None = None,
                 seed: int = 0, use_cache: bool = True) -> Int[Tensor, "batch pos_plus_new"]:
        """Continue ``tokens`` (ids ``[batch pos]`` or text) by ``max_new_tokens`` tokens, applying the
        enclosing ``edit`` blocks at every step (see `interp.generation` for what an edit's position
        means while the sequence grows). Greedy by default; ``temperature`` > 0 samples (``top_k``,
        seeded by ``seed``). Returns prompt and new tokens ``[batch pos + new]``.

            with model.edit({Site("resid_pre", 1, pos=-1): Add(4.0 * u)}):
                out = model.generate("the cat", max_new_tokens=5)
        """
        from interp.generation import generate

        return generate(self, tokens, max_new_tokens, temperature, top_k, seed, use_cache)

    # ------------------------------------------------------------------ editing
    @contextlib.contextmanager
    def edit(self, interventions: Mapping[SiteLike, Any] | Iterable[tuple[SiteLike, Any]]) -> Iterator[HookedModel]:
        """Apply interventions to every forward made through this model inside the block.

            with model.edit({Site("resid_pre", 1, pos=-1): Add(steer), "blocks.0.attn.hook_z": Scale(0)}):
                logits = model(tokens)

        Values: ``Replace(t)`` or a tensor, ``Add(t)``, ``Scale(f)`` or a number, or a function of
        the site's slice. Blocks nest. Nothing stays registered after the block, also on error.
        """
        parsed = self._parse_edits(interventions)
        before = len(self._edits)
        self._edits.extend(parsed)
        try:
            yield self
        finally:
            del self._edits[before:]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[HookedModel]:
        """Inside the block no parameter requires a gradient (a backward reaches activations and
        interventions only, and gives no parameter a ``.grad``); each is restored after it, also on error."""
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        try:
            yield self
        finally:
            for p in trainable:
                p.requires_grad_(True)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_bridge(cls, bridge: nn.Module, name: str | None = None, info: Mapping | None = None) -> HookedModel:
        """Wrap a TransformerLens 4 ``TransformerBridge``."""
        return cls(TransformerLensBackend(bridge), name=name, info=info)

    @classmethod
    def from_module(cls, module: nn.Module, site_map: SiteMap | None = None, tokenizer: Any = None, name: str | None = None) -> HookedModel:
        """Wrap any torch module through nnsight; Hugging Face models of ``BUILT_IN_SITE_MAPS`` need no site map."""
        if site_map is None:
            if not hasattr(module, "config"):
                raise LoadError(
                    f"{type(module).__name__} is not a Hugging Face model, so pass site_map=SiteMap(...) "
                    f"saying where each site kind lives."
                )
            site_map = hf_site_map(module)
        return cls(NNsightBackend(module, site_map, tokenizer), name=name)

    def reload_arguments(self) -> dict | None:
        """The `interp.load` arguments that give this model again in another process, or None when
        there are none: built in memory, or its weights or dtype changed since it was loaded."""
        if self.source is None or self.dtype != self.source.get("dtype_loaded", self.dtype):
            return None
        if tuple(p._version for p in self.module.parameters()) != self._source_versions:
            return None  # written in place (training, load_state_dict) since it was loaded
        return {k: v for k, v in self.source.items() if k != "dtype_loaded"}

    def blank_copy(self, seed: int = 0) -> HookedModel:
        """A re-initialised model of the same architecture (only for our native models)."""
        if "tl_config" not in self.info:
            raise LoadError("blank_copy works for native models only (those with a tl_config).")
        return build_native(self.info["tl_config"], self.tokenizer, seed=seed, name=f"{self.name}-blank", info=self.info)


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text of each token id on its own (byte-level BPE symbols decoded: ``" Paris"``, ``"\\n"``).

    A character split across several byte-level tokens decodes to U+FFFD in each of them, as
    TransformerLens shows it; special tokens keep their names (``"<|im_start|>"``). Each id is decoded
    once per tokenizer (sweeps label their positions on every call).
    """
    memo = tokenizer.__dict__.setdefault("_interp_token_texts", {})
    missing = sorted({int(i) for i in ids} - memo.keys())
    if missing:
        texts = tokenizer.batch_decode([[i] for i in missing], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        memo.update(zip(missing, texts, strict=True))
    return [memo[int(i)] for i in ids]


def _has_w_o(backend: Backend) -> bool:
    return not isinstance(backend, NNsightBackend) or backend.site_map.W_O is not None


# =============================================================================== loading
def build_native(tl_config: Mapping, tokenizer: Any, seed: int = 0, name: str | None = None, info: Mapping | None = None) -> HookedModel:
    """A fresh TransformerLens-native model from a config dict (``n_layers, d_model, n_heads, ...``)."""
    from transformer_lens.model_bridge import TransformerBridge

    cfg = {**dict(tl_config), "seed": seed}
    with _quiet():
        bridge = TransformerBridge.boot_native(cfg, tokenizer=tokenizer)
    bridge.eval()
    info = {**dict(info or {}), "tl_config": dict(tl_config)}
    return HookedModel.from_bridge(bridge, name=name, info=info)


def load_native_dir(path: str | Path) -> HookedModel:
    """Load a model saved by `save_native`: ``model.json`` + ``model.safetensors`` + ``tokenizer/``."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    info = json.loads((path / "model.json").read_text())
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path / "tokenizer"))
    model = build_native(info["tl_config"], tokenizer, name=info.get("name", path.name), info=info)
    load_weights(model, path / "model.safetensors")
    return model


def load_weights(model: HookedModel, file: str | Path) -> HookedModel:
    """Load a safetensors state dict into a native model (strict: every key must match)."""
    from safetensors.torch import load_file

    model.module.load_state_dict(load_file(str(file)), strict=True)
    return model


def save_native(model: HookedModel, path: str | Path, extra: Mapping | None = None) -> Path:
    """Save a native model as ``model.safetensors`` + ``model.json`` + ``tokenizer/``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(state_dict_of(model), str(path / "model.safetensors"))
    info = {**model.info, **dict(extra or {}), "name": model.name}
    (path / "model.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    model.tokenizer.save_pretrained(str(path / "tokenizer"))
    return path


def state_dict_of(model: HookedModel) -> dict[str, Tensor]:
    """A contiguous, detached copy of the module's state dict (safetensors-ready)."""
    return {k: v.detach().contiguous().clone() for k, v in model.module.state_dict().items()}


def load(
    name_or_path: str | Path,
    backend: str = "transformer_lens",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **kwargs,
) -> HookedModel:
    """Load a shipped model by name, a directory saved by `save_native`, or a Hugging Face directory.

    ``backend``: "transformer_lens" (TransformerBridge) or "nnsight". Nothing is fetched from a hub.
    ``device``: where the model runs ("cpu", "cuda", "cuda:1", ...; None: the CPU). ``dtype``: the
    weights' dtype (torch.float32, torch.bfloat16, torch.float16; None: float32, whatever the
    checkpoint holds). Both are checked before anything loads (DeviceError, DtypeError).
    Further keyword arguments go to ``TransformerBridge.boot_transformers`` or
    ``AutoModelForCausalLM.from_pretrained``.
    """
    if backend not in BACKENDS:
        raise LoadError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    device = None if device is None else check_device(device)
    dtype = None if dtype is None else check_dtype(dtype)
    from interp import pretrained, zoo

    if not Path(name_or_path).exists() and str(name_or_path) in pretrained.PRETRAINED:
        return _load_pretrained(str(name_or_path), backend, device, dtype, **kwargs)
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in zoo.list_names():
        path = zoo.model_dir(str(name_or_path))
    if not path.exists():
        from interp.errors import closest

        known = [*zoo.list_names(), *pretrained.names()]
        raise LoadError(
            f"{str(name_or_path)!r} is neither a shipped model ({', '.join(zoo.list_names()) or 'none shipped'}), "
            f"a pretrained one ({', '.join(pretrained.names())}) nor an existing directory.{closest(str(name_or_path), known)} "
            f"Give one of those names or the path of a saved model."
        )
    if (path / "model.json").exists():
        if backend != "transformer_lens":
            raise LoadError(f"{path} is a native TransformerLens model; load it with backend='transformer_lens'.")
        model = load_native_dir(path).to(device, dtype)
    elif (path / "config.json").exists():
        model = load_hf_dir(path, backend=backend, device=device, dtype=dtype, **kwargs)
    else:
        model = None
    if model is not None:  # what a worker needs to load it again (interp.distributed)
        where = str(name_or_path) if str(name_or_path) in zoo.list_names() and not Path(name_or_path).exists() else str(path.resolve())
        return _remember_source(model, where, backend, device, dtype, kwargs)
    raise LoadError(
        f"{path} is not a model directory: it has neither model.json (a model saved by interp) nor "
        f"config.json (a Hugging Face model saved with save_pretrained)."
    )


def _load_pretrained(name: str, backend: str, device, dtype, **kwargs) -> HookedModel:
    """A pretrained model of `interp.pretrained`, converted into the cache on first use."""
    from interp import pretrained

    spec = pretrained.get(name)
    model = load_hf_dir(pretrained.local_dir(name), backend=backend, device=device, dtype=dtype, **kwargs)
    model.name = name
    if model.tokenizer is not None:
        model.tokenizer.bos_token = spec.bos_token
    model.info.update(pretrained=True, title=spec.title, licence=spec.licence, source=spec.source)
    return _remember_source(model, name, backend, device, dtype, kwargs)


def _remember_source(model: HookedModel, where: str, backend: str, device, dtype, kwargs: Mapping) -> HookedModel:
    """Record what a worker needs to load ``model`` again (interp.distributed; `reload_arguments`)."""
    model.source = dict(name_or_path=where, backend=backend, device=None if device is None else str(device),
                        dtype=None if dtype is None else str(dtype).removeprefix("torch."), **kwargs,
                        dtype_loaded=model.dtype)
    model._source_versions = tuple(p._version for p in model.module.parameters())
    return model


def load_hf_dir(
    path: str | Path,
    backend: str = "transformer_lens",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **kwargs,
) -> HookedModel:
    """A local Hugging Face causal-LM directory, offline, on either backend (``device`` and ``dtype`` as in `load`)."""
    path = Path(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else check_dtype(dtype)
    if kwargs.get("device_map") is not None:  # accelerate places every module itself
        if device is not None:
            raise DeviceError(
                f"device={str(device)!r} and device_map were both given, but device_map already says where "
                f"each module goes; drop device=... (or drop device_map to put the whole model on one device)."
            )
        where = {}
    else:
        where = {"device": torch.device("cpu") if device is None else check_device(device)}
    if backend == "transformer_lens":
        from transformer_lens.model_bridge import TransformerBridge

        with _quiet():
            bridge = TransformerBridge.boot_transformers(str(path), dtype=dtype, **where, **kwargs)
        bridge.eval()
        return HookedModel.from_bridge(bridge, name=path.name)
    with _quiet():
        hf = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, attn_implementation="eager", dtype=dtype, **kwargs
        )
    if where:
        hf.to(where["device"])
    hf.eval()
    tokenizer = None
    with contextlib.suppress(Exception):
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return HookedModel.from_module(hf, tokenizer=tokenizer, name=path.name)


@contextlib.contextmanager
def _quiet():
    """Silence the progress bars and warnings transformers prints while loading."""
    import logging

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    prev = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    disabled = logging.root.manager.disable
    try:
        with contextlib.suppress(Exception):
            hf_logging.disable_progress_bar()
        yield
    finally:
        hf_logging.set_verbosity(level)
        with contextlib.suppress(Exception):
            hf_logging.enable_progress_bar()
        logging.disable(disabled)
        if prev is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = prev

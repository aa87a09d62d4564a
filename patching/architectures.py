"""The fast engine's Hugging Face block adapters: GPT-2, GPT-NeoX (Pythia) and the Llama family.

`patching.fast` plans a sweep once (segments, passes, writes) and drives a model through an
architecture-independent engine (`patching.fast._Net`); an adapter here tells it how one family
computes: its embedding, per-layer norms, query / key / value projections (fused or separate,
grouped-query), rotary embedding, attention scale, output projection, MLP and unembedding. Each
adapter reads the weights of the model's own modules at every call (``nn.Linear`` / ``Conv1D`` /
``LayerNorm`` as functions of their tensors (`patching.fast._fn`); RMSNorm, activation functions and the rotary
embedding through the model's own modules and the installed transformers' ``rotate_half``), so
it tracks the installed transformers version and in-place weight edits.

It works on either backend: on ``transformer_lens`` the bridge wraps the Hugging Face modules in
place and the adapter calls the wrapped originals (no hook runs); on ``nnsight`` the model is the
Hugging Face module itself.

Covered: ``gpt2`` (learned positions, fused Conv1D q/k/v), ``gpt_neox`` (fused per-head q/k/v,
partial rotary, sequential or parallel residual), ``llama``, ``mistral`` and ``qwen2`` (RMSNorm,
rotary, gated MLP, grouped-query attention; a sliding window only where the prompts fit in it).
`unsupported` says why anything else is not.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from patching.fast import _fn, _Net, _part, _raw, _separate_qkv, _tensor

#: model_type -> the adapter class name (the families the fast engine drives directly).
FAMILIES = {"gpt2": "GPT2", "gpt_neox": "NeoX", "llama": "Llama", "mistral": "Llama", "qwen2": "Llama"}


def hf_model(model) -> torch.nn.Module | None:
    """The Hugging Face ``PreTrainedModel`` under a `HookedModel` (either backend), or None."""
    module = getattr(model, "module", None)
    hf = getattr(module, "original_model", module) if model.backend_name == "transformer_lens" else module
    return hf if hasattr(hf, "config") and hasattr(hf.config, "model_type") else None


def unsupported(hf, seq_len: int | None = None) -> str | None:
    """Why the fast engine cannot drive the Hugging Face model ``hf`` (None when it can)."""
    kind = hf.config.model_type
    if kind not in FAMILIES:
        return f"model_type {kind!r} has no fast-engine adapter (covered: {', '.join(sorted(FAMILIES))})"
    cfg = hf.config
    if hf.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in hf.modules()):
        return "the model is in training mode with dropout (call model.module.eval())"
    if kind == "gpt2":
        if getattr(cfg, "add_cross_attention", False):
            return "GPT-2 with cross-attention is not mirrored"
        if getattr(cfg, "reorder_and_upcast_attn", False):
            return "GPT-2's reorder_and_upcast_attn attention is not mirrored"
    rope_type = str((getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default"))
    if "dynamic" in rope_type:  # its tables depend on the sequence length the model last saw
        return f"a {rope_type!r} rotary embedding is not mirrored"
    if kind in ("mistral", "qwen2", "llama"):  # Mistral's window is in its config, Qwen2's per layer
        windows = {getattr(_part(layer, "self_attn"), "sliding_window", None) for layer in _layers(hf)}
        windows.add(getattr(cfg, "sliding_window", None) if kind == "mistral" else None)
        window = min((w for w in windows if w is not None), default=None)
        if window is not None and (seq_len is None or seq_len > window):
            return f"a sliding attention window of {window} tokens shorter than the prompts"
    return None


def adapter(hf) -> _Net:
    """The engine for ``hf`` (checked by `unsupported` first)."""
    return globals()[FAMILIES[hf.config.model_type]](hf)


def _layers(hf) -> list:
    """The model's blocks, unwrapped (the bridge wraps each in place)."""
    base = _part(hf, hf.base_model_prefix)
    return [_raw(block) for block in _part(base, {"gpt2": "h"}.get(hf.config.model_type, "layers"))]


def _conv1d(module) -> Callable[[Tensor], Tensor]:
    """A ``Conv1D`` (weight ``[in out]``) as a function of ``[... in]``."""
    weight, bias = _tensor(module, "weight"), _tensor(module, "bias")
    return lambda x: torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[1])


def _mlp(up: Callable[[Tensor], Tensor], act: Callable[[Tensor], Tensor], down: Callable[[Tensor], Tensor]):
    """``down(act(up(x)))``: the two-layer MLP of GPT-2 and GPT-NeoX."""
    return lambda x: down(act(up(x)))


class _HF(_Net):
    """What the three families share: dimensions, the final norm and the unembedding, the rotary tables."""

    def __init__(self, hf, *, norm: str, d_mlp: int, gated: bool):
        self.hf = hf
        self.base = _part(hf, hf.base_model_prefix)
        self.n_layers = len(_layers(hf))
        self.attn_only, self.gated, self.d_mlp = False, gated, d_mlp
        self.ln_out = _fn(_part(self.base, norm))
        head = _raw(hf.get_output_embeddings())
        self.head, self.W_U, self.b_U, self.logit_cap = _fn(head), _tensor(head, "weight"), _tensor(head, "bias"), None
        self.tok_embed = _fn(_raw(hf.get_input_embeddings()))
        self._rope: tuple | None = None

    def token_flops(self, S: int) -> float:
        d, hd, kvd = self.d_model, self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        return 2.0 * (2 * d * hd + 2 * d * kvd + 2 * S * hd + (3 if self.gated else 2) * d * self.d_mlp)

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.tok_embed(tokens)

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
        return self.head(self.ln_out(resid))

    def rope_table(self, layer: int, n_pos: int):
        """(cos, sin, rotate_half) for positions 0..n_pos-1 (at least), from the model's own rotary
        embedding and the installed transformers' ``rotate_half``; built once per adapter and length."""
        table = self._rope
        if table is None or table[0].shape[0] < n_pos:
            rotary = _part(self.base, "rotary_emb")
            device = next(iter(rotary.buffers())).device
            with torch.no_grad():  # in the model's dtype, as its own forward computes them
                cos, sin = rotary(torch.zeros(1, n_pos, 1, dtype=self.W_U.dtype, device=device), torch.arange(n_pos, device=device)[None])
            table = self._rope = (cos[0], sin[0], importlib.import_module(type(self.hf).__module__).rotate_half)
        return table


class GPT2(_HF):
    """``GPT2LMHeadModel``: learned positions, LayerNorm, fused Conv1D q/k/v, GELU MLP."""

    def __init__(self, hf):
        cfg = hf.config
        super().__init__(hf, norm="ln_f", d_mlp=cfg.n_inner or 4 * cfg.n_embd, gated=False)
        self.n_heads = self.n_kv_heads = cfg.n_head
        self.d_model = cfg.n_embd
        self.d_head = cfg.n_embd // cfg.n_head
        self.wpe = _tensor(_part(self.base, "wpe"), "weight")
        self.layers = []
        for blk in _layers(hf):
            attn, mlp = _part(blk, "attn"), _part(blk, "mlp")
            self.layers.append(dict(
                ln1=_fn(_part(blk, "ln_1")), ln2=_fn(_part(blk, "ln_2")), o=_conv1d(_part(attn, "c_proj")),
                qkv=self._qkv(_part(attn, "c_attn")),
                mlp=_mlp(_conv1d(_part(mlp, "c_fc")), _fn(_part(mlp, "act")), _conv1d(_part(mlp, "c_proj"))),
                scale=attn.scaling, softcap=None, rope=None,
            ))

    def _qkv(self, c_attn):
        weight, bias = _tensor(c_attn, "weight"), _tensor(c_attn, "bias")  # [d 3d]: q, k, v columns
        d, H, dh = self.d_model, self.n_heads, self.d_head

        def qkv(h: Tensor, index: Tensor | None):
            T = h.shape[0]
            if index is None:
                q, k, v = torch.addmm(bias, h, weight).split(d, dim=1)
                return q.view(T, H, dh), k.view(T, H, dh), v.view(T, H, dh)
            q = torch.addmm(bias[:d], h[index], weight[:, :d])  # the answer tokens' queries only
            k, v = torch.addmm(bias[d:], h, weight[:, d:]).split(d, dim=1)
            return q.view(-1, H, dh), k.view(T, H, dh), v.view(T, H, dh)

        return qkv

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.tok_embed(tokens) + self.wpe[: tokens.shape[1]]


class NeoX(_HF):
    """``GPTNeoXForCausalLM``: LayerNorm, fused per-head q/k/v, partial rotary, parallel or sequential residual."""

    def __init__(self, hf):
        cfg = hf.config
        super().__init__(hf, norm="final_layer_norm", d_mlp=cfg.intermediate_size, gated=False)
        self.n_heads = self.n_kv_heads = cfg.num_attention_heads
        self.d_model = cfg.hidden_size
        self.d_head = cfg.hidden_size // cfg.num_attention_heads
        self.parallel = bool(cfg.use_parallel_residual)
        self.layers = []
        for blk in _layers(hf):
            attn, mlp = _part(blk, "attention"), _part(blk, "mlp")
            self.layers.append(dict(
                ln1=_fn(_part(blk, "input_layernorm")), ln2=_fn(_part(blk, "post_attention_layernorm")),
                o=_fn(_part(attn, "dense")), qkv=self._qkv(_fn(_part(attn, "query_key_value"))),
                mlp=_mlp(_fn(_part(mlp, "dense_h_to_4h")), _fn(_part(mlp, "act")), _fn(_part(mlp, "dense_4h_to_h"))),
                scale=attn.scaling, softcap=None, rope=True,
            ))

    def _qkv(self, fused):
        H, dh = self.n_heads, self.d_head

        def qkv(h: Tensor, index: Tensor | None):  # rows of the fused weight: [head (q k v) d_head]
            out = fused(h).view(h.shape[0], H, 3, dh)
            q = out[:, :, 0] if index is None else out[index, :, 0]
            return q, out[:, :, 1], out[:, :, 2]

        return qkv


class Llama(_HF):
    """``LlamaForCausalLM`` (and Mistral, Qwen2): RMSNorm, rotary, gated MLP, grouped-query attention."""

    def __init__(self, hf):
        cfg = hf.config
        super().__init__(hf, norm="norm", d_mlp=cfg.intermediate_size, gated=True)
        self.n_heads, self.d_model = cfg.num_attention_heads, cfg.hidden_size
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.layers = []
        for blk in _layers(hf):
            attn, mlp = _part(blk, "self_attn"), _part(blk, "mlp")
            self.d_head = attn.head_dim
            q, k, v = (_fn(_part(attn, f"{name}_proj")) for name in "qkv")
            gate, up, down = (_fn(_part(mlp, f"{name}_proj")) for name in ("gate", "up", "down"))
            act = _fn(_part(mlp, "act_fn"))
            self.layers.append(dict(
                ln1=_fn(_part(blk, "input_layernorm")), ln2=_fn(_part(blk, "post_attention_layernorm")),
                o=_fn(_part(attn, "o_proj")), qkv=_separate_qkv(q, k, v, self.n_heads, self.n_kv_heads, attn.head_dim),
                mlp=lambda x, gate=gate, up=up, down=down, act=act: down(act(gate(x)) * up(x)),
                scale=attn.scaling, softcap=None, rope=True,
            ))


__all__ = ["FAMILIES", "adapter", "hf_model", "unsupported"]

"""The model anatomy: how a causal transformer computes, one description every fast method reads.

A fast method (activation-patching sweeps, attribution patching, causal tracing's restorations,
circuit discovery, the read-out of the logit lens and DLA) drives the forward pass itself, so that it
can start late, skip positions, give every receiver its own input or take a gradient to one
projection only. What it needs to know about the model is an `Anatomy` (embedding, norms, q/k/v
projections, rotary, attention, output projection and MLP, residual, read-out), one adapter per
family, read from the model's own modules at every call (`of` builds it anew, so edited weights are
seen): `Native` (``TransformerBridge.boot_native``), `GPT2`, `NeoX`, `Llama` (also Mistral, Qwen2,
Gemma) and `Phi3`, on both backends. `unsupported` says why a model has none. docs/anatomy.md
tabulates the parts, what reads each, and how to add an architecture (one adapter and its row in
``tests/test_anatomy.py``).

    net = anatomy.of(model)                        # checked: anatomy.unsupported(model) is None
    x = net.embed(tokens)                          # [batch pos d_model]
    for layer in range(net.n_layers):
        x = net.block(layer, x, 0, None, lambda kind, layer, act: act)
    logits = net.unembed(x)                        # equals model(tokens) to float rounding
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

_sdpa = torch.nn.functional.scaled_dot_product_attention

#: ``edit(kind, layer, act)``: sees, and may replace, the activation of one site (`Anatomy.block`).
Edit = Callable[[str, int, Tensor], Tensor]

#: The ``engine=`` of every fast method: "auto" (the anatomy where the model has one, else hooks), "fast", "hooks".
ENGINES = ("auto", "fast", "hooks")


def runs_on_anatomy(engine: str, reason: str | None, error: type[Exception]) -> bool:
    """Whether ``engine`` runs on the anatomy, ``reason`` saying why the model cannot (None: it can);
    ``error`` for an unknown engine and for "fast" where the anatomy cannot run."""
    if engine not in ENGINES:
        raise error(f"engine must be one of {ENGINES}, got {engine!r}.")
    if engine == "fast" and reason is not None:
        raise error(f"engine='fast' cannot run this: {reason}. Use engine='auto' or engine='hooks'.")
    return engine != "hooks" and reason is None


class Anatomy:
    """How one causal transformer computes, read from its own modules (`of` builds the right adapter).

    An adapter sets ``n_layers, n_heads, n_kv_heads, d_head, d_model, attn_only, parallel``, ``tok_embed``
    (a function of token ids), the read-out (`_read_out`: ``ln_out``, ``W_U [vocab d_model]``, ``b_U``,
    ``logit_cap``) and ``layers``: one dict per layer (`_layer`) of ``ln1, ln2, mlp`` (functions of
    ``[... d]``), ``norm1, norm2`` (the norm modules, for `norm_spec`), ``linears`` (the attention's
    linear modules, which `qkv_weights` / `o_weights` read as separate ``nn.Linear`` maps q, k, v, o
    unless the adapter overrides them), ``scale`` (the score multiplier), ``softcap`` (None or a float)
    and ``rope`` (None, or ``(cos [positions rot], sin [positions rot], rotate_half)``, or anything else
    true where `rope_table` builds the tables); it overrides `embed` where positions are added."""

    parallel = False  # attention and MLP both read resid_pre (GPT-NeoX's parallel residual)

    def token_flops(self, S: int) -> float:
        """Floating-point operations of one token through one layer (projections, attention, MLP)."""
        d, hd, kvd = self.d_model, self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        mlp = 0 if self.attn_only else (3 if self.gated else 2) * d * self.d_mlp
        return 2.0 * (2 * d * hd + 2 * d * kvd + 2 * S * hd + mlp)

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream entering layer 0 (token embedding, plus learned positions if any)."""
        return self.tok_embed(tokens)

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
        """Logits of the final residual stream: the final norm, the unembedding, soft-capping if any."""
        return softcap(self.head(self.ln_out(resid)), self.logit_cap)

    def _read_out(self, norm, head, cap: float | None) -> None:
        """Set the read-out from the final norm and unembedding modules and the logits' soft-cap."""
        self.norm_out, self.head_module, self.logit_cap = norm, head, cap
        self.ln_out, self.head, self.W_U, self.b_U = _fn(norm), _fn(head), _tensor(head, "weight"), _tensor(head, "bias")

    def qkv_weights(self, layer: int) -> tuple[Float[Tensor, "r d_head d_model"], Float[Tensor, "r d_head"] | None]:
        """Every head's query, key and value projection of layer ``layer`` as one tensor, ``r = heads +
        2 kv_heads`` rows (queries, then keys, then values; before rotary), and their biases (or None):
        ``qkv(h)`` equals ``einsum(h, W, "t d, r e d -> t r e") + b`` split in that order."""
        q, k, v, _ = self.layers[layer]["linears"]
        return _stack_heads([(_tensor(m, "weight"), _tensor(m, "bias")) for m in (q, k, v)], self.d_head)

    def o_weights(self, layer: int) -> tuple[Float[Tensor, "d_model hd"], Float[Tensor, " d_model"] | None]:
        """Layer ``layer``'s output projection as ``F.linear`` takes it (``hd = heads * d_head``, the z
        of head h in columns ``h*d_head ..``) and its bias (or None)."""
        o = self.layers[layer]["linears"][-1]
        return _tensor(o, "weight"), _tensor(o, "bias")

    def qkv(self, layer: int, h: Float[Tensor, "tokens d_model"], index: Int[Tensor, " q"] | None = None):
        """Queries of ``h[index]`` (of every token when index is None), keys and values of every token,
        each ``[tokens heads d_head]``: the three row blocks of `qkv_weights` (`_qkv_blocks`)."""
        blk, T, dh = self.layers[layer], h.shape[0], self.d_head
        if "qkv_blocks" not in blk:
            blk["qkv_blocks"] = self._qkv_blocks(layer)
        (Wq, bq), (Wk, bk), (Wv, bv) = blk["qkv_blocks"]
        q = F.linear(h if index is None else h[index], Wq, bq).view(-1, self.n_heads, dh)
        return q, F.linear(h, Wk, bk).view(T, -1, dh), F.linear(h, Wv, bv).view(T, -1, dh)

    def _qkv_blocks(self, layer: int) -> list[tuple[Tensor, Tensor | None]]:
        """``(weight [rows*d_head d_model], bias)`` of the queries, keys and values: the model's own
        weights where it keeps them apart (``linears`` ``[q, k, v, o]``: no copy per call), else row
        blocks of `qkv_weights` flattened."""
        linears = self.layers[layer]["linears"]
        if len(linears) == 4:
            return [(_tensor(m, "weight"), _tensor(m, "bias")) for m in linears[:3]]
        W, b = self.qkv_weights(layer)
        sizes = [n * self.d_head for n in (self.n_heads, self.n_kv_heads, self.n_kv_heads)]
        return list(zip(W.flatten(0, 1).split(sizes), [None] * 3 if b is None else b.flatten().split(sizes), strict=True))

    def o(self, layer: int, z: Float[Tensor, "... hd"]) -> Float[Tensor, "... d_model"]:
        """The attention's output projection of ``z`` (heads side by side, ``hd = heads * d_head``)."""
        blk = self.layers[layer]
        if "W_O" not in blk:
            blk["W_O"], blk["b_O"] = self.o_weights(layer)
        return F.linear(z, blk["W_O"], blk["b_O"])

    def unembed_at(self, resid: Float[Tensor, "rows d_model"], ids: Int[Tensor, "rows m"]) -> Float[Tensor, "rows m"]:
        """The logits of tokens ``ids`` only (per row): the final norm, then a dot product with those
        columns of the unembedding (``W_U [vocab d_model]``, ``b_U``; ``logit_cap``), not the whole vocabulary."""
        h = resid if self.ln_out is None else self.ln_out(resid)
        logits = torch.einsum("rd,rmd->rm", h, self.W_U[ids].to(h.dtype))
        if self.b_U is not None:
            logits = logits + self.b_U[ids].to(h.dtype)
        return softcap(logits, self.logit_cap)

    def mask(self, rows: slice, cols: int, device: torch.device) -> Tensor:
        """The causal mask (True where a query may not look) of query positions ``rows`` over keys 0..cols-1."""
        size = max(rows.stop, cols)
        mask = getattr(self, "_causal", None)
        if mask is None or mask.shape[0] < size or mask.device != device:
            self._causal = mask = torch.ones(size, size, dtype=torch.bool, device=device).triu(1)
        return mask[rows, :cols]

    def rope(self, layer: int, x: Float[Tensor, "... pos d_head"], first: int) -> Float[Tensor, "... pos d_head"]:
        """Rotary position embedding of queries or keys ``x`` at positions ``first..`` (the axis before
        the last; full or partial rotary; ``x`` itself without rotary)."""
        if self.layers[layer]["rope"] is None:
            return x
        s = x.shape[-2]
        cos, sin, rotate_half = self.rope_table(layer, first + s)
        rd = cos.shape[-1]
        cos, sin = cos[first : first + s].to(x.dtype), sin[first : first + s].to(x.dtype)
        if rd == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        part, rest = x[..., :rd], x[..., rd:]
        return torch.cat([part * cos + rotate_half(part) * sin, rest], dim=-1)

    def rope_table(self, layer: int, n_pos: int) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        """Layer ``layer``'s rotary tables for positions 0..n_pos-1 (at least): its ``rope`` entry."""
        return self.layers[layer]["rope"]

    def attend(self, layer: int, q: Float[Tensor, "b head s d_head"], k: Float[Tensor, "b kv S d_head"],
               v: Float[Tensor, "b kv S d_head"], first: int, pattern_edit=None) -> Float[Tensor, "b head s d_head"]:
        """Causal attention of queries at positions ``first..`` over keys / values of positions 0..S-1
        (grouped when ``kv`` < ``head``: query head h reads key/value head h // (head / kv));
        ``pattern_edit(pattern)`` (``[b head s S]``) where the pattern is read or edited. Leading axes
        may be any (the last three are head, position, d_head). Returns the mixed values."""
        blk = self.layers[layer]
        scale, grouped = blk["scale"], k.shape[-3] != q.shape[-3]
        if pattern_edit is None and blk["softcap"] is None:  # nothing reads or edits the pattern: one fused kernel
            if first >= k.shape[-2] - 1:  # a query at the last key position sees every key: no mask
                return _sdpa(q, k, v, scale=scale, enable_gqa=grouped)
            if first == 0 and q.shape[-2] == k.shape[-2]:
                return _sdpa(q, k, v, is_causal=True, scale=scale, enable_gqa=grouped)
            allowed = ~self.mask(slice(first, first + q.shape[-2]), k.shape[-2], q.device)
            return _sdpa(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=grouped)
        if grouped:
            reps = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(reps, dim=-3), v.repeat_interleave(reps, dim=-3)
        mask = self.mask(slice(first, first + q.shape[-2]), k.shape[-2], q.device)
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale
        scores = softcap(scores, blk["softcap"])
        scores = scores.masked_fill(mask, float("-inf"))
        pattern = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
        if pattern_edit is not None:
            pattern = pattern_edit(pattern)
        return torch.matmul(pattern, v)

    def block(self, layer: int, x: Tensor, p0: int, prefix: tuple[Tensor, Tensor] | None, edit: Edit) -> Tensor:
        """One layer's forward for query positions p0.. of ``x: [batch s d_model]``, earlier keys / values
        ``[batch kv_head p0 d_head]`` from ``prefix``; ``edit(kind, layer, act)`` sees (and may replace)
        every site's activation (k and v before the rotary embedding, as TransformerLens's hooks)."""
        blk = self.layers[layer]
        B, s, _ = x.shape
        H, dh = self.n_heads, self.d_head
        x = edit("resid_pre", layer, x)
        h = blk["ln1"](x)
        q, k, v = (t.reshape(B, s, -1, dh).transpose(1, 2) for t in self.qkv(layer, h.reshape(B * s, -1)))
        k, v = edit("k", layer, k), edit("v", layer, v)  # [batch kv_head pos d]
        q, k = self.rope(layer, q, p0), self.rope(layer, k, p0)
        if prefix is not None:
            k, v = torch.cat([prefix[0], k], dim=2), torch.cat([prefix[1], v], dim=2)
        wants_pattern = "pattern" in getattr(edit, "kinds", ("pattern",))
        mixed = self.attend(layer, q, k, v, p0, (lambda p: edit("pattern", layer, p)) if wants_pattern else None)
        z = edit("z", layer, mixed.transpose(1, 2))  # [batch pos head d_head]
        attn_out = edit("attn_out", layer, self.o(layer, z.reshape(B, s, H * dh)))
        if self.attn_only:
            x = x + attn_out
        elif self.parallel:  # attention and MLP both read resid_pre
            x = x + attn_out + edit("mlp_out", layer, blk["mlp"](blk["ln2"](x)))
        else:
            x = x + attn_out
            mlp_in = edit("resid_mid", layer, x)  # the bridge's hook_resid_mid is ln2's input
            x = x + edit("mlp_out", layer, blk["mlp"](blk["ln2"](mlp_in)))
        return edit("resid_post", layer, x)


class Native(Anatomy):
    """A ``NativeModel`` (``TransformerBridge.boot_native``): ``NativeBlock`` / ``NativeAttention`` on
    the unwrapped modules."""

    def __init__(self, om):
        from transformer_lens.model_bridge.sources.native.model import NativeRotary

        self.om = om
        self.cfg = cfg = om.cfg
        self.n_layers, self.attn_only = len(om.layers), bool(cfg.attn_only)
        self.gated, self.d_mlp = bool(cfg.gated_mlp), cfg.d_mlp
        self.n_heads, self.d_head, self.d_model = cfg.n_heads, cfg.d_head, cfg.d_model
        # The bridge wraps every submodule in place (with hook points); call the wrapped originals,
        # plain Linear / LayerNorm as functions (no Module.__call__ per use).
        self.tok_embed, self.pos = _fn(_part(om, "tok_embed")), _part(om, "pos")
        self._read_out(_part(om, "ln_out"), _part(om, "head"), _cap(om.output_logits_soft_cap))
        self.layers = []
        for blk in _part(om, "layers"):
            attn = _part(blk, "attn")
            rotary = attn.rotary
            self.layers.append(_layer(
                _part(blk, "ln1"), None if self.attn_only else _part(blk, "ln2"), [_part(attn, name) for name in "qkvo"],
                None if self.attn_only else _mlp_fn(_part(blk, "mlp")), 1.0 / attn.scale, _cap(attn.attn_scores_soft_cap),
                None if rotary is None else (
                    rotary.cos_cached[:, : rotary.rotary_dim], rotary.sin_cached[:, : rotary.rotary_dim], NativeRotary._rotate_half),
            ))
        self.n_kv_heads = _part(_part(om, "layers")[0], "attn").n_kv_heads

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        resid = self.tok_embed(tokens)
        if type(self.pos) is torch.nn.Embedding:  # positions 0..S-1 of every row: the first S rows of the table
            return resid + self.pos.weight[: tokens.shape[1]]
        if self.pos is not None:
            position_ids = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0).expand(tokens.shape[0], -1)
            resid = resid + self.pos(position_ids)
        return resid


def _layer(norm1, norm2, linears: list, mlp, scale: float, softcap: float | None = None, rope=None) -> dict:
    """One entry of `Anatomy.layers` (``ln1`` / ``ln2``: the norm modules as functions, `_fn`)."""
    return dict(ln1=_fn(norm1), ln2=_fn(norm2), norm1=norm1, norm2=norm2, linears=linears, mlp=mlp, scale=scale,
                softcap=softcap, rope=rope)


def _stack_heads(maps: list[tuple[Tensor, Tensor | None]], dh: int) -> tuple[Tensor, Tensor | None]:
    """Linear maps ``(weight [heads*d_head d_model], bias)`` (queries, keys, values) as one
    ``[rows d_head d_model]`` tensor and ``[rows d_head]`` biases (None unless every map has one)."""
    W = torch.cat([w.reshape(-1, dh, w.shape[-1]) for w, _ in maps])
    biases = [b for _, b in maps]
    return W, None if any(b is None for b in biases) else torch.cat([b.reshape(-1, dh) for b in biases])


def with_prefix(prefix: Tensor, new: Tensor) -> Tensor:
    """Keys or values ``[B head s d]`` of queries' own positions preceded by cached keys / values ``prefix [n head p0 d]``
    (the same for each of the B / n copies of the prompts): ``[B head p0+s d]``."""
    n, H, p0, dh = prefix.shape
    B, _, s, _ = new.shape
    if B == n:
        return torch.cat([prefix, new], dim=2)
    r = B // n
    return torch.cat([prefix.expand(r, n, H, p0, dh), new.view(r, n, H, s, dh)], dim=3).view(B, H, p0 + s, dh)


def _cap(value: float | None) -> float | None:
    """A soft-cap setting as `softcap` takes it: None where it is off (None, 0 or negative)."""
    return value if value is not None and value > 0 else None


def softcap(x: Tensor, cap: float | None) -> Tensor:
    """``cap * tanh(x / cap)`` (Gemma-style soft-capping, as TransformerLens's ``apply_softcap``); ``x`` when off."""
    return x if cap is None else cap * torch.tanh(x / cap)


def _part(module, name: str):
    """The submodule ``name`` of ``module``, unwrapped (`_raw`); None if it is None. Read from
    ``_modules`` first: the bridge's components answer attribute lookups in Python, slowly."""
    sub = module.__dict__["_modules"].get(name)
    if sub is None:
        sub = getattr(module, name, None)
    return None if sub is None else _raw(sub)


def _raw(module):
    """The module a bridge component wraps (itself if it wraps nothing)."""
    inner = module.__dict__.get("_modules", {}).get("_original_component")  # the bridge's original_component
    return module if inner is None else inner


def _fn(module) -> Callable[[Tensor], Tensor]:
    """A plain ``nn.Linear`` / ``nn.LayerNorm`` / ``nn.Embedding`` as a function of its input (any other
    module as itself)."""
    kind = type(module)
    if kind is torch.nn.Embedding and module.max_norm is None:
        table = _tensor(module, "weight")
        return lambda ids: F.embedding(ids, table)
    if kind is torch.nn.Linear:
        weight, bias = _tensor(module, "weight"), _tensor(module, "bias")
        return lambda x: F.linear(x, weight, bias)
    if kind is torch.nn.LayerNorm:
        shape, weight, bias, eps = module.normalized_shape, _tensor(module, "weight"), _tensor(module, "bias"), module.eps
        return lambda x: F.layer_norm(x, shape, weight, bias, eps)
    return module


def _tensor(module, name: str) -> Tensor | None:
    """``module.<name>``, a parameter, a buffer (the unembedding's bias is one) or a plain attribute,
    looked up without ``Module.__getattr__``."""
    state = module.__dict__
    for store in ("_parameters", "_buffers"):
        if name in state[store]:
            return state[store][name]
    return state.get(name)


def _mlp_fn(mlp) -> Callable[[Tensor], Tensor]:
    """``NativeMLP`` / ``NativeGatedMLP.forward`` on the unwrapped linear layers."""
    act = mlp.act
    if _part(mlp, "fc_in") is not None:
        fc_in, fc_out, ln = _fn(_part(mlp, "fc_in")), _fn(_part(mlp, "fc_out")), _part(mlp, "ln")

        def forward(x: Tensor) -> Tensor:
            mid = act(fc_in(x))
            return fc_out(mid if ln is None else ln(mid))

        return forward
    gate, up, out = _fn(_part(mlp, "gate")), _fn(_part(mlp, "in")), _fn(_part(mlp, "out"))
    return lambda x: out(act(gate(x)) * up(x))

# =============================================================================== Hugging Face families
#: model_type -> the adapter class name (the families with an anatomy).
FAMILIES = {"gpt2": "GPT2", "gpt_neox": "NeoX", "llama": "Llama", "mistral": "Llama", "qwen2": "Llama", "gemma": "Llama",
            "phi3": "Phi3"}


def hf_model(model) -> torch.nn.Module | None:
    """The Hugging Face ``PreTrainedModel`` under a `HookedModel` (either backend), or None."""
    module = getattr(model, "module", None)
    hf = getattr(module, "original_model", module) if model.backend_name == "transformer_lens" else module
    return hf if hasattr(hf, "config") and hasattr(hf.config, "model_type") else None


def _hf_unsupported(hf, seq_len: int | None = None) -> str | None:
    """Why no adapter describes the Hugging Face model ``hf`` (None when one does)."""
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
    if "dynamic" in rope_type or rope_type == "longrope":  # its tables depend on the sequence length
        return f"a {rope_type!r} rotary embedding is not mirrored"
    if FAMILIES[kind] in ("Llama", "Phi3"):  # Mistral's and Phi-3's window is in the config, Qwen2's per layer
        windows = {getattr(_part(layer, "self_attn"), "sliding_window", None) for layer in _layers(hf)}
        windows.add(getattr(cfg, "sliding_window", None) if kind in ("mistral", "phi3") else None)
        window = min((w for w in windows if w is not None), default=None)
        if window is not None and (seq_len is None or seq_len > window):
            return f"a sliding attention window of {window} tokens shorter than the prompts"
    return None


def unsupported(model, seq_len: int | None = None) -> str | None:
    """Why ``model`` (a `HookedModel`) has no anatomy, so the fast methods cannot drive it (None when it
    has one): native TransformerLens models and the Hugging Face families of `FAMILIES` on either
    backend, not split across devices, outside any ``model.edit`` block; ``seq_len`` (the prompts'
    length) is checked against a sliding attention window."""
    if getattr(model, "_edits", None):
        return "an enclosing model.edit block is active (the fast engine runs no hooks)"
    if getattr(model, "is_split", False):
        return "the model is split across devices (device_map)"
    hf = hf_model(model) if hasattr(model, "backend_name") else None
    if hf is not None:
        bridge = model.module if model.backend_name == "transformer_lens" else None
        if bridge is not None and (getattr(bridge, "_weights_processed", False) or getattr(bridge, "compatibility_mode", False)):
            return ("the bridge runs in compatibility mode or with processed weights (folded norms, centred writes), "
                    "which the fast engine, reading the Hugging Face modules' own weights, does not mirror")
        return _hf_unsupported(hf, seq_len)
    if getattr(model, "backend_name", None) != "transformer_lens":
        return (f"the model is neither a native TransformerLens model nor a Hugging Face model (backend "
                f"{getattr(model, 'backend_name', type(model).__name__)!r} over {type(getattr(model, 'module', model)).__name__})")
    from transformer_lens.model_bridge.sources.native.model import NativeModel

    om = getattr(model.module, "original_model", None)
    if not isinstance(om, NativeModel):
        return "the bridge wraps neither a native TransformerLens model nor a Hugging Face model"
    if not _part(_part(om, "layers")[0], "attn").causal:
        return "the model's attention is not causal"
    return None


def of(model) -> Anatomy:
    """The anatomy of ``model`` (check `unsupported` first), its weights read now."""
    hf = hf_model(model)
    return Native(model.module.original_model) if hf is None else globals()[FAMILIES[hf.config.model_type]](hf)


def parallel_residual(model) -> bool:
    """Whether ``model``'s attention and MLP both read resid_pre (GPT-NeoX's ``use_parallel_residual``),
    read from its config without building the anatomy."""
    hf = hf_model(model) if hasattr(model, "backend_name") else None
    return hf is not None and hf.config.model_type == "gpt_neox" and bool(hf.config.use_parallel_residual)


@dataclass(frozen=True)
class NormSpec:
    """A norm as a formula: ``kind`` "layer" (centre, then divide by the RMS), "rms" (divide by the RMS)
    or "none" (identity), then ``* weight + bias`` (None: none; Gemma's ``1 + w`` already added), with
    ``eps``. Discovery differentiates it in closed form; the logit lens applies it with a frozen scale."""

    kind: str
    weight: Tensor | None = None
    eps: float = 0.0
    bias: Tensor | None = None

    @property
    def centre(self) -> bool:
        return self.kind == "layer"

    def scale(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... 1"]:
        """The divisor of ``x``: its (centred) RMS, 1 for no norm."""
        if self.kind == "none":
            return torch.ones_like(x[..., :1])
        x = x - x.mean(-1, keepdim=True) if self.centre else x
        return (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def __call__(self, x: Float[Tensor, "... d"], scale: Tensor | None = None, with_bias: bool = True) -> Float[Tensor, "... d"]:
        """The norm of ``x`` in float32, with its own scale or with ``scale [... 1]`` frozen from another input."""
        x = x.float()
        y = (x - x.mean(-1, keepdim=True) if self.centre else x) / (self.scale(x) if scale is None else scale)
        y = y if self.weight is None else y * self.weight
        return y + self.bias if with_bias and self.bias is not None else y

    def to(self, device) -> NormSpec:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return NormSpec(self.kind, move(self.weight), self.eps, move(self.bias))


#: Hugging Face RMSNorm classes computing ``weight * x / rms(x)`` (in float32, as their forward does), and
#: Gemma's, computing ``(1 + weight) * x / rms(x)``.
HF_RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Phi3RMSNorm", "Olmo2RMSNorm")
GEMMA_RMS_NORMS = ("GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm")


def norm_spec(module) -> NormSpec | None:
    """The `NormSpec` of a norm module (float32 tensors): ``nn.LayerNorm``, TransformerLens's native
    norms, the RMSNorms of `HF_RMS_NORMS` and `GEMMA_RMS_NORMS`, no module at all (identity); any other
    module by its outputs on random inputs (a LayerNorm or RMSNorm, with ``w`` or ``1 + w``). None
    where no formula reproduces it (discovery then differentiates it by autograd)."""
    from transformer_lens.model_bridge.sources.native import model as native

    if module is None or isinstance(module, torch.nn.Identity):
        return NormSpec("none")
    kind, name = type(module), type(module).__name__
    weight, bias = (_float(_tensor(module, key)) for key in ("weight", "bias"))
    eps = getattr(module, "eps", None) or getattr(module, "variance_epsilon", None) or 1e-5
    eps = float(eps[0] if isinstance(eps, tuple | list) else eps)
    if kind in (torch.nn.LayerNorm, native.NativeLayerNormPre):
        return NormSpec("layer", weight, eps, bias)
    if kind in (native.NativeRMSNorm, native.NativeRMSNormPre) or name in HF_RMS_NORMS:
        return NormSpec("rms", weight, eps)
    if name in GEMMA_RMS_NORMS:
        return NormSpec("rms", 1.0 + weight, eps)
    kinds = ["rms", "layer"] if "rms" in name.lower() else ["layer", "rms"]
    weights = [weight] if weight is None else [weight, 1.0 + weight]
    candidates = [NormSpec(k, w, eps, bias) for w in weights for k in kinds] + [NormSpec("none")]
    return next((spec for spec in candidates if _reproduces(spec, module)), None)


def _float(t: Tensor | None) -> Tensor | None:
    return None if not isinstance(t, Tensor) else t.detach().float()


@torch.no_grad()
def _reproduces(spec: NormSpec, module) -> bool:
    """Whether ``spec`` gives ``module``'s outputs on three random vectors."""
    param = next(iter(module.parameters()), None)
    size = param.shape[-1] if param is not None else getattr(module, "normalized_shape", (None,))[-1]
    if size is None:
        return False
    x = torch.randn(3, size, generator=torch.Generator().manual_seed(0)) * 2.0 + 0.5
    like = dict(device=param.device, dtype=param.dtype) if param is not None else {}
    theirs = module(x.to(**like)).float().cpu()
    tol = 1e-4 if like.get("dtype", torch.float32) == torch.float32 else 5e-2  # by the module's own precision
    return bool(torch.allclose(spec.to(x.device)(x), theirs, rtol=tol, atol=tol))


def read_out(model) -> tuple[NormSpec, Float[Tensor, "vocab d_model"], Float[Tensor, " vocab"] | None, float | None]:
    """``model``'s read-out (either backend): the final norm as a `NormSpec`, the unembedding
    ``W_U [vocab d_model]``, its bias (or None) and the logits' soft-cap (or None). From the family's
    adapter where it has one; for any other Hugging Face causal LM from its output embedding and the
    final norm found at one of `FINAL_NORMS`. Raises ``ValueError`` naming what it could not read."""
    from transformer_lens.model_bridge.sources.native.model import NativeModel

    hf = hf_model(model) if hasattr(model, "backend_name") else None
    native = isinstance(getattr(getattr(model, "module", None), "original_model", None), NativeModel)
    if native or hf is not None and hf.config.model_type in FAMILIES:
        net = of(model)
        norm, head, cap = net.norm_out, net.head_module, net.logit_cap
    elif hf is not None:
        norm, head = _final_norm(hf), _raw(hf.get_output_embeddings())
        cap = _cap(getattr(hf.config, "final_logit_softcapping", None))
    else:
        raise ValueError(f"{type(getattr(model, 'module', model)).__name__} is neither a native TransformerLens model nor a "
                         f"Hugging Face causal LM, so its final norm and unembedding are unknown")
    W_U = _tensor(head, "weight")
    if not isinstance(W_U, Tensor) or W_U.ndim != 2:
        raise ValueError(f"the unembedding {type(head).__name__} has no [vocab d_model] weight")
    spec = norm_spec(norm)
    if spec is None:
        raise ValueError(f"the final norm {type(norm).__name__} is neither a LayerNorm nor an RMSNorm as far as its outputs show")
    return spec, W_U, _tensor(head, "bias"), cap


#: Where Hugging Face causal LMs keep their final norm.
FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm", "model.ln_f")


def _final_norm(hf) -> torch.nn.Module:
    for path in FINAL_NORMS:
        part = hf
        for name in path.split("."):
            part = None if part is None else _part(part, name)
        if isinstance(part, torch.nn.Module):
            return part
    raise ValueError(f"no final norm found in {type(hf).__name__} (looked for {', '.join(FINAL_NORMS)})")


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


class _HF(Anatomy):
    """What the Hugging Face families share: dimensions, the final norm and the unembedding, the rotary tables."""

    def __init__(self, hf, *, norm: str, d_mlp: int, gated: bool):
        self.hf = hf
        self.base = _part(hf, hf.base_model_prefix)
        self.n_layers = len(_layers(hf))
        self.attn_only, self.gated, self.d_mlp = False, gated, d_mlp
        self._read_out(_part(self.base, norm), _raw(hf.get_output_embeddings()), None)
        self.tok_embed = _fn(_raw(hf.get_input_embeddings()))
        self._rope: tuple | None = None

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
        self.d_model, self.d_head = cfg.n_embd, cfg.n_embd // cfg.n_head
        self.wpe = _tensor(_part(self.base, "wpe"), "weight")
        self.layers = []
        for blk in _layers(hf):
            attn, mlp = _part(blk, "attn"), _part(blk, "mlp")
            self.layers.append(_layer(_part(blk, "ln_1"), _part(blk, "ln_2"), [_part(attn, "c_attn"), _part(attn, "c_proj")],
                                      _mlp(_conv1d(_part(mlp, "c_fc")), _fn(_part(mlp, "act")), _conv1d(_part(mlp, "c_proj"))),
                                      attn.scaling))

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.tok_embed(tokens) + self.wpe[: tokens.shape[1]]

    def qkv_weights(self, layer: int):
        c_attn = self.layers[layer]["linears"][0]  # Conv1D: weight [d 3d], columns q, k, v
        weight, bias = _tensor(c_attn, "weight"), _tensor(c_attn, "bias")
        return weight.T.reshape(3 * self.n_heads, self.d_head, -1), bias.view(3 * self.n_heads, self.d_head)

    def o_weights(self, layer: int):
        c_proj = self.layers[layer]["linears"][1]
        return _tensor(c_proj, "weight").T, _tensor(c_proj, "bias")


class NeoX(_HF):
    """``GPTNeoXForCausalLM``: LayerNorm, fused per-head q/k/v, partial rotary, parallel or sequential residual."""

    def __init__(self, hf):
        cfg = hf.config
        super().__init__(hf, norm="final_layer_norm", d_mlp=cfg.intermediate_size, gated=False)
        self.n_heads = self.n_kv_heads = cfg.num_attention_heads
        self.d_model, self.d_head = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads
        self.parallel = bool(cfg.use_parallel_residual)
        self.layers = []
        for blk in _layers(hf):
            attn, mlp = _part(blk, "attention"), _part(blk, "mlp")
            self.layers.append(_layer(_part(blk, "input_layernorm"), _part(blk, "post_attention_layernorm"),
                                      [_part(attn, "query_key_value"), _part(attn, "dense")],
                                      _mlp(_fn(_part(mlp, "dense_h_to_4h")), _fn(_part(mlp, "act")), _fn(_part(mlp, "dense_4h_to_h"))),
                                      attn.scaling, rope=True))

    def qkv_weights(self, layer: int):
        fused = self.layers[layer]["linears"][0]  # rows [head (q k v) d_head]
        H, dh = self.n_heads, self.d_head
        weight, bias = _tensor(fused, "weight"), _tensor(fused, "bias")
        W = weight.view(H, 3, dh, -1).transpose(0, 1).reshape(3 * H, dh, -1)
        return W, None if bias is None else bias.view(H, 3, dh).transpose(0, 1).reshape(3 * H, dh)


class Llama(_HF):
    """``LlamaForCausalLM`` (and Mistral, Qwen2, Gemma): RMSNorm (Gemma's ``1 + w``), rotary, gated MLP,
    grouped-query attention; Gemma's embedding scale is its embedding module's own."""

    def __init__(self, hf):
        cfg = hf.config
        super().__init__(hf, norm="norm", d_mlp=cfg.intermediate_size, gated=True)
        self.n_heads, self.d_model = cfg.num_attention_heads, cfg.hidden_size
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.layers = []
        for blk in _layers(hf):
            attn = _part(blk, "self_attn")
            self.d_head = attn.head_dim
            self.layers.append(_layer(_part(blk, "input_layernorm"), _part(blk, "post_attention_layernorm"), self._linears(attn),
                                      self._mlp(_part(blk, "mlp")), attn.scaling, rope=True))

    def _linears(self, attn) -> list:
        return [_part(attn, f"{name}_proj") for name in "qkvo"]

    def _mlp(self, mlp):
        gate, up, down, act = (_fn(_part(mlp, name)) for name in ("gate_proj", "up_proj", "down_proj", "act_fn"))
        return lambda x: down(act(gate(x)) * up(x))


class Phi3(Llama):
    """``Phi3ForCausalLM``: Llama's computation with a fused ``qkv_proj`` (rows: queries, keys, values)
    and a fused ``gate_up_proj`` (rows: gate, up)."""

    def _linears(self, attn) -> list:
        return [_part(attn, "qkv_proj"), _part(attn, "o_proj")]

    def _mlp(self, mlp):
        gate_up, down, act = (_fn(_part(mlp, name)) for name in ("gate_up_proj", "down_proj", "activation_fn"))

        def forward(x: Tensor) -> Tensor:
            gate, up = gate_up(x).chunk(2, dim=-1)
            return down(up * act(gate))

        return forward

    def qkv_weights(self, layer: int):
        fused = self.layers[layer]["linears"][0]
        weight, bias = _tensor(fused, "weight"), _tensor(fused, "bias")
        rows = self.n_heads + 2 * self.n_kv_heads
        return weight.view(rows, self.d_head, -1), None if bias is None else bias.view(rows, self.d_head)

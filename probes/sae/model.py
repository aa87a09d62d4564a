"""The sparse autoencoder itself: one `SAE` module for the four architectures.

    sae = SAE(d_in=64, d_sae=512, kind="topk", k=16)
    f = sae.encode(x)          # [... d_sae], sparse and non-negative
    x_hat = sae.decode(f)      # [... d_in] = f @ W_dec + b_dec
    x_hat = sae(x)             # decode(encode(x))

Every kind shares the affine encoder ``pre = (x - b_dec) @ W_enc + b_enc`` (the decoder bias is
subtracted first unless ``apply_b_dec_to_input=False``) and the affine decoder; they differ only
in the activation that turns ``pre`` into sparse codes:

    relu       relu(pre)                                          Bricken et al. 2023
    topk       keep the k largest entries of each row, relu them  Gao et al. 2024
    batchtopk  training: keep the k * batch largest entries of the whole batch;
               inference: relu(pre) * (pre > threshold), one global threshold
                                                                  Bussmann et al. 2024
    jumprelu   pre * (pre > threshold), a learned threshold per latent
                                                                  Rajamanoharan et al. 2024

Shapes follow SAELens: ``W_enc [d_in d_sae]``, ``W_dec [d_sae d_in]`` (row ``i`` of ``W_dec`` is
latent ``i``'s decoder direction), ``b_enc [d_sae]``, ``b_dec [d_in]``, ``threshold [d_sae]``.
An `SAE` works on raw activations: the input normalisation used during training
(`probes.sae.train_sae`) is folded into the biases and thresholds when training ends.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.errors import InputError, closest

KINDS: tuple[str, ...] = ("topk", "batchtopk", "jumprelu", "relu")
#: kinds whose decoder rows are kept at unit norm while training (the papers do so).
UNIT_NORM_KINDS = frozenset({"topk", "batchtopk", "jumprelu"})


def check_kind(kind: Any) -> str:
    """``kind`` if it is one of `KINDS`, else an InputError naming the valid ones."""
    if kind not in KINDS:
        hint = closest(kind, KINDS) if isinstance(kind, str) else ""
        raise InputError(f"kind={kind!r} is not an SAE architecture.{hint} Use one of: {', '.join(KINDS)} "
                         f"('relu' is the ReLU + L1 SAE of Bricken et al. / Anthropic).")
    return kind


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}.")
    return value


def check_k(k: Any, kind: str, d_sae: int) -> int | None:
    """Validate ``k`` for the top-k kinds (None elsewhere)."""
    if kind not in ("topk", "batchtopk"):
        return None
    if k is None:
        raise InputError(f"kind={kind!r} needs k, the number of active latents per row (e.g. k=32).")
    k = _positive_int(k, "k")
    if k > d_sae:
        raise InputError(f"k={k} is larger than d_sae={d_sae}: a row cannot have more active latents than the "
                         f"dictionary has. Lower k or raise d_sae (k is usually 1-5% of d_sae).")
    return k


class SAE(nn.Module):
    """A sparse autoencoder ``x -> f = act(pre(x)) -> x_hat = f @ W_dec + b_dec``.

        sae = SAE(64, 512, kind="topk", k=16)          # weights are zero: train it or load them
        f = sae.encode(acts)                            # [... 512]
        recon = sae(acts)                               # [... 64]

    Parameters: ``d_in`` (width of the activation read), ``d_sae`` (number of latents), ``kind``
    (one of `KINDS`), ``k`` (topk / batchtopk), ``apply_b_dec_to_input`` (subtract ``b_dec``
    before encoding), ``metadata`` (free-form: the site, the model, training settings).
    Build a trained one with `probes.sae.train_sae` or `probes.sae.load_saelens`.
    """

    def __init__(self, d_in: int, d_sae: int, kind: str = "topk", k: int | None = None,
                 apply_b_dec_to_input: bool = True, metadata: dict | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device | None = None):
        super().__init__()
        self.d_in = _positive_int(d_in, "d_in")
        self.d_sae = _positive_int(d_sae, "d_sae")
        self.kind = check_kind(kind)
        self.k = check_k(k, kind, d_sae)
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.metadata: dict = dict(metadata or {})
        opts = dict(dtype=dtype, device=device)
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae, **opts))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, **opts))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in, **opts))
        self.b_dec = nn.Parameter(torch.zeros(d_in, **opts))
        if kind == "jumprelu":  # learned (straight-through estimator), one per latent
            self.threshold = nn.Parameter(torch.zeros(d_sae, **opts))
        elif kind == "batchtopk":  # estimated while training, the same for every latent
            self.register_buffer("threshold", torch.zeros(d_sae, **opts))

    # ------------------------------------------------------------------ description
    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        site = f", site={self.metadata['hook_name']!r}" if self.metadata.get("hook_name") else ""
        return f"d_in={self.d_in}, d_sae={self.d_sae}, kind={self.kind!r}{k}{site}"

    def __repr__(self) -> str:
        return f"SAE({self.extra_repr()})"

    # ------------------------------------------------------------------ the maps
    def check_input(self, x: Tensor, what: str = "activations") -> None:
        """Raise an InputError unless ``x`` is a float tensor ``[... d_in]`` on this SAE's device."""
        if not isinstance(x, Tensor):
            raise InputError(f"The SAE reads a float tensor [... {self.d_in}], got {type(x).__name__}.")
        if x.ndim == 0 or x.shape[-1] != self.d_in:
            got = tuple(x.shape)
            raise InputError(
                f"The {what} have shape {got}, {got[-1] if got else 'no'} features on the last axis, but this SAE "
                f"reads d_in={self.d_in}. Use activations from the site it was trained on"
                f"{' (' + self.metadata['hook_name'] + ')' if self.metadata.get('hook_name') else ''}, or train an "
                f"SAE with d_in={got[-1] if got else '?'}."
            )
        if not x.is_floating_point():
            raise InputError(f"The {what} must be floating point, got dtype {x.dtype}; convert with .float().")
        if x.device != self.device:
            raise InputError(f"The {what} are on {x.device} but the SAE is on {self.device}; move the SAE with "
                             f"sae.to({str(x.device)!r}) (or the activations with .to({str(self.device)!r})).")

    def pre_activation(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """``(x - b_dec) @ W_enc + b_enc`` (without subtracting ``b_dec`` if ``apply_b_dec_to_input`` is False)."""
        self.check_input(x)
        x = x.to(self.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        """The inference activation of this kind applied to pre-activations."""
        if self.kind == "relu":
            return torch.relu(pre)
        if self.kind == "topk":
            return topk_activation(pre, self.k)
        return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)  # jumprelu, batchtopk at inference

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Latent activations ``[... d_sae]`` of raw activations ``x [... d_in]``."""
        return self.activate(self.pre_activation(x))

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """``f @ W_dec + b_dec``: the reconstruction ``[... d_in]`` from latents ``f [... d_sae]``."""
        if not isinstance(f, Tensor) or f.ndim == 0 or f.shape[-1] != self.d_sae:
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise InputError(f"decode reads latents [... {self.d_sae}] (d_sae={self.d_sae}), got {got}; "
                             f"pass the output of sae.encode.")
        return f.to(self.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale each decoder row to unit norm (rows of norm 0 are left as they are)."""
        norms = self.W_dec.norm(dim=-1, keepdim=True)
        self.W_dec.div_(torch.where(norms > 0, norms, torch.ones_like(norms)))


def topk_activation(pre: Float[Tensor, "... d_sae"], k: int) -> Float[Tensor, "... d_sae"]:
    """Keep the ``k`` largest entries of each row (relu'd), zero the rest (Gao et al. 2024)."""
    values, indices = torch.topk(pre, k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


def batch_topk_activation(pre: Float[Tensor, "batch d_sae"], k: int) -> Float[Tensor, "batch d_sae"]:
    """Keep the ``k * batch`` largest relu'd entries of the whole batch (Bussmann et al. 2024)."""
    acts = torch.relu(pre)
    flat = acts.reshape(-1)
    values, indices = torch.topk(flat, min(k * pre.shape[0], flat.numel()), sorted=False)
    return torch.zeros_like(flat).scatter(0, indices, values).reshape(acts.shape)


class _JumpReLU(torch.autograd.Function):
    """``pre * H(pre - threshold)``; the threshold's gradient through a rectangle kernel of width
    ``bandwidth`` (straight-through estimator, Rajamanoharan et al. 2024, eq. 11)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = (pre > threshold).to(grad.dtype) * grad
        kernel = ((pre - threshold).abs() < eps / 2).to(grad.dtype) / eps
        grad_threshold = -(threshold * kernel * grad).reshape(-1, pre.shape[-1]).sum(0)
        return grad_pre, grad_threshold, None


class _Step(torch.autograd.Function):
    """``H(pre - threshold)`` (for the L0 penalty); gradient to the threshold only, through the
    same rectangle kernel (Rajamanoharan et al. 2024, eq. 12)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        kernel = ((pre - threshold).abs() < eps / 2).to(grad.dtype) / eps
        grad_threshold = -(kernel * grad).reshape(-1, pre.shape[-1]).sum(0)
        return None, grad_threshold, None


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """JumpReLU with straight-through gradients for ``threshold`` (training)."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """The Heaviside step ``H(pre - threshold)`` with straight-through gradients for ``threshold``."""
    return _Step.apply(pre, threshold, bandwidth)

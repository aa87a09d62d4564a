"""Train an `SAE` on activations: a tensor ``[n d]`` or an `ActivationStore` (memory or disk shards).

    sae, history = train_sae(store, d_sae=512, kind="topk", k=16, site="blocks.1.hook_resid_post",
                             steps=2000, batch_size=1024, seed=0)
    sae, history = train_sae(X, 512, kind="relu", l1_coefficient=5.0, checkpoint_dir="ckpt/", resume=True)
    history.to_dataframe()          # one row per step: loss, mse, fvu, l0, sparsity, aux, dead

One step reads a batch ``x`` (with ``normalize=True`` multiplied by one constant, estimated on a
sample, that makes the mean squared row norm ``d_in``; SAELens's ``expected_average_only_in``
makes the mean norm ``sqrt(d_in)`` instead), encodes, decodes, and minimises

    ||x - x_hat||^2                                  every kind (summed over d_in, mean over rows)
    + l1_coefficient * sum_i f_i ||W_dec[i]||        relu (Anthropic's April 2024 update)
    + l0_coefficient * sum_i H(pre_i - threshold_i)  jumprelu (Rajamanoharan et al. 2024; the step's
                                                     gradient reaches the threshold through a
                                                     rectangle kernel of width ``bandwidth``)
    + aux_coefficient * ||e - e_hat_dead||^2         topk, batchtopk: AuxK (Gao et al. 2024), the
                                                     residual e = x - x_hat reconstructed from the
                                                     ``aux_k`` largest dead latents

with Adam (learning rate decayed linearly to 0 over the last ``lr_decay`` of the steps, sparsity
coefficients warmed up linearly over the first ``sparsity_warmup``). For topk, batchtopk and
jumprelu the decoder rows are kept at unit norm: the gradient's component parallel to each row is
removed before the step and the rows are normalised after it (Gao et al.). The relu SAE leaves
its decoder free, since the L1 term is weighted by its norms. A latent is *dead* once it has not
fired for ``dead_after`` rows; relu SAEs resample dead latents every ``resample_every`` steps
from the batch's worst-reconstructed inputs (a simplified Bricken et al. 2023: directions of
high-loss inputs drawn with probability proportional to the squared loss; their Adam state reset).
Initialisation: decoder rows in random unit directions (norm 0.1 for relu, as in the April
update), ``W_enc = W_dec.T``, ``b_enc = 0``, ``b_dec`` the geometric median of a sample (Gao et al.).

Data are streamed: rows are read in blocks of ``block_rows`` consecutive rows (one block in
memory at a time, so a disk store larger than RAM trains), blocks are visited in a seeded random
order each epoch, and rows are shuffled within a block. Everything random derives from ``seed``,
so a call is deterministic on a machine. With ``checkpoint_dir`` the SAE, the Adam state, the step
(which fixes the data position) and the dead-latent counters are saved every
``checkpoint_every`` steps; ``resume=True`` continues from there and ends with exactly the weights
of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.sites import SiteLike, as_site
from probes.collect import ActivationStore
from probes.sae.model import (
    SAE,
    UNIT_NORM_KINDS,
    batch_topk_activation,
    check_k,
    check_kind,
    jumprelu,
    step,
    topk_activation,
)

CHECKPOINT_FILE = "sae_checkpoint.pt"
CHECKPOINT_VERSION = 1
_METRICS = ("loss", "mse", "fvu", "l0", "sparsity", "aux", "dead_fraction", "lr")


# =============================================================================== data
class Rows:
    """Random access to the rows ``[n d]`` of a tensor, an array or one site of an `ActivationStore`
    (disk shards are memory-mapped, so reading a range loads only that range)."""

    def __init__(self, data: Any, site: SiteLike | None = None):
        self.site = None
        self._shards: list[tuple[int, Any]] = []
        if isinstance(data, ActivationStore):
            site = _store_site(data, site)
            self.site = site
            self.n, self.d = len(data), data.dim(site)
            if data.on_disk:  # read block by block (ActivationStore.read_rows maps only the shards needed)
                self._store, self._tensor = data, None
            else:
                self._tensor = data[site]
        else:
            if site is not None:
                raise InputError("site= selects a site of an ActivationStore; a tensor has only one, so leave site out.")
            if isinstance(data, np.ndarray):
                data = torch.from_numpy(data)
            if not isinstance(data, Tensor):
                raise InputError(f"Training data must be a tensor [n d], a numpy array or an ActivationStore, "
                                 f"got {type(data).__name__}.")
            if data.ndim != 2:
                raise InputError(f"Training data must be [n d] (rank 2), got shape {tuple(data.shape)}; flatten the "
                                 f"other axes first (probes.collect does this).")
            if not data.is_floating_point():
                raise InputError(f"Activations must be floating point, got dtype {data.dtype}; convert with .float().")
            self._tensor = data.detach()
            self.n, self.d = data.shape
        if self.n == 0:
            raise InputError("The activations have no rows; collect some first.")

    def read(self, start: int, stop: int) -> Tensor:
        """Rows ``[start, stop)`` as a CPU (or the tensor's device) tensor."""
        if self._tensor is not None:
            return self._tensor[start:stop]
        return self._store.read_rows(self.site, start, stop)

    def fingerprint(self) -> str:
        """A digest of the shape and the first and last rows (identifies the data for resuming)."""
        h = hashlib.sha256(f"{self.n}x{self.d}".encode())
        for part in (self.read(0, min(self.n, 256)), self.read(max(0, self.n - 256), self.n)):
            h.update(part.detach().cpu().float().numpy().tobytes())
        return h.hexdigest()[:16]


def _store_site(store: ActivationStore, site: SiteLike | None):
    if site is None:
        if len(store.sites) != 1:
            raise InputError(f"This store holds {len(store.sites)} sites ({', '.join(map(str, store.sites))}); "
                             f"choose one with site=.")
        return store.sites[0]
    key = as_site(site)
    if key not in store:
        raise InputError(f"{key} is not in this store; it holds: {', '.join(map(str, store.sites))}.")
    return key


class Stream:
    """Batches of exactly ``batch_size`` rows from position ``position`` of an endless, seeded
    order: epoch after epoch, blocks of ``block_rows`` rows in a random order, rows shuffled
    within each block. ``Stream(..., position=p)`` continues exactly where one at p stopped."""

    def __init__(self, rows: Rows, batch_size: int, block_rows: int, seed: int, position: int = 0):
        self.rows, self.batch_size, self.block_rows, self.seed = rows, batch_size, block_rows, seed
        self.position = position
        self.n_blocks = -(-rows.n // block_rows)
        self._block: Tensor | None = None
        self._at = 0  # next row of self._block

    def _load(self, position: int) -> None:
        epoch, offset = divmod(position, self.rows.n)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
        sizes = [min(self.rows.n, (b + 1) * self.block_rows) - b * self.block_rows for b in order]
        starts = np.cumsum([0, *sizes])
        j = int(np.searchsorted(starts, offset, side="right")) - 1
        b = int(order[j])
        block = self.rows.read(b * self.block_rows, b * self.block_rows + sizes[j])
        perm = torch.from_numpy(np.random.default_rng([self.seed, epoch, 1 + b]).permutation(sizes[j]))
        self._block = block[perm.to(block.device)]
        self._at = offset - int(starts[j])

    def next(self) -> Tensor:
        pieces, need = [], self.batch_size
        while need:
            if self._block is None or self._at >= self._block.shape[0]:
                self._load(self.position)
            take = min(need, self._block.shape[0] - self._at)
            pieces.append(self._block[self._at:self._at + take])
            self._at += take
            self.position += take
            need -= take
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def check_finite(x: Tensor, where: str) -> None:
    """InputError if ``x`` holds NaN or inf."""
    if not torch.isfinite(x).all():
        bad = ~torch.isfinite(x)
        rows = bad.reshape(-1, x.shape[-1]).any(-1).nonzero()
        raise InputError(
            f"The activations {where} contain {int(bad.sum())} NaN/inf values (in {rows.shape[0]} rows, first at "
            f"row {int(rows[0])}). Drop those rows, or find where the model overflows (run it in float32)."
        )


# =============================================================================== results
@dataclass
class SAETrainHistory:
    """Per-step training curves of `train_sae` (``metrics[name][i]`` belongs to ``steps[i]``).

    Metrics: ``loss`` (the total objective), ``mse`` (squared error summed over d_in, mean over
    rows, in the normalised units), ``fvu`` (mse over the batch's total variance), ``l0`` (active
    latents per row), ``sparsity`` (the L1 or L0 penalty before its coefficient; 0 for topk kinds),
    ``aux`` (AuxK loss), ``dead_fraction`` (latents silent for ``dead_after`` rows), ``lr``.
    ``input_scale``: the factor the activations were multiplied by while training.
    """

    steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in _METRICS})
    input_scale: float = 1.0
    settings: dict = field(default_factory=dict)

    def to_dataframe(self):
        """A pandas DataFrame with one row per step."""
        import pandas as pd

        return pd.DataFrame({"step": self.steps, **self.metrics})

    def __repr__(self) -> str:
        if not self.steps:
            return "SAETrainHistory(no steps)"
        last = {m: self.metrics[m][-1] for m in ("loss", "fvu", "l0", "dead_fraction")}
        return (f"SAETrainHistory({len(self.steps)} steps; last: "
                + ", ".join(f"{k}={v:.4g}" for k, v in last.items()) + ")")


# =============================================================================== training
def train_sae(
    data: Float[Tensor, "n d"] | ActivationStore | np.ndarray,
    d_sae: int,
    *,
    kind: str = "topk",
    k: int | None = 32,
    site: SiteLike | None = None,
    steps: int | None = None,
    batch_size: int = 4096,
    lr: float | None = None,
    l1_coefficient: float = 5.0,
    l0_coefficient: float = 0.05,
    bandwidth: float = 0.05,
    init_threshold: float = 0.1,
    aux_k: int | None = None,
    aux_coefficient: float = 1 / 32,
    dead_after: int | None = None,
    resample_every: int | None = None,
    sparsity_warmup: float = 0.05,
    lr_decay: float = 0.2,
    normalize: bool = True,
    apply_b_dec_to_input: bool = True,
    block_rows: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callback: Callable[[int, SAE, dict], Any] | None = None,
) -> tuple[SAE, SAETrainHistory]:
    """Train a sparse autoencoder with ``d_sae`` latents on ``data``; returns ``(sae, history)``.

    ``data``: activations ``[n d]`` (tensor or array) or an `ActivationStore` (``site=`` picks the
    site when it holds several). ``kind``: "topk", "batchtopk", "jumprelu" or "relu". ``k``: active
    latents per row (topk; batchtopk on average). ``steps``: optimiser steps (default: one pass,
    ``ceil(n / batch_size)``). ``lr``: Adam's rate (default ``2e-4 * sqrt(2**14 / d_sae)``, Gao et
    al.'s scaling). ``l1_coefficient`` (relu), ``l0_coefficient``, ``bandwidth`` and
    ``init_threshold`` (jumprelu; the paper's 0.001 for both were tuned to its own activation scale:
    here, with pre-activations of order 1, a bandwidth of 0.001 leaves the thresholds almost no
    gradient in short runs, measured L0 35 of 96 latents after 150 steps on planted data against
    10-20 with 0.05 and 0.1). ``aux_k`` (default ``d_in // 2``), ``aux_coefficient``: AuxK.
    ``dead_after``: rows without firing after which a latent counts as dead (default
    ``min(n, 10_000_000)``). ``resample_every``: steps between resamplings of dead latents (relu
    only; None: never). ``normalize``: scale the inputs so the mean squared row norm is ``d_in``
    (folded into the returned SAE, which reads raw activations). ``block_rows``: rows per block in
    memory (default about 256 MB). ``checkpoint_dir`` / ``checkpoint_every`` (default: a tenth of
    the steps) / ``resume``: see the module docstring. ``callback(step, sae, metrics)`` runs after
    every step (``sae`` is in the normalised units then). The returned SAE is in eval mode with
    gradients off (``sae.requires_grad_(True)`` to fine-tune it).
    """
    kind = check_kind(kind)
    rows = Rows(data, site)
    d_in, n = rows.d, rows.n
    d_sae = _int(d_sae, "d_sae")
    k = check_k(k, kind, d_sae)
    batch_size = _int(batch_size, "batch_size")
    steps = -(-n // batch_size) if steps is None else _int(steps, "steps")
    lr = 2e-4 * math.sqrt(2**14 / d_sae) if lr is None else _positive(lr, "lr")
    aux_k = min(d_sae, max(1, d_in // 2)) if aux_k is None else _int(aux_k, "aux_k")
    dead_after = min(n, 10_000_000) if dead_after is None else _int(dead_after, "dead_after")
    block_rows = max(batch_size, (2**26) // d_in) if block_rows is None else _int(block_rows, "block_rows")
    block_rows = min(block_rows, n)
    if resample_every is not None:
        resample_every = _int(resample_every, "resample_every")
        if kind != "relu":
            raise InputError(f"resample_every applies to kind='relu' only; {kind!r} SAEs revive dead latents with the "
                             f"AuxK loss (aux_coefficient).")
    for name, value in (("l1_coefficient", l1_coefficient), ("l0_coefficient", l0_coefficient),
                        ("aux_coefficient", aux_coefficient)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InputError(f"{name} must be a non-negative number, got {value!r}.")
    _positive(bandwidth, "bandwidth")
    _positive(init_threshold, "init_threshold")
    for name, value in (("sparsity_warmup", sparsity_warmup), ("lr_decay", lr_decay)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InputError(f"{name} must be a fraction of the steps in [0, 1], got {value!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an int, got {seed!r}.")
    device = torch.device("cpu") if device is None else torch.device(device)
    if resume and checkpoint_dir is None:
        raise InputError("resume=True needs checkpoint_dir=, the directory an earlier call saved its checkpoints in.")
    checkpoint_every = (max(1, steps // 10) if checkpoint_every is None else _int(checkpoint_every, "checkpoint_every"))

    settings = dict(d_in=d_in, d_sae=d_sae, kind=kind, k=k, steps=steps, batch_size=batch_size, lr=lr,
                    l1_coefficient=l1_coefficient, l0_coefficient=l0_coefficient, bandwidth=bandwidth,
                    init_threshold=init_threshold, aux_k=aux_k, aux_coefficient=aux_coefficient,
                    dead_after=dead_after, resample_every=resample_every, sparsity_warmup=sparsity_warmup,
                    lr_decay=lr_decay, normalize=normalize, apply_b_dec_to_input=apply_b_dec_to_input,
                    block_rows=block_rows, seed=seed)
    job = {**settings, "data": rows.fingerprint()}

    sae = SAE(d_in, d_sae, kind, k, apply_b_dec_to_input=apply_b_dec_to_input, device=device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    history = SAETrainHistory(settings=settings)
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    start = 0
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        if not resume:
            raise InputError(f"{checkpoint_dir} already holds an SAE checkpoint; pass resume=True to continue it, or "
                             f"choose an empty checkpoint_dir to start again.")
        state = torch.load(ckpt, map_location=device, weights_only=False)
        _check_job(state, job, checkpoint_dir)
        sae.load_state_dict(state["sae"])
        optimizer.load_state_dict(state["optimizer"])
        since_fired.copy_(state["since_fired"])
        history.steps, history.metrics, history.input_scale = state["steps"], state["metrics"], state["input_scale"]
        start = state["step"]
        if state["position"] != start * batch_size:
            raise InputError(f"The checkpoint in {checkpoint_dir} is inconsistent (data position {state['position']} after "
                             f"{start} steps of {batch_size} rows); train again in a new checkpoint_dir.")
    else:
        with torch.no_grad():
            history.input_scale = _initialise(sae, rows, block_rows, seed, normalize, init_threshold)
    scale = history.input_scale
    stream = Stream(rows, batch_size, block_rows, seed, position=start * batch_size)

    bar = tqdm(range(start, steps), desc=f"train {kind} SAE", unit="step", disable=not progress,
               initial=start, total=steps)
    for t in bar:
        x = stream.next().to(device=device, dtype=sae.dtype)
        check_finite(x, f"of batch {t} (rows {t * batch_size} to {(t + 1) * batch_size - 1} of the stream)")
        if scale != 1.0:
            x = x * scale
        lr_t = lr * _decay(t, steps, lr_decay)
        for group in optimizer.param_groups:
            group["lr"] = lr_t
        warm = min(1.0, (t + 1) / (sparsity_warmup * steps)) if sparsity_warmup > 0 else 1.0
        metrics, f, err = _step(sae, optimizer, x, since_fired >= dead_after, settings, warm)
        fired = (f > 0).any(0)
        since_fired += x.shape[0]
        since_fired[fired] = 0
        if kind == "batchtopk":  # global inference threshold: running mean of the smallest kept activation
            with torch.no_grad():
                smallest = f[f > 0].min() if fired.any() else sae.threshold[0]
                rate = 1.0 if t == 0 else 0.01
                sae.threshold.mul_(1 - rate).add_(rate * smallest)
        if resample_every and (t + 1) % resample_every == 0 and t + 1 < steps:
            _resample(sae, optimizer, x, err, since_fired >= dead_after, seed, t)
            since_fired[since_fired >= dead_after] = 0
        metrics.update(dead_fraction=float((since_fired >= dead_after).float().mean()), lr=lr_t)
        history.steps.append(t)
        for m in _METRICS:
            history.metrics[m].append(metrics[m])
        if progress:
            bar.set_postfix(loss=f"{metrics['loss']:.4g}", fvu=f"{metrics['fvu']:.3f}", l0=f"{metrics['l0']:.1f}",
                            refresh=False)
        if callback is not None:
            callback(t, sae, metrics)
        if ckpt is not None and ((t + 1) % checkpoint_every == 0 or t + 1 == steps):
            _save_checkpoint(ckpt, dict(version=CHECKPOINT_VERSION, job=job, step=t + 1, position=stream.position,
                                        sae=sae.state_dict(), optimizer=optimizer.state_dict(),
                                        since_fired=since_fired, steps=history.steps, metrics=history.metrics,
                                        input_scale=scale))
    bar.close()

    with torch.no_grad():  # the returned SAE reads raw activations: pre / scale is the same code
        sae.b_enc.div_(scale)
        sae.b_dec.div_(scale)
        if kind in ("jumprelu", "batchtopk"):
            sae.threshold.div_(scale)
    sae.metadata.update(trained_by="probes.sae.train_sae", input_scale=scale, seed=seed, steps=steps,
                        **({"hook_name": str(rows.site)} if rows.site is not None else {}))
    sae.eval().requires_grad_(False)  # for reading and editing; requires_grad_(True) to train it further
    return sae, history


def _step(sae: SAE, optimizer, x: Tensor, dead: Tensor, s: dict, warm: float) -> tuple[dict, Tensor, Tensor]:
    """One optimiser step on the (normalised) batch ``x``; returns the metrics, latents and residual."""
    kind = sae.kind
    centred = x - sae.b_dec if sae.apply_b_dec_to_input else x
    pre = centred @ sae.W_enc + sae.b_enc
    if kind == "topk":
        f = topk_activation(pre, sae.k)
    elif kind == "batchtopk":
        f = batch_topk_activation(pre, sae.k)
    elif kind == "jumprelu":
        f = jumprelu(pre, sae.threshold, s["bandwidth"])
    else:
        f = torch.relu(pre)
    x_hat = f @ sae.W_dec + sae.b_dec
    err = x - x_hat
    mse = err.pow(2).sum(-1).mean()
    loss = mse
    sparsity = torch.zeros((), device=x.device)
    aux = torch.zeros((), device=x.device)
    if kind == "relu":
        sparsity = (f * sae.W_dec.norm(dim=-1)).sum(-1).mean()
        loss = loss + warm * s["l1_coefficient"] * sparsity
    elif kind == "jumprelu":
        sparsity = step(pre, sae.threshold, s["bandwidth"]).sum(-1).mean()
        loss = loss + warm * s["l0_coefficient"] * sparsity
    elif s["aux_coefficient"] > 0 and bool(dead.any()):
        n_aux = min(s["aux_k"], int(dead.sum()))
        dead_pre = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
        values, indices = torch.topk(dead_pre, n_aux, dim=-1, sorted=False)
        aux_f = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        aux = (err.detach() - aux_f @ sae.W_dec).pow(2).sum(-1).mean()
        loss = loss + s["aux_coefficient"] * aux
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if kind in UNIT_NORM_KINDS:  # keep ||W_dec[i]|| = 1: drop the gradient along each row, then renormalise
        with torch.no_grad():
            w, g = sae.W_dec, sae.W_dec.grad
            g.sub_((g * w).sum(-1, keepdim=True) * w)
    optimizer.step()
    with torch.no_grad():
        if kind in UNIT_NORM_KINDS:
            sae.normalize_decoder()
        if kind == "jumprelu":
            sae.threshold.clamp_(min=0.0)
        variance = (x - x.mean(0)).pow(2).sum(-1).mean()
        metrics = dict(loss=float(loss), mse=float(mse), fvu=float(mse / variance) if variance > 0 else float("nan"),
                       l0=float((f > 0).float().sum(-1).mean()), sparsity=float(sparsity), aux=float(aux))
    return metrics, f.detach(), err.detach()


@torch.no_grad()
def _initialise(sae: SAE, rows: Rows, block_rows: int, seed: int, normalize: bool, init_threshold: float) -> float:
    """Random unit decoder rows (0.1 for relu), W_enc = W_dec.T, b_dec = geometric median of a
    sample; returns the input scale (sqrt(d / mean ||x||^2) when normalising, else 1)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(sae.d_sae, sae.d_in, generator=g, dtype=torch.float64)
    w = w / w.norm(dim=-1, keepdim=True) * (0.1 if sae.kind == "relu" else 1.0)
    sae.W_dec.copy_(w)
    sae.W_enc.copy_(w.T)
    sae.b_enc.zero_()
    if sae.kind == "jumprelu":
        sae.threshold.fill_(init_threshold)
    sample = Stream(rows, min(rows.n, 16384), block_rows, seed).next().to(torch.float64)
    check_finite(sample, "(a sample read to initialise the SAE)")
    scale = 1.0
    if normalize:
        mean_sq = float(sample.pow(2).sum(-1).mean())
        if mean_sq == 0:
            raise InputError("Every sampled activation is zero, so there is nothing to reconstruct (and no scale to "
                             "normalise by); check the site, or pass normalize=False.")
        scale = math.sqrt(sae.d_in / mean_sq)
    sae.b_dec.copy_(geometric_median(sample[:4096] * scale))
    return scale


def geometric_median(x: Float[Tensor, "n d"], iters: int = 50, eps: float = 1e-8) -> Float[Tensor, " d"]:
    """The point minimising the summed distances to the rows of ``x`` (Weiszfeld's iteration)."""
    median = x.mean(0)
    for _ in range(iters):
        weights = 1 / (x - median).norm(dim=-1).clamp_min(eps)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - median).norm() < eps * (1 + median.norm()):
            return new
        median = new
    return median


@torch.no_grad()
def _resample(sae: SAE, optimizer, x: Tensor, err: Tensor, dead: Tensor, seed: int, t: int) -> None:
    """Point dead latents at the batch's worst-reconstructed inputs (Bricken et al. 2023, simplified)."""
    idx = dead.nonzero().squeeze(-1)
    if idx.numel() == 0:
        return
    loss = err.pow(2).sum(-1).double()
    if not loss.sum() > 0:
        return
    g = torch.Generator().manual_seed(seed * 1_000_003 + t)
    picks = torch.multinomial((loss**2 / (loss**2).sum()).cpu(), idx.numel(), replacement=True, generator=g)
    centred = x[picks.to(x.device)] - (sae.b_dec if sae.apply_b_dec_to_input else 0)
    directions = centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    dec_norm = sae.W_dec.norm(dim=-1)[alive].mean() if alive.any() else torch.tensor(0.1)
    enc_norm = sae.W_enc.norm(dim=0)[alive].mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec[idx] = directions * dec_norm
    sae.W_enc[:, idx] = (directions * enc_norm * 0.2).T
    sae.b_enc[idx] = 0.0
    for p, rows in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
        state = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0.0


def _decay(t: int, steps: int, fraction: float) -> float:
    """1 until the last ``fraction`` of the steps, then linearly down to (almost) 0."""
    tail = fraction * steps
    return 1.0 if tail <= 0 else min(1.0, (steps - t) / tail)


# =============================================================================== checkpoints
def _save_checkpoint(file: Path, state: dict) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp-{uuid.uuid4().hex[:8]}")
    torch.save(state, tmp)
    os.replace(tmp, file)


def _check_job(state: dict, job: dict, where) -> None:
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"The checkpoint in {where} has format version {state.get('version')}, this code reads "
                         f"{CHECKPOINT_VERSION}; train again in a new checkpoint_dir.")
    held = state["job"]
    if held != job:
        differs = sorted(k for k in set(held) | set(job) if held.get(k) != job.get(k))
        raise InputError(
            f"The checkpoint in {where} belongs to another training run (it differs in {', '.join(differs)}), so it "
            f"cannot be resumed with these arguments; pass the same data and settings, or a new checkpoint_dir."
        )


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}.")
    return value


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InputError(f"{name} must be a positive number, got {value!r}.")
    return float(value)

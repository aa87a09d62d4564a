"""How good is an SAE? Sparsity, reconstruction, latent health and the loss the model keeps.

    ev = evaluate_sae(sae, store)                                  # activations only
    ev = evaluate_sae(sae, model=model, site=site, tokens=tokens)  # + language-model loss recovered
    ev.l0, ev.fvu, ev.dead, ev.dense, ev.recovered_zero, ev.summary()

Reconstruction is the fraction of variance unexplained, ``FVU = sum ||x - x_hat||^2 /
sum ||x - mean(x)||^2``; sparsity is ``L0``, the mean number of active latents per row. A latent
is *dead* if it never fires on the evaluation data and *dense* if it fires on more than
``dense_threshold`` (10%) of rows. Neither tells whether the model can use the reconstruction,
so, given a model, a site and tokens, the reconstruction is spliced into the forward pass
(`probes.sae.splice_sae` through `HookedModel.edit`) and the next-token cross-entropy is compared
with the clean run and with two ablations of the site (zero, and the mean activation over the
tokens): ``recovered = (CE_ablated - CE_spliced) / (CE_ablated - CE_clean)``, 1 when splicing
costs nothing and 0 when it is as bad as ablating (Bricken et al. 2023; Gao et al. 2024 report the
same against zero ablation, and warn that mean ablation is the stricter baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.interventions import Scale
from interp.models import HookedModel
from interp.sites import SiteLike, as_site
from probes.collect import ActivationStore
from probes.sae.intervene import _site, splice_sae, to_feature_axis
from probes.sae.model import SAE
from probes.sae.training import Rows, check_finite


@dataclass
class SAEEvaluation:
    """The numbers `evaluate_sae` measures.

    ``l0`` (mean active latents per row), ``fvu`` (fraction of variance unexplained), ``mse`` (mean
    squared error per row, summed over d_in), ``frequency [d_sae]`` (fraction of rows each latent
    fires on), ``dead`` and ``dense`` (latent ids: never active / active on more than
    ``dense_threshold`` of rows), ``n_rows``. With a model: ``ce_clean``, ``ce_spliced``,
    ``ce_zero``, ``ce_mean`` (next-token cross-entropy, nats) and ``recovered_zero`` /
    ``recovered_mean`` (fraction of the loss gap to the zero / mean ablation that splicing keeps).
    """

    l0: float
    fvu: float
    mse: float
    n_rows: int
    frequency: Tensor
    dead: Tensor
    dense: Tensor
    dense_threshold: float = 0.1
    ce_clean: float | None = None
    ce_spliced: float | None = None
    ce_zero: float | None = None
    ce_mean: float | None = None
    recovered_zero: float | None = None
    recovered_mean: float | None = None
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict[str, float | int | None]:
        """The scalar results as a dict (dead and dense as counts)."""
        return dict(l0=self.l0, fvu=self.fvu, mse=self.mse, n_rows=self.n_rows, dead=int(self.dead.numel()),
                    dense=int(self.dense.numel()), ce_clean=self.ce_clean, ce_spliced=self.ce_spliced,
                    ce_zero=self.ce_zero, ce_mean=self.ce_mean, recovered_zero=self.recovered_zero,
                    recovered_mean=self.recovered_mean)

    def __repr__(self) -> str:
        text = (f"SAEEvaluation(L0={self.l0:.2f}, FVU={self.fvu:.4f}, dead={self.dead.numel()}, "
                f"dense={self.dense.numel()} of {self.frequency.numel()}, rows={self.n_rows}")
        if self.recovered_zero is not None:
            text += f", recovered vs zero={self.recovered_zero:.3f}, vs mean={self.recovered_mean:.3f}"
        return text + ")"


def evaluate_sae(
    sae: SAE,
    data: Float[Tensor, "n d"] | ActivationStore | np.ndarray | None = None,
    *,
    model: HookedModel | None = None,
    site: SiteLike | None = None,
    tokens: Int[Tensor, "batch pos"] | Any = None,
    batch_size: int = 4096,
    token_batch_size: int = 32,
    dense_threshold: float = 0.1,
    progress: bool = False,
) -> SAEEvaluation:
    """Evaluate ``sae`` on activations ``data`` (rows ``[n d_in]`` or an `ActivationStore`, whose
    ``site`` is used), and, given ``model``, ``site`` and ``tokens``, on the language-model loss.

    Without ``data`` the activation statistics are read from the model at ``site`` over every
    position of ``tokens``. ``site=None`` uses ``sae.metadata["hook_name"]``. ``batch_size``: rows
    per chunk; ``token_batch_size``: prompts per forward. Returns an `SAEEvaluation`.
    """
    if not isinstance(sae, SAE):
        raise InputError(f"evaluate_sae needs an SAE first, got {type(sae).__name__}.")
    if not (isinstance(dense_threshold, int | float) and 0 < dense_threshold < 1):
        raise InputError(f"dense_threshold must be a fraction in (0, 1), got {dense_threshold!r}.")
    with_model = model is not None or tokens is not None
    if with_model and (model is None or tokens is None):
        raise InputError("The loss-recovered part needs model= and tokens= (and a site, given or recorded in the SAE).")
    if data is None and not with_model:
        raise InputError("Give activations (a tensor [n d_in] or an ActivationStore), or model=, site= and tokens= "
                         "to read them from the model.")
    site_key = _site(sae, site) if with_model else None
    stats = _Stats(sae)
    with torch.no_grad():
        if data is not None:
            store_site = site if isinstance(data, ActivationStore) else None
            if isinstance(data, ActivationStore) and store_site is None and sae.metadata.get("hook_name"):
                hook = as_site(sae.metadata["hook_name"])
                store_site = hook if hook in data else None
            rows = Rows(data, store_site)
            for start in tqdm(range(0, rows.n, batch_size), desc="evaluate SAE", disable=not progress):
                stats.add(rows.read(start, min(rows.n, start + batch_size)))
        ce = {}
        if with_model:
            tokens = tokens.clean if hasattr(tokens, "clean") and isinstance(tokens.clean, Tensor) else tokens
            tokens = model.check_tokens(tokens)
            ce = _losses(model, sae, site_key, tokens, token_batch_size, stats if data is None else None, progress)
    result = stats.result(dense_threshold)
    if ce:
        result.ce_clean, result.ce_spliced, result.ce_zero, result.ce_mean = ce["clean"], ce["spliced"], ce["zero"], ce["mean"]
        result.recovered_zero = _recovered(ce["zero"], ce["spliced"], ce["clean"])
        result.recovered_mean = _recovered(ce["mean"], ce["spliced"], ce["clean"])
    result.settings = dict(site=str(site_key) if site_key is not None else sae.metadata.get("hook_name"),
                           dense_threshold=dense_threshold)
    return result


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    gap = ablated - clean
    return (ablated - spliced) / gap if gap != 0 else float("nan")


class _Stats:
    """Streaming sums for L0, FVU and firing frequencies (float64)."""

    def __init__(self, sae: SAE):
        self.sae = sae
        self.n = 0
        self.sum_x = torch.zeros(sae.d_in, dtype=torch.float64)
        self.sum_sq = 0.0
        self.sum_err = 0.0
        self.active = 0.0
        self.fired = torch.zeros(sae.d_sae, dtype=torch.float64)

    def add(self, x: Tensor) -> None:
        self.sae.check_input(x.to(self.sae.device))
        check_finite(x, "being evaluated")
        x = x.to(self.sae.device, self.sae.dtype)
        f = self.sae.encode(x)
        err = (x - self.sae.decode(f)).double()
        x64 = x.double()
        self.n += x.shape[0]
        self.sum_x += x64.sum(0).cpu()
        self.sum_sq += float(x64.pow(2).sum())
        self.sum_err += float(err.pow(2).sum())
        on = f > 0
        self.active += float(on.sum())
        self.fired += on.sum(0).double().cpu()

    def result(self, dense_threshold: float) -> SAEEvaluation:
        if self.n == 0:
            raise InputError("There are no activation rows to evaluate on.")
        mean = self.sum_x / self.n
        variance = self.sum_sq - self.n * float(mean.pow(2).sum())
        frequency = (self.fired / self.n).float()
        return SAEEvaluation(
            l0=self.active / self.n, fvu=self.sum_err / variance if variance > 0 else float("nan"),
            mse=self.sum_err / self.n, n_rows=self.n, frequency=frequency,
            dead=(frequency == 0).nonzero().squeeze(-1), dense=(frequency > dense_threshold).nonzero().squeeze(-1),
            dense_threshold=dense_threshold)


def _ce(logits: Tensor, tokens: Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy (float32) and the number of predictions."""
    pred = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    target = tokens[:, 1:].reshape(-1).to(pred.device)
    return float(F.cross_entropy(pred, target, reduction="sum")), target.numel()


def _losses(model: HookedModel, sae: SAE, site, tokens: Tensor, per_batch: int, stats: _Stats | None,
            progress: bool) -> dict[str, float]:
    if tokens.shape[1] < 2:
        raise InputError("The loss needs sequences of at least 2 tokens (it predicts each next token).")
    if site.kind == "pattern":
        raise InputError("An SAE on attention patterns cannot be spliced; use an activation site (resid, mlp, z, ...).")
    batches = [tokens[i:i + per_batch] for i in range(0, tokens.shape[0], per_batch)]
    # the mean of the site's activation over every token (its feature axes kept), for mean ablation
    total, count, clean, n_pred = None, 0, 0.0, 0
    for batch in tqdm(batches, desc="clean run", disable=not progress):
        logits, cache = model.run_with_cache(batch, [site])
        act = cache[site]
        x, _ = to_feature_axis(act, sae.d_in, f"{site}'s activation")
        if stats is not None:
            stats.add(x.reshape(-1, sae.d_in))
        lead = act.ndim - (act.ndim - x.ndim + 1)  # the axes before the feature axes (batch, pos)
        part = act.double().sum(dim=tuple(range(lead)))
        total = part if total is None else total + part
        count += int(np.prod(act.shape[:lead]))
        loss, m = _ce(logits, batch)
        clean, n_pred = clean + loss, n_pred + m
    mean_act = (total / count).to(model.dtype)
    out = {"clean": clean / n_pred}
    for name, iv in (("spliced", splice_sae(sae)), ("zero", Scale(0.0)), ("mean", _MeanAblation(mean_act))):
        loss = 0.0
        with model.edit({site: iv}):
            for batch in tqdm(batches, desc=f"{name} run", disable=not progress):
                loss += _ce(model(batch), batch)[0]
        out[name] = loss / n_pred
    return out


@dataclass(frozen=True, eq=False)
class _MeanAblation:
    mean: Tensor

    def __call__(self, act: Tensor) -> Tensor:
        return self.mean.to(act.device, act.dtype).expand_as(act).clone()

"""Probe sweeps across sites, with cross-validation and control tasks.

    result = probe_sweep(store, labels, control="tokens", cv=5, seed=0)
    result.to_dataframe()       # one row per site: score mean and 95% CI, control, selectivity
    result.plot()               # score vs layer per site kind, chance dashed; selectivity beside it

For every site in the store a fresh `LinearProbe` is fitted and scored on ``cv`` folds
(stratified for classification); the fold scores give a mean and a 95% confidence interval
(Student t over folds). Chance is the majority-class rate (classification) or R² = 0 (regression).

Control tasks (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks"): a
probe can score well simply by memorising which output goes with each input *token*, whatever the
site encodes. The control task gives every token type a random label (the same type always gets
the same label, drawn from the real task's label distribution), so only memorisation can solve
it. ``selectivity = task accuracy - control accuracy`` on the same folds: high when the site
encodes the property beyond token identity, near zero when identity alone explains the score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from scipy import stats
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.sites import Site, SiteLike, as_site
from probes.collect import ActivationStore
from probes.linear import TASKS, LinearProbe, as_numpy

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mixing function (SplitMix64's finaliser), applied elementwise."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def control_labels(
    token_ids: Int[Tensor, " rows"] | np.ndarray | Sequence[int],
    n_classes: int,
    seed: int = 0,
    probs: Sequence[float] | None = None,
) -> Int[Tensor, " rows"]:
    """A control task (Hewitt & Liang 2019): a random label per token *type*, ``[rows]``.

    Every occurrence of the same token id gets the same label, and a token's label depends only
    on (``seed``, its id), not on which other tokens are present. Labels are drawn uniformly from
    ``0..n_classes-1``, or from ``probs`` (e.g. the real task's label frequencies).
    """
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
        raise InputError(f"n_classes={n_classes!r} must be an int of at least 2.")
    ids = as_numpy(token_ids, "token_ids")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"token_ids must be a 1-D integer array [rows], got dtype {ids.dtype} and shape {ids.shape}.")
    if probs is None:
        cdf = np.arange(1, n_classes + 1) / n_classes
    else:
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (n_classes,) or (p < 0).any() or p.sum() <= 0:
            raise InputError(f"probs must be {n_classes} non-negative numbers (class frequencies), got {list(p)}.")
        cdf = np.cumsum(p / p.sum())
    key = _splitmix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF) + np.zeros(1, dtype=np.uint64))[0]
    h = _splitmix64(ids.astype(np.int64).view(np.uint64) ^ key)
    u = (h >> np.uint64(11)).astype(np.float64) / float(2**53)  # uniform in [0, 1)
    labels = np.minimum(np.searchsorted(cdf, u, side="right"), n_classes - 1)
    return torch.from_numpy(labels.astype(np.int64))


@dataclass
class ProbeSweepResult:
    """Cross-validated probe scores per site (``scores [site fold]``), and the control's, if any."""

    sites: list[Site]
    scores: np.ndarray
    task: str
    chance: float
    control_scores: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return "accuracy" if self.task == "classification" else "R²"

    @property
    def mean(self) -> np.ndarray:
        return self.scores.mean(axis=1)

    @property
    def ci(self) -> np.ndarray:
        """``[site 2]``: the 95% interval (low, high) of the mean score."""
        return _ci(self.scores)

    @property
    def selectivity(self) -> np.ndarray | None:
        """Per-fold task score minus control score ``[site fold]`` (None without a control)."""
        return None if self.control_scores is None else self.scores - self.control_scores

    def to_dataframe(self) -> pd.DataFrame:
        """One row per site: site, kind, layer, head, score, score_low, score_high, chance
        (and control, control_low, control_high, selectivity, selectivity_low, selectivity_high)."""
        ci = self.ci
        df = pd.DataFrame({
            "site": [str(s) for s in self.sites],
            "kind": [s.kind for s in self.sites],
            "layer": [s.layer for s in self.sites],
            "head": [s.head for s in self.sites],
            "score": self.mean, "score_low": ci[:, 0], "score_high": ci[:, 1],
            "chance": self.chance,
        })
        if self.control_scores is not None:
            cci, sel = _ci(self.control_scores), self.selectivity
            sci = _ci(sel)
            df["control"], df["control_low"], df["control_high"] = self.control_scores.mean(1), cci[:, 0], cci[:, 1]
            df["selectivity"], df["selectivity_low"], df["selectivity_high"] = sel.mean(1), sci[:, 0], sci[:, 1]
        df.attrs["metric"] = self.metric
        return df

    def top(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` sites with the highest selectivity (or score, without a control)."""
        df = self.to_dataframe()
        return df.sort_values("selectivity" if "selectivity" in df else "score", ascending=False).head(k)

    def plot(self, title: str | None = None):
        """Score vs layer, one line per site kind (and head), 95% CI error bars, chance dashed; with a
        control, selectivity vs layer in a second panel. Returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        panels = 2 if self.control_scores is not None else 1
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
        axes = axes[0]
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(self.sites):
            label = s.kind if s.head is None else f"{s.kind} head {s.head}"
            groups.setdefault(label, []).append(i)
        xs_all = sorted({_layer_x(s) for s in self.sites})
        series = [(axes[0], self.scores, self.metric)]
        if self.control_scores is not None:
            series.append((axes[1], self.selectivity, f"selectivity ({self.metric} − control)"))
        for ax, values, ylabel in series:
            mean, ci = values.mean(1), _ci(values)
            for g, (label, idx) in enumerate(groups.items()):
                idx = sorted(idx, key=lambda i: _layer_x(self.sites[i]))
                dodge = 0.06 * (g - (len(groups) - 1) / 2)  # keep error bars at one layer apart
                x = [_layer_x(self.sites[i]) + dodge for i in idx]
                err = np.abs(ci[idx].T - mean[idx][None, :])
                ax.errorbar(x, mean[idx], yerr=err, marker="o", capsize=3, label=label)
            ax.set_xlabel("layer")
            ax.set_ylabel(ylabel)
            ax.set_xticks(xs_all, ["embed" if x < 0 else str(int(x)) for x in xs_all])
        axes[0].axhline(self.chance, color="gray", linestyle="--", label=f"chance ({self.chance:.2f})")
        axes[0].set_title(title or f"Linear probe {self.metric} ({self.settings.get('cv', '?')}-fold CV, 95% CI)")
        axes[0].legend(fontsize="small")
        if self.control_scores is not None:
            axes[1].axhline(0.0, color="gray", linestyle="--", label="no selectivity")
            axes[1].set_title("Selectivity over a control task (Hewitt & Liang 2019)")
            axes[1].legend(fontsize="small")
        fig.tight_layout()
        return fig


def _layer_x(site: Site) -> float:
    return -1.0 if site.layer is None else float(site.layer)


def _ci(values: np.ndarray) -> np.ndarray:
    """95% Student-t interval of the mean over the last axis, ``[... 2]``."""
    k = values.shape[-1]
    mean = values.mean(-1)
    if k < 2:
        return np.stack([mean, mean], -1)
    half = stats.t.ppf(0.975, k - 1) * values.std(-1, ddof=1) / np.sqrt(k)
    return np.stack([mean - half, mean + half], -1)


def probe_sweep(
    store: ActivationStore,
    labels: Any,
    sites: Iterable[SiteLike] | None = None,
    cv: int = 5,
    control: str | Any | None = None,
    task: str = "classification",
    seed: int = 0,
    progress: bool = True,
    C: float = 1.0,
    alpha: float = 1.0,
    standardize: bool = True,
    max_iter: int = 1000,
    blas_threads: int | None = 1,
    executor=None,
) -> ProbeSweepResult:
    """Fit and cross-validate a `LinearProbe` at every site of ``store`` (or ``sites``).

    ``labels``: one per row of the store. ``control``: None, labels of a control task (one per
    row, e.g. from `control_labels`), or ``"tokens"`` to build the Hewitt & Liang control from the
    store's token ids with the task's label frequencies. The control is scored on the same folds,
    so selectivity is a paired difference. ``seed`` fixes the folds and the control labels.
    ``blas_threads`` caps BLAS threads during the fits (None: no cap).
    ``executor``: None fits here; an `interp.distributed.RayExecutor` fits chunks of sites on its
    workers (no model is loaded; a disk store is read by the workers from its path, so on several
    machines put it on a shared filesystem), with the same scores.
    """
    if task not in TASKS:
        raise InputError(f"task={task!r} is not a probe task; use 'classification' or 'regression'.")
    if not isinstance(cv, int) or isinstance(cv, bool) or cv < 2:
        raise InputError(f"cv={cv!r} must be an int of at least 2 (the number of folds).")
    site_list = store.sites if sites is None else [as_site(s) for s in sites]
    for s in site_list:
        store.dim(s)  # raises a SiteError naming what the store holds
    n = len(store)
    y = as_numpy(labels, "labels")
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"Got labels of shape {y.shape} for a store of {n} rows; give one label per row "
                         f"(store.prompt_ids says which prompt each row came from).")
    if task == "classification":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise InputError(f"All labels are the same class ({classes[0]!r}); probing needs at least two classes.")
        if counts.min() < cv:
            raise InputError(f"Class {classes[counts.argmin()]!r} has only {counts.min()} rows, fewer than cv={cv} folds; "
                             f"lower cv or collect more examples.")
        chance = float(counts.max() / n)
        folds = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(np.zeros(n), y))
    else:
        chance = 0.0
        folds = list(KFold(cv, shuffle=True, random_state=seed).split(np.zeros(n)))

    y_control = None
    if isinstance(control, str):
        if control != "tokens":
            raise InputError(f"control={control!r} is not understood; give 'tokens' or an array of control labels.")
        if task != "classification":
            raise InputError("control='tokens' needs task='classification'; control tasks assign random classes.")
        token_ids = store.token_ids
        if (token_ids < 0).any():
            raise InputError("This store has no token ids (they are -1), so control='tokens' cannot be built; pass control labels.")
        y_control = control_labels(token_ids, len(classes), seed=seed, probs=counts / n).numpy()
    elif control is not None:
        y_control = as_numpy(control, "control labels")
        if y_control.shape != (n,):
            raise InputError(f"Got control labels of shape {y_control.shape} for a store of {n} rows; give one per row.")

    probe = LinearProbe(task, C=C, alpha=alpha, standardize=standardize, max_iter=max_iter, random_state=seed)
    scores = np.zeros((len(site_list), cv))
    control_scores = None if y_control is None else np.zeros((len(site_list), cv))
    if executor is None:
        # Many small fits: BLAS threads cost more than they bring (10-20x slower on 2 busy cores).
        with threadpool_limits(limits=blas_threads):
            _fit_folds(probe, store, site_list, folds, y, y_control, scores, control_scores, progress)
    else:
        from interp.distributed import chunk_ranges

        chunks = chunk_ranges(len(site_list), executor.chunks)
        job = (probe, store, site_list, folds, y, y_control, blas_threads)
        parts = executor.map(_sweep_chunk, chunks, shared=job, progress=progress, weights=[len(c) for c in chunks],
                             desc=f"probe sweep on {executor.num_workers} workers")
        for chunk, (part, control_part) in zip(chunks, parts, strict=True):
            scores[chunk.start : chunk.stop] = part
            if control_scores is not None:
                control_scores[chunk.start : chunk.stop] = control_part
    settings = dict(cv=cv, seed=seed, C=C, alpha=alpha, standardize=standardize, max_iter=max_iter,
                    control=None if control is None else ("tokens" if isinstance(control, str) else "given"), rows=n)
    return ProbeSweepResult(site_list, scores, task, chance, control_scores, settings)


def _sweep_chunk(model, job, chunk: range, memo: dict):
    """A worker's share of an executor's probe sweep: the scores of sites ``chunk``."""
    probe, store, site_list, folds, y, y_control, blas_threads = job
    scores = np.zeros((len(chunk), len(folds)))
    control_scores = None if y_control is None else np.zeros((len(chunk), len(folds)))
    with threadpool_limits(limits=blas_threads):
        _fit_folds(probe, store, site_list[chunk.start : chunk.stop], folds, y, y_control, scores, control_scores, False)
    return scores, control_scores


def _fit_folds(probe, store, site_list, folds, y, y_control, scores, control_scores, progress) -> None:
    """Fill ``scores[site, fold]`` (and the control's) with held-out scores of ``probe``."""
    for i, site in enumerate(tqdm(site_list, desc="probe sweep", unit="site", disable=not progress)):
        X = as_numpy(store[site], f"activations at {site}", np.float64)
        for f, (train, test) in enumerate(folds):
            scores[i, f] = probe.fit(X[train], y[train]).score(X[test], y[test])
            if y_control is not None:
                if len(np.unique(y_control[train])) < 2:
                    control_scores[i, f] = float(np.mean(y_control[test] == y_control[train][0]))
                else:
                    control_scores[i, f] = probe.fit(X[train], y_control[train]).score(X[test], y_control[test])

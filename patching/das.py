"""Distributed alignment search (DAS): find the linear subspace of a site that carries a causal variable.

    data = counterfactual_dataset(sampler, causal_model, n=512, seed=0)
    result = train_das(model, Site("resid_post", 1, pos=-1), data, k=1)     # basis [d 1], IIA
    result = train_das(model, site, data, boundless=True)                     # learns k too
    table = das_sweep(model, [Site("resid_post", l, pos=-1) for l in range(2)], data)
    dirs = baseline_directions(acts, labels)        # probe, mean_diff, pca, lda, kmeans, random
    evaluate_directions(model, site, data, dirs)    # IIA and log-odds effect per method

The method (Geiger et al. 2023, "Finding Alignments Between Interpretable Causal Variables and
Distributed Neural Representations"). A *high-level causal model* says how a task is solved, with
an intermediate variable (say, "the subject's number"). The hypothesis is that some linear subspace
of a site encodes that variable. Test it with *interchange interventions*: pair a base input with a
source input; the causal model says which answer the network should give on the base if the
variable took the source's value (the *counterfactual label*). DAS learns an orthogonal rotation
``Q`` of the site (``torch.nn.utils.parametrizations.orthogonal``) so that exchanging the first ``k``
rotated coordinates, ``h = h_base + Q M Qᵀ (h_source − h_base)`` with ``M = diag(1,..,1,0,..,0)``,
makes the frozen network output the counterfactual label (cross-entropy loss at the answer
position; only ``Q`` trains). The score is the *interchange intervention accuracy* (IIA): on
held-out pairs, how often the argmax of the intervened logits is the counterfactual label.
Boundless DAS (Wu et al. 2023, "Interpretability at Scale") replaces the fixed ``M`` by a soft
mask, here ``M_ii = sigmoid((b − i − ½) / T)`` with a learned boundary ``b`` and a temperature
``T`` annealed from 1 to 0.05, plus a penalty on ``Σ M_ii`` so the smallest sufficient subspace
wins; the learned ``k`` is the number of coordinates with ``M_ii > ½`` at the end.
CausalGym (Arora et al. 2024) compares DAS with directions found without interventions: a
logistic probe's weights, the difference of class means, the first principal component, LDA,
k-means centroids and a random direction, each evaluated by the same 1-D interchange.

Contract of the causal model (plain Python):
    ``sampler(rng: numpy.random.Generator) -> (tokens, variables)`` draws one input: token ids
    (a list or 1-D tensor; the same length for every draw) and any description of its variables;
    ``causal_model(base_vars, source_vars) -> int`` is the token id the high-level model outputs on
    the base input when the studied variable is set to its value on the source input. So
    ``causal_model(v, v)`` is the ordinary (unintervened) answer on input ``v``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from interp import HookedModel, InputError, Site
from interp.distributed import chunk_ranges
from interp.sites import as_site
from patching.interchange import Subspace, interchange_with, site_activations

BASELINES = ("probe", "mean_diff", "pca", "lda", "kmeans", "random")


# =============================================================================== data
@dataclass
class CounterfactualDataset:
    """Base / source token pairs with the counterfactual label of each pair.

    ``labels[i]``: the answer the causal model gives on ``base[i]`` with the variable taken from
    ``source[i]``; ``base_labels[i]``: its answer on ``base[i]`` alone (for the log-odds effect).
    ``choices``: None (the answer is the argmax over the whole vocabulary) or the candidate answer
    ids, e.g. `` is`` and `` are``: the training loss and IIA then compare those logits only, as
    CausalGym does (a real model's next token after a prompt is rarely forced to one answer).
    """

    base: Int[Tensor, "n pos"]
    source: Int[Tensor, "n pos"]
    labels: Int[Tensor, " n"]
    base_labels: Int[Tensor, " n"] | None = None
    answer_pos: int = -1
    base_vars: list = field(default_factory=list)
    source_vars: list = field(default_factory=list)
    choices: Int[Tensor, " choice"] | None = None

    def __post_init__(self) -> None:
        for name in ("base", "source"):
            t = getattr(self, name)
            if not isinstance(t, Tensor) or t.ndim != 2 or t.is_floating_point():
                raise InputError(f"CounterfactualDataset.{name} must be integer token ids [n pos].")
        if self.base.shape[0] != self.source.shape[0]:
            raise InputError(f"{self.base.shape[0]} base but {self.source.shape[0]} source prompts; pair them one to one.")
        n = self.base.shape[0]
        self.labels = torch.as_tensor(self.labels, dtype=torch.long).reshape(-1)
        if self.labels.shape[0] != n:
            raise InputError(f"Expected {n} counterfactual labels (one per pair), got {self.labels.shape[0]}.")
        if self.base_labels is not None:
            self.base_labels = torch.as_tensor(self.base_labels, dtype=torch.long).reshape(-1)
            if self.base_labels.shape[0] != n:
                raise InputError(f"Expected {n} base labels (one per pair), got {self.base_labels.shape[0]}.")
        if self.choices is not None:
            self.choices = torch.as_tensor(self.choices, dtype=torch.long).reshape(-1)
            used = torch.cat([self.labels, self.base_labels if self.base_labels is not None else self.labels])
            if not torch.isin(used, self.choices).all():
                raise InputError(f"Every label must be one of the choices {self.choices.tolist()}; got labels "
                                 f"{sorted(set(used.tolist()) - set(self.choices.tolist()))} outside them.")

    def __len__(self) -> int:
        return self.base.shape[0]

    def __getitem__(self, index) -> CounterfactualDataset:
        if isinstance(index, int):
            index = [index]
        idx = torch.as_tensor(index) if not isinstance(index, slice) else torch.arange(len(self))[index]
        pick = lambda xs: [xs[i] for i in idx.tolist()] if xs else []  # noqa: E731
        return CounterfactualDataset(
            self.base[idx], self.source[idx], self.labels[idx],
            None if self.base_labels is None else self.base_labels[idx], self.answer_pos,
            pick(self.base_vars), pick(self.source_vars), self.choices,
        )

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[CounterfactualDataset, CounterfactualDataset]:
        """A shuffled (train, test) split; the test part holds ``test_fraction`` of the pairs (at least one)."""
        if not 0 < test_fraction < 1:
            raise InputError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.")
        n = len(self)
        if n < 2:
            raise InputError(f"Need at least 2 pairs to split into train and test, got {n}.")
        n_test = min(n - 1, max(1, round(n * test_fraction)))
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self[perm[n_test:]], self[perm[:n_test]]


def counterfactual_dataset(
    sampler: Callable[[np.random.Generator], tuple[Any, Any]],
    causal_model: Callable[[Any, Any], int],
    n: int,
    seed: int = 0,
    answer_pos: int = -1,
    require_change: bool = False,
    d_vocab: int | None = None,
    choices: Sequence[int] | Tensor | None = None,
) -> CounterfactualDataset:
    """Draw ``n`` (base, source) pairs from ``sampler`` and label them with ``causal_model``.

    See the module docstring for the contract. ``require_change=True`` redraws the source until
    the counterfactual label differs from the base label (so an intervention with no effect
    scores IIA 0). ``d_vocab``, if given, checks that every label is a valid token id.
    ``choices``: the candidate answers that training and IIA compare (see `CounterfactualDataset`).
    """
    if n < 1:
        raise InputError(f"n must be a positive number of pairs, got {n}.")
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("base", "source", "label", "base_label", "bv", "sv")}
    for _ in range(n):
        base, bv = sampler(rng)
        for _attempt in range(1000):
            source, sv = sampler(rng)
            label, base_label = causal_model(bv, sv), causal_model(bv, bv)
            if not require_change or label != base_label:
                break
        else:
            raise InputError(
                "require_change=True, but 1000 source draws never changed the causal model's label. "
                "Check that causal_model(base_vars, source_vars) depends on the source."
            )
        for key, value in zip(rows, (base, source, label, base_label, bv, sv), strict=True):
            rows[key].append(value)
    for key in ("label", "base_label"):
        bad = [x for x in rows[key] if not isinstance(x, int | np.integer) and not (isinstance(x, Tensor) and x.numel() == 1)]
        if bad:
            raise InputError(f"causal_model must return a token id (int); got {type(bad[0]).__name__} ({bad[0]!r}).")
    lengths = {len(t) for t in rows["base"] + rows["source"]}
    if len(lengths) != 1:
        raise InputError(
            f"The sampler returned token sequences of different lengths {sorted(lengths)}; interchange "
            f"pairs positions one to one, so make every input the same length (pad with a fixed token)."
        )
    data = CounterfactualDataset(
        torch.as_tensor(np.array(rows["base"]), dtype=torch.long),
        torch.as_tensor(np.array(rows["source"]), dtype=torch.long),
        torch.as_tensor([int(x) for x in rows["label"]]),
        torch.as_tensor([int(x) for x in rows["base_label"]]),
        answer_pos, rows["bv"], rows["sv"], choices,
    )
    if d_vocab is not None:
        _check_labels(data, d_vocab)
    return data


def _check_labels(data: CounterfactualDataset, d_vocab: int) -> None:
    for name in ("labels", "base_labels"):
        t = getattr(data, name)
        if t is not None and len(t) and (int(t.min()) < 0 or int(t.max()) >= d_vocab):
            raise InputError(
                f"The causal model's {name.replace('_', ' ')} run from {int(t.min())} to {int(t.max())}, but token "
                f"ids must lie in [0, {d_vocab}). causal_model must return the token id of the answer "
                f"(e.g. tokenizer.convert_tokens_to_ids(word)), not a class index or a string."
            )


# =============================================================================== the subspace
class RotatedSubspace(nn.Module):
    """An orthogonal rotation ``Q [d d]`` of a site; interchange exchanges the first ``k`` rotated coordinates.

        sub = RotatedSubspace(d=64, k=2)                  # fixed size
        patched = sub(h_base, h_source)                   # h_base + Q M Qᵀ (h_source − h_base)
        sub.basis()                                       # [d k]: the columns of Q that are exchanged

    ``boundless=True``: the mask ``M`` is soft, ``sigmoid((b − i − ½)/T)``, with a learned boundary
    ``b`` (started at ``k``); set ``temperature`` while training; ``learned_k`` counts ``M_ii > ½``.
    ``init`` ``[d]`` or ``[d j]``: directions the first ``j`` rotated coordinates start from (a warm
    start, e.g. a baseline direction; the other columns are random and orthogonal to them).
    """

    def __init__(self, d: int, k: int = 1, boundless: bool = False, seed: int = 0, temperature: float = 1.0,
                 init: Float[Tensor, "d j"] | None = None):
        super().__init__()
        if not 1 <= k <= d:
            raise InputError(f"k (the subspace size) must lie in [1, {d}] for a site of width {d}, got {k}.")
        self.d, self.k, self.boundless, self.temperature = d, k, boundless, temperature
        start = torch.randn(d, d, generator=torch.Generator().manual_seed(seed))
        if init is None:
            init = torch.linalg.qr(start).Q
        else:
            given = _warm_start(init, d)
            start[:, : given.shape[1]] = given
            q, r = torch.linalg.qr(start)
            init = q * torch.sign(torch.diagonal(r))  # column i points along start's column i (QR fixes it up to sign)
        linear = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            linear.weight.copy_(init)
        self.rotation = nn.utils.parametrizations.orthogonal(linear)
        self.register_buffer("coords", torch.arange(d, dtype=torch.float32), persistent=False)
        if boundless:
            self.boundary = nn.Parameter(torch.tensor(float(k)))

    @property
    def Q(self) -> Float[Tensor, "d d"]:
        """The rotation; column ``i`` is the ``i``-th rotated coordinate's direction."""
        return self.rotation.weight

    def mask(self) -> Float[Tensor, " d"]:
        if self.boundless:
            return torch.sigmoid((self.boundary - self.coords - 0.5) / self.temperature)
        return (self.coords < self.k).float()

    @property
    def learned_k(self) -> int:
        """Number of exchanged coordinates: ``k``, or for boundless the coordinates with mask > ½ (at least 1)."""
        if not self.boundless:
            return self.k
        return max(1, int((self.mask() > 0.5).sum()))

    def basis(self) -> Float[Tensor, "d k"]:
        return self.Q[:, : self.learned_k].detach().clone()

    def forward(self, base: Float[Tensor, "... d"], source: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        """The patched activation, computed in float32 (at least) and returned in ``base``'s dtype.

        A bfloat16 model's activations are widened before the rotation, so the rotation, its
        gradient and the mask stay float32; only the written value is cast back to the model's dtype.
        """
        work = torch.promote_types(base.dtype, torch.float32)
        Q = self.Q.to(base.device, work)
        b, s = base.to(work), source.to(work)
        coords = (s - b) @ Q  # rotated coordinates of the difference
        return (b + (coords * self.mask().to(base.device, work)) @ Q.T).to(base.dtype)


def _warm_start(init, d: int) -> Tensor:
    """``init`` as checked directions ``[d j]`` (float32, CPU)."""
    given = torch.as_tensor(init).detach().cpu().float()
    given = given[:, None] if given.ndim == 1 else given
    if given.ndim != 2 or given.shape[0] != d or given.shape[1] > d or not torch.isfinite(given).all() \
            or int(torch.linalg.matrix_rank(given)) < given.shape[1]:
        raise InputError(f"init must be finite, linearly independent directions of width {d} ([{d}] or [{d} j]), "
                         f"got shape {tuple(given.shape)}.")
    return given


# =============================================================================== training
@dataclass
class DASResult:
    """What `train_das` found: the subspace, its training curve and its held-out IIA.

    Numbers are Python floats and tensors (``basis``, the ``subspace``'s rotation) are float32 on
    the CPU, whatever the model's device and dtype.
    """

    site: Site
    k: int
    basis: Float[Tensor, "d k"]
    losses: list[float]
    iia: float
    train_iia: float
    log_odds: float
    subspace: RotatedSubspace
    boundless: bool = False
    settings: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"DASResult(site={self.site}, k={self.k}, iia={self.iia:.3f}, train_iia={self.train_iia:.3f}, "
                f"log_odds={self.log_odds:.3f}, steps={len(self.losses)}, boundless={self.boundless})")

    @property
    def learned_k(self) -> int | None:
        return self.k if self.boundless else None

    def to_dict(self) -> dict:
        return dict(site=str(self.site), k=self.k, boundless=self.boundless, iia=self.iia,
                    train_iia=self.train_iia, log_odds=self.log_odds, final_loss=self.losses[-1] if self.losses else math.nan)


def _evaluate(model: HookedModel, site: Site, data: CounterfactualDataset, subspace: Subspace, chunk: int = 256) -> tuple[float, float]:
    """(IIA, mean log-odds effect) of the interchange with ``subspace`` on ``data``."""
    device = model.device
    base, labels = data.base.to(device), data.labels.to(device)
    acts = site_activations(model, data.source.to(device), site, chunk)
    hits, effects = [], []
    with torch.no_grad():
        for start in range(0, len(data), chunk):
            sl = slice(start, start + chunk)
            patched = interchange_with(model, base[sl], acts[sl], site, subspace)[:, data.answer_pos].float().log_softmax(-1)
            hits.append(_predicted(patched, data.choices) == labels[sl])
            if data.base_labels is not None:
                clean = model(base[sl])[:, data.answer_pos].float().log_softmax(-1)
                cf, bl = labels[sl, None], data.base_labels[sl].to(device)[:, None]
                changed = labels[sl] != data.base_labels[sl].to(device)
                effects.append((_log_odds(patched, cf, bl) - _log_odds(clean, cf, bl))[changed])
    iia = float(torch.cat(hits).float().mean())
    eff = torch.cat(effects) if effects else torch.empty(0)
    return iia, float(eff.mean()) if eff.numel() else math.nan


def _predicted(logits: Tensor, choices: Tensor | None) -> Tensor:
    """The answer id per row: the argmax over the vocabulary, or over ``choices`` only."""
    if choices is None:
        return logits.argmax(-1)
    choices = choices.to(logits.device)
    return choices[logits[:, choices].argmax(-1)]


def _choice_loss(logits: Tensor, labels: Tensor, choices: Tensor | None) -> Tensor:
    """Cross-entropy against ``labels`` over the vocabulary, or over ``choices`` only."""
    if choices is None:
        return F.cross_entropy(logits, labels)
    choices = choices.to(logits.device)
    return F.cross_entropy(logits[:, choices], (labels[:, None] == choices[None]).float().argmax(-1))


def _log_odds(logprobs: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``log p(a) − log p(b)`` per row; ``a`` and ``b`` are ``[batch 1]`` token ids."""
    return (logprobs.gather(-1, a) - logprobs.gather(-1, b))[:, 0]


def train_das(
    model: HookedModel,
    site: Site | str,
    dataset: CounterfactualDataset,
    k: int = 1,
    boundless: bool = False,
    eval_dataset: CounterfactualDataset | None = None,
    test_fraction: float = 0.2,
    epochs: int = 10,
    lr: float = 1e-2,
    batch_size: int = 64,
    size_penalty: float = 0.2,
    temperature: tuple[float, float] = (1.0, 0.05),
    seed: int = 0,
    progress: bool = True,
    init: Float[Tensor, "d j"] | None = None,
) -> DASResult:
    """Learn a rotation whose first ``k`` coordinates at ``site`` carry the causal model's variable.

    Trains on ``dataset`` (or its ``1 − test_fraction`` part when no ``eval_dataset`` is given)
    with Adam on the cross-entropy of the intervened logits at ``dataset.answer_pos`` against the
    counterfactual labels; the model's weights stay frozen (restored afterwards). ``boundless``:
    learn the size too (``k`` is then the initial boundary; ``size_penalty`` × Σ mask is added to
    the loss; the temperature anneals geometrically from ``temperature[0]`` to ``temperature[1]``).
    Returns the basis ``[d k]``, the loss per step, and IIA / log-odds effect on the held-out pairs.
    ``init``: start the first coordinates from these directions (`RotatedSubspace`), e.g. a
    `baseline_directions` result: in a wide site (hundreds of dimensions) a random start needs
    hundreds of steps to find the variable, a warm start refines it in a few.
    On a half-precision model the rotation, the exchange and the loss are float32; only the patched
    activation is cast to the model's dtype, where it is written into the model.
    """
    site = as_site(site).validate(model)
    if not isinstance(dataset, CounterfactualDataset):
        raise InputError(f"dataset must be a CounterfactualDataset (see counterfactual_dataset), got {type(dataset).__name__}.")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise InputError(f"epochs and batch_size must be positive and lr > 0; got epochs={epochs}, batch_size={batch_size}, lr={lr}.")
    _check_labels(dataset, model.d_vocab)
    if eval_dataset is None:
        train, test = dataset.split(test_fraction, seed)
    else:
        _check_labels(eval_dataset, model.d_vocab)
        train, test = dataset, eval_dataset
    device = model.device
    with model.frozen():  # only the rotation trains
        acts = site_activations(model, train.source.to(device), site)
        d = acts.shape[-1]
        if not 1 <= k <= d:
            raise InputError(
                f"k={k} does not fit {site}: its activations have width {d}, so choose 1 <= k <= {d}."
            )
        subspace = RotatedSubspace(d, k, boundless, seed=seed, temperature=temperature[0], init=init).to(device)
        opt = torch.optim.Adam(subspace.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        n = len(train)
        steps = epochs * math.ceil(n / batch_size)
        base, labels = train.base.to(device), train.labels.to(device)
        losses: list[float] = []
        bar = tqdm(total=steps, desc=f"DAS {site}", disable=not progress, leave=False)
        step = 0
        for _ in range(epochs):
            for idx in torch.randperm(n, generator=gen).split(batch_size):
                if boundless:
                    t0, t1 = temperature
                    subspace.temperature = t0 * (t1 / t0) ** (step / max(1, steps - 1))
                logits = interchange_with(model, base[idx], acts[idx], site, subspace)[:, train.answer_pos]
                loss = _choice_loss(logits.float(), labels[idx], train.choices)  # float32 even for a half-precision model
                if boundless:
                    loss = loss + size_penalty * subspace.mask().sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
        subspace.eval()
        basis = subspace.basis()
        # Boundless: evaluate the hard subspace the learned size implies, not the soft mask.
        evaluator: Subspace = basis if boundless else subspace
        iia, log_odds = _evaluate(model, site, test, evaluator)
        train_iia, _ = _evaluate(model, site, train, evaluator)
        # The result is for saving and plotting: float32 on the CPU (the module moves its rotation
        # to the activations' device when it is used again, e.g. in `interchange`).
        subspace, basis = subspace.cpu(), basis.cpu()
    return DASResult(
        site=site, k=basis.shape[1], basis=basis, losses=losses, iia=iia, train_iia=train_iia,
        log_odds=log_odds, subspace=subspace, boundless=boundless,
        settings=dict(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, size_penalty=size_penalty,
                      temperature=temperature, n_train=len(train), n_test=len(test)),
    )


def das_sweep(
    model: HookedModel,
    sites: Iterable[Site | str],
    dataset: CounterfactualDataset,
    k: int = 1,
    boundless: bool = False,
    progress: bool = True,
    executor=None,
    **train_kwargs,
) -> pd.DataFrame:
    """`train_das` at each site; a table with one row per site: site, kind, layer, pos, k, iia, log_odds, final_loss.

    ``executor``: None trains here; an `interp.distributed.RayExecutor` trains chunks of sites on its
    workers (each site is the same seeded computation wherever it runs), rows in site order.
    """
    sites = [as_site(s) for s in sites]
    if not sites:
        raise InputError("das_sweep needs at least one site, e.g. [Site('resid_post', l, pos=-1) for l in range(model.n_layers)].")
    job = (dataset, k, boundless, train_kwargs)
    if executor is None:
        rows = [_das_row(model, site, job) for site in tqdm(sites, desc="DAS sweep", disable=not progress)]
    else:
        if not isinstance(dataset, CounterfactualDataset):  # bad inputs fail here, before any worker starts
            raise InputError(f"dataset must be a CounterfactualDataset (see counterfactual_dataset), got {type(dataset).__name__}.")
        for site in sites:
            site.validate(model)
        chunks = [sites[c.start : c.stop] for c in chunk_ranges(len(sites), executor.chunks)]
        parts = executor.map(_das_chunk, chunks, shared=job, model=model, progress=progress,
                             desc=f"DAS sweep on {executor.num_workers} workers", weights=[len(c) for c in chunks])
        rows = [row for part in parts for row in part]
    return pd.DataFrame(rows)


def _das_row(model: HookedModel, site: Site, job) -> dict:
    dataset, k, boundless, train_kwargs = job
    r = train_das(model, site, dataset, k=k, boundless=boundless, progress=False, **train_kwargs)
    return dict(site=str(site), kind=site.kind, layer=site.layer, pos=site.pos, **{
        key: v for key, v in r.to_dict().items() if key != "site"})


def _das_chunk(model: HookedModel, job, sites: list[Site], memo: dict) -> list[dict]:
    """A worker's share of an executor's DAS sweep: one row per site of ``sites``."""
    return [_das_row(model, site, job) for site in sites]


# =============================================================================== baselines
def _unit(v) -> Float[Tensor, " d"]:
    v = torch.as_tensor(np.asarray(v, dtype=np.float64)).float().reshape(-1)
    norm = v.norm()
    if not torch.isfinite(norm) or norm < 1e-12:
        raise InputError("A baseline direction came out as zero (are the activations constant?); check the inputs.")
    return v / norm


def _top_direction(rows: np.ndarray) -> np.ndarray:
    """First right singular vector of the centred rows (the main axis along which they differ)."""
    centred = rows - rows.mean(0, keepdims=True)
    return np.linalg.svd(centred, full_matrices=False)[2][0]


def baseline_directions(
    activations: Float[Tensor, "n d"],
    labels: Int[Tensor, " n"],
    methods: Sequence[str] = BASELINES,
    seed: int = 0,
) -> dict[str, Float[Tensor, " d"]]:
    """Unit directions ``[d]`` found without interventions (CausalGym's baselines), by method name.

    probe: logistic-regression weights; mean_diff: difference of the two class means; pca: first
    principal component of the activations; lda: first LDA axis; kmeans: difference of 2-means
    centroids; random: a Gaussian direction. With more than two classes, probe and mean_diff use
    the main axis of the per-class weight vectors / means.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression

    X = torch.as_tensor(activations).detach().cpu().double().numpy()
    y = torch.as_tensor(labels).detach().cpu().numpy().reshape(-1)
    if X.ndim != 2:
        raise InputError(f"activations must be [n d], got shape {X.shape}; select one position (Site(..., pos=p)) or flatten.")
    if y.shape[0] != X.shape[0]:
        raise InputError(f"{X.shape[0]} activations but {y.shape[0]} labels; give one label per row.")
    classes = np.unique(y)
    if len(classes) < 2:
        raise InputError(
            f"The labels hold {len(classes)} class(es) ({classes.tolist()}); a direction that separates values "
            f"needs at least two. Draw inputs on which the variable takes different values."
        )
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise InputError(f"Unknown baseline method(s) {unknown}; choose from {', '.join(BASELINES)}.")
    out: dict[str, Tensor] = {}
    for method in methods:
        if method == "probe":
            coef = LogisticRegression(max_iter=2000, random_state=seed).fit(X, y).coef_
            v = coef[0] if coef.shape[0] == 1 else _top_direction(coef)
        elif method == "mean_diff":
            means = np.stack([X[y == c].mean(0) for c in classes])
            v = means[1] - means[0] if len(classes) == 2 else _top_direction(means)
        elif method == "pca":
            v = PCA(n_components=1, random_state=seed).fit(X).components_[0]
        elif method == "lda":
            v = LinearDiscriminantAnalysis(n_components=1).fit(X, y).scalings_[:, 0]
        elif method == "kmeans":
            centres = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(X).cluster_centers_
            v = centres[1] - centres[0]
        else:  # random
            v = np.random.default_rng(seed).standard_normal(X.shape[1])
        out[method] = _unit(v)
    return out


def evaluate_directions(
    model: HookedModel,
    site: Site | str,
    dataset: CounterfactualDataset,
    directions: dict[str, Float[Tensor, " d"]],
) -> pd.DataFrame:
    """IIA and mean log-odds effect of a 1-D interchange along each direction: one row per method.

    ``log_odds``: the change that the intervention causes in ``log p(cf label) − log p(base label)``
    at the answer position, averaged over pairs whose two labels differ.
    """
    site = as_site(site).validate(model)
    _check_labels(dataset, model.d_vocab)
    rows = []
    for name, v in directions.items():
        v = torch.as_tensor(v).float().reshape(-1).to(model.device)
        iia, log_odds = _evaluate(model, site, dataset, (v / v.norm())[:, None])
        rows.append(dict(method=name, iia=iia, log_odds=log_odds))
    return pd.DataFrame(rows)

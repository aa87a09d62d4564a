"""Patching metrics: one number per prompt that says how much a run looks like the clean run.

A metric is a plain function ``metric(logits, prompts) -> Tensor[batch]``: it reads the next-token
logits at ``prompts.answer_pos`` and returns one value per prompt. `activation_patch` averages
those values over the prompt set. Metrics are float32 whatever the model's dtype: the built-in
ones upcast the answer position's logits before any arithmetic (a bfloat16 log-softmax loses two
digits), and `check_values` upcasts what a custom metric returns.

    logit_diff(logits, prompts)     # logit of the answer minus logit of the wrong answer
    prob / log_prob                 # (log-)probability of the answer
    kl_to(clean_logits)             # a metric: KL(clean || run) of the next-token distribution
    normalized(logit_diff, clean_value, corrupted_value)   # 0 at the corrupted run, 1 at the clean run
    mean(logit_diff)                # logits -> scalar, the form TransformerLens' patching wants
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InputError, InterpError
from interp.tasks import PromptSet

Metric = Callable[[Tensor, PromptSet], Tensor]


class MetricError(InterpError):
    """A metric that cannot be computed, or that returned something other than finite ``[batch]`` values."""


def _answer_logits(logits: Tensor, prompts: PromptSet) -> Float[Tensor, "batch vocab"]:
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"Metrics take logits [batch pos vocab], got {got}.")
    if logits.shape[0] != len(prompts) or logits.shape[1] != prompts.seq_len:
        raise InputError(
            f"Logits of shape {tuple(logits.shape)} do not match a prompt set of {len(prompts)} prompts "
            f"of {prompts.seq_len} tokens; pass the logits of a run on these prompts."
        )
    return logits[:, prompts.answer_pos, :].float()  # float32 even for half-precision models


def _gather(x: Float[Tensor, "... n vocab"], ids: Int[Tensor, " n"]) -> Float[Tensor, "... n"]:
    """``x[..., i, ids[i]]`` for every prompt i (and every leading block of prompts)."""
    index = ids.to(x.device)[:, None]
    return x.gather(-1, index if x.ndim == 2 else index.expand(*x.shape[:-1], 1))[..., 0]


def logit_diff(logits: Float[Tensor, "batch pos vocab"], prompts: PromptSet) -> Float[Tensor, " batch"]:
    """Logit of the answer minus logit of the wrong answer, at ``answer_pos``, per prompt."""
    if prompts.wrong is None:
        raise MetricError(
            "logit_diff needs wrong answers, but this PromptSet has wrong=None. Build it with "
            "PromptSet(..., wrong=ids), or use prob / log_prob."
        )
    at = _answer_logits(logits, prompts)
    return _gather(at, prompts.answers) - _gather(at, prompts.wrong)


def log_prob(logits: Float[Tensor, "batch pos vocab"], prompts: PromptSet) -> Float[Tensor, " batch"]:
    """Log-probability of the answer at ``answer_pos``, per prompt."""
    return _gather(_answer_logits(logits, prompts).log_softmax(-1), prompts.answers)


def prob(logits: Float[Tensor, "batch pos vocab"], prompts: PromptSet) -> Float[Tensor, " batch"]:
    """Probability of the answer at ``answer_pos``, per prompt."""
    return log_prob(logits, prompts).exp()


def kl_to(clean_logits: Float[Tensor, "batch pos vocab"] | Float[Tensor, "batch vocab"]) -> Metric:
    """A metric: KL(clean || run) of the next-token distribution at ``answer_pos``, per prompt.

    ``clean_logits`` are the logits of the clean run, ``[batch pos vocab]`` (read at the
    prompts' ``answer_pos``) or already ``[batch vocab]``. 0 means "the run predicts like the clean
    run"; so lower is cleaner, unlike the other metrics.
    """
    if not isinstance(clean_logits, Tensor) or clean_logits.ndim not in (2, 3):
        raise InputError("kl_to needs the clean run's logits, a tensor [batch pos vocab] or [batch vocab].")
    clean_logits = clean_logits.detach().float()

    def kl_to_clean(logits: Tensor, prompts: PromptSet) -> Tensor:
        clean = _answer_logits(clean_logits, prompts) if clean_logits.ndim == 3 else clean_logits
        run = _answer_logits(logits, prompts)
        if clean.shape != run.shape:
            raise MetricError(
                f"kl_to was built with clean logits for {clean.shape[0]} prompts x {clean.shape[-1]} tokens "
                f"but got a run of {run.shape[0]} x {run.shape[-1]}; build it from this prompt set's clean logits."
            )
        p_log = clean.log_softmax(-1)
        return (p_log.exp() * (p_log - run.log_softmax(-1))).sum(-1)

    kl_to_clean.answer_only = True
    return kl_to_clean


def mean(metric: Metric, prompts: PromptSet) -> Callable[[Tensor], Tensor]:
    """``logits -> scalar``: the metric averaged over the prompts (TransformerLens' metric form)."""

    def mean_metric(logits: Tensor) -> Tensor:
        return metric(logits, prompts).mean()

    mean_metric.__name__ = f"mean_{metric_name(metric)}"
    return mean_metric


def normalized(metric: Metric, clean_value: float | Tensor, corrupted_value: float | Tensor) -> Metric:
    """A metric that is 0 where ``metric`` equals ``corrupted_value`` and 1 where it equals ``clean_value``.

    The values are scalars (e.g. the metric averaged over the clean and over the corrupted run) or
    per-prompt ``[batch]`` tensors. See `normalized_for` to have them measured for you.
    """
    clean = torch.as_tensor(clean_value, dtype=torch.float64)
    corrupted = torch.as_tensor(corrupted_value, dtype=torch.float64)
    span = clean - corrupted
    if not bool(torch.isfinite(span).all()) or bool((span == 0).any()):
        raise MetricError(
            f"normalized({metric_name(metric)}) is undefined: the clean value {clean.tolist()} and the "
            f"corrupted value {corrupted.tolist()} are equal (or not finite), so there is no range to "
            f"normalise by. Choose a corruption that changes the metric, or use the raw metric."
        )

    def normalized_metric(logits: Tensor, prompts: PromptSet) -> Tensor:
        value = metric(logits, prompts)
        c, s = corrupted.to(value.device), span.to(value.device)
        return ((value.double() - c) / s).to(value.dtype)

    normalized_metric.__name__ = f"normalized_{metric_name(metric)}"
    normalized_metric.answer_only = answer_only(metric)
    return normalized_metric


@torch.no_grad()
def normalized_for(model, prompts: PromptSet, metric: Metric) -> Metric:
    """`normalized` with the clean and corrupted values measured: the metric averaged over the prompt
    set on one clean and one corrupted forward of ``model``."""
    clean_value = check_values(metric(model(prompts.clean), prompts), len(prompts), metric).mean()
    corrupted_value = check_values(metric(model(prompts.corrupted), prompts), len(prompts), metric).mean()
    return normalized(metric, clean_value, corrupted_value)


def metric_name(metric: Callable) -> str:
    return getattr(metric, "__name__", type(metric).__name__)


def check_values(values, n: int, metric: Callable) -> Tensor:
    """``values`` as float32 if they are ``n`` finite per-prompt values; raise MetricError otherwise."""
    name = metric_name(metric)
    if not isinstance(values, Tensor):
        raise MetricError(
            f"Metric {name} returned {type(values).__name__}; a metric must return a tensor [batch] "
            f"with one value per prompt."
        )
    if values.shape != (n,):
        raise MetricError(
            f"Metric {name} returned shape {tuple(values.shape)}; it must return one value per prompt, "
            f"shape ({n},). (A scalar metric? Return the per-prompt values and let activation_patch average.)"
        )
    if not bool(torch.isfinite(values).all()):
        raise MetricError(
            f"Metric {name} returned non-finite values ({values.tolist()}); check for log(0) or a "
            f"division by zero in the metric."
        )
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


# =============================================================================== answer-position metrics
def answer_only(metric: Metric) -> bool:
    """Whether ``metric`` reads nothing but ``logits[:, prompts.answer_pos]``.

    True for `logit_diff`, `log_prob`, `prob`, `kl_to(...)`, `normalized(m, ...)` of such an m,
    and any function with an attribute ``answer_only = True`` (mark your own metrics so, before `normalized`).
    """
    return getattr(metric, "answer_only", False) is True or metric in _BLOCKWISE


def _normalized_parts(metric: Metric) -> dict | None:
    """The closure of a `patching.metrics.normalized` metric (``metric``, ``corrupted``, ``span``, ...),
    or None for any other function."""
    if getattr(metric, "__module__", None) != __name__ or getattr(metric, "__qualname__", "") != "normalized.<locals>.normalized_metric":
        return None
    return dict(zip(metric.__code__.co_freevars, (c.cell_contents for c in metric.__closure__ or ()), strict=False))


#: The built-in answer metrics on answer logits ``[k n vocab]`` of k blocks of the prompt set at once
#: (the same operations as `patching.metrics`, so the same numbers).
_BLOCKWISE = {
    logit_diff: lambda lg, p: _gather(lg, p.answers) - _gather(lg, p.wrong),
    log_prob: lambda lg, p: _gather(lg.log_softmax(-1), p.answers),
    prob: lambda lg, p: _gather(lg.log_softmax(-1), p.answers).exp(),
}


def blockwise(metric: Metric, prompts: PromptSet, columns: bool = False) -> Callable[[Tensor, PromptSet], Tensor] | None:
    """``metric`` as a function of answer logits ``[k n vocab]`` -> ``[k n]``, for the built-in
    logit_diff / log_prob / prob and `normalized` of one of them with scalar clean / corrupted values
    (None for any other metric, and for logit_diff without wrong answers: the metric raises). With
    ``columns`` (logit_diff only, else None), of the answer and wrong answer's logits ``[k n 2]``
    (`_logit_columns`)."""
    inner, norm, free = metric, None, _normalized_parts(metric)
    if free is not None:
        inner, norm = free.get("metric"), (free.get("corrupted"), free.get("span"))
        if not all(isinstance(t, Tensor) and t.ndim == 0 for t in norm):
            return None
    if inner not in _BLOCKWISE or (inner is logit_diff and prompts.wrong is None):
        return None
    if columns and inner is not logit_diff:
        return None
    fn = (lambda lg, p: lg[..., 0] - lg[..., 1]) if columns else _BLOCKWISE[inner]
    if norm is None:
        return fn
    corrupted, span = norm

    def normalized(lg: Tensor, p: PromptSet) -> Tensor:
        value = fn(lg, p)
        return ((value.double() - corrupted.to(value.device)) / span.to(value.device)).to(value.dtype)

    return normalized


def expand_answer(logits: Tensor, S: int, ans: int | None) -> Tensor:
    """Answer-position logits ``[batch vocab]`` as the ``[batch pos vocab]`` a metric takes (a broadcast view)."""
    return logits if ans is None else logits[:, None, :].expand(logits.shape[0], S, logits.shape[-1])


def block_means(metric: Metric, logits: Tensor, prompts: PromptSet, k: int, ans: int | None,
                fast: Callable[[Tensor, PromptSet], Tensor] | None = None) -> Float[Tensor, " k"]:
    """The mean metric of each of ``k`` consecutive blocks of ``n`` rows of ``logits`` (answer logits
    ``[k*n vocab]`` with ``ans``, else ``[k*n pos vocab]``): ``[k]`` float64, differentiable. ``fast``
    (`blockwise`; by default the built-in metrics' own on answer logits) computes all blocks in one
    call (float32, as the metrics read logits); any other metric takes one call per block."""
    n = len(prompts)
    if fast is None and ans is not None:
        fast = blockwise(metric, prompts)
    if fast is not None:
        values = fast(logits.view(k, n, logits.shape[-1]).float(), prompts).reshape(k * n)
        return check_values(values, k * n, metric).double().view(k, n).mean(1)
    logits = expand_answer(logits, prompts.seq_len, ans)
    return torch.stack([
        check_values(metric(logits[j * n : (j + 1) * n], prompts), n, metric).double().mean() for j in range(k)
    ])


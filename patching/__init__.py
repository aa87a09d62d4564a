"""patching: methods that intervene on a model's activations and measure the effect.

    from patching import activation_patch, metrics
    result = activation_patch(model, prompts, "resid_pre", metrics.logit_diff)   # [layer pos]
    result.plot(); result.top(5)

Modules: `patching.metrics` (per-prompt metrics and their normalised form), `patching.activation`
(activation patching, batched), `patching.attribution` (attribution patching: a
first-order estimate from one backward pass, and its agreement with exact patching),
`patching.path` (path patching, Wang et al. 2022), `patching.fast` (the fast engine
`activation_patch` uses on native TransformerLens models), `patching.results` (PatchResult).
"""

from patching import metrics
from patching.activation import activation_patch, reference_patch
from patching.attribution import agreement, attribution_patch
from patching.metrics import (
    MetricError,
    kl_to,
    log_prob,
    logit_diff,
    normalized,
    normalized_for,
    prob,
)
from patching.path import path_patch
from patching.results import PatchResult

__all__ = [
    "MetricError", "PatchResult", "activation_patch", "agreement", "attribution_patch", "kl_to", "log_prob", "logit_diff", "metrics",
    "normalized", "normalized_for", "path_patch", "prob", "reference_patch",
]

"""patching: methods that intervene on a model's activations and measure the effect.

    from patching import activation_patch, metrics
    result = activation_patch(model, prompts, "resid_pre", metrics.logit_diff)   # [layer pos]
    result.plot(); result.top(5)

Modules: `patching.metrics` (per-prompt metrics and their normalised form), `patching.activation`
(activation patching, batched), `patching.attribution` (attribution patching: a
first-order estimate from one backward pass, and its agreement with exact patching),
`patching.path` (path patching, Wang et al. 2022), `patching.anatomy` (how each supported
architecture computes, read from its own modules: the description every fast method drives),
`patching.fast` (the fast activation-patching engine on it), `patching.sweep` (a sweep's plan and
result, shared by the patching methods), `patching.results` (PatchResult),
`patching.causal_tracing` (ROME causal tracing, Meng et al. 2022), `patching.interchange`
(interchange interventions, optionally on a subspace) and `patching.das` (distributed alignment
search, boundless DAS, CausalGym baselines) and `patching.discovery` (automatic circuit discovery:
the edge graph, EAP / EAP-IG / exact edge scores, ACDC, faithfulness).
"""

from patching import metrics
from patching.activation import activation_patch, reference_patch
from patching.attribution import agreement, attribution_patch
from patching.causal_tracing import TraceResult, causal_trace, embedding_std
from patching.das import (
    CounterfactualDataset,
    DASResult,
    RotatedSubspace,
    baseline_directions,
    counterfactual_dataset,
    das_sweep,
    evaluate_directions,
    train_das,
)
from patching.discovery import (
    Circuit,
    DiscoveryError,
    EdgeScores,
    Graph,
    acdc,
    build_graph,
    draw_circuit,
    eap,
    eap_ig,
    edge_scores,
    faithfulness,
    faithfulness_curve,
    plot_faithfulness_curve,
)
from patching.interchange import interchange
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
    "Circuit", "CounterfactualDataset", "DASResult", "DiscoveryError", "EdgeScores", "Graph", "MetricError",
    "PatchResult", "RotatedSubspace", "TraceResult", "acdc", "activation_patch", "agreement",
    "attribution_patch", "baseline_directions", "build_graph", "causal_trace", "counterfactual_dataset",
    "das_sweep", "draw_circuit", "eap", "eap_ig", "edge_scores", "embedding_std", "evaluate_directions",
    "faithfulness", "faithfulness_curve", "interchange", "kl_to", "log_prob", "logit_diff", "metrics",
    "normalized", "normalized_for", "path_patch", "plot_faithfulness_curve", "prob", "reference_patch",
    "train_das",
]

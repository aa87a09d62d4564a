"""patching: methods that intervene on a model's activations and measure the effect.

    from patching import activation_patch, metrics
    result = activation_patch(model, prompts, "resid_pre", metrics.logit_diff)   # [layer pos]
    result.plot(); result.top(5)

Modules: `patching.metrics` (per-prompt metrics), `patching.activation` (activation patching),
`patching.attribution` (attribution patching and its agreement with exact patching), `patching.path`
(path patching), `patching.anatomy` (how each supported architecture computes: what every fast method
drives), `patching.fast` (the fast patching engine on it), `patching.sweep` (a sweep's plan and
result), `patching.results` (PatchResult), `patching.causal_tracing` (ROME), `patching.interchange`
(interchange interventions on a subspace), `patching.das` (DAS, boundless DAS, CausalGym baselines)
and `patching.discovery` (circuit discovery: edge graph, EAP / EAP-IG / exact scores, ACDC).
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

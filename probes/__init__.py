"""probes: methods that read activations.

    store = collect(model, tokens, sites, positions="all")      # ActivationStore, memory or disk
    probe = LinearProbe("classification").fit(store[site], y)    # scikit-learn estimator
    result = probe_sweep(store, y, control="tokens")             # CV per site, selectivity
    control_labels(token_ids, n_classes, seed)                   # Hewitt & Liang 2019 control task
    with model.edit({site: ablate_direction(probe.direction())}): ...   # or steer(u, alpha)
    logit_lens(model, tokens, answers="next"); direct_logit_attribution(model, prompts)
    attention_view(model, tokens, layers=[1])                    # HTML in Jupyter, .figure() elsewhere
    sae, history = train_sae(store, d_sae=512, kind="topk", k=16)   # sparse autoencoders (probes.sae)
    with model.edit({site: ablate_features(sae, [3])}): ...      # features(model, sae, site, tokens)
    attr = feature_attribution(model, prompts, saes, logit_diff)  # feature circuits (Marks et al. 2024)
"""

from probes.attention import AttentionView, attention_view
from probes.collect import ActivationStore, collect, position_mask
from probes.interventions import (
    DirectionAblation,
    Steer,
    ablate_direction,
    edit_effect,
    steer,
    unit_vector,
)
from probes.lens import DLAResult, LensResult, Readout, direct_logit_attribution, logit_lens
from probes.linear import LinearProbe, ProbeNotFittedError
from probes.sae import (
    SAE,
    Faithfulness,
    FeatureAttribution,
    FeatureEdit,
    Node,
    NodeCheck,
    SAEEvaluation,
    SAESplice,
    SAETrainHistory,
    ablate_features,
    check_top_nodes,
    circuit_faithfulness,
    clamp_features,
    evaluate_sae,
    faithfulness_curve,
    feature_attribution,
    features,
    load_saelens,
    node_patch_effects,
    save_saelens,
    splice_sae,
    steer_features,
    train_sae,
)
from probes.sweep import ProbeSweepResult, control_labels, probe_sweep

__all__ = [
    "AttentionView", "attention_view", "DLAResult", "LensResult", "Readout", "direct_logit_attribution", "logit_lens",
    "ActivationStore", "DirectionAblation", "FeatureEdit", "LinearProbe", "ProbeNotFittedError", "ProbeSweepResult",
    "SAE", "SAEEvaluation", "SAESplice", "SAETrainHistory",
    "FeatureAttribution", "Faithfulness", "Node", "NodeCheck", "check_top_nodes", "circuit_faithfulness",
    "faithfulness_curve", "feature_attribution", "node_patch_effects",
    "Steer", "ablate_direction", "ablate_features", "clamp_features", "collect", "control_labels", "edit_effect",
    "evaluate_sae", "features", "load_saelens", "position_mask",
    "probe_sweep", "save_saelens", "splice_sae", "steer", "steer_features", "train_sae", "unit_vector",
]

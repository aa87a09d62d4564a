"""probes: methods that read activations.

    store = collect(model, tokens, sites, positions="all")      # ActivationStore, memory or disk
    probe = LinearProbe("classification").fit(store[site], y)    # scikit-learn estimator
    result = probe_sweep(store, y, control="tokens")             # CV per site, selectivity
    control_labels(token_ids, n_classes, seed)                   # Hewitt & Liang 2019 control task
    with model.edit({site: ablate_direction(probe.direction())}): ...   # or steer(u, alpha)
    logit_lens(model, tokens, answers="next"); direct_logit_attribution(model, prompts)
    attention_view(model, tokens, layers=[1])                    # HTML in Jupyter, .figure() elsewhere
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
from probes.sweep import ProbeSweepResult, control_labels, probe_sweep

__all__ = [
    "AttentionView", "attention_view", "DLAResult", "LensResult", "Readout", "direct_logit_attribution", "logit_lens",
    "ActivationStore", "DirectionAblation", "LinearProbe", "ProbeNotFittedError", "ProbeSweepResult",
    "Steer", "ablate_direction", "collect", "control_labels", "edit_effect", "position_mask",
    "probe_sweep", "steer", "unit_vector",
]

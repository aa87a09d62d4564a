"""Sparse autoencoders (SAEs): a dictionary of sparse features for one site's activations.

    sae, history = train_sae(store, d_sae=512, kind="topk", k=16, steps=2000, seed=0)
    evaluate_sae(sae, store_eval, model=model, site=site, tokens=tokens)   # L0, FVU, loss recovered
    f = features(model, sae, site, tokens)                                 # [batch pos d_sae]
    with model.edit({site: ablate_features(sae, [3])}): ...                # or clamp_ / steer_features
    save_saelens(sae, "dir"); load_saelens("dir")                          # SAELens's on-disk format
    attr = feature_attribution(model, prompts, {site: sae, ...}, logit_diff)  # sparse feature circuits

An activation ``x`` of width ``d_in`` is written as a sparse, non-negative combination of
``d_sae`` learned directions (``d_sae`` usually several times ``d_in``): ``x ~ f(x) @ W_dec +
b_dec`` with few non-zero ``f_i``. The superposition hypothesis (Elhage et al. 2022) says models
store more features than dimensions, almost orthogonally and rarely active at once; an SAE
trained to reconstruct activations under a sparsity pressure recovers such directions, which are
often far more interpretable than neurons (Bricken et al. 2023, "Towards Monosemanticity";
Cunningham et al. 2023). The architectures differ in how they enforce sparsity: an L1 penalty
on ReLU codes (Bricken et al.; Anthropic's April 2024 update weights it by decoder norms), a hard
top-k per row (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") or per batch
(Bussmann et al. 2024, BatchTopK), or a per-latent threshold trained through an L0 penalty with
straight-through gradients (Rajamanoharan et al. 2024, JumpReLU; the Gemma Scope SAEs).

An SAE is judged by sparsity (L0), reconstruction (fraction of variance unexplained), the
health of its latents (dead: never fire; dense: fire on more than 10% of tokens), and whether the
model still works when the reconstruction replaces the activation (loss recovered). Features
become handles on the model: reading them at a site, and editing them (ablate, clamp, steer)
while keeping the reconstruction error, so that an edit moves the activation only along the
edited features' decoder directions (Marks et al. 2024, "Sparse feature circuits").

Modules: `probes.sae.model` (the `SAE` module), `probes.sae.training` (`train_sae`),
`probes.sae.evaluation` (`evaluate_sae`), `probes.sae.intervene` (features and edits),
`probes.sae.saelens` (SAELens's format), `probes.sae.circuits` (feature circuits: attribution
patching over latents and error nodes at several sites, exact checks of the top nodes, faithfulness;
Marks et al. 2024).
"""

from probes.sae.circuits import (
    Faithfulness,
    FeatureAttribution,
    Node,
    NodeCheck,
    check_top_nodes,
    circuit_faithfulness,
    faithfulness_curve,
    feature_attribution,
    node_patch_effects,
)
from probes.sae.evaluation import SAEEvaluation, evaluate_sae
from probes.sae.intervene import (
    FeatureEdit,
    SAESplice,
    ablate_features,
    clamp_features,
    features,
    splice_sae,
    steer_features,
)
from probes.sae.model import KINDS, SAE
from probes.sae.saelens import load_saelens, save_saelens
from probes.sae.training import SAETrainHistory, train_sae

__all__ = [
    "FeatureAttribution", "Faithfulness", "Node", "NodeCheck", "check_top_nodes", "circuit_faithfulness",
    "faithfulness_curve", "feature_attribution", "node_patch_effects",
    "KINDS", "SAE", "SAEEvaluation", "SAESplice", "SAETrainHistory", "FeatureEdit", "ablate_features",
    "clamp_features", "evaluate_sae", "features", "load_saelens", "save_saelens", "splice_sae", "steer_features",
    "train_sae",
]

"""Entity binding in ``binding-ef-4l``, the entity-first layout (issue 19, part 4), as measured claims.

The prompts are `interp.tasks.binding.layout_prompts` of the ``entity-first`` layout:
``<bos> E1 likes A1 . E2 likes A2 . ... who likes Aq`` -> ``Eq``, fresh random names and attributes in
every prompt. Copying the token after the queried attribute in the context gives ``.``, not the
entity, so the induction route that ``binding-4l`` uses is not enough.

Gur-Arieh et al. (2025) tell three retrieval mechanisms apart with counterfactual sources in which
each names a different entity of the base context (`interp.tasks.binding.mechanism_pairs`): the
source re-binds the base's own words so that its query points at base slot p (*positional*), asks
about the attribute bound in the base to slot l (*lexical*), and is answered in the source by the
entity of base slot r (*reflexive*). `mechanism_shares` interchanges the query position's residual
stream (before each layer, after the last) from source into base and counts which entity the patched
run names.
"""

from __future__ import annotations

import numpy as np
import torch

from interp.circuits import EXACT, Card, Claim, Subject
from interp.sites import Site
from interp.tasks import binding

LAYOUT = "entity-first"
N_EVAL = 500  # prompts per context size for accuracy
SHARE_N = 200  # mechanism pairs per context size
SHARE_SIZES = (4, 5)
SHARE_SEED = 74_000
OUTCOMES = (*binding.MECHANISMS, "other")


@torch.no_grad()
def mechanism_shares(model, layout: str = "attribute-first", filler: int = 0, n: int = SHARE_N,
                     sizes: tuple[int, ...] = SHARE_SIZES, seed: int = SHARE_SEED) -> dict:
    """Gur-Arieh et al.'s shares by site: the query position's residual stream (before each layer,
    then after the last) interchanged from `interp.tasks.binding.mechanism_pairs` sources (``n`` per
    size, seed ``seed + k``); per site, the share of patched runs whose top-1 answer is the positional,
    lexical, reflexive or base entity (else ``other``).

    Returns
    -------
    dict
        ``sites``: labels ``["before L0", ..., "after L{n_layers-1}"]``; ``shares``: ``{outcome: [site]}``
        averaged over ``sizes``; ``by_size``: ``{str(k): {outcome: [site]}}``; and the settings.
    """
    from patching import interchange

    sites = [Site("resid_pre", layer, pos=-1) for layer in range(model.n_layers)] + [Site("resid_post", model.n_layers - 1, pos=-1)]
    labels = [f"before L{s.layer}" if s.kind == "resid_pre" else f"after L{s.layer}" for s in sites]
    by_size = {}
    for k in sizes:
        pairs = binding.mechanism_pairs(n, k, layout, filler, seed=seed + k)
        table: dict[str, list[float]] = {name: [] for name in OUTCOMES}
        for site in sites:
            top = interchange(model, pairs.base.clean, pairs.source, site)[:, -1].argmax(-1)
            hit = {name: top == pairs.answers[name] for name in binding.MECHANISMS}
            for name in binding.MECHANISMS:
                table[name].append(round(hit[name].float().mean().item(), 4))
            table["other"].append(round(1 - torch.stack(list(hit.values())).any(0).float().mean().item(), 4))
        by_size[str(k)] = table
    shares = {name: [round(sum(by_size[str(k)][name][i] for k in sizes) / len(sizes), 4) for i in range(len(sites))]
              for name in OUTCOMES}
    return {"sites": labels, "shares": shares, "by_size": by_size, "n": n, "sizes": list(sizes), "seed": seed,
            "layout": layout, "filler": filler}


def shares(s: Subject) -> dict:
    """`mechanism_shares` of the subject on the entity-first layout (computed once per subject)."""
    return s.memo("mechanism_shares", lambda: mechanism_shares(s.model, LAYOUT))


def measure_accuracy(s: Subject) -> dict[str, float]:
    metrics = s.memo("metrics", lambda: binding.layout_metrics(s.model, LAYOUT, n=N_EVAL, seed=binding.EVAL_SEED))
    return {k: v for k, v in metrics.items() if k.startswith("acc_")}


def measure_positional(s: Subject) -> dict[str, float]:
    sh = shares(s)["shares"]
    pos = np.asarray(sh["positional"])
    per_size = [shares(s)["by_size"][str(k)]["positional"][1] for k in SHARE_SIZES]
    return {"positional_after_l0": float(pos[1]), "positional_after_l0_min_size": float(min(per_size)),
            "lexical_after_l0": float(sh["lexical"][1]),
            "positional_elsewhere_max": float(np.delete(pos, 1).max())}


def measure_retrieval(s: Subject) -> dict[str, float]:
    sh = shares(s)["shares"]
    reflexive = np.asarray(sh["reflexive"])
    layer = next((i - 1 for i, v in enumerate(reflexive) if v >= 0.9), -1)  # the layer after which the entity is there
    return {"lexical_before_l0": float(sh["lexical"][0]), "retrieval_layer": float(layer),
            "reflexive_min_after": float(reflexive[layer + 1:].min()) if layer >= 0 else 0.0}


CARD = Card(
    name="binding-ef",
    model="binding-ef-4l",
    title="Entity binding, entity-first layout",
    test_file="tests/circuits/test_binding_ef_card.py",
    claims=(
        Claim(
            key="accuracy",
            statement="The model answers held-out entity-first prompts (fresh names and attributes) for every context size, 2 to 5 pairs (≥ 0.85 each)",
            figure="binding_mechanisms",
            measure=measure_accuracy,
            passes=lambda n: min(n.values()) >= 0.85,
            summary=lambda n: ", ".join(f"{k[-1]} pairs {v:.3f}" for k, v in sorted(n.items())),
        ),
        Claim(
            key="positional",
            statement="Unlike binding-4l (positional share 0.00 at every layer), part of the retrieval is positional: after layer 0 the query position carries the queried pair's slot in at least 15% of Gur-Arieh et al.'s counterfactual pairs (mean over 4 and 5 pairs; ≥ 0.10 for each size), beside the queried attribute (lexical ≥ 0.4); at every other site the positional share is ≤ 0.05",
            figure="binding_mechanisms",
            measure=measure_positional,
            passes=lambda n: (n["positional_after_l0"] >= 0.15 and n["positional_after_l0_min_size"] >= 0.10
                              and n["lexical_after_l0"] >= 0.4 and n["positional_elsewhere_max"] <= 0.05),
            summary=lambda n: (f"after layer 0: positional {n['positional_after_l0']:.2f} (smallest size {n['positional_after_l0_min_size']:.2f}), "
                               f"lexical {n['lexical_after_l0']:.2f}; positional elsewhere ≤ {n['positional_elsewhere_max']:.2f}"),
        ),
        Claim(
            key="retrieval",
            statement="Before layer 0 the query position carries the asked attribute (lexical share ≥ 0.9); the bound entity itself is there from the output of layer 1 on (reflexive share ≥ 0.9 at every later site): retrieval happens in layer 1, as in binding-4l",
            figure="binding_mechanisms",
            measure=measure_retrieval,
            passes=lambda n: n["lexical_before_l0"] >= 0.9 and n["retrieval_layer"] == 1 and n["reflexive_min_after"] >= 0.9,
            summary=lambda n: (f"lexical before L0 {n['lexical_before_l0']:.2f}; retrieval in layer {int(n['retrieval_layer'])}; "
                               f"reflexive after it ≥ {n['reflexive_min_after']:.2f}"),
            tolerances={"retrieval_layer": EXACT},
        ),
    ),
)

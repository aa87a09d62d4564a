"""The induction circuit of ``induction-2l`` (Elhage et al. 2021; Olsson et al. 2022), as measured claims.

Every measurement runs on held-out repeated random sequences ``BOS r r`` (|r| = 20, seeded), so
each number is deterministic. Heads are chosen by the detectors, never by index: a head is
*marked* as previous-token (or induction) when its detector score is at least `MARKED` (most of
its attention on the detector's target token). The card is ``interp/circuits/induction.md``.

    from interp import circuits
    circuits.evaluate("induction").table()
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interp.circuits import (
    EXACT,
    RELATIVE,
    WEIGHTS,
    Card,
    Claim,
    Subject,
    discovered,
    top_circuit_faithfulness,
)
from interp.errors import InputError
from interp.heads import (
    attention_patterns,
    composition_scores,
    induction_scores,
    previous_token_scores,
)
from interp.interventions import Replace
from interp.sites import Site
from interp.tasks.induction import induction_metrics, repeated_tokens
from interp.tasks.promptset import PromptSet

HALF, N, SEED = 20, 200, 101  # held-out sequences: the training data seeds are 0 and 5_000
MARKED = 0.5  # detector score at which a head counts as that kind of head
STRONG = 0.7  # what the literature reports for clear previous-token / induction heads
Head = tuple[int, int]


def _tokens(s: Subject) -> Int[Tensor, "n pos"]:
    return s.memo("tokens", lambda: repeated_tokens(N, HALF, s.model.d_vocab, seed=SEED))


def _scores(s: Subject) -> dict[str, Tensor]:
    def compute():
        with torch.no_grad():
            patterns = attention_patterns(s.model, _tokens(s))
        return {"prev": previous_token_scores(patterns), "induction": induction_scores(patterns, HALF)}

    return s.memo("scores", compute)


def _marked(scores: Tensor, layer: int | None = None) -> list[Head]:
    heads = [(int(a), int(h)) for a, h in torch.nonzero(scores >= MARKED)]
    return [x for x in heads if layer is None or x[0] == layer]


def _name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def _names(heads: list[Head]) -> str:
    return ", ".join(_name(h) for h in heads) or "none"


# ---------------------------------------------------------------------------- head detectors


def measure_previous_token_head(s: Subject) -> dict[str, float]:
    prev = _scores(s)["prev"][0]
    return {"best_head": int(prev.argmax()), "score": float(prev.max()), "n_marked": len(_marked(_scores(s)["prev"], 0))}


def measure_induction_head(s: Subject) -> dict[str, float]:
    ind = _scores(s)["induction"][1]
    return {"best_head": int(ind.argmax()), "score": float(ind.max()), "n_marked": len(_marked(_scores(s)["induction"], 1))}


# ---------------------------------------------------------------------------- K-composition


def measure_k_composition(s: Subject) -> dict[str, float]:
    k = composition_scores(s.model, "K")[0, :, 1, :]  # [layer-0 head, layer-1 head]
    prev = [h for _, h in _marked(_scores(s)["prev"], 0)]
    ind = [h for _, h in _marked(_scores(s)["induction"], 1)] or list(range(s.model.n_heads))
    others = [h for h in range(s.model.n_heads) if h not in prev]
    sender, receiver = divmod(int(k.argmax()), s.model.n_heads)
    circuit = k[prev][:, ind] if prev else torch.zeros(0)
    rest = k[others][:, ind] if others else torch.zeros(0)
    return {
        "max_sender": sender, "max_receiver": receiver, "max_score": float(k.max()),
        "max_is_prev_token_head": float(sender in prev),
        "min_prev_to_induction": float(circuit.min()) if circuit.numel() else float("nan"),
        "max_other_to_induction": float(rest.max()) if rest.numel() else float("nan"),
    }


def _k_composition_passes(n: dict[str, float]) -> bool:
    separated = np.isnan(n["max_other_to_induction"]) or n["min_prev_to_induction"] > n["max_other_to_induction"]
    return bool(n["max_is_prev_token_head"]) and bool(separated)


# ---------------------------------------------------------------------------- ablation


def mean_ablated_metrics(model, tokens: Int[Tensor, "n pos"], heads: list[Head], half: int = HALF) -> dict[str, float]:
    """`induction_metrics` with each head's output (z) replaced by its mean over the sequences, per position."""
    layers = sorted({layer for layer, _ in heads})
    _, cache = model.run_with_cache(tokens, [Site("z", layer) for layer in layers])
    edits = {}
    for layer, head in heads:
        z = cache[Site("z", layer)][:, :, head]  # [batch pos d_head]
        edits[Site("z", layer, head=head)] = Replace(z.mean(0, keepdim=True).expand_as(z))
    with torch.no_grad(), model.edit(edits):
        return induction_metrics(model, tokens, half)


def _loss_ratio(metrics: dict[str, float]) -> float:
    return metrics["loss_repeated_half"] / metrics["loss_first_half"]


def measure_ablation(s: Subject) -> dict[str, float]:
    m, tokens, sc = s.model, _tokens(s), _scores(s)
    induction = _marked(sc["induction"])
    prev = _marked(sc["prev"])
    if not induction:
        return {"n_induction": 0, "ratio_clean": _loss_ratio(induction_metrics(m, tokens, HALF)),
                "ratio_induction_ablated": float("nan"), "n_other": 0, "ratio_other_ablated": float("nan"),
                "n_prev": len(prev), "ratio_prev_ablated": float("nan")}
    all_heads = [(a, h) for a in range(m.n_layers) for h in range(m.n_heads)]
    other = [x for x in all_heads if x not in induction and x not in prev]
    return {
        "ratio_clean": _loss_ratio(induction_metrics(m, tokens, HALF)),
        "n_induction": len(induction), "ratio_induction_ablated": _loss_ratio(mean_ablated_metrics(m, tokens, induction)),
        "n_other": len(other),
        "ratio_other_ablated": _loss_ratio(mean_ablated_metrics(m, tokens, other)) if other else float("nan"),
        "n_prev": len(prev), "ratio_prev_ablated": _loss_ratio(mean_ablated_metrics(m, tokens, prev)) if prev else float("nan"),
    }


def _ablation_passes(n: dict[str, float]) -> bool:
    other_ok = n["n_other"] == 0 or n["ratio_other_ablated"] < 0.8
    return n["n_induction"] > 0 and n["ratio_induction_ablated"] >= 0.8 and other_ok


# ---------------------------------------------------------------------------- path patching


def key_path_prompts(n: int, d_vocab: int, seed: int = 7) -> PromptSet:
    """Clean ``BOS r r[:-1]`` (answer r[-1]); corrupted: the token *before* the answer's first copy
    (position ``HALF - 1``, i.e. r[-2]) replaced, so a previous-token head at the answer's first copy
    writes another token and the induction head's key there no longer matches its query."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(1, d_vocab, (n, HALF), generator=gen)
    clean = torch.cat([torch.zeros(n, 1, dtype=torch.long), r, r[:, :-1]], dim=1)
    corrupted = clean.clone()
    shift = torch.randint(1, d_vocab - 1, (n,), generator=gen)
    corrupted[:, HALF - 1] = (clean[:, HALF - 1] - 1 + shift) % (d_vocab - 1) + 1
    return PromptSet(clean, corrupted, r[:, -1], r[:, 0], metadata={"half": HALF, "changed_pos": HALF - 1})


def measure_key_path(s: Subject) -> dict[str, float]:
    from patching import activation_patch, log_prob, path_patch

    m = s.model
    prev = _marked(_scores(s)["prev"], 0)
    induction = _marked(_scores(s)["induction"], 1)
    if not prev or not induction:
        return {"total": float("nan"), "k": float("nan"), "q": float("nan"), "v": float("nan"), "share_k": float("nan")}
    prompts = key_path_prompts(N, m.d_vocab)
    senders = [[Site("z", a, head=h) for a, h in prev]]
    total = activation_patch(m, prompts, senders, log_prob, direction="noise", progress=False)
    out = {}
    for kind in ("k", "q", "v"):
        receivers = [Site(kind, a, head=h) for a, h in induction]
        res = path_patch(m, prompts, senders, receivers, log_prob, direction="noise", progress=False)
        out[kind] = float(res.values[0]) - res.settings["baseline"]
    out["total"] = float(total.values[0]) - res.settings["baseline"]
    out["share_k"] = out["k"] / out["total"] if out["total"] != 0 else float("nan")
    return out


# ---------------------------------------------------------------------------- phase change


def checkpoint_trajectory(model_dir) -> dict[str, np.ndarray]:
    """Best induction score, best previous-token score and ICL score at each training checkpoint."""
    from interp.figures.induction import checkpoint_scores

    return checkpoint_scores(model_dir, half=HALF, n=100)


def phase_change_numbers(steps: np.ndarray, induction: np.ndarray, icl: np.ndarray) -> dict[str, float]:
    """The checkpoint interval with the largest rise of the induction score and the one with the largest
    fall of the ICL score, and the share of each quantity's total change made in that interval."""
    d_ind, d_icl = np.diff(induction), np.diff(icl)
    i_ind, i_icl = int(np.argmax(d_ind)), int(np.argmin(d_icl))
    return {
        "induction_jump_from": float(steps[i_ind]), "induction_jump_to": float(steps[i_ind + 1]),
        "icl_jump_from": float(steps[i_icl]), "icl_jump_to": float(steps[i_icl + 1]),
        "induction_share": float(d_ind[i_ind] / (induction[-1] - induction[0])),
        "icl_share": float(d_icl[i_icl] / (icl[-1] - icl[0])),
        "window_fraction": float((steps[i_ind + 1] - steps[i_ind]) / steps[-1]),
    }


def measure_phase_change(s: Subject) -> dict[str, float]:
    if s.name is None:
        raise InputError("The phase-change claim reads training checkpoints: evaluate a shipped model or a directory "
                         "saved by `interp train NAME --out DIR`, not a bare HookedModel.")
    t = s.memo("trajectory", lambda: checkpoint_trajectory(s.name))
    return phase_change_numbers(t["step"], t["induction"], t["icl"])


def _phase_passes(n: dict[str, float]) -> bool:
    same = n["induction_jump_from"] == n["icl_jump_from"]
    return same and n["induction_share"] >= 0.5 and n["icl_share"] >= 0.5


# ---------------------------------------------------------------------------- automatic discovery
N_DISCOVERY = 100  # key-path prompts for edge scores (seed 7, as the key_path claim)
ACDC_TAU = 0.05  # ACDC's threshold (a drop in faithfulness) for the discovery_budget claim


def _discovery(s: Subject) -> dict:
    return discovered(s, key_path_prompts(N_DISCOVERY, s.model.d_vocab), "induction_key_path")


def measure_discovered(s: Subject) -> dict[str, float]:
    """The exact-score circuits of the key-path prompts: top 10% and top 20% of the edges."""
    d = _discovery(s)
    exact = d["scores"]["exact"]
    g = exact.graph
    n10, n20 = g.n_edges // 10, g.n_edges // 5
    f10, f20 = top_circuit_faithfulness(s, key_path_prompts(N_DISCOVERY, s.model.d_vocab), exact, [n10, n20])
    circuit = exact.circuit(k=n20)
    prev = _marked(_scores(s)["prev"], 0)
    induction = _marked(_scores(s)["induction"], 1)
    k_edges = [f"a0.h{p} -> a1.h{i}.k" for _, p in prev for _, i in induction]
    logit_edges = [f"a1.h{i} -> logits" for _, i in induction]
    return {
        "n_edges": g.n_edges, "k_10": n10, "k_20": n20, "faithfulness_10": f10, "faithfulness_20": f20,
        "n_k_composition_kept": sum(e in circuit for e in k_edges), "n_k_composition": len(k_edges),
        "n_logit_edges_kept": sum(e in circuit for e in logit_edges), "n_induction": len(induction),
    }


def _discovered_passes(n: dict[str, float]) -> bool:
    return (n["n_k_composition_kept"] >= 1 and n["n_induction"] > 0 and n["n_logit_edges_kept"] == n["n_induction"]
            and n["faithfulness_20"] >= 0.85)


def mechanism_edges(prev: list[Head], induction: list[Head]) -> list[str]:
    """The induction mechanism's edges on the key-path prompts: the embeddings into the previous-token
    heads' values, previous-token heads into the induction heads' keys, the induction heads into the logits."""
    return ([f"input -> a0.h{p}.v" for _, p in prev] + [f"a0.h{p} -> a1.h{i}.k" for _, p in prev for _, i in induction]
            + [f"a1.h{i} -> logits" for _, i in induction])


def measure_discovery_budget(s: Subject) -> dict[str, float]:
    """The issue's target (faithfulness >= 0.9 with at most 10% of the edges) against the mechanism's
    size: every mechanism-shaped circuit within the budget (a subset P of the previous-token heads and
    I of the induction heads: |P| + |P||I| + |I| edges), the whole mechanism, and ACDC's circuit."""
    from itertools import combinations

    from patching import discovery, logit_diff

    m = s.model
    prompts = key_path_prompts(N_DISCOVERY, m.d_vocab)
    prev, induction = _marked(_scores(s)["prev"], 0), _marked(_scores(s)["induction"], 1)
    g = discovery.build_graph(m)
    budget = g.n_edges // 10
    nan = float("nan")
    if not prev or not induction:
        return {"n_edges": g.n_edges, "budget": budget, "n_candidates": 0, "best_in_budget": nan, "best_n_prev": nan,
                "best_n_induction": nan, "mechanism_edges": nan, "mechanism": nan, "acdc_edges": nan,
                "acdc_faithfulness": nan, "acdc_is_mechanism": 0}

    def mask(names: list[str]) -> torch.Tensor:
        out = torch.zeros(g.n_edges, dtype=torch.bool)
        out[[g.index(e) for e in names]] = True
        return out

    subsets = lambda heads: [list(c) for r in range(1, len(heads) + 1) for c in combinations(heads, r)]  # noqa: E731
    shapes = [(ps, ind) for ps in subsets(prev) for ind in subsets(induction) if len(mechanism_edges(ps, ind)) <= budget]
    whole = mechanism_edges(prev, induction)
    values = discovery.faithfulness(m, prompts, logit_diff, [mask(mechanism_edges(ps, ind)) for ps, ind in shapes] + [mask(whole)])
    best = int(values[:-1].argmax()) if shapes else -1
    acdc = discovery.acdc(m, prompts, logit_diff, tau=ACDC_TAU, progress=False)
    return {
        "n_edges": g.n_edges, "budget": budget, "n_candidates": len(shapes),
        "best_in_budget": float(values[best]) if shapes else nan,
        "best_n_prev": len(shapes[best][0]) if shapes else nan, "best_n_induction": len(shapes[best][1]) if shapes else nan,
        "mechanism_edges": len(whole), "mechanism": float(values[-1]),
        "acdc_edges": acdc.n_edges, "acdc_faithfulness": float(discovery.faithfulness(m, prompts, logit_diff, [acdc])[0]),
        "acdc_is_mechanism": int(set(acdc.edge_names) == set(whole)),
    }


def _budget_passes(n: dict[str, float]) -> bool:
    fits = n["n_candidates"] == 0 or n["best_in_budget"] < 0.9
    return bool(fits and n["mechanism_edges"] > n["budget"] and n["mechanism"] >= 0.85)


def measure_discovery_agreement(s: Subject) -> dict[str, float]:
    rho = _discovery(s)["spearman"]
    return {"spearman_eap": rho["eap"], "spearman_eap_ig": rho["eap_ig"]}


# ---------------------------------------------------------------------------- the card

HEAD_COUNTS = {"best_head": EXACT, "n_marked": EXACT}

CLAIMS = (
    Claim(
        "previous_token_head",
        f"Layer 0 has a previous-token head (best detector score ≥ {STRONG})",
        "induction_head_scores", measure_previous_token_head,
        lambda n: n["score"] >= STRONG,
        lambda n: f"best L0H{int(n['best_head'])}: {n['score']:.3f}; {int(n['n_marked'])} layer-0 heads ≥ {MARKED}",
        tolerances=HEAD_COUNTS,
    ),
    Claim(
        "induction_head",
        f"Layer 1 has an induction head (best detector score ≥ {STRONG})",
        "induction_head_scores", measure_induction_head,
        lambda n: n["score"] >= STRONG,
        lambda n: f"best L1H{int(n['best_head'])}: {n['score']:.3f}; {int(n['n_marked'])} layer-1 heads ≥ {MARKED}",
        tolerances=HEAD_COUNTS,
    ),
    Claim(
        "k_composition",
        "K-composition: the largest layer-0 → layer-1 score has a previous-token head as sender, and every "
        "previous-token → induction pair scores above every other layer-0 head → induction pair",
        "induction_circuit", measure_k_composition, _k_composition_passes,
        lambda n: (f"max L0H{int(n['max_sender'])}→L1H{int(n['max_receiver'])} {n['max_score']:.3f}; "
                   f"min prev→ind {n['min_prev_to_induction']:.3f} vs max other→ind {n['max_other_to_induction']:.3f}"),
        # composition scores are functions of the weights alone: only their last bits can move
        tolerances={"max_sender": EXACT, "max_receiver": EXACT, "max_is_prev_token_head": EXACT, "*": WEIGHTS},
    ),
    Claim(
        "ablation",
        "Mean-ablating every marked induction head raises the repeated-half loss to within 20% of the "
        "first-half loss (ratio ≥ 0.8); ablating every head neither detector marks does not (ratio < 0.8)",
        "induction_circuit", measure_ablation, _ablation_passes,
        lambda n: (f"loss ratio repeated/first: clean {n['ratio_clean']:.3f}; {int(n['n_induction'])} induction heads ablated "
                   f"{n['ratio_induction_ablated']:.3f}; {int(n['n_other'])} unmarked heads ablated {n['ratio_other_ablated']:.3f} "
                   f"(the {int(n['n_prev'])} previous-token heads ablated: {n['ratio_prev_ablated']:.3f})"),
        tolerances={"n_*": EXACT, "ratio_*": RELATIVE},
    ),
    Claim(
        "key_path",
        "Path patching (noising) from the previous-token heads into the induction heads' keys carries most "
        "(≥ 50%) of the previous-token heads' total effect on log p(answer)",
        "induction_circuit", measure_key_path,
        lambda n: n["share_k"] >= 0.5,
        lambda n: (f"Δ log p: total {n['total']:.3f}; via keys {n['k']:.3f} ({100 * n['share_k']:.0f}%), "
                   f"queries {n['q']:.3f}, values {n['v']:.3f}"),
    ),
    Claim(
        "phase_change",
        "Over training, the induction score and the ICL score make their largest change in the same "
        "checkpoint interval, each at least half of its total change there (the phase change)",
        "induction_phase_change", measure_phase_change, _phase_passes,
        lambda n: (f"induction: steps {n['induction_jump_from']:.0f}→{n['induction_jump_to']:.0f} "
                   f"({100 * n['induction_share']:.0f}% of its change); ICL: steps {n['icl_jump_from']:.0f}→"
                   f"{n['icl_jump_to']:.0f} ({100 * n['icl_share']:.0f}%); window = {100 * n['window_fraction']:.1f}% of training"),
        tolerances={"*_jump_*": EXACT, "window_fraction": EXACT},
    ),
    Claim(
        "discovered",
        "Automatic discovery agrees with the hand-found circuit: on the key-path prompts, the top 20% of the edges by exact "
        "edge patching keep a previous-token head → induction head key edge and every induction head's write to the logits, "
        "and reach faithfulness ≥ 0.85. (The top 10% reaches far less, reported, not tested: see discovery_budget)",
        "discovery_induction_circuit", measure_discovered, _discovered_passes,
        lambda n: (f"top {int(n['k_20'])} of {int(n['n_edges'])} edges: faithfulness {n['faithfulness_20']:.3f}, "
                   f"{int(n['n_k_composition_kept'])} of {int(n['n_k_composition'])} prev→induction key edges, "
                   f"{int(n['n_logit_edges_kept'])} of {int(n['n_induction'])} induction→logits edges; top {int(n['k_10'])} "
                   f"(10%): faithfulness {n['faithfulness_10']:.3f}"),
        tolerances={"n_*": EXACT, "k_*": EXACT},
    ),
    Claim(
        "discovery_budget",
        "The issue's discovery target (faithfulness ≥ 0.9 with at most 10% of the edges) is out of reach for this "
        "mechanism: the embeddings → previous-token values, previous-token → induction key and induction → logits "
        "edges number more than 10% of the graph and reach ≥ 0.85 together, while every circuit of that shape within "
        "10% stays below 0.9. (ACDC at τ = 0.05 is reported: it keeps exactly those edges)",
        "discovery_faithfulness", measure_discovery_budget, _budget_passes,
        lambda n: (f"mechanism: {n['mechanism_edges']:.0f} of {n['n_edges']:.0f} edges, faithfulness {n['mechanism']:.3f}; "
                   f"best of {n['n_candidates']:.0f} mechanism-shaped circuits within {n['budget']:.0f} edges "
                   f"({n['best_n_prev']:.0f} prev × {n['best_n_induction']:.0f} induction heads): {n['best_in_budget']:.3f}; "
                   f"ACDC (τ = {ACDC_TAU}): {n['acdc_edges']:.0f} edges, faithfulness {n['acdc_faithfulness']:.3f}"
                   f"{', the mechanism' if n['acdc_is_mechanism'] else ''}"),
        tolerances={"n_*": EXACT, "budget": EXACT, "best_n_*": EXACT, "mechanism_edges": EXACT, "acdc_edges": EXACT,
                    "acdc_is_mechanism": EXACT},
    ),
    Claim(
        "discovery_agreement",
        "EAP-IG (5 steps) ranks the 81 edges closer to exact edge patching than EAP does (Spearman correlation over every "
        "edge, key-path prompts)",
        "discovery_faithfulness", measure_discovery_agreement,
        lambda n: n["spearman_eap_ig"] > n["spearman_eap"],
        lambda n: f"Spearman with exact: EAP {n['spearman_eap']:.3f}, EAP-IG {n['spearman_eap_ig']:.3f}",
    ),
)

CARD = Card("induction", "induction-2l", "Induction heads in a 2-layer attention-only transformer", CLAIMS)

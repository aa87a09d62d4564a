"""Fact recall in ``facts-4l`` (Meng et al. 2022; Geva et al. 2023; Zucchet et al. 2025), as measured claims.

Measured on the "born_in" prompts of template 0 (``<bos> first last was born in`` -> city): causal
tracing (noise 3 × the embedding std on both subject tokens, 10 samples, window 1) on 50 subjects;
linear probes for the city with 5-fold cross-validation over all 300 subjects (so the probe is
scored on subjects it never saw); attention of the last token; and the shipped training history.
The card (``interp/circuits/facts.md``) reports what this model does where it differs from the
literature's GPT models, and the tests assert that.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from interp.circuits import (
    EXACT,
    RELATIVE,
    Card,
    Claim,
    Subject,
    discovered,
    top_circuit_faithfulness,
)
from interp.errors import InputError
from interp.sites import Site
from interp.tasks import facts

RELATION, TEMPLATE = "born_in", 0
TRACE_SUBJECTS = list(range(0, 300, 6))  # 50 subjects
LAST_SUBJECT, LAST = "last subject token", "last token"


def _kb(s: Subject) -> facts.KnowledgeBase:
    return s.memo("kb", lambda: facts.KnowledgeBase.build(seed=0))


def _trace(s: Subject):
    def compute():
        from patching import causal_trace

        p = _kb(s).fact_prompts(RELATION, template=TEMPLATE, subjects=TRACE_SUBJECTS, seed=0)
        return causal_trace(s.model, p.clean, p.metadata["subject_pos"].tolist(), p.answers, noise=3.0, samples=10,
                            window=1, severed="mlp", seed=0, progress=False)

    return s.memo("trace", compute)


def _by_group(s: Subject) -> dict[str, dict[str, np.ndarray]]:
    """``{kind: {group: [layer]}}`` average indirect effects in ROME's token groups."""
    from patching.causal_tracing import GROUPS

    def compute():
        agg = _trace(s).aggregate()
        return {kind: {g: agg[kind][:, i].numpy() for i, g in enumerate(GROUPS)} for kind in agg}

    return s.memo("groups", compute)


# ---------------------------------------------------------------------------- causal tracing


def measure_mlp_site(s: Subject) -> dict[str, float]:
    g = _by_group(s)["mlp"]
    subj, last = g[LAST_SUBJECT], g[LAST]
    return {"max_last_token": float(last.max()), "min_last_token": float(last.min()),
            "subject_layer0": float(subj[0]), "subject_later_max": float(subj[1:].max()), "p_corrupted": float(_trace(s).p_corrupted.mean())}


def measure_attention_depth(s: Subject) -> dict[str, float]:
    a = _by_group(s)["attn"][LAST]
    return {"argmax_layer": int(a.argmax()), "peak": float(a.max()), "first_layer": float(a[0]), "last_layer": float(a[-1]), "n_layers": len(a)}


def measure_severing(s: Subject) -> dict[str, float]:
    g = _by_group(s)
    out = {}
    for name, group in [("last", LAST), ("subject", LAST_SUBJECT)]:
        plain, severed = float(g["resid"][group][0]), float(g["resid_severed_mlp"][group][0])
        out[f"{name}_plain"], out[f"{name}_severed"] = plain, severed
        out[f"{name}_removed"] = 1 - severed / plain if plain > 0 else float("nan")
    return out


# ---------------------------------------------------------------------------- probes and attention


def measure_probe(s: Subject) -> dict[str, float]:
    from probes import collect, probe_sweep

    kb = _kb(s)
    prompts = kb.fact_prompts(RELATION, template=TEMPLATE, seed=0)
    subject_last = int(prompts.metadata["subject_pos"][0, -1])
    attributes = facts.RELATIONS[RELATION][0]
    labels = np.array([attributes.index(kb.facts[RELATION][i]) for i in range(len(kb.subjects))])
    sites = [Site("resid_pre", 0)] + [Site("resid_post", layer) for layer in range(s.model.n_layers)]
    out = {"chance": 0.0}
    for name, pos in [("subject", subject_last), ("last", prompts.clean.shape[1] - 1)]:
        store = collect(s.model, prompts.clean, sites, positions=pos, progress=False)
        result = probe_sweep(store, labels, cv=5, seed=0, progress=False)
        out["chance"] = float(result.chance)
        for i, acc in enumerate(result.mean):
            out[f"{name}_{i}"] = float(acc)  # index 0 = embeddings, i = after block i-1
    return out


def _probe_passes(n: dict[str, float], layers: int) -> bool:
    after_first = [n[f"subject_{i}"] for i in range(1, layers + 1)]
    return n["subject_0"] <= 2 * n["chance"] and min(after_first) >= 3 * n["chance"] and n[f"last_{2}"] >= 0.95 > n["last_0"]


def measure_last_token_attention(s: Subject) -> dict[str, float]:
    from interp.heads import attention_patterns

    prompts = _kb(s).fact_prompts(RELATION, template=TEMPLATE, seed=0)
    subject = prompts.metadata["subject_pos"][0].tolist()
    with torch.no_grad():
        pattern = attention_patterns(s.model, prompts.clean)[:, :, :, -1, :].mean(2)  # [layer head key]
    on_last = pattern[:, :, subject[-1]]
    on_subject = pattern[:, :, subject].sum(-1)
    layer, head = divmod(int(on_last[0].argmax()), s.model.n_heads)
    return {"layer0_best_head": int(on_last[0].argmax()), "layer0_on_last_subject": float(on_last[0].max()),
            "layer0_on_subject_max": float(on_subject[0].max()), "later_on_last_subject_max": float(on_last[1:].max())}


# ---------------------------------------------------------------------------- training dynamics


def no_knowledge_loss(kb: facts.KnowledgeBase) -> float:
    """Mean answer loss of a model that knows each relation's attribute frequencies but no subject (nats)."""
    total = 0.0
    for relation in facts.RELATIONS:
        counts = np.array(list(Counter(kb.facts[relation]).values()), dtype=float)
        p = counts / counts.sum()
        total += float(-(p * np.log(p)).sum())
    return total / len(facts.RELATIONS)


def plateau_numbers(history: list[dict], baseline: float) -> dict[str, float]:
    """Steps the answer loss spends within 10% of ``baseline`` (the no-knowledge level), and the step
    where recall first reaches 0.5 and 0.99."""
    near = [h["step"] for h in history if abs(h["answer_loss"] - baseline) <= 0.1 * baseline]
    steps = [h["step"] for h in history]
    first = next((h["step"] for h in history if h["recall"] >= 0.5), math.nan)
    done = next((h["step"] for h in history if h["recall"] >= 0.99), math.nan)
    span = (max(near) - min(near)) if near else 0
    return {"baseline": baseline, "plateau_steps": float(span), "n_evals_near": len(near), "eval_every": float(steps[1] - steps[0]),
            "recall_half_step": float(first), "recall_99_step": float(done), "total_steps": float(steps[-1])}


def measure_dynamics(s: Subject) -> dict[str, float]:
    import json
    from pathlib import Path

    if s.name is None:
        raise InputError("The training-dynamics claim reads history.json: evaluate a shipped model or a directory saved by "
                         "`interp train facts-4l --out DIR`, not a bare HookedModel.")
    history = json.loads((Path(s.name) / "history.json").read_text())["history"]
    if "answer_loss" not in history[0]:
        raise InputError(f"{s.name}/history.json has no answer_loss; retrain with the current recipe (interp train facts-4l).")
    return plateau_numbers(history, no_knowledge_loss(_kb(s)))


# ---------------------------------------------------------------------------- the card

# ---------------------------------------------------------------------------- automatic discovery


def _discovery_prompts(s: Subject):
    return _kb(s).fact_prompts(RELATION, template=TEMPLATE, subjects=TRACE_SUBJECTS, seed=0)


def measure_discovered(s: Subject) -> dict[str, float]:
    """Exact edge scores on the 50 traced prompts: what the top edges are, and the top-20% circuit's faithfulness."""
    d = discovered(s, _discovery_prompts(s), "facts")
    exact = d["scores"]["exact"]
    g = exact.graph
    top = exact.top(10)
    n20 = g.n_edges // 5
    (f20,) = top_circuit_faithfulness(s, _discovery_prompts(s), exact, [n20])
    first = top.iloc[0]
    return {
        "n_edges": g.n_edges, "k_20": n20, "faithfulness_20": f20,
        "top_is_mlp_to_logits": float(first["sender"].startswith("m") and first["receiver"] == "logits"),
        "n_top10_embed_to_layer0_values": int(((top["sender"] == "input") & top["receiver"].str.startswith("a0.") & (top["input"] == "v")).sum()),
        "n_top10_mlp_to_logits": int((top["sender"].str.startswith("m") & (top["receiver"] == "logits")).sum()),
        "spearman_eap": d["spearman"]["eap"], "spearman_eap_ig": d["spearman"]["eap_ig"],
    }


CLAIMS = (
    Claim(
        "mlp_site",
        "MLP restoration: unlike ROME's GPT models (largest effect at the last subject token, early-middle layers), "
        "the largest MLP indirect effects are at the last token, in every layer (≥ 0.3), while at the last subject "
        "token only layer 0's MLP matters (later layers < 0.1)",
        "facts_causal_trace", measure_mlp_site,
        lambda n: n["min_last_token"] >= 0.3 and n["max_last_token"] > n["subject_layer0"] and n["subject_later_max"] < 0.1,
        lambda n: (f"last token: {n['min_last_token']:.3f} to {n['max_last_token']:.3f} by layer; last subject token: "
                   f"layer 0 {n['subject_layer0']:.3f}, later ≤ {n['subject_later_max']:.3f} (p corrupted {n['p_corrupted']:.3f})"),
    ),
    Claim(
        "attention_depth",
        "Attention restoration at the last token matters most in the first half of the layers and fades with depth "
        "(last layer ≤ a quarter of the peak): the subject is moved to the last token early, not in later layers as in ROME",
        "facts_causal_trace", measure_attention_depth,
        lambda n: n["argmax_layer"] < n["n_layers"] / 2 and n["last_layer"] <= 0.25 * n["peak"],
        lambda n: f"largest at layer {int(n['argmax_layer'])} ({n['peak']:.3f}); layer 0 {n['first_layer']:.3f}; last layer {n['last_layer']:.3f}",
        tolerances={"argmax_layer": EXACT, "n_layers": EXACT},
    ),
    Claim(
        "severing",
        "Severing the MLPs (frozen at their corrupted values) removes most (≥ 50%) of the layer-0 residual effect at "
        "the last token, and little (< 50%) at the last subject token: the lookup runs through last-token MLPs",
        "facts_severed", measure_severing,
        lambda n: n["last_removed"] >= 0.5 and n["subject_removed"] < 0.5,
        lambda n: (f"last token: {n['last_plain']:.3f} → {n['last_severed']:.3f} ({100 * n['last_removed']:.0f}% removed); "
                   f"last subject token: {n['subject_plain']:.3f} → {n['subject_severed']:.3f} ({100 * n['subject_removed']:.0f}%)"),
    ),
    Claim(
        "probe",
        "A linear probe (held-out subjects) decodes the city from the last subject token's residual stream from layer 0's "
        "output on (≥ 3× chance; not from the embeddings), and at the last token fully (≥ 0.95) from layer 1's output",
        "facts_probe", measure_probe,
        lambda n: _probe_passes(n, 4),
        lambda n: ("last subject token by layer (embed, out 0..3): " + ", ".join(f"{n[f'subject_{i}']:.2f}" for i in range(5))
                   + "; last token: " + ", ".join(f"{n[f'last_{i}']:.2f}" for i in range(5)) + f"; chance {n['chance']:.2f}"),
        tolerances={"chance": EXACT},  # the majority class's share: a count, the same on every machine
    ),
    Claim(
        "last_token_attention",
        "A layer-0 head at the last token attends mostly (≥ 0.5) to the last subject token",
        "facts_causal_trace", measure_last_token_attention,
        lambda n: n["layer0_on_last_subject"] >= 0.5,
        lambda n: (f"L0H{int(n['layer0_best_head'])} puts {n['layer0_on_last_subject']:.2f} of the last token's attention on "
                   f"the last subject token (max over later layers {n['later_on_last_subject_max']:.2f})"),
        tolerances={"layer0_best_head": EXACT},
    ),
    Claim(
        "dynamics",
        "Training dynamics (Zucchet et al. 2025 report a plateau before recall): this model shows no plateau; the "
        "answer loss stays within 10% of the no-knowledge level for at most 2% of training, and recall passes 0.5 "
        "within the first 10% of training",
        "facts_dynamics", measure_dynamics,
        lambda n: n["plateau_steps"] <= 0.02 * n["total_steps"] and n["recall_half_step"] <= 0.1 * n["total_steps"],
        lambda n: (f"near the no-knowledge loss ({n['baseline']:.2f} nats) for {n['plateau_steps']:.0f} steps "
                   f"({int(n['n_evals_near'])} evaluations, every {n['eval_every']:.0f}); recall 0.5 at step "
                   f"{n['recall_half_step']:.0f}, 0.99 at step {n['recall_99_step']:.0f} of {n['total_steps']:.0f}"),
        tolerances={"baseline": RELATIVE, "*": EXACT},  # steps and counts read from the shipped history.json
    ),
    Claim(
        "discovered",
        "Automatic discovery (exact edge patching, logit difference, the 50 traced prompts) finds the route of the other "
        "claims: the largest edge is an MLP's write to the logits, and the 10 largest include at least 2 embedding → "
        "layer-0 head value edges (the subject moved to the last token) and at least 2 MLP → logits edges; the top 20% "
        "of the edges reach faithfulness ≥ 0.8 (smaller circuits do not: the route is spread over every layer's MLP)",
        "discovery_faithfulness", measure_discovered,
        lambda n: (n["top_is_mlp_to_logits"] == 1 and n["n_top10_embed_to_layer0_values"] >= 2
                   and n["n_top10_mlp_to_logits"] >= 2 and n["faithfulness_20"] >= 0.8),
        lambda n: (f"top edge MLP → logits: {'yes' if n['top_is_mlp_to_logits'] else 'no'}; top 10: "
                   f"{int(n['n_top10_embed_to_layer0_values'])} embed → layer-0 value edges, {int(n['n_top10_mlp_to_logits'])} "
                   f"MLP → logits; top {int(n['k_20'])} of {int(n['n_edges'])} edges: faithfulness {n['faithfulness_20']:.3f}; "
                   f"Spearman with exact: EAP {n['spearman_eap']:.3f}, EAP-IG {n['spearman_eap_ig']:.3f}"),
        tolerances={"n_*": EXACT, "k_20": EXACT, "top_is_mlp_to_logits": EXACT},
    ),
)

CARD = Card("facts", "facts-4l", "Fact recall in a 4-layer transformer trained on a synthetic knowledge base", CLAIMS)

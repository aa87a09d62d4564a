"""Entity binding in ``binding-4l`` (Feng & Steinhardt 2023; Gur-Arieh et al. 2025), as measured claims.

The prompts are `interp.tasks.binding`'s: ``<bos> A1 E1 . A2 E2 . ... who likes Aq`` -> ``Eq``,
with fresh random names and attributes in every prompt. The *query position* is the last token (the
queried attribute), where the answer is read.

Gur-Arieh et al. (2025) separate three ways a model can retrieve the bound entity, and we test them
with interchange interventions at the query position, counting which answer the patched run gives:

- *positional* (`interp.tasks.binding.positional_pairs`): the source holds the base's queried
  attribute in another slot and asks about it. A slot-carrying activation moves the answer to the
  base entity in the source's slot;
- *lexical* (`interp.tasks.binding.lexical_pairs`): the source holds the base's attributes in
  shuffled slots and asks about another of them. An attribute-carrying activation moves the answer
  to the base entity bound to that attribute (never the entity in the source's slot);
- in both, the *source's own answer* (absent from the base context) means that the activation
  already holds the retrieved entity.

DAS (Geiger et al. 2023) then looks for a low-dimensional subspace of the query position that
carries the variable the interchanges point to; the same training with positional labels is the
control. The CausalGym comparison (Arora et al. 2024) scores 1-D directions of DAS and of methods
without interventions by the same interchange.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.circuits import EXACT, Card, Claim, Subject
from interp.sites import Site
from interp.tasks import binding

N_EVAL = 500  # prompts per context size for accuracy
N_SHARE = 400  # positional pairs per context size for the interchange shares
SHARE_SEED = 70_000
LEXICAL_SEED = 73_000
DAS_PAIRS, DAS_TEST = 1200, 400  # DAS training pairs and held-out pairs
DAS_SIZE = 3  # context size of the DAS claim
DAS_SEED = 71_000
DAS_KS = (1, 2, 4, 8)
#: The outcomes counted for each kind of interchange pair, in the column order of the tables.
OUTCOMES = {"positional": ("positional", "base", "source"), "lexical": ("lexical", "positional", "base", "source")}
PAIR_SEEDS = {"positional": SHARE_SEED, "lexical": LEXICAL_SEED}


def query_sites(model) -> list[Site]:
    """The residual stream at the query position before each layer and after the last one."""
    return [Site("resid_pre", layer, pos=-1) for layer in range(model.n_layers)] + [Site("resid_post", model.n_layers - 1, pos=-1)]


def site_label(site: Site) -> str:
    return f"before L{site.layer}" if site.kind == "resid_pre" else f"after L{site.layer}"


def _pairs(family: str, k: int) -> binding.PositionalPairs | binding.LexicalPairs:
    make = binding.positional_pairs if family == "positional" else binding.lexical_pairs
    return make(N_SHARE, k, seed=PAIR_SEEDS[family] + k)


@torch.no_grad()
def interchange_hits(model, base: Int[Tensor, "n pos"], source: Int[Tensor, "n pos"], site: Site,
                     answers: dict[str, Int[Tensor, " n"]]) -> dict[str, Bool[Tensor, " n"]]:
    """Per prompt, whether the interchanged run's top-1 answer is each named answer: ``{name: Bool[n]}``."""
    from patching import interchange

    top = interchange(model, base, source, site)[:, -1].argmax(-1)
    return {name: top == ids for name, ids in answers.items()}


def _hits(s: Subject, family: str, k: int) -> dict:
    """``family`` ("positional" or "lexical") pairs of size ``k``, interchanged at every query site:
    ``{"query_index": [n], "sites": [{outcome: Bool[n]} per site]}`` (computed once per subject)."""

    def compute():
        pairs = _pairs(family, k)
        meta = pairs.base.metadata
        answers = {name: pairs.base.answers if name == "base" else meta[f"{name}_answer"] for name in OUTCOMES[family]}
        return {"query_index": meta["query_index"],
                "sites": [interchange_hits(s.model, pairs.base.clean, pairs.source, site, answers) for site in query_sites(s.model)]}

    return s.memo(f"hits_{family}_{k}", compute)


def _table(s: Subject, family: str) -> dict[int, np.ndarray]:
    return {k: np.array([[float(hit.float().mean()) for hit in hits.values()] for hits in _hits(s, family, k)["sites"]])
            for k in binding.SIZES}


def share_table(s: Subject) -> dict[int, np.ndarray]:
    """``{k: [site, outcome]}``: share of each positional-pair outcome (``OUTCOMES["positional"]``)
    per query-position site, per context size."""
    return _table(s, "positional")


def lexical_table(s: Subject) -> dict[int, np.ndarray]:
    """``{k: [site, outcome]}``: share of each lexical-pair outcome (``OUTCOMES["lexical"]``) per
    query-position site, per context size."""
    return _table(s, "lexical")


def lexical_by_slot(s: Subject, site: Site) -> dict[int, np.ndarray]:
    """``{k: [slot]}``: lexical share at ``site`` by the base's queried slot, per context size."""
    index = query_sites(s.model).index(site)
    out = {}
    for k in binding.SIZES:
        hits = _hits(s, "lexical", k)
        hit, q = hits["sites"][index]["lexical"].float(), hits["query_index"]
        out[k] = np.array([float(hit[q == slot].mean()) for slot in range(k)])
    return out


@torch.no_grad()
def accuracy_by_slot(s: Subject) -> dict[int, np.ndarray]:
    """``{k: [slot]}``: held-out accuracy by the queried slot, per context size."""

    def compute():
        out = {}
        for k in binding.SIZES:
            p = binding.binding_prompts(N_EVAL, k, seed=binding.EVAL_SEED + k)
            correct = (s.model(p.clean)[:, -1].argmax(-1) == p.answers).float()
            q = p.metadata["query_index"]
            out[k] = np.array([float(correct[q == slot].mean()) for slot in range(k)])
        return out

    return s.memo("acc_slots", compute)


def das_dataset(k: int, n: int, seed: int, variable: str = "lexical"):
    """Interchange pairs as a `CounterfactualDataset` for DAS: ``variable="lexical"`` uses
    `lexical_pairs` labelled with the lexical answer; ``"positional"`` uses `positional_pairs`
    labelled with the positional answer. The base label is the base answer."""
    from patching.das import CounterfactualDataset

    if variable == "lexical":
        pairs = binding.lexical_pairs(n, k, seed=seed)
        return CounterfactualDataset(pairs.base.clean, pairs.source, pairs.lexical_answer, pairs.base.answers, answer_pos=-1)
    pairs = binding.positional_pairs(n, k, seed=seed)
    return CounterfactualDataset(pairs.base.clean, pairs.source, pairs.positional_answer, pairs.base.answers, answer_pos=-1)


def retrieval_layer(s: Subject) -> int:
    """The first layer after which the query position holds the retrieved entity (source share ≥ 0.5
    in the positional interchanges, averaged over sizes); ``n_layers`` if it never does."""
    mean = np.mean([share_table(s)[k][:, 2] for k in binding.SIZES], axis=0)  # [site]
    hits = np.nonzero(mean >= 0.5)[0]
    return int(hits[0]) - 1 if len(hits) else s.model.n_layers


def das_site(s: Subject) -> Site:
    """The query position just before the retrieval layer (where the lexical variable must live)."""
    return Site("resid_pre", min(max(retrieval_layer(s), 0), s.model.n_layers - 1), pos=-1)


# ---------------------------------------------------------------------------- claims


def measure_accuracy(s: Subject) -> dict[str, float]:
    return s.memo("accuracy", lambda: binding.binding_accuracy(s.model, n=N_EVAL))


def measure_positional(s: Subject) -> dict[str, float]:
    mean = np.mean([share_table(s)[k] for k in binding.SIZES], axis=0)  # [site, outcome]
    out = {f"positional_{i}": float(mean[i, 0]) for i in range(len(mean))}
    out.update(max_positional=float(mean[:, 0].max()), max_positional_any_size=float(max(share_table(s)[k][:, 0].max() for k in binding.SIZES)))
    # the other outcomes account for the answers: base (before retrieval) or source (after it)
    out["explained_min"] = float(min((share_table(s)[k][:, 1] + share_table(s)[k][:, 2]).min() for k in binding.SIZES))
    return out


def measure_lexical(s: Subject) -> dict[str, float]:
    table = lexical_table(s)
    layer = retrieval_layer(s)
    out = {"retrieval_layer": layer}
    before = slice(0, layer + 1)  # sites before L0 .. before the retrieval layer
    out["lexical_min_before"] = float(min(table[k][before, 0].min() for k in binding.SIZES)) if layer >= 0 else float("nan")
    out["positional_max"] = float(max(table[k][:, 1].max() for k in binding.SIZES))
    mean_shares = np.mean([share_table(s)[k] for k in binding.SIZES], axis=0)
    out["source_min_after"] = float(mean_shares[layer + 1 :, 2].min()) if layer + 1 < len(mean_shares) else float("nan")
    out["base_min_before"] = float(mean_shares[: layer + 1, 1].min()) if layer >= 0 else float("nan")
    return out


def measure_das(s: Subject) -> dict[str, float]:
    from patching.das import train_das

    def compute():
        site = das_site(s)
        out = {"layer": site.layer}
        for variable in ("lexical", "positional"):
            train = das_dataset(DAS_SIZE, DAS_PAIRS, DAS_SEED, variable)
            test = das_dataset(DAS_SIZE, DAS_TEST, DAS_SEED + 1, variable)
            for k in DAS_KS if variable == "lexical" else (max(DAS_KS),):
                r = train_das(s.model, site, train, k=k, eval_dataset=test, epochs=8, lr=1e-2, seed=0, progress=False)
                out[f"{variable}_iia_{k}"] = r.iia
        return out

    return s.memo("das", compute)


def measure_by_slot(s: Subject) -> dict[str, float]:
    acc = accuracy_by_slot(s)
    lexical = lexical_by_slot(s, das_site(s))
    out = {}
    for k in binding.SIZES:
        out[f"acc_min_{k}"] = float(acc[k].min())
        out[f"lexical_min_{k}"] = float(lexical[k].min())
    out["acc_min"] = min(out[f"acc_min_{k}"] for k in binding.SIZES)
    out["lexical_min"] = min(out[f"lexical_min_{k}"] for k in binding.SIZES)
    out["acc_middle_5"] = float(acc[5][1:-1].mean())
    out["acc_edges_5"] = float((acc[5][0] + acc[5][-1]) / 2)
    return out


def _smallest_k(n: dict[str, float]) -> float:
    """The smallest DAS dimension whose lexical IIA reaches 0.9 (nan if none does): derived in the
    verdict, not stored, so that the stored IIAs alone carry the tolerance."""
    return next((k for k in DAS_KS if n[f"lexical_iia_{k}"] >= 0.9), float("nan"))


def _fmt_shares(n: dict[str, float]) -> str:
    count = sum(key.startswith("positional_") and key[len("positional_"):].isdigit() for key in n)
    return ", ".join(f"{n[f'positional_{i}']:.2f}" for i in range(count))


DISCOVERY_SEED, DISCOVERY_SIZE = 74_000, 3


def measure_discovered(s: Subject) -> dict[str, float]:
    """Exact edge scores on 50 three-pair prompts (the query changed to another pair's attribute)."""
    from interp.circuits import discovered, top_circuit_faithfulness

    prompts = binding.binding_prompts(50, DISCOVERY_SIZE, seed=DISCOVERY_SEED)
    d = discovered(s, prompts, "binding")
    exact = d["scores"]["exact"]
    g = exact.graph
    top = exact.top(5)
    k6, n20 = 30, g.n_edges // 5
    f6, f20 = top_circuit_faithfulness(s, prompts, exact, [k6, n20])
    first = top.iloc[0]
    return {
        "n_edges": g.n_edges, "k_30": k6, "k_20": n20, "faithfulness_30": f6, "faithfulness_20": f20,
        "top_is_embed_to_m0": float(first["edge"] == "input -> m0"),
        "n_top5_m0_to_layer1_queries": int(((top["sender"] == "m0") & top["receiver"].str.startswith("a1.") & (top["input"] == "q")).sum()),
        "spearman_eap": d["spearman"]["eap"], "spearman_eap_ig": d["spearman"]["eap_ig"],
    }


CARD = Card(
    name="binding",
    model="binding-4l",
    title="Entity binding in binding-4l",
    claims=(
        Claim(
            key="accuracy",
            statement="The model answers held-out prompts (fresh names and attributes) correctly for every context size, 2 to 5 pairs (≥ 0.95 each)",
            figure="binding_positional",
            measure=measure_accuracy,
            passes=lambda n: min(n.values()) >= 0.95,
            summary=lambda n: ", ".join(f"{k[-1]} pairs {v:.3f}" for k, v in sorted(n.items())),
        ),
        Claim(
            key="positional",
            statement="Unlike the positional retrieval that Feng & Steinhardt and Gur-Arieh et al. find in LLMs, interchanging the query position's residual stream from a context with the queried attribute in another slot never moves the answer to the entity in that slot (positional share ≤ 0.05 at every layer and context size); the answer is always the base's or the source's own (≥ 0.9 together)",
            figure="binding_positional",
            measure=measure_positional,
            passes=lambda n: n["max_positional_any_size"] <= 0.05 and n["explained_min"] >= 0.9,
            summary=lambda n: (f"positional share by site, mean over 2-5 pairs (before L0 .. after the last layer): {_fmt_shares(n)}; "
                               f"largest for any size {n['max_positional_any_size']:.2f}; base or source answer ≥ {n['explained_min']:.2f}"),
        ),
        Claim(
            key="lexical",
            statement="Retrieval is lexical, in one layer: up to the retrieval layer the query position carries which attribute is asked (interchanging it from a shuffled context moves the answer to the base entity bound to the source's attribute, ≥ 0.9 for every size, never to the entity in the source's slot), and after it the retrieved entity itself (the source's own answer, ≥ 0.9)",
            figure="binding_positional",
            measure=measure_lexical,
            passes=lambda n: n["lexical_min_before"] >= 0.9 and n["positional_max"] <= 0.05 and n["source_min_after"] >= 0.9,
            summary=lambda n: (f"retrieval in layer {int(n['retrieval_layer'])}; before it, lexical share ≥ {n['lexical_min_before']:.2f} "
                               f"(positional ≤ {n['positional_max']:.2f}); after it, source answer ≥ {n['source_min_after']:.2f}"),
            tolerances={"retrieval_layer": EXACT},
        ),
        Claim(
            key="das",
            statement=f"DAS finds a subspace of at most 8 dimensions at the query position before the retrieval layer that carries the queried attribute (IIA ≥ 0.9 on held-out {DAS_SIZE}-pair lexical pairs); the same training with positional labels fails (IIA < 0.1 at k = 8)",
            figure="binding_causalgym",
            measure=measure_das,
            passes=lambda n: _smallest_k(n) <= 8 and n["positional_iia_8"] < 0.1,
            summary=lambda n: (f"before layer {int(n['layer'])}: lexical IIA " + ", ".join(f"k={k} {n[f'lexical_iia_{k}']:.2f}" for k in DAS_KS)
                               + f"; positional IIA k=8 {n['positional_iia_8']:.2f}"),
            tolerances={"layer": EXACT},
        ),
        Claim(
            key="by_slot",
            statement="Gur-Arieh et al. find LLMs' retrieval weakest for middle slots of long contexts; here accuracy and the lexical interchange hold at every slot of every context size (each ≥ 0.95), with no dip in the middle",
            figure="binding_positional",
            measure=measure_by_slot,
            passes=lambda n: n["acc_min"] >= 0.95 and n["lexical_min"] >= 0.95,
            summary=lambda n: (f"lowest accuracy over slots and sizes {n['acc_min']:.3f} (5 pairs: middle slots {n['acc_middle_5']:.3f}, "
                               f"first and last {n['acc_edges_5']:.3f}); lowest lexical share {n['lexical_min']:.3f}"),
        ),
        Claim(
            key="discovered",
            statement="Automatic discovery (exact edge patching, logit difference, 50 three-pair prompts) finds the lexical route: the largest edge is the embeddings → MLP 0 (at the query, the asked attribute), and at least 2 of the 5 largest are MLP 0 → layer-1 head queries (the retrieval layer); 30 edges (6%) reach faithfulness ≥ 0.85 and the top 20% ≥ 0.95",
            figure="discovery_faithfulness",
            measure=measure_discovered,
            passes=lambda n: (n["top_is_embed_to_m0"] == 1 and n["n_top5_m0_to_layer1_queries"] >= 2
                              and n["faithfulness_30"] >= 0.85 and n["faithfulness_20"] >= 0.95),
            summary=lambda n: (f"top edge embed → m0: {'yes' if n['top_is_embed_to_m0'] else 'no'}; {int(n['n_top5_m0_to_layer1_queries'])} "
                               f"of the top 5 are m0 → layer-1 queries; faithfulness: top {int(n['k_30'])} {n['faithfulness_30']:.3f}, "
                               f"top {int(n['k_20'])} of {int(n['n_edges'])} {n['faithfulness_20']:.3f}; Spearman with exact: "
                               f"EAP {n['spearman_eap']:.3f}, EAP-IG {n['spearman_eap_ig']:.3f}"),
            tolerances={"n_*": EXACT, "k_*": EXACT, "top_is_embed_to_m0": EXACT},
        ),
    ),
)

"""Induction heads in SmolLM2-135M (Olsson et al. 2022; Elhage et al. 2021), as measured claims.

Olsson et al. find in every transformer of two layers or more a pair of heads that together
continue a repeated sequence: a *previous-token head* writes "the token before me was A" into each
position, and an *induction head*, attending from a later A to the token after the earlier A, reads
that note through its keys (K-composition) and copies the next token. Here the same detectors run
on a real pretrained model, 30 layers of grouped-query attention (9 query heads share 3 key/value
heads per layer):

- *Sequences*: ``BOS r r``, where ``r`` is `HALF` tokens drawn (seeded) from the ordinary word tokens
  of the vocabulary (`word_tokens`: a leading space and three or more lowercase letters, 21,185 of
  49,152 ids), so the first copy is unpredictable and the second is predictable only in context.
- *Head detectors* (`interp.heads`): previous-token score (mean attention from i to i - 1) and
  induction score (mean attention from r[i] in the second copy to r[i+1] in the first).
- *Heads are chosen on development sequences* (seed `DEV_SEED`): the induction heads are those
  with an induction score ≥ `INDUCTION_SET` there, the previous-token heads those with a
  previous-token score ≥ `MARKED`. Every claim is measured on held-out sequences (seed
  `HELD_OUT_SEED`, never used while the thresholds were chosen).
- *Ablation*: each chosen head's output (``z``) replaced by its mean over the held-out sequences at
  that position; in-context gain = loss(first half) − loss(repeated half); the control ablates as
  many heads drawn at random (three seeded draws) among the heads neither detector marks.
- *K-composition* (Elhage et al.): ``‖W_OV(sender) W_QK(receiver)ᵀ‖_F / (‖W_OV‖_F ‖W_QK‖_F)`` with
  the grouped-query weights expanded (query head h reads key/value head ``h // 3``) and each layer's
  RMSNorm scale folded into the matrices that read the residual stream (`composition_score_pairs`);
  rotary position embeddings are left out, as in every weight-based composition score. The
  baseline is `N_RANDOM_PAIRS` random (earlier, later) head pairs.

    from interp import circuits
    print(circuits.evaluate("smollm2-induction").table())
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.circuits import EXACT, RELATIVE, WEIGHTS, Card, Claim, Subject
from interp.errors import InputError
from interp.heads import attention_patterns, induction_scores, previous_token_scores
from interp.interventions import Replace
from interp.sites import Site

HALF = 20  # tokens in each copy
N_DEV, N_HELD_OUT = 8, 12  # sequences
DEV_SEED, HELD_OUT_SEED = 0, 1  # thresholds were set on seeds 0 (scores) and 100 (ablation); seed 1 is held out
MARKED = 0.5  # detector score at which a head counts as that kind of head
INDUCTION_SET = 0.3  # the heads ablated and composed: induction score >= this on the development sequences
STRONG = 0.7  # what Olsson et al. report for clear previous-token / induction heads
N_CONTROL_DRAWS = 3  # random head sets ablated as the control
N_RANDOM_PAIRS = 1000  # random head pairs: the composition baseline
WORD = re.compile(r"Ġ[a-z]{3,}")  # byte-level BPE: Ġ is the leading space
Head = tuple[int, int]


# ---------------------------------------------------------------------------- sequences


@cache
def _word_ids(tokens: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(i for i, t in enumerate(tokens) if WORD.fullmatch(t))


def word_tokens(tokenizer) -> Int[Tensor, " n_words"]:
    """The ids of ordinary word tokens: a leading space then three or more lowercase letters."""
    tokens = tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    ids = _word_ids(tokens)
    if len(ids) < 100:
        raise InputError(f"Only {len(ids)} tokens of this tokenizer look like words (a leading 'Ġ' then lowercase "
                         "letters); the induction card needs a byte-level BPE vocabulary such as SmolLM2's or GPT-2's.")
    return torch.tensor(ids)


def repeated_word_tokens(model, n: int, half: int = HALF, seed: int = 0) -> Int[Tensor, "n pos"]:
    """``[n, 1 + 2 * half]``: BOS, ``half`` word tokens drawn uniformly (seeded), the same again."""
    words = word_tokens(model.tokenizer)
    gen = torch.Generator().manual_seed(seed)
    first = words[torch.randint(0, len(words), (n, half), generator=gen)]
    bos = model.to_tokens("")[:1, :1].expand(n, 1)
    return torch.cat([bos, first, first], dim=1)


def _dev(s: Subject) -> Tensor:
    return s.memo("dev_tokens", lambda: repeated_word_tokens(s.model, N_DEV, HALF, DEV_SEED))


def _held_out(s: Subject) -> Tensor:
    return s.memo("held_out_tokens", lambda: repeated_word_tokens(s.model, N_HELD_OUT, HALF, HELD_OUT_SEED))


def head_scores(model, tokens: Int[Tensor, "n pos"], half: int = HALF) -> dict[str, Float[Tensor, "layer head"]]:
    """Previous-token and induction scores of every head on ``BOS r r`` sequences."""
    patterns = attention_patterns(model, tokens)
    return {"prev": previous_token_scores(patterns), "induction": induction_scores(patterns, half)}


def _scores(s: Subject, which: str) -> dict[str, Tensor]:
    return s.memo(f"scores:{which}", lambda: head_scores(s.model, _dev(s) if which == "dev" else _held_out(s)))


def heads_at_least(scores: Float[Tensor, "layer head"], threshold: float) -> list[Head]:
    """Heads whose score is ``>= threshold``, in descending order of score."""
    heads = [(int(a), int(h)) for a, h in torch.nonzero(scores >= threshold)]
    return sorted(heads, key=lambda x: -float(scores[x]))


def chosen_heads(s: Subject) -> dict[str, list[Head]]:
    """The heads the claims ablate and compose, chosen on the development sequences."""
    dev = _scores(s, "dev")
    return {"induction": heads_at_least(dev["induction"], INDUCTION_SET), "prev": heads_at_least(dev["prev"], MARKED),
            "prev_weak": heads_at_least(dev["prev"], INDUCTION_SET)}


def name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


# ---------------------------------------------------------------------------- head detectors


def _detector_numbers(scores: Tensor, n_heads: int) -> dict[str, float]:
    best = int(scores.argmax())
    return {"best_layer": best // n_heads, "best_head": best % n_heads, "best_score": float(scores.max()),
            "n_marked": len(heads_at_least(scores, MARKED)), "n_weak": len(heads_at_least(scores, INDUCTION_SET))}


def measure_previous_token_heads(s: Subject) -> dict[str, float]:
    return _detector_numbers(_scores(s, "held_out")["prev"], s.model.n_heads)


def measure_induction_heads(s: Subject) -> dict[str, float]:
    scores = _scores(s, "held_out")["induction"]
    out = _detector_numbers(scores, s.model.n_heads)
    weak = heads_at_least(scores, INDUCTION_SET)
    out["first_layer"] = min((a for a, _ in weak), default=float("nan"))
    out["n_layers"] = s.model.n_layers
    return out


def _induction_heads_pass(n: dict[str, float]) -> bool:
    late = not np.isnan(n["first_layer"]) and n["first_layer"] >= n["n_layers"] // 2
    return n["best_score"] >= STRONG and n["n_marked"] >= 3 and late


# ---------------------------------------------------------------------------- ablation


def half_losses(logits: Float[Tensor, "n pos vocab"], tokens: Int[Tensor, "n pos"], half: int = HALF) -> dict[str, float]:
    """Mean next-token loss predicting r[1:] inside the first copy and inside the repeated copy."""
    nll = -logits[:, :-1].float().log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return {"first": float(nll[:, 1:half].mean()), "repeated": float(nll[:, half + 1 : 2 * half].mean())}


@torch.no_grad()
def mean_ablation_losses(model, tokens: Int[Tensor, "n pos"], head_sets: list[list[Head]], half: int = HALF) -> list[dict[str, float]]:
    """`half_losses` clean (first entry), then with each set of heads mean-ablated: each head's ``z``
    replaced by its mean over the sequences at each position (one clean forward caches every ``z``)."""
    layers = sorted({a for heads in head_sets for a, _ in heads})
    logits, cache = model.run_with_cache(tokens, [Site("z", a) for a in layers])
    out = [half_losses(logits, tokens, half)]
    for heads in head_sets:
        edits = {}
        for a, h in heads:
            z = cache[Site("z", a)][:, :, h]  # [batch pos d_head]
            edits[Site("z", a, head=h)] = Replace(z.mean(0, keepdim=True).expand_as(z))
        with model.edit(edits):
            out.append(half_losses(model(tokens), tokens, half))
    return out


def control_sets(n_layers: int, n_heads: int, exclude: list[Head], k: int, draws: int, seed: int = 0) -> list[list[Head]]:
    """``draws`` sets of ``k`` heads drawn (seeded) from the heads not in ``exclude``."""
    pool = [(a, h) for a in range(n_layers) for h in range(n_heads) if (a, h) not in set(exclude)]
    gen = torch.Generator().manual_seed(seed)
    return [[pool[i] for i in torch.randperm(len(pool), generator=gen)[:k].tolist()] for _ in range(draws)]


def ablation_numbers(losses: list[dict[str, float]]) -> dict[str, float]:
    """In-context gain (first − repeated loss) clean, with the induction heads ablated (``losses[1]``)
    and with each control set (``losses[2:]``), and the share of the gain each ablation removes."""
    gain = [x["first"] - x["repeated"] for x in losses]
    removed = [1 - g / gain[0] for g in gain[1:]]
    return {"loss_first": losses[0]["first"], "loss_repeated": losses[0]["repeated"],
            "loss_repeated_ablated": losses[1]["repeated"], "gain_clean": gain[0], "gain_ablated": gain[1],
            "removed": removed[0], "control_removed_max": max(removed[1:]), "control_removed_mean": float(np.mean(removed[1:]))}


def measure_ablation(s: Subject) -> dict[str, float]:
    m, chosen = s.model, chosen_heads(s)
    induction = chosen["induction"]
    if not induction:
        raise InputError(f"No head reaches induction score {INDUCTION_SET} on the development sequences: nothing to ablate.")
    controls = control_sets(m.n_layers, m.n_heads, induction + chosen["prev_weak"], len(induction), N_CONTROL_DRAWS)
    numbers = ablation_numbers(mean_ablation_losses(m, _held_out(s), [induction, *controls]))
    return {"n_heads": len(induction), **numbers}


# ---------------------------------------------------------------------------- K-composition


def _weights(model) -> dict[str, Tensor]:
    """A Llama-family model's attention weights by HF name (TransformerLens bridge or plain HF module)."""
    return {n.replace("._original_component", ""): p.detach().float() for n, p in model.module.named_parameters()}


def head_matrices(model) -> dict[str, Float[Tensor, "layer head ..."]]:
    """Per query head, in the ``x @ W`` convention, with each layer's input RMSNorm scale folded into
    the matrices that read the residual stream and grouped key/value heads expanded to the query heads
    they serve: ``W_Q, W_K, W_V`` ``[layer head d_model d_head]``, ``W_O`` ``[layer head d_head d_model]``, and
    the R factors of their QR decompositions ``R_Q, R_K, R_V`` ``[layer head d_head d_head]``, which
    `composition_score_pairs` reads."""
    w = _weights(model)
    layer0 = "model.layers.0.self_attn.q_proj.weight"
    if layer0 not in w:
        raise InputError("head_matrices reads a Llama-family model's q_proj / k_proj / v_proj / o_proj weights "
                         f"(model.layers.L.self_attn.*); this model has no {layer0}.")
    H, d = model.n_heads, model.d_head
    kv = w["model.layers.0.self_attn.k_proj.weight"].shape[0] // d
    group = torch.arange(H) // (H // kv)  # the key/value head each query head reads

    def per_head(a: int, proj: str, heads: int) -> Tensor:
        scale = w[f"model.layers.{a}.input_layernorm.weight"]
        return (scale[:, None] * w[f"model.layers.{a}.self_attn.{proj}_proj.weight"].T).reshape(-1, heads, d).transpose(0, 1)

    out = {"W_Q": [], "W_K": [], "W_V": [], "W_O": []}
    for a in range(model.n_layers):
        out["W_Q"].append(per_head(a, "q", H))
        out["W_K"].append(per_head(a, "k", kv)[group])
        out["W_V"].append(per_head(a, "v", kv)[group])
        out["W_O"].append(w[f"model.layers.{a}.self_attn.o_proj.weight"].T.reshape(H, d, -1))
    mats = {k: torch.stack(v) for k, v in out.items()}
    mats.update({f"R_{k[2]}": torch.linalg.qr(mats[k]).R for k in ("W_Q", "W_K", "W_V")})  # [layer head d d]
    return mats


def composition_score_pairs(mats: dict[str, Tensor], pairs: list[tuple[Head, Head]], mode: str = "K") -> Float[Tensor, " pair"]:
    """Elhage et al.'s composition score of each (sender, receiver) pair, without forming a
    ``d_model × d_model`` product: with ``W_V = Q_V R_V`` (QR), ``W_QK = W_Q W_Kᵀ``,
    ``‖W_V W_O W_K W_Qᵀ‖_F = ‖R_V (W_O W_K) R_Qᵀ‖_F`` (K), and likewise with W_Q and W_K swapped (Q)."""
    if mode not in ("K", "Q"):
        raise InputError(f"mode must be 'K' or 'Q' (which input of the receiver), got {mode!r}.")
    r = {k: mats[f"R_{k[2]}"] if f"R_{k[2]}" in mats else torch.linalg.qr(mats[k]).R for k in ("W_Q", "W_K", "W_V")}
    read, other = ("W_K", "W_Q") if mode == "K" else ("W_Q", "W_K")
    for (a, h), (b, g) in pairs:
        if b <= a:
            raise InputError(f"The sender {name((a, h))} must sit in an earlier layer than the receiver {name((b, g))}.")
    qk_norm = (r["W_Q"] @ r["W_K"].transpose(-1, -2)).flatten(-2).norm(dim=-1)  # ‖W_Q W_Kᵀ‖_F
    out = []
    for chunk in range(0, len(pairs), 256):
        a, h, b, g = torch.tensor([[*p[0], *p[1]] for p in pairs[chunk : chunk + 256]]).T
        sender = r["W_V"][a, h] @ mats["W_O"][a, h]  # [pair d m]: ‖·‖_F = ‖W_OV‖_F
        receiver = mats[read][b, g] @ r[other][b, g].transpose(-1, -2)  # [pair m d]
        out.append((sender @ receiver).flatten(1).norm(dim=1) / (sender.flatten(1).norm(dim=1) * qk_norm[b, g]))
    return torch.cat(out)


def random_pairs(n_layers: int, n_heads: int, n: int, seed: int = 0) -> list[tuple[Head, Head]]:
    """``n`` (sender, receiver) head pairs with the sender in an earlier layer, drawn with a seed."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        a, b = sorted(rng.choice(n_layers, size=2, replace=False).tolist())
        out.append(((a, int(rng.integers(n_heads))), (b, int(rng.integers(n_heads)))))
    return out


def measure_k_composition(s: Subject) -> dict[str, float]:
    m, chosen = s.model, chosen_heads(s)
    mats = s.memo("head_matrices", lambda: head_matrices(m))
    baseline = composition_score_pairs(mats, random_pairs(m.n_layers, m.n_heads, N_RANDOM_PAIRS))
    p99 = float(baseline.quantile(0.99))
    best_k, best_q, above = [], [], []
    for receiver in chosen["induction"]:
        senders = [p for p in chosen["prev"] if p[0] < receiver[0]]
        if not senders:
            best_k.append(0.0)
            best_q.append(0.0)
            above.append(False)
            continue
        k = composition_score_pairs(mats, [(p, receiver) for p in senders])
        best = senders[int(k.argmax())]
        best_k.append(float(k.max()))
        best_q.append(float(composition_score_pairs(mats, [(best, receiver)], "Q")[0]))
        above.append(float(k.max()) > p99)
    return {"n_induction": len(best_k), "prev_k_mean": float(np.mean(best_k)), "prev_q_mean": float(np.mean(best_q)),
            "random_mean": float(baseline.mean()), "random_p99": p99,
            "ratio": float(np.mean(best_k)) / float(baseline.mean()), "share_above_p99": float(np.mean(above))}


def _k_composition_passes(n: dict[str, float]) -> bool:
    return n["ratio"] >= 2 and n["share_above_p99"] >= 0.5 and n["prev_k_mean"] > n["prev_q_mean"]


# ---------------------------------------------------------------------------- the key path


def _mean_induction_score(cache: dict, heads: list[Head], half: int) -> float:
    return float(np.mean([float(induction_scores(cache[Site("pattern", a)][None, None, :, h], half)[0, 0]) for a, h in heads]))


@torch.no_grad()
def key_path_scores(model, tokens: Int[Tensor, "n pos"], prev: list[Head], induction: list[Head], half: int = HALF) -> dict[str, float]:
    """The induction heads' mean induction score clean, with the previous-token heads mean-ablated, and
    with only the keys (or only the queries) of the induction heads' layers taken from that ablated run
    while everything else stays clean. A head's attention pattern depends on its queries and keys
    alone, so the two patched runs split the ablation's effect on the patterns between the two sides."""
    layers = sorted({a for a, _ in induction})
    patterns = [Site("pattern", a) for a in layers]
    prev_layers = sorted({a for a, _ in prev})
    _, z = model.run_with_cache(tokens, [Site("z", a) for a in prev_layers])
    ablate = {Site("z", a, head=h): Replace(z[Site("z", a)][:, :, h].mean(0, keepdim=True).expand_as(z[Site("z", a)][:, :, h]))
              for a, h in prev}
    with model.edit(ablate):
        _, ablated = model.run_with_cache(tokens, [Site(kind, a) for a in layers for kind in ("k", "q")] + patterns)
    _, clean = model.run_with_cache(tokens, patterns)
    out = {"clean": _mean_induction_score(clean, induction, half), "ablated": _mean_induction_score(ablated, induction, half)}
    for kind, label in (("k", "keys"), ("q", "queries")):
        with model.edit({Site(kind, a): Replace(ablated[Site(kind, a)]) for a in layers}):
            _, patched = model.run_with_cache(tokens, patterns)
        out[label] = _mean_induction_score(patched, induction, half)
    return out


def measure_key_path(s: Subject) -> dict[str, float]:
    chosen = chosen_heads(s)
    scores = key_path_scores(s.model, _held_out(s), chosen["prev"], chosen["induction"])
    drop = scores["clean"] - scores["ablated"]
    return {"n_prev": len(chosen["prev"]), **scores, "drop_share": drop / scores["clean"],
            "key_share": (scores["clean"] - scores["keys"]) / drop, "query_share": (scores["clean"] - scores["queries"]) / drop}


# ---------------------------------------------------------------------------- the card

CLAIMS = (
    Claim(
        "previous_token_heads",
        f"Previous-token heads: on held-out repeated word tokens at least 3 heads attend to the previous token with a "
        f"score ≥ {MARKED}, the best ≥ {STRONG}",
        "smollm2_induction_heads", measure_previous_token_heads,
        lambda n: n["best_score"] >= STRONG and n["n_marked"] >= 3,
        lambda n: (f"best L{int(n['best_layer'])}H{int(n['best_head'])}: {n['best_score']:.3f}; {int(n['n_marked'])} heads "
                   f"≥ {MARKED}, {int(n['n_weak'])} ≥ {INDUCTION_SET}"),
        tolerances={"best_layer": EXACT, "best_head": EXACT, "n_*": EXACT},
    ),
    Claim(
        "induction_heads",
        f"Induction heads: at least 3 heads score ≥ {MARKED} (the best ≥ {STRONG}), and every head scoring ≥ "
        f"{INDUCTION_SET} sits in the second half of the layers",
        "smollm2_induction_heads", measure_induction_heads, _induction_heads_pass,
        lambda n: (f"best L{int(n['best_layer'])}H{int(n['best_head'])}: {n['best_score']:.3f}; {int(n['n_marked'])} heads "
                   f"≥ {MARKED}, {int(n['n_weak'])} ≥ {INDUCTION_SET}, the earliest in layer {n['first_layer']:.0f} of "
                   f"{int(n['n_layers'])}"),
        tolerances={"best_layer": EXACT, "best_head": EXACT, "n_*": EXACT, "first_layer": EXACT},
    ),
    Claim(
        "ablation",
        f"Mean-ablating the induction heads (score ≥ {INDUCTION_SET} on development sequences) removes at least 40% of "
        f"the in-context gain (first-half loss − repeated-half loss) on held-out sequences; as many random heads that "
        f"neither detector marks remove at most 10% (each of {N_CONTROL_DRAWS} draws)",
        "smollm2_induction_ablation", measure_ablation,
        lambda n: n["removed"] >= 0.4 and n["control_removed_max"] <= 0.1,
        lambda n: (f"{int(n['n_heads'])} heads: gain {n['gain_clean']:.2f} → {n['gain_ablated']:.2f} nats "
                   f"({100 * n['removed']:.0f}% removed; repeated-half loss {n['loss_repeated']:.2f} → "
                   f"{n['loss_repeated_ablated']:.2f}, first half {n['loss_first']:.2f}); random heads: "
                   f"{100 * n['control_removed_mean']:.1f}% (max {100 * n['control_removed_max']:.1f}%)"),
        tolerances={"n_heads": EXACT, "loss_*": RELATIVE, "gain_*": RELATIVE},
    ),
    Claim(
        "k_composition",
        "K-composition: each induction head's best previous-token sender (score ≥ 0.5, earlier layer) composes with "
        "its keys at ≥ 2 × the mean score of random head pairs (on average over the induction heads), above the random "
        "pairs' 99th percentile for at least half of the induction heads, and more through the keys than the queries",
        "smollm2_induction_composition", measure_k_composition, _k_composition_passes,
        lambda n: (f"best previous-token → induction key {n['prev_k_mean']:.3f} on average over {int(n['n_induction'])} "
                   f"heads ({n['ratio']:.1f} × random pairs' {n['random_mean']:.3f}; above their 99th percentile "
                   f"{n['random_p99']:.3f} for {100 * n['share_above_p99']:.0f}%); same pairs through the queries "
                   f"{n['prev_q_mean']:.3f}"),
        tolerances={"n_induction": EXACT, "*": WEIGHTS},
    ),
    Claim(
        "key_path",
        "K-composition in the forward pass: mean-ablating the previous-token heads lowers the induction heads' mean "
        "induction score by at least half; taking only the keys of the induction heads' layers from that ablated run "
        "reproduces at least 70% of the drop, taking only the queries at most 50%",
        "smollm2_induction_composition", measure_key_path,
        lambda n: n["drop_share"] >= 0.5 and n["key_share"] >= 0.7 and n["query_share"] <= 0.5,
        lambda n: (f"{int(n['n_prev'])} previous-token heads ablated: induction score {n['clean']:.3f} → {n['ablated']:.3f} "
                   f"({100 * n['drop_share']:.0f}% lower); keys alone → {n['keys']:.3f} ({100 * n['key_share']:.0f}% of the "
                   f"drop), queries alone → {n['queries']:.3f} ({100 * n['query_share']:.0f}%)"),
        tolerances={"n_prev": EXACT},
    ),
)

CARD = Card("smollm2-induction", "smollm2-135m", "Induction heads in SmolLM2-135M (a pretrained 30-layer Llama)", CLAIMS,
            test_file="tests/circuits/test_smollm2_induction_card.py")

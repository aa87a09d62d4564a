"""Circuit discovery (`patching.discovery`) against TransformerLens hooks, measured in the same run.

    python -m benchmarks.discovery --threads 1            # induction-2l (key-path prompts) and facts-4l
    python -m benchmarks.discovery --threads 1 --search   # induction-2l's best 10% circuits (minutes)

For each shipped model it prints: EAP's cost in forward-equivalents (its time / one plain
``model(tokens)`` forward of the clean prompts, no grad; target <= 3), EAP-IG's, and exact scores on
every edge against one TransformerLens ``run_with_hooks`` per edge on the same bridge (target >= 10x),
with the largest difference between the two (they compute the same numbers) and the work ratio (the
linear maps' multiply-accumulates of the TL loop over those of our schedule: the speed-up to expect
at equal arithmetic throughput). The TL hook for an edge into a head's q / k / v recomputes that
head's projection from the layer norm of the clean residual stream plus the sender's change; into an
MLP it adds the change to ``hook_resid_mid`` (the MLP's input on the bridge); into the logits to the
last ``hook_resid_post``. Times are CPU time of the process (`time.process_time`: on the shared
2-core machine wall time also counts other jobs' turns, which hit a 40 ms EAP call more often than a
9 ms forward), medians of interleaved runs (forward, EAP and EAP-IG alternate, 11 times; ours and the
TL loop alternate 3 times). auto-circuit (which needs TransformerLens < 3)
is compared in its own virtual environment by ``python -m benchmarks.autocircuit``; see
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks.timing import cpu_time
from interp import zoo
from interp.circuits.induction import key_path_prompts
from interp.tasks import facts
from patching import edge_scores, logit_diff
from patching.discovery import build_graph


def tl_exact(model, prompts) -> torch.Tensor:
    """Each edge's effect from one ``run_with_hooks`` on the TransformerLens bridge."""
    from patching import anatomy

    bridge, g = model.module, build_graph(model)
    net = anatomy.of(model)
    L = model.n_layers
    proj = [net.qkv_weights(layer) for layer in range(L)]  # [H+2KV d_head d_model]: queries, keys, values
    first_row = {"q": 0, "k": net.n_heads, "v": net.n_heads + net.n_kv_heads}
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.attn.hook_z" for layer in range(L)]
    names += [f"blocks.{layer}.hook_mlp_out" for layer in range(L)] if model.has_mlp else []
    names += [f"blocks.{layer}.hook_resid_pre" for layer in range(L)]
    with torch.no_grad():
        clean_logits, clean = bridge.run_with_cache(prompts.clean, names_filter=lambda n: n in names)
        _, corr = bridge.run_with_cache(prompts.corrupted, names_filter=lambda n: n in names)
        base = logit_diff(clean_logits, prompts).double().mean()

    def out(cache, node):
        if node.kind == "input":
            return cache["blocks.0.hook_resid_pre"]
        if node.kind == "mlp":
            return cache[f"blocks.{node.layer}.hook_mlp_out"]
        W_O = bridge.blocks[node.layer].attn.W_O[node.head]  # [d_head d_model]
        return cache[f"blocks.{node.layer}.attn.hook_z"][:, :, node.head] @ W_O

    values = torch.empty(g.n_edges, dtype=torch.float64)
    with torch.no_grad():
        for i, (u, v) in enumerate(g.edges):
            sender, receiver = g.senders[u], g.receivers[v]
            diff = out(corr, sender) - out(clean, sender)
            if receiver.kind == "logits":
                hooks = [(f"blocks.{L - 1}.hook_resid_post", lambda act, hook, d=diff: act + d)]
            elif receiver.kind == "mlp":
                hooks = [(f"blocks.{receiver.layer}.hook_resid_mid", lambda act, hook, d=diff: act + d)]
            else:
                layer, head, kind = receiver.layer, receiver.head, receiver.kind
                resid = clean[f"blocks.{layer}.hook_resid_pre"]

                def hook(act, hook, d=diff, layer=layer, head=head, row=head + first_row[kind], resid=resid):
                    W, b = proj[layer]  # the receiver head's projection of ln1(its input plus the sender's change)
                    new = torch.nn.functional.linear(net.layers[layer]["ln1"](resid + d), W[row], None if b is None else b[row])
                    act = act.clone()
                    act[:, :, head] = new
                    return act

                hooks = [(f"blocks.{layer}.attn.hook_{kind}", hook)]
            logits = bridge.run_with_hooks(prompts.clean, fwd_hooks=hooks)
            values[i] = logit_diff(logits, prompts).double().mean() - base
    return values


def work_ratio(model, prompts) -> float:
    """Multiply-accumulates in the linear maps (projections, MLPs, unembedding) of one full forward per
    edge, over those the edge strictly needs, as the direct engine's exact schedule runs it
    (`patching.discovery._exact_direct`): positions from the first corrupted token p0 on; at its layer
    the receiver's own projection (a query head, or a key / value head) and the output projection of
    the query heads it reaches (one, or ``heads / kv_heads`` under grouped-query attention), or its
    MLP, or the final norm; full layers after it; the answer query alone on the last layer. A bound on
    the speed-up at equal arithmetic throughput, counted from the model anatomy's shapes (attention
    scores left out); `benchmarks.discovery_hf` uses it for Hugging Face models."""
    from patching import anatomy
    from patching.discovery import _first_change

    net, g = anatomy.of(model), build_graph(model)
    L, H, KV, dh, d, V = net.n_layers, net.n_heads, net.n_kv_heads, net.d_head, net.d_model, model.d_vocab
    mlp = 0 if net.attn_only else (3 if net.gated else 2) * d * net.d_mlp
    n, S = len(prompts), prompts.seq_len
    s = S - _first_change(prompts.clean, prompts.corrupted, prompts.answer_pos % S)
    head, layer_all = dh * d, (2 * H + 2 * KV) * dh * d + mlp
    last = n * (s * 2 * KV * head + 2 * H * head + mlp + d * V)  # keys / values everywhere, the rest at the answer
    need = 0
    for _, v in g.edges:
        r = g.receivers[v]
        reached = (1 if r.kind == "q" else H // KV) * head if r.kind in "qkv" else 0  # the written heads' output maps
        if r.kind == "logits":
            need += n * d * V
        elif r.layer == L - 1:
            need += n * ((s * head if r.kind in "kv" else head if r.kind == "q" else 0) + reached + mlp + d * V)
        else:
            need += n * s * (head + reached + mlp if r.kind in "qkv" else mlp) + n * s * layer_all * (L - 2 - r.layer) + last
    return g.n_edges * n * S * (L * layer_all + d * V) / need


def budget_search(pool_size: int = 15, budget: int | None = None) -> None:
    """The best circuits of at most ``budget`` edges (default 10% of the graph) of induction-2l on the
    card's key-path prompts, by two searches that do not trust any one ranking: every subset of that
    size of the ``pool_size`` edges of largest |exact score|, and greedy backward elimination from the
    full graph (remove the edge whose loss costs least faithfulness, down to the budget). Prints the
    best circuits and the elimination path (faithfulness at each size from 20 edges down)."""
    from itertools import combinations

    from interp.circuits.induction import N_DISCOVERY
    from patching import discovery

    model = zoo.load_model("induction-2l")
    prompts = key_path_prompts(N_DISCOVERY, model.d_vocab)
    s = discovery._setup(model, prompts, logit_diff, "auto")
    g, names = s.graph, s.graph.edge_names
    budget = g.n_edges // 10 if budget is None else budget
    exact = edge_scores(model, prompts, logit_diff, "exact", progress=False)
    pool = exact.order()[:pool_size].tolist()

    def mask(edges) -> torch.Tensor:
        out = torch.zeros(g.n_edges, dtype=torch.bool)
        out[list(edges)] = True
        return out

    start = time.perf_counter()
    subsets = list(combinations(pool, budget))
    values = discovery._faithfulness(s, [mask(c) for c in subsets], 128)
    best = values.argsort(descending=True)[:3].tolist()
    print(f"every {budget}-edge subset of the {pool_size} largest |exact| edges ({len(subsets)} circuits, "
          f"{time.perf_counter() - start:.0f} s):")
    for i in best:
        print(f"  {float(values[i]):.4f}  " + ", ".join(names[e] for e in subsets[i]))
    start = time.perf_counter()
    kept = torch.ones(g.n_edges, dtype=torch.bool)
    while int(kept.sum()) > budget:
        left = torch.nonzero(kept).flatten().tolist()
        trials = [kept.clone() for _ in left]
        for trial, e in zip(trials, left, strict=True):
            trial[e] = False
        values = discovery._faithfulness(s, trials, 128)
        j = int(values.argmax())
        kept = trials[j]
        if int(kept.sum()) <= 20:
            print(f"  backward elimination: {int(kept.sum()):2d} edges, faithfulness {float(values[j]):.4f} (removed {names[left[j]]})")
    print(f"backward elimination ({time.perf_counter() - start:.0f} s) keeps: " + ", ".join(names[e] for e in torch.nonzero(kept).flatten().tolist()))


def cases():
    ind = zoo.load_model("induction-2l")
    fm = zoo.load_model("facts-4l")
    kb = facts.KnowledgeBase.build(seed=0)
    return [
        ("induction-2l", ind, key_path_prompts(32, ind.d_vocab)),
        ("facts-4l", fm, kb.fact_prompts("born_in", template=0, subjects=list(range(0, 300, 6)), seed=0)),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--search", action="store_true", help="search induction-2l's best 10%% circuits instead (minutes)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.search:
        budget_search()
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU time; load average {os.getloadavg()[0]:.2f}")
    header = (f"| {'model':13} | {'prompts':9} | {'edges':5} | {'forward':8} | {'EAP':7} | {'EAP fwd-eq':10} | {'EAP-IG fwd-eq':13} "
              f"| {'exact':7} | {'TL per edge':11} | {'speed-up':11} | {'work ratio':10} | {'max diff':8} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, model, prompts in cases():
        g = build_graph(model)
        with torch.no_grad():
            model(prompts.clean)  # warm-up (the bridge wires its capture hooks at the first forward)
        edge_scores(model, prompts, logit_diff, "eap", progress=False)  # warm-up
        runs = {"fwd": lambda m=model, p=prompts: torch.no_grad()(m)(p.clean),
                "eap": lambda m=model, p=prompts: edge_scores(m, p, logit_diff, "eap", progress=False),
                "ig": lambda m=model, p=prompts: edge_scores(m, p, logit_diff, "eap_ig", progress=False)}
        times = {key: [] for key in runs}
        for _ in range(11):  # interleaved
            for key, fn in runs.items():
                times[key].append(cpu_time(fn)[0])
        t_fwd, t_eap, t_ig = (statistics.median(times[key]) for key in runs)
        ours, theirs, t_ours, t_tl = [], [], [], []
        for _ in range(3):  # interleaved
            t, out = cpu_time(lambda m=model, p=prompts: edge_scores(m, p, logit_diff, "exact", progress=False).scores)
            ours.append(out), t_ours.append(t)
            t, out = cpu_time(lambda m=model, p=prompts: tl_exact(m, p))
            theirs.append(out), t_tl.append(t)
        t_ex, t_t = statistics.median(t_ours), statistics.median(t_tl)
        diff = float((ours[0] - theirs[0]).abs().max())
        eq = t_eap / t_fwd
        print(f"| {name:13} | {len(prompts):3d} x {prompts.seq_len:3d} | {g.n_edges:5d} | {1e3 * t_fwd:6.1f}ms | {t_eap:6.3f}s | "
              f"{eq:6.2f} {'PASS' if eq <= 3 else 'FAIL'} | {t_ig / t_fwd:13.2f} | {t_ex:6.2f}s | {t_t:10.2f}s | "
              f"{t_t / t_ex:6.1f}x {'PASS' if t_t / t_ex >= 10 else 'FAIL'} | {work_ratio(model, prompts):9.1f}x | {diff:8.1e} |")


if __name__ == "__main__":
    main()

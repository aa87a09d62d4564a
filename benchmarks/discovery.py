"""Circuit discovery (`patching.discovery`) against TransformerLens hooks, measured in the same run.

    python -m benchmarks.discovery                 # induction-2l (key-path prompts) and facts-4l
    python -m benchmarks.discovery --threads 1

For each shipped model it prints: EAP's cost in forward-equivalents (its time / one plain
``model(tokens)`` forward of the clean prompts, no grad; target <= 3), EAP-IG's, and exact scores on
every edge against one TransformerLens ``run_with_hooks`` per edge on the same bridge (target >= 10x),
with the largest difference between the two (they compute the same numbers). The TL hook for an edge
into a head's q / k / v recomputes that head's projection from the layer norm of the clean residual
stream plus the sender's change; into an MLP it adds the change to ``hook_resid_mid`` (the MLP's
input on the bridge); into the logits to the last ``hook_resid_post``. Times are medians of
interleaved runs. auto-circuit is not compared: it needs TransformerLens < 3 (its ``HookedTransformer``),
so only a separate virtual environment with a second torch could run it; see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks.timing import timed
from interp import zoo
from interp.circuits.induction import key_path_prompts
from interp.tasks import facts
from patching import edge_scores, logit_diff
from patching.discovery import build_graph


def tl_exact(model, prompts) -> torch.Tensor:
    """Each edge's effect from one ``run_with_hooks`` on the TransformerLens bridge."""
    from patching.fast import _Native

    bridge, g = model.module, build_graph(model)
    net = _Native(bridge.original_model)
    L = model.n_layers
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

                def hook(act, hook, d=diff, layer=layer, head=head, kind=kind, resid=resid):
                    lin = net.layers[layer][kind]
                    new = lin(net.layers[layer]["ln1"](resid + d)).view(*act.shape)[:, :, head]
                    act = act.clone()
                    act[:, :, head] = new
                    return act

                hooks = [(f"blocks.{layer}.attn.hook_{kind}", hook)]
            logits = bridge.run_with_hooks(prompts.clean, fwd_hooks=hooks)
            values[i] = logit_diff(logits, prompts).double().mean() - base
    return values


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
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    header = f"| {'model':13} | {'prompts':9} | {'edges':5} | {'forward':8} | {'EAP':7} | {'EAP fwd-eq':10} | {'EAP-IG fwd-eq':13} | {'exact':7} | {'TL per edge':11} | {'speed-up':8} | {'max diff':8} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, model, prompts in cases():
        g = build_graph(model)
        with torch.no_grad():
            model(prompts.clean)  # warm-up (the bridge wires its capture hooks at the first forward)
        t_fwd, _ = timed(lambda m=model, p=prompts: torch.no_grad()(m)(p.clean), runs=11)
        t_eap, _ = timed(lambda m=model, p=prompts: edge_scores(m, p, logit_diff, "eap", progress=False), runs=5)
        t_ig, _ = timed(lambda m=model, p=prompts: edge_scores(m, p, logit_diff, "eap_ig", progress=False), runs=3)
        ours, theirs, t_ours, t_tl = [], [], [], []
        for _ in range(3):  # interleaved
            t = time.perf_counter()
            ours.append(edge_scores(model, prompts, logit_diff, "exact", progress=False).scores)
            t_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs.append(tl_exact(model, prompts))
            t_tl.append(time.perf_counter() - t)
        t_ex, t_t = statistics.median(t_ours), statistics.median(t_tl)
        diff = float((ours[0] - theirs[0]).abs().max())
        eq = t_eap / t_fwd
        print(f"| {name:13} | {len(prompts):3d} x {prompts.seq_len:3d} | {g.n_edges:5d} | {1e3 * t_fwd:6.1f}ms | {t_eap:6.3f}s | "
              f"{eq:6.2f} {'PASS' if eq <= 3 else 'FAIL'} | {t_ig / t_fwd:13.2f} | {t_ex:6.2f}s | {t_t:10.2f}s | "
              f"{t_t / t_ex:5.1f}x {'PASS' if t_t / t_ex >= 10 else 'FAIL'} | {diff:8.1e} |")


if __name__ == "__main__":
    main()

"""Circuit discovery on Hugging Face models through the model anatomy, against the hook engine and a
TransformerLens hook run per edge, measured in the same run.

    python -m benchmarks.discovery_hf --threads 1                    # SmolLM2-135M, GPT-2-small and Pythia-160M shapes
    python -m benchmarks.discovery_hf --threads 1 --models smollm2   # one of them
    python -m benchmarks.discovery_hf --threads 1 --circuits         # SmolLM2 circuits: anatomy vs hooks
    python -m benchmarks.discovery_hf --threads 1 --acdc 0.01 --models smollm2   # ACDC on every edge (tens of minutes)

Cases: SmolLM2-135M (the real model, `interp.load("smollm2-135m")`; Llama, grouped-query attention,
RMSNorm, rotary, gated MLP) on 8 IOI prompts (`interp.tasks.ioi`, 15 tokens, clean and corrupted
differing at the second subject); random GPT-2-small and Pythia-160M (parallel residual, partial
rotary) with their real vocabularies on 8 random 15-token prompts differing from the same position.
All on the TransformerLens backend. For each it prints, in CPU time of this process (one thread;
`time.process_time`, as `benchmarks.discovery`: on a shared machine wall time also counts other
jobs' turns), medians of interleaved runs:

- one plain ``model(tokens)`` forward of the clean prompts (no grad): the unit of forward-equivalents;
- EAP and EAP-IG (5 steps) on the anatomy (targets: <= 3 and <= 12 forward-equivalents) and, where
  the hook engine runs (not on parallel-residual blocks), EAP on it, with the largest difference;
- exact scores of every edge, both sides sampled and extrapolated to the whole graph: ours on a
  random sample of edges (``--sample``, through ``edge_scores(..., edges=...)``, grouped by receiver
  as a full run is, so small samples overstate our per-edge cost), and one TransformerLens hook run
  per edge on a smaller sample (``--tl-sample``: the edge's receiver input recomputed in a hook on
  the bridge, as `benchmarks.discovery`'s TL loop does), with the largest difference on the edges
  both scored; the *bound* column is the arithmetic bound of a per-edge recomputation (the linear
  maps' multiply-accumulates of one full forward per edge over those that edge strictly needs: its
  receiver's head or MLP at its layer, every later layer at positions p0.., the answer query alone on
  the last layer, counted from the shapes as `benchmarks.discovery.work_ratio` does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks.discovery import work_ratio
from benchmarks.timing import cpu_time
from interp.sites import Site
from interp.tasks import PromptSet
from patching import anatomy, edge_scores, logit_diff
from patching.discovery import build_graph

N, S, FIRST_DIFF = 8, 15, 10  # the random models' prompts: IOI's shape


def random_case(name: str, root: Path):
    """A random GPT-2-small or Pythia-160M (seeded) saved and loaded on the TransformerLens backend."""
    import transformers as T

    import interp
    from interp.tokenizers import word_tokenizer

    torch.manual_seed(0)
    if name == "gpt2-small":
        hf = T.GPT2LMHeadModel(T.GPT2Config())
    else:
        hf = T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
            num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072, vocab_size=50304,
            rotary_pct=0.25, use_parallel_residual=True))
    path = root / name
    hf.eval().save_pretrained(path)
    word_tokenizer([f"w{i}" for i in range(1, 200)]).save_pretrained(path)
    model = interp.load(path, backend="transformer_lens")
    g = torch.Generator().manual_seed(0)
    V = model.d_vocab
    clean = torch.randint(0, V, (N, S), generator=g)
    corrupted = torch.randint(0, V, (N, S), generator=g)
    corrupted[:, :FIRST_DIFF] = clean[:, :FIRST_DIFF]
    return model, PromptSet(clean, corrupted, torch.randint(0, V, (N,), generator=g), torch.randint(0, V, (N,), generator=g))


def smollm2_case():
    import interp
    from interp.tasks.ioi import ioi_prompts

    model = interp.load("smollm2-135m")
    return model, ioi_prompts(model, N, seed=0)


def tl_edge(model, prompts: PromptSet, g, net, clean: dict, corr: dict, base: float, i: int) -> float:
    """Edge ``i``'s exact score from one hook run of the whole model (`HookedModel.run` on the bridge)."""
    u, v = g.edges[i]
    sender, receiver = g.senders[u], g.receivers[v]

    def out(cache, node):
        if node.kind == "input":
            return cache[Site("resid_pre", 0)]
        if node.kind == "mlp":
            return cache[Site("mlp_out", node.layer)]
        W_O, _ = net.o_weights(node.layer)  # [d (H dh)]
        dh = net.d_head
        return cache[Site("z", node.layer)][:, :, node.head] @ W_O[:, node.head * dh : (node.head + 1) * dh].T

    diff = out(corr, sender) - out(clean, sender)
    if receiver.kind == "logits":
        edits = [(Site("resid_post", net.n_layers - 1), lambda act: act + diff)]
    elif receiver.kind == "mlp":
        edits = [(Site("resid_mid", receiver.layer), lambda act: act + diff)]
    else:
        layer, head, kind = receiver.layer, receiver.head, receiver.kind
        W, b = net.qkv_weights(layer)
        row = head + {"q": 0, "k": net.n_heads, "v": net.n_heads + net.n_kv_heads}[kind]
        h = net.layers[layer]["ln1"](clean[Site("resid_pre", layer)] + diff)
        new = h @ W[row].T + (0 if b is None else b[row])

        def edit(act, new=new, head=head):
            act = act.clone()
            act[:, :, head] = new.to(act.dtype)
            return act

        edits = [(Site(kind, layer), edit)]
    logits, _ = model.run(prompts.clean, edits=edits)
    return float(logit_diff(logits, prompts).double().mean()) - base


def tl_exact(model, prompts: PromptSet, picks: list[int]) -> torch.Tensor:
    """The exact scores of edges ``picks`` from one TL hook run each (the caches are taken once)."""
    g, net = build_graph(model), anatomy.of(model)
    L = model.n_layers
    sites = [Site("resid_pre", layer) for layer in range(L)] + [Site("z", layer) for layer in range(L)]
    sites += [Site("mlp_out", layer) for layer in range(L)] if model.has_mlp else []
    with torch.no_grad():
        logits, clean = model.run_with_cache(prompts.clean, sites)
        _, corr = model.run_with_cache(prompts.corrupted, sites)
        base = float(logit_diff(logits, prompts).double().mean())
        return torch.tensor([tl_edge(model, prompts, g, net, clean, corr, base, i) for i in picks], dtype=torch.float64)


def measure(name: str, model, prompts: PromptSet, sample: int, tl_sample: int, rounds: int) -> str:
    g = build_graph(model)
    hooks_ok = not anatomy.parallel_residual(model)
    with torch.no_grad():
        model(prompts.clean)  # warm-up
    edge_scores(model, prompts, logit_diff, "eap", progress=False)
    runs = {"fwd": lambda: torch.no_grad()(model)(prompts.clean),
            "eap": lambda: edge_scores(model, prompts, logit_diff, "eap", progress=False),
            "ig": lambda: edge_scores(model, prompts, logit_diff, "eap_ig", steps=5, progress=False)}
    times = {key: [] for key in runs}
    for _ in range(rounds):  # interleaved
        for key, fn in runs.items():
            times[key].append(cpu_time(fn)[0])
    t_fwd, t_eap, t_ig = (statistics.median(times[key]) for key in runs)
    eap = edge_scores(model, prompts, logit_diff, "eap", progress=False)
    hook_cell, diff_eap = "n/a (parallel)", float("nan")
    if hooks_ok:
        t_hooks, hooks = cpu_time(lambda: edge_scores(model, prompts, logit_diff, "eap", engine="hooks", progress=False))
        diff_eap = float((eap.scores - hooks.scores).abs().max())
        hook_cell = f"{t_hooks / t_fwd:6.1f}"
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(g.n_edges, generator=gen).tolist()
    if not hooks_ok:  # no hook site at a parallel block's MLP input: the TL sample skips MLP receivers
        tl_pool = [i for i in order if g.receivers[g.edges[i][1]].kind != "mlp"]
    else:
        tl_pool = order
    tl_picks = sorted(tl_pool[:tl_sample])
    ours_picks = sorted(set(order[:sample]) | set(tl_picks))
    t_ours, ours = cpu_time(lambda: edge_scores(model, prompts, logit_diff, "exact", edges=ours_picks, progress=False))
    t_tl, theirs = cpu_time(lambda: tl_exact(model, prompts, tl_picks))
    per_ours, per_tl = t_ours / len(ours_picks), t_tl / len(tl_picks)
    diff_exact = float((ours.scores[tl_picks] - theirs).abs().max())
    return (f"| {name:12} | {len(prompts)} x {prompts.seq_len} | {g.n_edges:6d} | {1e3 * t_fwd:6.0f}ms | {t_eap / t_fwd:5.2f} "
            f"{'PASS' if t_eap / t_fwd <= 3 else 'FAIL'} | {t_ig / t_fwd:5.2f} {'PASS' if t_ig / t_fwd <= 12 else 'FAIL'} | "
            f"{hook_cell} | {diff_eap:7.1e} | {per_ours * g.n_edges:7.0f}s | {per_tl * g.n_edges:8.0f}s | "
            f"{per_tl / per_ours:6.1f}x | {work_ratio(model, prompts):6.1f}x | {diff_exact:7.1e} |")


def circuits() -> None:
    """Faithfulness of SmolLM2's top-200 / 2,000 / 20,000 EAP edges on 4 IOI prompts, on the anatomy
    and on the hook engine: the values, their largest difference and each engine's CPU time."""
    from interp.tasks.ioi import ioi_prompts
    from patching import faithfulness

    model, _ = smollm2_case()
    prompts = ioi_prompts(model, 4, seed=0)
    masks = [edge_scores(model, prompts, logit_diff, "eap", progress=False).circuit(k=k).edges for k in (200, 2000, 20000)]
    t_fast, fast = cpu_time(lambda: faithfulness(model, prompts, logit_diff, masks))
    t_hooks, hooks = cpu_time(lambda: faithfulness(model, prompts, logit_diff, masks, engine="hooks"))
    print(f"faithfulness (k = 200, 2000, 20000): anatomy {[round(v, 4) for v in fast.tolist()]} in {t_fast:.1f} s CPU; "
          f"hooks {[round(v, 4) for v in hooks.tolist()]} in {t_hooks:.1f} s CPU; max diff {float((fast - hooks).abs().max()):.1e}")


def run_acdc(name: str, tau: float, n_prompts: int) -> None:
    """ACDC on every edge of ``name`` (SmolLM2-135M with ``n_prompts`` IOI prompts, or a random shape
    with the table's prompts), on the anatomy: its CPU and wall time, the edges it keeps, the
    faithfulness it reports for its circuit and that circuit's faithfulness measured again by
    `faithfulness` (anatomy and hooks; hooks not on a parallel-residual model)."""
    from interp.tasks.ioi import ioi_prompts
    from patching import acdc

    with tempfile.TemporaryDirectory() as tmp:
        model, prompts = smollm2_case() if name == "smollm2" else random_case(name, Path(tmp))
        if name == "smollm2":
            prompts = ioi_prompts(model, n_prompts, seed=0)
        wall = time.perf_counter()
        t, circuit = cpu_time(lambda: acdc(model, prompts, logit_diff, tau=tau))
        wall = time.perf_counter() - wall
        again = circuit.faithfulness(model, prompts, logit_diff)
        hooks = "n/a" if anatomy.parallel_residual(model) else f"{circuit.faithfulness(model, prompts, logit_diff, engine='hooks'):.4f}"
    print(f"ACDC tau={tau:g}, {name}, {len(prompts)} x {prompts.seq_len} prompts: kept {circuit.n_edges} of "
          f"{circuit.graph.n_edges} edges in {t:.0f} s CPU ({wall:.0f} s wall); faithfulness reported {circuit.value:.4f}, "
          f"measured again {again:.4f} (anatomy), {hooks} (hooks)", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=["smollm2", "gpt2-small", "pythia-160m"])
    parser.add_argument("--sample", type=int, default=600, help="edges our exact scores run on (extrapolated)")
    parser.add_argument("--tl-sample", type=int, default=12, help="edges the TL loop runs on (extrapolated)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--circuits", action="store_true", help="SmolLM2 faithfulness on the anatomy and on hooks instead")
    parser.add_argument("--acdc", type=float, default=None, metavar="TAU", help="ACDC on each model at this tau instead (tens of minutes each)")
    parser.add_argument("--prompts", type=int, default=N, help="with --acdc: IOI prompts")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.circuits or args.acdc is not None:
        if args.circuits:
            circuits()
        for name in args.models if args.acdc is not None else []:
            run_acdc(name, args.acdc, args.prompts)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU time; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    header = ("| model        | prompts | edges  | forward  | EAP fwd-eq | EAP-IG fwd-eq | EAP hooks fwd-eq | EAP diff "
              "| exact (all) | TL (all)  | speed-up | bound  | max diff |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model, prompts = smollm2_case() if name == "smollm2" else random_case(name, Path(tmp))
            print(measure(name, model, prompts, args.sample, args.tl_sample, args.rounds), flush=True)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

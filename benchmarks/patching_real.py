"""SmolLM2-135M, a real pretrained model, against TransformerLens 4, measured in the same run.

    python -m benchmarks.patching --real --threads 1             # sweeps at 4 x 16 and 8 x 64, 20 facts traced, collection
    python -m benchmarks.patching --real --quick --threads 1     # 4 x 16 only, 4 facts traced (about 10 minutes)

``interp.load("smollm2-135m")`` (Llama, 30 layers, d_model 576, 9 query / 3 key-value heads,
vocabulary 49,152) on the default backend; TL's side runs on its ``.module``, the TransformerBridge.
Every time is CPU time of the process (`benchmarks.patching_hf.clock`; run with ``--threads 1``).

1. **Patching sweeps**, as ``--hf`` measures them (`benchmarks.patching_hf.run_cell`: the same
   sampling and extrapolation, the same work ratio): resid_pre [layer pos], z [layer head] (all
   positions), z [layer pos head], patched by `activation_patch` (engine auto: the fast engine) and
   by ``transformer_lens.patching.generic_activation_patch`` on sampled cells; prompts of random
   tokens (``<|endoftext|>`` first) whose clean and corrupted versions share positions 0-4, at 4 x 16
   and 8 x 64 tokens; metric `logit_diff`. Targets at 4 x 16: 10x, 4x, 15x.
2. **Causal tracing** of ``--facts`` facts that SmolLM2 knows (`interp.tasks.world_facts`, all of one
   token length): `patching.causal_trace` (kinds ``("resid",)``, 10 noise samples, the engine it
   picks) against a plain TransformerLens loop written here (`tl_trace`): per prompt a clean
   ``run_with_cache``, noise on the subject's embeddings through ``hook_embed``, and per layer x
   position one ``run_with_hooks`` over the noise samples that restores the clean residual stream
   there (``blocks.{l}.hook_resid_post``, the state ``causal_trace``'s "resid" restores; it is
   ``hook_resid_pre`` of layer l + 1). The loop uses the trace's own noise (`TraceResult.noise`), so
   both give the same probabilities; it runs ``--sample`` / 8 random cells per prompt (all prompts),
   and its time for every cell is extrapolated (per-prompt runs once, cells scaled).
3. **Probe collection**: `probes.collect` of resid_post at all 30 layers, last position, on 64 fact
   prompts, against a plain ``model(tokens)`` forward of the same tokens (no grad), interleaved.
"""

from __future__ import annotations

import os
import statistics

import torch

import interp
from benchmarks.patching_hf import (
    SWEEPS,
    TARGETS,
    body_and_unembed,
    clock,
    fmt,
    make_prompts,
    run_cell,
)
from interp.tasks import PromptSet, world_facts
from patching import causal_trace
from probes import collect

NAME = "smollm2-135m"
REGIMES = [(4, 16), (8, 64)]
QUICK_REGIMES = [(4, 16)]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# =============================================================================== 1. sweeps
def sweeps(model, quick: bool, full: bool, sample: int, seed: int, rounds: int) -> list[dict]:
    from patching.anatomy import hf_model

    hf = hf_model(model)
    rows = []
    for n, seq in QUICK_REGIMES if quick else REGIMES:
        prompts = make_prompts(n, seq, model.d_vocab, seed)
        prompts.clean[:, 0] = prompts.corrupted[:, 0] = 0  # <|endoftext|> first, as to_tokens puts it
        body, unembed = body_and_unembed(hf, prompts.corrupted)
        for sweep in SWEEPS:
            per = None if full else (sample if seq <= 16 else max(4, sample // 4))  # 8 x 64: a quarter
            row = run_cell(model, model.module, prompts, sweep, per, seed, rounds, body, unembed, ours_full=seq <= 16)
            row.update(model=NAME, backend="transformer_lens", regime=f"{n}x{seq}", target=TARGETS[(sweep[0], (n, seq))])
            rows.append(row)
            print(fmt(row), flush=True)
    return rows


# =============================================================================== 2. causal tracing
def known_prompts(model, n_facts: int) -> PromptSet:
    """``n_facts`` facts SmolLM2 knows, all of the most common prompt length, spread over the relations."""
    groups = world_facts.fact_prompts(model, world_facts.FACTS)
    n_tokens = max(groups, key=lambda k: len(groups[k]))
    known = world_facts.known_facts(model, groups[n_tokens].metadata["facts"], progress=False)
    by_relation: dict[str, list] = {}
    for f in known:
        by_relation.setdefault(f.relation, []).append(f)
    picked: list = []
    while len(picked) < min(n_facts, len(known)):  # round robin over relations
        for facts in by_relation.values():
            if facts and len(picked) < n_facts:
                picked.append(facts.pop(0))
    return world_facts.fact_prompts(model, picked)[n_tokens]


def tl_trace(bridge, prompts: PromptSet, result, cells_per_prompt: int, seed: int) -> dict:
    """The plain TransformerLens loop of causal tracing (resid) on ``cells_per_prompt`` random
    (layer, position) cells of every prompt, with ``result``'s noise: its CPU time extrapolated to
    every cell, and the largest difference from ``result`` on the cells it ran."""
    L, n_pos = bridge.cfg.n_layers, prompts.seq_len
    g = torch.Generator().manual_seed(seed)
    t_fixed = t_cells = 0.0
    diff = diff_corrupted = 0.0
    resid_post = [f"blocks.{layer}.hook_resid_post" for layer in range(L)]
    for i in range(len(prompts)):
        row, answer = prompts.clean[i : i + 1], int(prompts.answers[i])
        subject = result.subject_positions[i]
        eps = result.noise[i, :, : len(subject)]  # [sample subject d_model], drawn by causal_trace
        samples = eps.shape[0]
        noise = torch.zeros(samples, n_pos, eps.shape[-1])
        noise[:, subject] = eps
        rows = row.expand(samples, n_pos)

        def add_noise(act, hook, noise=noise):
            return act + noise.to(act.dtype)

        start = clock()
        with torch.no_grad():
            _, cache = bridge.run_with_cache(row, names_filter=lambda name: name in resid_post)
            logits = bridge.run_with_hooks(rows, fwd_hooks=[("hook_embed", add_noise)])
        p_corrupted = float(logits[:, -1].float().softmax(-1)[:, answer].mean())
        t_fixed += clock() - start
        diff_corrupted = max(diff_corrupted, abs(p_corrupted - float(result.p_corrupted[i])))
        for cell in torch.randperm(L * n_pos, generator=g)[:cells_per_prompt].tolist():
            layer, pos = divmod(cell, n_pos)

            def restore(act, hook, pos=pos, clean=cache[resid_post[layer]]):
                act = act.clone()
                act[:, pos] = clean[:, pos]
                return act

            start = clock()
            with torch.no_grad():
                logits = bridge.run_with_hooks(rows, fwd_hooks=[("hook_embed", add_noise), (resid_post[layer], restore)])
            p = float(logits[:, -1].float().softmax(-1)[:, answer].mean())
            t_cells += clock() - start
            diff = max(diff, abs(p - float(result.probs["resid"][i, layer, pos])))
    cells = len(prompts) * min(cells_per_prompt, L * n_pos)
    return dict(tl_s=t_fixed + t_cells * (L * n_pos) / min(cells_per_prompt, L * n_pos), sampled=cells,
                cells=len(prompts) * L * n_pos, max_diff=diff, max_diff_corrupted=diff_corrupted,
                tl_fixed_s=t_fixed, tl_per_cell_s=t_cells / cells)


def tracing(model, n_facts: int, samples: int, cells_per_prompt: int, seed: int) -> dict:
    prompts = known_prompts(model, n_facts)
    t_ours, result = timed_once(lambda: causal_trace(model, prompts, kinds=("resid",), samples=samples, seed=seed,
                                                     progress=False))
    row = dict(facts=len(prompts), tokens=prompts.seq_len, samples=samples, ours_s=t_ours,
               relations=sorted({f.relation for f in prompts.metadata["facts"]}))
    row.update(tl_trace(model.module, prompts, result, cells_per_prompt, seed))
    row["speedup"] = row["tl_s"] / row["ours_s"]
    print(fmt_trace(row), flush=True)
    return row


def timed_once(fn):
    start = clock()
    out = fn()
    return clock() - start, out


def fmt_trace(r: dict) -> str:
    return (f"causal trace, {r['facts']} known facts x {r['tokens']} tokens, resid, {r['samples']} samples: "
            f"ours {r['ours_s']:.1f} s  plain TL loop {r['tl_s']:.1f} s ({r['sampled']} of {r['cells']} cells run, "
            f"{r['tl_per_cell_s']:.3f} s each; per-prompt runs {r['tl_fixed_s']:.1f} s)  x{r['speedup']:.1f}  "
            f"diff {r['max_diff']:.1e} [{'PASS' if r['max_diff'] <= 1e-4 else 'FAIL'}] "
            f"(p_corrupted {r['max_diff_corrupted']:.1e})")


# =============================================================================== 3. collection
def collection(model, n_prompts: int, rounds: int) -> dict:
    groups = world_facts.fact_prompts(model, world_facts.FACTS)
    tokens = groups[max(groups, key=lambda k: len(groups[k]))].clean[:n_prompts]
    sites = [interp.Site("resid_post", layer) for layer in range(model.n_layers)]

    def forward():
        with torch.no_grad():
            return model(tokens)

    def collecting():
        return collect(model, tokens, sites, positions="last", batch_size=64, progress=False)

    forward()
    assert len(collecting()) == len(tokens)  # one warm-up call of each
    t_fwd, t_col = [], []
    for r in range(rounds):
        for fn in (forward, collecting) if r % 2 == 0 else (collecting, forward):
            (t_fwd if fn is forward else t_col).append(timed_once(fn)[0])
    row = dict(prompts=tokens.shape[0], tokens=tokens.shape[1], sites=len(sites), forward_s=statistics.median(t_fwd),
               collect_s=statistics.median(t_col))
    row["ratio"] = row["collect_s"] / row["forward_s"]
    print(fmt_collect(row), flush=True)
    return row


def fmt_collect(r: dict) -> str:
    return (f"collect resid_post x {r['sites']} layers, last position, {r['prompts']} x {r['tokens']} tokens: "
            f"{r['collect_s']:.3f} s; plain forward {r['forward_s']:.3f} s; ratio collect / forward {r['ratio']:.2f} "
            f"[<=1.25: {'PASS' if r['ratio'] <= 1.25 else 'FAIL'}]")


# =============================================================================== main
def main(args) -> dict:
    print(f"SmolLM2-135M: torch {torch.__version__}, threads {torch.get_num_threads()}, load average {load_average()} "
          f"on {os.cpu_count()} CPUs; process CPU time; sweeps: {args.sample} sampled TL cells per sweep "
          f"(a quarter at 8 x 64), medians of {args.rounds} interleaved rounds, times scaled to the whole sweep")
    model = interp.load(NAME)
    out = dict(sweeps=sweeps(model, args.quick, args.full, args.sample, args.seed, args.rounds))
    print(f"load average: {load_average()}", flush=True)
    out["trace"] = tracing(model, 4 if args.quick else 20, 10, max(1, args.sample // 8), args.seed)
    print(f"load average: {load_average()}", flush=True)
    out["collect"] = collection(model, 64, 3 if args.quick else 7)
    print(f"load average after: {load_average()}")
    return out

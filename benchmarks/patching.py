"""Activation-patching sweeps against TransformerLens 4, measured in the same run.

    python -m benchmarks.patching            # full: every TL sweep run completely
    python -m benchmarks.patching --quick    # TL's head x layer x position sweep on a sample of cells
    python -m benchmarks.patching --quick --threads 1   # on a shared machine: 2 threads thrash under load
    python -m benchmarks.patching --real --threads 1    # SmolLM2-135M (benchmarks/patching_real.py)

For each model (the shipped ``induction-2l``; a random 4-layer d_model-128 model with MLPs) and
regime (1 prompt x 16 tokens; 8 prompts x 32 tokens) and sweep (resid_pre by position; head_out
over all positions; head_out by position) it prints our time (`activation_patch`, engine auto =
`patching.fast`), TransformerLens' (``transformer_lens.patching.get_act_patch_*`` on the bridge with a
clean cache from ``run_with_cache``), the speed-up, the largest difference between the two results,
and the work ratio: our time / the time the sweep strictly needs, estimated as one plain forward
(the native module, no grad) per intervention scaled by the fraction of token-layers it must
recompute: (L - l) / L of the layers and (S - p) / S of the positions, for a patch at layer l and
position p (p = 0 for a patch at every position). Times are medians; ours and TL's are measured
interleaved (`timed_pair`) so that both see the same load. ``--differ-at-start`` corrupts the token after BOS as well (no shared prefix).
Also attribution patching of every layer x position x head site (hook_z), in units of one plain
``model(tokens)`` forward. Targets print PASS / FAIL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens' sweeps draw progress bars

import pandas as pd
import torch
import transformer_lens.patching as tlp

import interp
from interp.models import build_native
from interp.recipes import INDUCTION_CONFIG
from interp.tasks import PromptSet, induction
from interp.tokenizers import word_tokenizer
from patching import activation_patch, attribution_patch, logit_diff, metrics

D_VOCAB = 64
MLP_CONFIG = dict(
    n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=D_VOCAB, n_ctx=64, attn_only=False,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)
REGIMES = [(1, 16), (8, 32)]
TARGET_SPEEDUP = {(1, 16): 20.0, (8, 32): 4.0}


def timed(fn, budget: float = 1.0, min_runs: int = 3, max_runs: int = 101) -> tuple[float, object]:
    """Median wall time of ``fn()`` and its last result: one untimed warm-up call (first-call costs such
    as allocations are not the steady state), then at least ``min_runs`` timed calls, more (up to
    ``max_runs``) while their total stays under ``budget`` seconds."""
    out = fn()
    times: list[float] = []
    while len(times) < min_runs or (sum(times) < budget and len(times) < max_runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def timed_pair(ours, theirs, budget: float = 2.0, min_rounds: int = 3) -> tuple[float, object, float, object]:
    """Median wall times (and last results) of two functions measured *interleaved*, so that both see the
    same load on a shared machine: after a warm-up call of each, rounds of one call of ``theirs`` and
    as many calls of ``ours`` as take about as long, for at least ``min_rounds`` rounds and while the
    total stays under ``budget`` seconds."""
    mine, other = ours(), theirs()
    t_mine, t_other = [], []
    start = time.perf_counter()
    while len(t_other) < min_rounds or time.perf_counter() - start < budget:
        t = time.perf_counter()
        other = theirs()
        t_other.append(time.perf_counter() - t)
        repeats = max(1, min(50, round(t_other[-1] / max(statistics.median(t_mine), 1e-6)))) if t_mine else 3
        for _ in range(repeats):
            t = time.perf_counter()
            mine = ours()
            t_mine.append(time.perf_counter() - t)
    return statistics.median(t_mine), mine, statistics.median(t_other), other


def load_models():
    tok = word_tokenizer(induction.vocabulary(D_VOCAB))
    try:
        ind = interp.load("induction-2l")
    except Exception:  # not shipped yet: same architecture, random weights
        ind = build_native(INDUCTION_CONFIG, tok, seed=0, name="induction-2l (untrained)")
    mlp = build_native(MLP_CONFIG, tok, seed=0, name="4l-d128-mlp (random)")
    return [ind, mlp]


def intervention_starts(model, kind: str, by_pos: bool, seq: int) -> list[tuple[int, int]]:
    """The (layer, first position) of every intervention of a sweep, in its order (for the work estimate)."""
    L, H = model.n_layers, model.n_heads
    if kind == "resid_pre":
        return [(layer, pos) for layer in range(L) for pos in range(seq)]
    return [(layer, pos) for layer in range(L) for pos in (range(seq) if by_pos else [0]) for _ in range(H)]


SWEEPS = [
    ("resid_pre [layer pos]", "resid_pre", None, tlp.get_act_patch_resid_pre),
    ("head_out [layer head]", "head_out", False, tlp.get_act_patch_attn_head_out_all_pos),
    ("head_out [layer pos head]", "head_out", True, tlp.get_act_patch_attn_head_out_by_pos),
]


def run(quick: bool, sample: int, seed: int, differ_at_start: bool = False) -> list[dict]:
    rows = []
    for model in load_models():
        for n, seq in REGIMES:
            rows += run_regime(model, n, seq, quick, sample, seed, differ_at_start)
    return rows


def run_regime(model, n: int, seq: int, quick: bool, sample: int, seed: int, differ_at_start: bool = False) -> list[dict]:
    rows = []
    om = model.module.original_model
    prompts = induction.induction_prompts(n, seq // 2, D_VOCAB, seed=seed)
    if differ_at_start:  # also change the token after BOS: no shared prefix for the engine to skip
        corrupted = prompts.corrupted.clone()
        corrupted[:, 1] = corrupted[:, 1] % (D_VOCAB - 1) + 1
        prompts = PromptSet(prompts.clean, corrupted, prompts.answers, prompts.wrong)
    assert prompts.seq_len == seq
    with torch.no_grad():
        t_fwd, _ = timed(lambda: om(prompts.corrupted))  # plain forward, native module
    for name, kind, by_pos, tl_fn in SWEEPS:
        rows.append(run_sweep(model, prompts, name, kind, by_pos, tl_fn, t_fwd, quick, sample, seed))
        print(_fmt(rows[-1]), flush=True)
    # attribution patching of every layer x pos x head site, in plain forwards (measured interleaved)
    t_attr, _, t_bridge, _ = timed_pair(
        lambda: attribution_patch(model, prompts, "z", logit_diff, by_pos=True), lambda: _no_grad(model, prompts.corrupted),
    )
    rows.append(dict(model=model.name, regime=f"{n}x{seq}", sweep="attribution z [layer pos head]",
                     ours_ms=1e3 * t_attr, forwards=t_attr / t_bridge, forwards_native=t_attr / t_fwd))
    print(_fmt(rows[-1]), flush=True)
    return rows


def _no_grad(model, tokens):
    with torch.no_grad():
        return model(tokens)


def run_sweep(model, prompts, name, kind, by_pos, tl_fn, t_fwd, quick, sample, seed) -> dict:
    n, seq, L = len(prompts), prompts.seq_len, model.n_layers
    tl_metric = metrics.mean(logit_diff, prompts)
    ours_fn = lambda: activation_patch(model, prompts, kind, logit_diff, by_pos=by_pos, progress=False)  # noqa: E731
    starts = intervention_starts(model, kind, bool(by_pos), seq)
    subsampled = quick and bool(by_pos)
    cells = None
    if subsampled:  # TL's generic patcher, same setter, on a sample of cells; time scaled up
        g = torch.Generator().manual_seed(seed)
        picks = torch.randperm(len(starts), generator=g)[:sample].tolist()
        cells = [(i // (seq * model.n_heads), (i // model.n_heads) % seq, i % model.n_heads) for i in picks]
        index_df = pd.DataFrame(cells, columns=["layer", "pos", "head"])

    def tl_run():
        _, cache = model.module.run_with_cache(prompts.clean)
        if cells is None:
            return tl_fn(model.module, prompts.corrupted, cache, tl_metric)
        return tlp.generic_activation_patch(
            model.module, prompts.corrupted, cache, tl_metric,
            patch_setter=tlp.layer_pos_head_vector_patch_setter, activation_name="z", index_df=index_df,
        )

    ours_t, ours, tl_t, tl_vals = timed_pair(ours_fn, tl_run)
    ours_vals = ours.values
    if cells is not None:
        tl_t *= len(starts) / len(cells)
        ours_vals = torch.stack([ours.values[c] for c in cells])
    assert ours.settings.get("engine") == "fast"
    diff = float((ours_vals - tl_vals.detach().float()).abs().max())
    need = sum((L - layer) / L * (seq - pos) / seq for layer, pos in starts) * t_fwd
    return dict(
        model=model.name, regime=f"{n}x{seq}", sweep=name, cells=len(starts),
        ours_ms=1e3 * ours_t, tl_ms=1e3 * tl_t, speedup=tl_t / ours_t, max_diff=diff,
        work_ratio=ours_t / need, tl_sampled=subsampled, target=TARGET_SPEEDUP[(n, seq)],
    )


def _fmt(r: dict) -> str:
    if "forwards" in r:
        ok = "PASS" if r["forwards"] <= 3 else "FAIL"
        return (f"{r['model']:<28} {r['regime']:<5} {r['sweep']:<30} ours {r['ours_ms']:8.1f} ms = "
                f"{r['forwards']:.2f} bridge forwards ({r['forwards_native']:.1f} native)  [<=3: {ok}]")
    ok_speed = "PASS" if r["speedup"] >= r["target"] else "FAIL"
    ok_diff = "PASS" if r["max_diff"] <= 1e-5 else "FAIL"
    ok_work = "PASS" if r["work_ratio"] <= 1.5 else "FAIL"
    tl = f"{r['tl_ms']:9.1f}{'*' if r['tl_sampled'] else ' '}"
    return (f"{r['model']:<28} {r['regime']:<5} {r['sweep']:<30} ours {r['ours_ms']:8.1f} ms  TL {tl} ms  "
            f"x{r['speedup']:6.1f} [>={r['target']:.0f}: {ok_speed}]  diff {r['max_diff']:.1e} [{ok_diff}]  "
            f"work {r['work_ratio']:.2f} [<=1.5: {ok_work}]")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="TL's by-position head sweep on a sample of cells (time scaled)")
    parser.add_argument("--sample", type=int, default=48, help="cells sampled with --quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--differ-at-start", action="store_true",
                        help="corrupt the token after BOS too, so clean and corrupted share no prefix but BOS")
    parser.add_argument("--hf", action="store_true", help="Hugging Face shapes on both backends (benchmarks/patching_hf.py)")
    parser.add_argument("--real", action="store_true",
                        help="SmolLM2-135M: sweeps, causal tracing and collection (benchmarks/patching_real.py)")
    parser.add_argument("--full", action="store_true", help="with --hf or --real: every cell of every sweep (hours on a CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="with --hf or --real: interleaved rounds per cell")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.hf or args.real:
        from benchmarks import patching_hf, patching_real

        if "--sample" not in (argv or __import__("sys").argv):
            args.sample = 16 if args.quick else 32
        return (patching_real if args.real else patching_hf).main(args)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}, "
          f"prompts {'differing from position 1' if args.differ_at_start else 'differing from position seq/2'}, times: medians")
    rows = run(args.quick, args.sample, args.seed, args.differ_at_start)
    print(f"load after: {os.getloadavg()[0]:.2f}   (* = TL time scaled from {args.sample} sampled cells)")
    return rows


if __name__ == "__main__":
    main()

"""One process against a local Ray cluster of 2 workers, measured in the same run.

    python -m benchmarks.distributed                  # 200 facts traced, 64 prompt pairs swept
    python -m benchmarks.distributed --facts 40 --pairs 16 --repeats 1   # a quick look
    python -m benchmarks.distributed --real --wait-idle 900              # SmolLM2-135M: 100 known facts traced

On facts-4l: a causal trace (ROME: resid, mlp, attn; 10 noise samples) over ``--facts`` facts, and a
resid_pre layer x position sweep (`activation_patch`, logit difference) over ``--pairs`` prompt pairs
on both engines (fast, hooks). Each runs in this process with ``--threads`` torch threads and on a
`RayExecutor` of 2 workers with 1 CPU (1 thread) each; the table gives both times, the speed-up and
whether the results are identical (they must be). Start-up is reported apart: the Ray runtime
(``ray.init``) and the workers (a process each, importing the toolkit and loading the model).
The load average of the machine is printed before and after: on a shared machine, read the
numbers with it. Target: speed-up of at least 1.5x on 2 cores.

``--real``: a real job instead, minutes in one process: SmolLM2-135M (``interp.load("smollm2-135m")``)
traces ``--facts`` facts it knows (default 100; `interp.tasks.world_facts`, all of one token length,
spread over the relations; `benchmarks.patching_real.known_prompts`) with `causal_trace` (kinds
``("resid",)``, ``--samples`` noise samples, default 3), once in this process and once on the
workers. Target there: 1.6x. ``--wait-idle S`` waits up to S seconds, before anything is measured,
for the 1-minute load average to fall to 0.5 or below (the speed-up is a wall-time ratio, so other
jobs on the machine lower it), and prints the load it measured under either way.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp
from benchmarks.timing import timed
from interp.distributed import RayExecutor
from interp.tasks import facts
from patching import activation_patch, causal_trace, logit_diff

TARGET = 1.5
TARGET_REAL = 1.6


def same(a, b) -> bool:
    if hasattr(a, "probs"):
        return all(torch.equal(a.probs[k], b.probs[k]) for k in a.probs) and torch.equal(a.p_corrupted, b.p_corrupted)
    return torch.equal(a.values, b.values)


def wait_idle(limit_s: float, threshold: float = 0.5, every_s: float = 30.0) -> None:
    """Wait (at most ``limit_s`` seconds) for the 1-minute load average to fall to ``threshold``."""
    start = time.perf_counter()
    while os.getloadavg()[0] > threshold and time.perf_counter() - start < limit_s:
        print(f"  waiting for an idle machine: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        time.sleep(every_s)
    waited = time.perf_counter() - start
    state = "idle" if os.getloadavg()[0] <= threshold else "NOT idle (gave up waiting)"
    print(f"machine {state} after {waited:.0f} s: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def toy_jobs(args):
    model = interp.load("facts-4l")
    kb = facts.KnowledgeBase.build(seed=0)
    trace_p = kb.fact_prompts("born_in", 0, subjects=list(range(args.facts)), seed=0)
    sweep_p = kb.fact_prompts("born_in", 0, subjects=list(range(args.pairs)), seed=0)
    return model, {
        f"causal trace, {args.facts} facts": (1, lambda ex: causal_trace(
            model, trace_p.clean, trace_p.metadata["subject_pos"].tolist(), trace_p.answers, samples=10,
            progress=False, executor=ex)),
        f"resid_pre sweep, {args.pairs} pairs, fast": (args.repeats, lambda ex: activation_patch(
            model, sweep_p, "resid_pre", logit_diff, progress=False, engine="fast", executor=ex)),
        f"resid_pre sweep, {args.pairs} pairs, hooks": (args.repeats, lambda ex: activation_patch(
            model, sweep_p, "resid_pre", logit_diff, progress=False, engine="hooks", executor=ex)),
    }


def real_jobs(args):
    from benchmarks.patching_real import NAME, known_prompts

    model = interp.load(NAME)
    prompts = known_prompts(model, args.facts)
    relations = sorted({f.relation for f in prompts.metadata["facts"]})
    print(f"{NAME}: {len(prompts)} known facts of {prompts.seq_len} tokens ({', '.join(relations)})", flush=True)
    return model, {
        f"causal trace, {len(prompts)} SmolLM2 facts x {prompts.seq_len} tokens (resid, {args.samples} samples)": (
            1, lambda ex: causal_trace(model, prompts, kinds=("resid",), samples=args.samples, progress=False, executor=ex)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="SmolLM2-135M: causal tracing of --facts known facts")
    parser.add_argument("--facts", type=int, default=None, help="facts traced (default 200; 100 with --real)")
    parser.add_argument("--samples", type=int, default=3, help="with --real: noise samples per fact")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs per sweep (median); the trace runs once")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the single process (default 1: on a loaded 2-core machine 2 threads thrash)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                        help="first wait up to S seconds for the load average to fall to 0.5")
    args = parser.parse_args()
    if args.facts is None:
        args.facts = 100 if args.real else 200
    import ray

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    torch.set_num_threads(args.threads)
    model, jobs = (real_jobs if args.real else toy_jobs)(args)
    if args.wait_idle:
        wait_idle(args.wait_idle)
    single = {name: timed(lambda fn=fn: fn(None), reps) for name, (reps, fn) in jobs.items()}
    print(f"load average after the single process: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    t_ray = time.perf_counter() - t
    with RayExecutor(num_workers=2, resources_per_worker={"CPU": 1}) as ex:
        t = time.perf_counter()
        ex.start(model)
        t_workers = time.perf_counter() - t
        multi = {name: timed(lambda fn=fn: fn(ex), reps) for name, (reps, fn) in jobs.items()}
    ray.shutdown()

    target = TARGET_REAL if args.real else TARGET
    print(f"\n{model.name}; single process: {args.threads} torch thread(s); Ray: 2 workers x 1 CPU\n")
    print(f"| job | 1 process (s) | 2 workers (s) | speed-up | identical | target {target}x |")
    print("|---|---:|---:|---:|---|---|")
    for name in jobs:
        (t1, r1), (t2, r2) = single[name], multi[name]
        ok = "PASS" if t1 / t2 >= target else "FAIL"
        print(f"| {name} | {t1:.2f} | {t2:.2f} | {t1 / t2:.2f}x | {same(r1, r2)} | {ok} |")
    print(f"\nstart-up: ray.init {t_ray:.1f} s; 2 workers started and {model.name} loaded in each {t_workers:.1f} s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

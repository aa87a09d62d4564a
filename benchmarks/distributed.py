"""One process against a local Ray cluster of 2 workers, measured in the same run.

    python -m benchmarks.distributed                  # 200 facts traced, 64 prompt pairs swept
    python -m benchmarks.distributed --facts 40 --pairs 16 --repeats 1   # a quick look

On facts-4l: a causal trace (ROME: resid, mlp, attn; 10 noise samples) over ``--facts`` facts, and a
resid_pre layer x position sweep (`activation_patch`, logit difference) over ``--pairs`` prompt pairs
on both engines (fast, hooks). Each runs in this process with ``--threads`` torch threads and on a
`RayExecutor` of 2 workers with 1 CPU (1 thread) each; the table gives both times, the speed-up and
whether the results are identical (they must be). Start-up is reported apart: the Ray runtime
(``ray.init``) and the workers (a process each, importing the toolkit and loading the model).
The load average of the machine is printed before and after: on a shared machine, read the
numbers with it. Target: speed-up of at least 1.5x on 2 cores.
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


def same(a, b) -> bool:
    if hasattr(a, "probs"):
        return all(torch.equal(a.probs[k], b.probs[k]) for k in a.probs) and torch.equal(a.p_corrupted, b.p_corrupted)
    return torch.equal(a.values, b.values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs per sweep (median); the trace runs once")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the single process (default 1: on a loaded 2-core machine 2 threads thrash)")
    args = parser.parse_args()
    import ray

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    torch.set_num_threads(args.threads)
    model = interp.load("facts-4l")
    kb = facts.KnowledgeBase.build(seed=0)
    trace_p = kb.fact_prompts("born_in", 0, subjects=list(range(args.facts)), seed=0)
    sweep_p = kb.fact_prompts("born_in", 0, subjects=list(range(args.pairs)), seed=0)
    jobs = {
        f"causal trace, {args.facts} facts": (1, lambda ex: causal_trace(
            model, trace_p.clean, trace_p.metadata["subject_pos"].tolist(), trace_p.answers, samples=10,
            progress=False, executor=ex)),
        f"resid_pre sweep, {args.pairs} pairs, fast": (args.repeats, lambda ex: activation_patch(
            model, sweep_p, "resid_pre", logit_diff, progress=False, engine="fast", executor=ex)),
        f"resid_pre sweep, {args.pairs} pairs, hooks": (args.repeats, lambda ex: activation_patch(
            model, sweep_p, "resid_pre", logit_diff, progress=False, engine="hooks", executor=ex)),
    }
    single = {name: timed(lambda fn=fn: fn(None), reps) for name, (reps, fn) in jobs.items()}

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    t_ray = time.perf_counter() - t
    with RayExecutor(num_workers=2, resources_per_worker={"CPU": 1}) as ex:
        t = time.perf_counter()
        ex.start(model)
        t_workers = time.perf_counter() - t
        multi = {name: timed(lambda fn=fn: fn(ex), reps) for name, (reps, fn) in jobs.items()}
    ray.shutdown()

    print(f"\nfacts-4l; single process: {args.threads} torch thread(s); Ray: 2 workers x 1 CPU\n")
    print(f"| job | 1 process (s) | 2 workers (s) | speed-up | identical | target {TARGET}x |")
    print("|---|---:|---:|---:|---|---|")
    for name in jobs:
        (t1, r1), (t2, r2) = single[name], multi[name]
        ok = "PASS" if t1 / t2 >= TARGET else "FAIL"
        print(f"| {name} | {t1:.2f} | {t2:.2f} | {t1 / t2:.2f}x | {same(r1, r2)} | {ok} |")
    print(f"\nstart-up: ray.init {t_ray:.1f} s; 2 workers started and facts-4l loaded in each {t_workers:.1f} s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

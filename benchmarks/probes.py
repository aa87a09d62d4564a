"""Benchmark `probes.collect`: throughput against plain forwards, and flat memory for disk stores.

    python -m benchmarks.probes                       # defaults: a few minutes on 2 CPU cores
    python -m benchmarks.probes --store-gb 0.5 4      # the sizes the issue suggests, disk and time allowing
    python -m benchmarks.probes --quick               # a smoke run (seconds)

Throughput. The same batches of ``BOS r r`` sequences go through ``model(tokens)`` under
``torch.no_grad`` (the peer) and through ``collect(model, tokens, sites, positions="all")`` (the
residual stream after both layers at every position, kept in memory). After warm-up the two are
timed alternately (A B, then B A, ...) so that load from other processes hits both alike; the
table reports the median tokens/s of each and their ratio (target: collect >= 0.80 x forward).

Memory. A fresh subprocess loads the model, then collects to a disk store of a given size; it
prints its peak resident set size (``VmHWM`` from /proc/self/status, with ``ru_maxrss`` as a
fallback) and its RSS just before collecting. That is done at two store sizes; if the disk store
really streams, the two peaks agree, so ``peak(large) - peak(small)`` must be under 5% of the
large store's size. The temporary stores are deleted afterwards.

Nothing is written to the repository; copy the printed table into benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

THROUGHPUT_TARGET = 0.80   # collect tokens/s over plain-forward tokens/s, at least
MEMORY_TARGET = 0.05       # peak-RSS growth over the larger store's size, less than
THROUGHPUT_SITES = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
# Many sites per forward, so that a GB of activations takes few forwards.
MEMORY_KINDS = ("resid_pre", "q", "k", "v", "z", "attn_out", "resid_post")


# =============================================================================== helpers
def load_model(name: str):
    """A shipped model by name or directory; ``random:NAME`` = NAME's architecture, fresh weights."""
    import interp

    if name.startswith("random:"):
        return interp.load(name.split(":", 1)[1]).blank_copy(seed=0)
    return interp.load(name)


def make_tokens(model, n: int, half: int, seed: int):
    from interp.tasks.induction import repeated_tokens

    return repeated_tokens(n, half, model.d_vocab, seed=seed)


def peak_rss_bytes() -> tuple[int, int]:
    """(peak RSS, current RSS) of this process in bytes, from /proc/self/status (Linux)."""
    peak = cur = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
            elif line.startswith("VmRSS:"):
                cur = int(line.split()[1]) * 1024
    except OSError:
        pass
    if not peak:  # ru_maxrss is KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return peak, cur


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if abs(n) < 2**30 else f"{n / 2**30:,.2f} GiB"


# =============================================================================== throughput
def bench_throughput(args) -> dict:
    import torch

    from probes import collect

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    tokens = make_tokens(model, args.n, args.half, seed=args.seed)
    n_tokens = tokens.numel()
    batches = [tokens[i:i + args.batch_size] for i in range(0, len(tokens), args.batch_size)]

    def forward() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                model(b)
        return time.perf_counter() - t0

    def collecting() -> float:
        t0 = time.perf_counter()
        store = collect(model, tokens, list(THROUGHPUT_SITES), positions="all",
                        batch_size=args.batch_size, progress=False)
        elapsed = time.perf_counter() - t0
        assert len(store) == n_tokens, (len(store), n_tokens)
        return elapsed

    for _ in range(args.warmup):
        forward()
        collecting()
    t_fwd, t_col = [], []
    for r in range(args.repeats):
        pair = (forward, collecting) if r % 2 == 0 else (collecting, forward)
        for fn in pair:
            (t_fwd if fn is forward else t_col).append(fn())
    fwd_tps = n_tokens / statistics.median(t_fwd)
    col_tps = n_tokens / statistics.median(t_col)
    paired = statistics.median(f / c for f, c in zip(t_fwd, t_col, strict=True))
    return dict(n_tokens=n_tokens, fwd_tps=fwd_tps, col_tps=col_tps, ratio=col_tps / fwd_tps,
                paired_ratio=paired, best_ratio=min(t_fwd) / min(t_col), t_fwd=t_fwd, t_col=t_col,
                threads=torch.get_num_threads(),
                store_bytes=n_tokens * model.d_model * len(THROUGHPUT_SITES) * 4)


# =============================================================================== memory
def memory_sites(model):
    from interp import Site

    return [Site(kind, layer) for layer in range(model.n_layers) for kind in MEMORY_KINDS]


def child_collect(args) -> None:
    """Runs in the fresh subprocess: collect ``--child-gb`` of activations into ``--child-dir``."""
    from probes import collect

    model = load_model(args.model)
    sites = memory_sites(model)
    seq = 1 + 2 * args.half
    bytes_per_token = 4 * sum(model.d_model if s.kind in ("resid_pre", "attn_out", "resid_post")
                              else model.n_heads * model.d_head for s in sites)
    n = max(1, math.ceil(args.child_gb * 1e9 / (bytes_per_token * seq)))
    # The prompts must be in memory (collect takes one tensor); fill them in place, chunk by chunk,
    # so that building them leaves no transient copies in the peak.
    import torch

    tokens = torch.empty(n, seq, dtype=torch.long)
    for start in range(0, n, 1024):
        stop = min(n, start + 1024)
        tokens[start:stop] = make_tokens(model, stop - start, args.half, seed=args.seed + start)
    peak_before, rss_before = peak_rss_bytes()
    t0 = time.perf_counter()
    store = collect(model, tokens, sites, positions="all", store=args.child_dir,
                    batch_size=args.batch_size, progress=False)
    elapsed = time.perf_counter() - t0
    peak, rss = peak_rss_bytes()
    print(json.dumps(dict(prompts=n, rows=len(store), sites=len(sites), seconds=elapsed,
                          store_bytes=dir_bytes(Path(args.child_dir)),
                          peak_before=peak_before, rss_before=rss_before, peak=peak, rss_after=rss)))


def bench_memory(args) -> list[dict]:
    results = []
    root = Path(tempfile.mkdtemp(prefix="probes-bench-", dir=args.tmp_dir))
    try:
        for gb in sorted(args.store_gb):
            out = root / f"store_{gb:g}GB"
            cmd = [sys.executable, "-m", "benchmarks.probes", "--child-gb", str(gb), "--child-dir", str(out),
                   "--model", args.model, "--half", str(args.half), "--batch-size", str(args.batch_size),
                   "--seed", str(args.seed)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
            if proc.returncode != 0:
                raise SystemExit(f"memory child for {gb} GB failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            info = json.loads(proc.stdout.strip().splitlines()[-1])
            info["target_gb"] = gb
            results.append(info)
            shutil.rmtree(out, ignore_errors=True)
            print(f"  memory: {gb:g} GB store collected in {info['seconds']:.1f} s, peak RSS {fmt_bytes(info['peak'])}",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


# =============================================================================== main
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.probes", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="induction-2l", help="shipped model name or directory (random:NAME for fresh weights)")
    p.add_argument("--n", type=int, default=256, help="throughput: sequences per timed pass (default 256)")
    p.add_argument("--half", type=int, default=24, help="length of the repeated half; sequences are 1 + 2*half tokens (default 24)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per forward, both sides (default 64)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes of each side first (default 2)")
    p.add_argument("--repeats", type=int, default=21, help="timed passes of each side, alternating (default 21)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for the throughput passes; 0 keeps torch's default (default 1: "
                        "on a shared 2-core machine two threads mostly measure the other processes)")
    p.add_argument("--store-gb", type=float, nargs=2, default=[0.25, 1.0], metavar=("SMALL", "LARGE"),
                   help="memory: the two disk-store sizes in GB (1e9 bytes) (default 0.25 1)")
    p.add_argument("--tmp-dir", default=None, help="where the temporary disk stores go (default: the system temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--quick", action="store_true", help="a smoke run: small sizes, few repeats")
    p.add_argument("--child-gb", type=float, help=argparse.SUPPRESS)
    p.add_argument("--child-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.warmup, args.repeats, args.store_gb = 128, 1, 5, [0.02, 0.08]
    if min(args.n, args.half, args.batch_size, args.repeats) < 1 or min(args.warmup, args.threads) < 0:
        p.error("--n, --half, --batch-size and --repeats must be positive; --warmup and --threads non-negative")
    if args.child_gb is None and not (0 < args.store_gb[0] < args.store_gb[1]):
        p.error(f"--store-gb needs 0 < SMALL < LARGE, got {args.store_gb}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child_gb is not None:
        child_collect(args)
        return 0
    import torch

    print(f"probes benchmark: model {args.model}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {platform.python_implementation()} {platform.python_version()}", flush=True)
    rows, ok = [], True
    if not args.skip_throughput:
        t = bench_throughput(args)
        passed = t["ratio"] >= THROUGHPUT_TARGET
        ok &= passed
        seq = 1 + 2 * args.half
        rows += [
            ("throughput", f"{args.n} x {seq} tokens, batch {args.batch_size}, median of {args.repeats}",
             f"{t['threads']} torch thread(s)"),
            ("  plain forward  model(tokens), no_grad", f"{t['fwd_tps']:,.0f} tokens/s", ""),
            ("  collect resid_post L0+L1, all positions, memory", f"{t['col_tps']:,.0f} tokens/s",
             f"{fmt_bytes(t['store_bytes'])} per pass"),
            ("  ratio collect / forward (median tokens/s)", f"{t['ratio']:.3f}",
             f"{'PASS' if passed else 'FAIL'} (target >= {THROUGHPUT_TARGET:.2f})"),
            ("  ratio, median of paired passes", f"{t['paired_ratio']:.3f}", "for reference"),
            ("  ratio, best pass of each", f"{t['best_ratio']:.3f}", "for reference"),
        ]
    if not args.skip_memory:
        small, large = bench_memory(args)
        growth = large["peak"] - small["peak"]
        frac = growth / large["store_bytes"]
        passed = frac < MEMORY_TARGET
        ok &= passed
        rows.append(("memory (disk store, fresh subprocess each)",
                     f"{len(memory_sites(load_model(args.model)))} sites, batch {args.batch_size}", ""))
        for name, m in (("small", small), ("large", large)):
            rows.append((f"  {name}: {m['target_gb']:g} GB target, {m['rows']:,} rows",
                         f"peak RSS {fmt_bytes(m['peak'])}",
                         f"store {fmt_bytes(m['store_bytes'])}; before collect: RSS {fmt_bytes(m['rss_before'])}, "
                         f"peak {fmt_bytes(m['peak_before'])}; "
                         f"{m['seconds']:.0f} s"))
        rows.append(("  peak(large) - peak(small)", fmt_bytes(growth),
                     f"{100 * frac:.2f}% of the large store: {'PASS' if passed else 'FAIL'} "
                     f"(target < {100 * MEMORY_TARGET:.0f}%)"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print()
    print(f"| {'measure':<{w0}} | {'value':<{w1}} | note")
    print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|{'-' * 40}")
    for a, b, c in rows:
        print(f"| {a:<{w0}} | {b:<{w1}} | {c}")
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

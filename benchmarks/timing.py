"""Timing shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], runs: int = 3) -> tuple[float, object]:
    """Median wall time (s) of ``runs`` calls of ``fn()``, and the last call's result."""
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def cpu_time(fn: Callable[[], object]) -> tuple[float, object]:
    """CPU seconds of this process spent in ``fn()`` (every thread), and its result: on a machine
    shared with other jobs, wall time also counts the time the scheduler gave them."""
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out

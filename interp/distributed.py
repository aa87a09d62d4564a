"""Executors: run a long study on a Ray cluster instead of in this process.

    from interp.distributed import RayExecutor
    with RayExecutor(num_workers=4, resources_per_worker={"GPU": 1}) as executor:
        result = activation_patch(model, prompts, "resid_pre", logit_diff, executor=executor)
        trace = causal_trace(model, prompts, executor=executor)

The long-running methods (`patching.activation_patch`, `patching.causal_trace`, `patching.das_sweep`,
`probes.probe_sweep`, `probes.collect`) take ``executor=None`` (this process) or a `RayExecutor`.
With an executor, each Ray worker (an actor) loads the model once, from the name or directory and
the ``backend`` / ``device`` / ``dtype`` arguments `interp.load` recorded on it
(`HookedModel.reload_arguments`); the method splits its work into chunks (prompts, or
interventions), the workers run them, and the chunks' results are merged in order into exactly
the object the single-process call returns. A worker that dies is restarted by Ray and its
chunk retried; one tqdm bar counts the work of all workers. Workers stay up (the model loaded)
from the first call until `RayExecutor.close` (or the end of a ``with`` block), so a study of
many calls loads the model once per worker.

Ray is optional: ``pip install "interp-toolkit[distributed]"``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from interp.errors import InterpError

__all__ = ["DistributedError", "RayExecutor", "chunk_ranges"]

class DistributedError(InterpError):
    """Ray is missing, the cluster cannot be reached, a model cannot be re-loaded in a worker, or
    every worker died."""


def _ray():
    try:
        import ray
    except ImportError:
        raise DistributedError(
            "RayExecutor needs Ray, which is an optional dependency: install it with "
            "pip install \"interp-toolkit[distributed]\" (or pip install -e \".[distributed]\" in a checkout)."
        ) from None
    return ray


def chunk_ranges(n: int, chunks: int, multiple: int = 1) -> list[range]:
    """``range(n)`` split into at most ``chunks`` consecutive ranges of near-equal length, every
    boundary a multiple of ``multiple`` (so each chunk holds whole batches of the single-process run)."""
    if n <= 0:
        return []
    units = -(-n // multiple)
    chunks = max(1, min(chunks, units))
    bounds = [min(n, (units * i // chunks) * multiple) for i in range(chunks + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def model_arguments(model) -> dict:
    """The `interp.load` arguments a worker re-loads ``model`` with, or a DistributedError saying to save it."""
    getter = getattr(model, "reload_arguments", None)
    args = getter() if callable(getter) else None
    if args is None:
        why = ("was built in memory" if getattr(model, "source", None) is None
               else "has changed since interp.load gave it (weights written or dtype cast)")
        name = getattr(model, "name", None)
        raise DistributedError(
            f"The model {name!r} {why}, so Ray workers cannot load it again by name or path. Save it first "
            f"(interp.models.save_native(model, DIR) for a native model, model.module.save_pretrained(DIR) and its "
            f"tokenizer for a Hugging Face one), then model = interp.load(DIR, ...) and pass that model."
        )
    return args


class _Worker:
    """One Ray actor: the model, loaded once, and per-call scratch space (``memo``)."""

    def __init__(self, source: dict | None, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model = None
        if source is not None:
            import interp

            self.model = interp.load(**source)
        self.call, self.memo = None, {}

    def ready(self) -> int:
        return os.getpid()

    def run(self, call: str, fn: Callable, shared: Any, chunk: Any) -> Any:
        if call != self.call:
            self.call, self.memo = call, {}
        return fn(self.model, shared, chunk, self.memo)

    def forget(self) -> None:
        self.call, self.memo = None, {}


class RayExecutor:
    """Run a method's chunks on Ray workers, each holding the model loaded once.

        with RayExecutor(num_workers=2) as ex:                      # a local cluster on this machine
            result = activation_patch(model, prompts, "resid_pre", logit_diff, executor=ex)
        RayExecutor(num_workers=8, resources_per_worker={"GPU": 1}, address="auto")  # a running cluster

    ``num_workers``: actors started. ``resources_per_worker``: Ray resources of each (``{"CPU": 1}`` by
    default; ``"CPU"`` also sets the worker's torch threads, ``"GPU"`` gives it a GPU of its own, other
    keys are custom resources). ``address``: None uses the Ray runtime already started in this process
    (``ray.init(...)``) or starts a local one; ``"auto"`` or ``"HOST:PORT"`` joins a running cluster
    (started with ``ray start --head``). ``max_retries``: how often a dead worker is restarted and its
    chunk retried. ``chunks_per_worker``: chunks each method cuts per worker (more: finer progress and
    cheaper retries; fewer: less per-chunk overhead). ``runtime_env``: passed to the actors (e.g.
    ``{"env_vars": {...}}``). A Ray runtime this executor started is shut down by `close`.
    """

    def __init__(self, num_workers: int = 2, resources_per_worker: Mapping[str, float] | None = None,
                 address: str | None = None, max_retries: int = 3, chunks_per_worker: int = 4,
                 runtime_env: Mapping | None = None):
        for name, value, low in (("num_workers", num_workers, 1), ("max_retries", max_retries, 0),
                                 ("chunks_per_worker", chunks_per_worker, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DistributedError(f"{name} must be an int of at least {low}, got {value!r}.")
        resources = {"CPU": 1, **dict(resources_per_worker or {})}
        bad = {k: v for k, v in resources.items() if not isinstance(v, int | float) or isinstance(v, bool) or v < 0}
        if bad:
            raise DistributedError(f"resources_per_worker values must be non-negative numbers, got {bad}.")
        self.num_workers, self.resources, self.address = num_workers, resources, address
        self.max_retries, self.chunks_per_worker = max_retries, chunks_per_worker
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self._ray = _ray()
        self._owns_runtime = False
        self._actors: list = []
        self._pids: list[int] = []
        self._source: dict | None = None
        self._connect()

    def __repr__(self) -> str:
        return (f"RayExecutor(num_workers={self.num_workers}, resources_per_worker={self.resources}, "
                f"address={self.address!r}, workers_up={len(self._actors)})")

    # ------------------------------------------------------------------ lifecycle
    def _connect(self) -> None:
        ray = self._ray
        _check_reachable(self.address)
        if ray.is_initialized():
            return
        try:
            with _quiet_ray():
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
        except Exception as e:  # ConnectionError, TimeoutError, RuntimeError, ValueError, ...
            with contextlib.suppress(Exception):
                ray.shutdown()
            where = "start a local Ray cluster" if self.address is None else f"reach the Ray cluster at address {self.address!r}"
            raise DistributedError(
                f"Could not {where}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} "
                f"Check that the cluster is running there (ray start --head on that machine; ray status) and "
                f"that this machine can reach it, or pass address=None for a local cluster."
            ) from None
        self._owns_runtime = True

    @property
    def chunks(self) -> int:
        """How many chunks a method cuts its work into: ``num_workers * chunks_per_worker``."""
        return self.num_workers * self.chunks_per_worker

    def start(self, model=None) -> list[int]:
        """Start the workers (loading ``model`` in each) now rather than on the first call; returns
        their process ids. Workers holding another model are stopped first."""
        source = None if model is None else model_arguments(model)
        return self._pool(source, model is not None)

    def _pool(self, source: dict | None, need_model: bool) -> list[int]:
        ray = self._ray
        if self._actors and (source == self._source or not need_model):
            return self._pids
        self._stop_actors()
        if not ray.is_initialized():
            self._connect()
        res = dict(self.resources)
        options = dict(num_cpus=res.pop("CPU"), num_gpus=res.pop("GPU", 0), resources=res or None,
                       max_restarts=self.max_retries, max_task_retries=self.max_retries)
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        cls = ray.remote(_Worker)
        threads = max(1, int(self.resources["CPU"]))
        self._actors = [cls.options(**options).remote(source, threads) for _ in range(self.num_workers)]
        self._source = source
        try:
            self._pids = ray.get([a.ready.remote() for a in self._actors])
        except Exception as e:
            self._stop_actors()
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, InterpError):
                raise cause from None
            raise DistributedError(f"The Ray workers could not start or load the model ({source}): {e}") from None
        return self._pids

    def _stop_actors(self) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)
        self._actors, self._source, self._pids = [], None, []

    def close(self) -> None:
        """Stop the workers (and the Ray runtime, if this executor started it)."""
        self._stop_actors()
        if self._owns_runtime:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
            self._owns_runtime = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ running
    def map(self, fn: Callable, chunks: Sequence, shared: Any = None, model=None, progress: bool = True,
            desc: str = "", weights: Sequence[int] | None = None, on_result: Callable[[int, Any], None] | None = None) -> list:
        """``[fn(worker_model, shared, chunk, memo) for chunk in chunks]``, run on the workers.

        ``fn`` must be importable (a module-level function); ``shared`` is sent to the cluster once;
        ``memo`` is a dict a worker keeps between the chunks of this call (work they share). Results
        come back in the order of ``chunks``; with ``on_result(i, value)`` each is handed over as it
        arrives instead (and not kept). ``weights``: what each chunk adds to the progress bar.
        A chunk whose worker died is retried (Ray restarts the worker); an error raised inside ``fn``
        is raised here.
        """
        ray = self._ray
        source = None if model is None else model_arguments(model)
        self._pool(source, model is not None)
        call = uuid.uuid4().hex
        shared_ref = ray.put(shared)
        weights = [1] * len(chunks) if weights is None else list(weights)
        results: list = [None] * len(chunks)
        queue = collections.deque(range(len(chunks)))
        idle, dead, pending = list(self._actors), set(), {}
        bar = tqdm(total=sum(weights), desc=desc or "workers", disable=not progress)
        try:
            while queue or pending:
                while queue and idle:
                    i, actor = queue.popleft(), idle.pop(0)
                    pending[actor.run.remote(call, fn, shared_ref, chunks[i])] = (i, actor)
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i, actor = pending.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else None
                        raise (cause or e) from None
                    except ray.exceptions.RayActorError:  # out of restarts: the chunk goes to another worker
                        dead.add(actor)
                        queue.appendleft(i)
                        if len(dead) == len(self._actors):
                            raise DistributedError(
                                f"Every Ray worker died (each restarted up to max_retries={self.max_retries} times); "
                                f"{len(queue)} of {len(chunks)} chunks were not run. See the Ray logs "
                                f"(/tmp/ray/session_latest/logs) for why."
                            ) from None
                        continue
                    if on_result is None:
                        results[i] = value
                    else:
                        on_result(i, value)
                    idle.append(actor)
                    bar.update(weights[i])
        finally:
            bar.close()
            forgets = [actor.forget.remote() for actor in self._actors if actor not in dead]
            with contextlib.suppress(Exception):  # per-call scratch space does not outlive the call
                ray.get(forgets, timeout=60)
            if dead:  # replace them for the next call
                self._stop_actors()
        return results


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """For an address ``HOST:PORT``: a DistributedError naming it unless something listens there."""
    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise DistributedError(
            f"Could not reach the Ray cluster at address {address!r} ({type(e).__name__}: {e}). Check that its head "
            f"node runs there (ray start --head --port=PORT; ray status) and that this machine can reach it, "
            f"or pass address=None for a local cluster."
        ) from None


@contextlib.contextmanager
def _quiet_ray():
    import logging

    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

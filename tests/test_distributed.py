"""Executors: every long-running method on a local Ray cluster of 2 workers gives exactly the
single-process result; a worker killed mid-run has its chunk retried; an interrupted disk collection
resumes; bad inputs get clear errors; no Ray process outlives the module.

One Ray runtime (2 CPUs) and one executor (2 workers, induction-2l loaded once in each) serve the
whole module: starting workers costs seconds, so every test reuses them."""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray  # the dev extra installs it, so `make test` runs these tests (no skip)
import torch

import interp
from interp import InputError, Site
from interp.distributed import DistributedError, RayExecutor, chunk_ranges
from interp.models import build_native
from interp.recipes import INDUCTION_CONFIG
from interp.tasks import induction
from patching import activation_patch, causal_trace, counterfactual_dataset, das_sweep, logit_diff
from probes import ActivationStore, collect, probe_sweep

pytestmark = pytest.mark.xdist_group("ray")  # one pytest-xdist worker runs the module: one Ray runtime

HALF = 5


def _ppid(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _ray_pids() -> set[int]:
    """This process's Ray processes (head services, workers, actors: all its descendants)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if not (cmd.startswith("ray::") or "site-packages/ray/" in cmd):
            continue
        pid, seen = int(proc.name), 0
        while pid > 1 and seen < 64:  # walk up to this process
            pid, seen = _ppid(pid), seen + 1
            if pid == os.getpid():
                pids.add(int(proc.name))
                break
    return pids


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def model():
    return interp.load("induction-2l")


@pytest.fixture(scope="module")
def executor(model):
    before = _ray_pids()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ex = RayExecutor(num_workers=2, chunks_per_worker=2)
    ex.start(model)
    yield ex
    ours = _ray_pids() - before
    assert ours, "the Ray runtime's processes were not found"
    ex.close()
    ray.shutdown()
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in ours):
        time.sleep(0.2)
    left = [p for p in ours if _alive(p)]
    assert left == [], f"Ray processes left running after ray.shutdown(): {left}"


@pytest.fixture(scope="module")
def prompts(model):
    return induction.induction_prompts(4, HALF, model.d_vocab, seed=0)


def test_chunk_ranges_cover_in_order_on_batch_boundaries():
    assert chunk_ranges(10, 3) == [range(0, 3), range(3, 6), range(6, 10)]
    parts = chunk_ranges(23, 4, multiple=4)
    assert [i for r in parts for i in r] == list(range(23))
    assert all(r.start % 4 == 0 for r in parts) and len(parts) == 4
    assert chunk_ranges(2, 8) == [range(0, 1), range(1, 2)] and chunk_ranges(0, 3) == []


@pytest.mark.parametrize("kind,engine,by_pos", [("resid_pre", "fast", None), ("z", "hooks", True), ("head_out", "auto", False)])
def test_activation_patch_equals_single_process(executor, model, prompts, kind, engine, by_pos):
    kwargs = dict(engine=engine, by_pos=by_pos, batch_size=8, progress=False)
    here = activation_patch(model, prompts, kind, logit_diff, **kwargs)
    there = activation_patch(model, prompts, kind, logit_diff, executor=executor, **kwargs)
    assert torch.equal(here.values, there.values)
    assert (here.axes, here.labels, here.settings) == (there.axes, there.labels, there.settings)
    assert here.values.abs().max() > 0.1  # a real sweep, not zeros


def test_causal_trace_equals_single_process(executor, model, prompts):
    kwargs = dict(subject_positions=[[2, 3], [4], [1, 2, 3], [5]], answers=prompts.answers, samples=3,
                  kinds=("resid", "attn"), severed="attn", seed=3, progress=False)
    tokens = prompts.clean
    here = causal_trace(model, tokens, **kwargs)
    there = causal_trace(model, tokens, executor=executor, **kwargs)
    assert here.probs.keys() == there.probs.keys()
    for key in here.probs:
        assert torch.equal(here.probs[key], there.probs[key]), key
    assert torch.equal(here.p_clean, there.p_clean) and torch.equal(here.p_corrupted, there.p_corrupted)
    assert torch.equal(here.noise, there.noise) and here.settings == there.settings
    # the noise of a prompt is keyed by its index: the draws before it, never the worker
    assert not torch.equal(here.noise[0], here.noise[1])


def test_das_sweep_equals_single_process(executor, model):
    V = model.d_vocab

    def sampler(rng):
        seq = rng.integers(1, V, size=HALF)
        return [0, *seq.tolist(), *seq[:-1].tolist()], int(seq[-1])

    data = counterfactual_dataset(sampler, lambda b, s: s, 32, seed=0, require_change=True)
    sites = [Site("resid_pre", 1, pos=HALF), Site("resid_post", 0, pos=-1), Site("resid_post", 1, pos=-1)]
    kwargs = dict(k=2, epochs=2, batch_size=16, seed=1, progress=False)
    here = das_sweep(model, sites, data, **kwargs)
    there = das_sweep(model, sites, data, executor=executor, **kwargs)
    assert list(there["site"]) == [str(s) for s in sites]
    assert here.equals(there)


def test_collect_and_probe_sweep_equal_single_process(executor, model, tmp_path):
    tokens = induction.repeated_tokens(12, HALF, model.d_vocab, seed=1)
    sites = [Site("resid_pre", 1), Site("z", 0, head=1)]
    here = collect(model, tokens, sites, positions="all", batch_size=5, progress=False)
    there = collect(model, tokens, sites, positions="all", batch_size=5, executor=executor, progress=False)
    disk = collect(model, tokens, sites, positions="all", batch_size=5, executor=executor, progress=False, store=tmp_path / "acts")
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == [
        "collect.json", "shard_00000", "shard_00001", "shard_00002", "store.json"]  # one whole shard per batch
    for store in (there, disk):
        for site in sites:
            assert torch.equal(here[site], store[site])
        for name in ("prompt_ids", "positions", "token_ids"):
            assert torch.equal(getattr(here, name), getattr(store, name))
    labels = (here.token_ids % 2).numpy()
    a = probe_sweep(here, labels, cv=3, control="tokens", progress=False)
    b = probe_sweep(disk, labels, cv=3, control="tokens", executor=executor, progress=False)
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.control_scores, b.control_scores)


def test_lost_worker_has_its_chunk_retried(executor, model, prompts, tmp_path):
    """A worker process that dies mid-run (here: exits on its first chunk) is restarted by Ray, which
    loads the model again, and its chunk is retried: the result is complete and identical."""
    marker = tmp_path / "killed"
    driver = os.getpid()

    def metric(logits, p):  # runs on the workers; the first worker to get here dies
        if os.getpid() != driver and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return logit_diff(logits, p)

    here = activation_patch(model, prompts, "resid_pre", metric, batch_size=8, progress=False, engine="hooks")
    pids = set(executor.start(model))
    there = activation_patch(model, prompts, "resid_pre", metric, batch_size=8, progress=False, engine="hooks",
                             executor=executor)
    assert marker.exists() and int(marker.read_text()) in pids  # a worker really died
    assert torch.equal(here.values, there.values)


def test_interrupted_collection_resumes(executor, model, tmp_path, monkeypatch):
    tokens = induction.repeated_tokens(14, HALF, model.d_vocab, seed=2)
    sites = [Site("resid_post", 0), Site("pattern", 1, head=0)]
    args = dict(positions="last", batch_size=4, progress=False)
    whole = collect(model, tokens, sites, **args)
    path = tmp_path / "acts"

    # the collection stops (an error in its third batch) after two shards are on disk
    calls = {"n": 0}
    run_with_cache = model.run_with_cache

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return run_with_cache(*a, **k)

    monkeypatch.setattr(model, "run_with_cache", failing)
    with pytest.raises(KeyboardInterrupt):
        collect(model, tokens, sites, store=path, **args)
    monkeypatch.undo()
    assert sorted(p.name for p in path.glob("shard_*")) == ["shard_00000", "shard_00001"]
    with pytest.raises(InputError, match="resume"):
        ActivationStore.load(path)  # unfinished: no store.json
    (path / ".shard_00002.tmp-deadbeef").mkdir()  # what a shard being written when it stopped leaves
    (path / ".shard_00002.tmp-deadbeef" / "act_0.npy").write_bytes(b"half")
    stamps = {p.name: p.stat().st_mtime_ns for p in path.glob("shard_*/*.npy")}
    with pytest.raises(InputError, match="overwrite=True or resume=True"):
        collect(model, tokens, sites, store=path, **args)
    with pytest.raises(InputError, match="another collection"):
        collect(model, tokens, sites, store=path, resume=True, positions="all", batch_size=4, progress=False)

    resumed = collect(model, tokens, sites, store=path, resume=True, executor=executor, **args)
    assert {p.name: p.stat().st_mtime_ns for p in path.glob("shard_0000[01]/*.npy")} == stamps  # not redone
    assert sorted(p.name for p in path.iterdir()) == [
        "collect.json", "shard_00000", "shard_00001", "shard_00002", "shard_00003", "store.json"]
    for site in sites:
        assert torch.equal(resumed[site], whole[site])
    assert torch.equal(resumed.prompt_ids, whole.prompt_ids)


def test_model_built_in_memory_is_refused(executor, tmp_path):
    from interp.tokenizers import word_tokenizer

    tok = word_tokenizer(induction.vocabulary(INDUCTION_CONFIG["d_vocab"]), tmp_path / "tok")
    fresh = build_native(INDUCTION_CONFIG, tok, seed=0, name="fresh")
    pids = executor.start()  # the workers holding induction-2l
    p = induction.induction_prompts(2, 3, fresh.d_vocab, seed=0)
    with pytest.raises(DistributedError, match=r"built in memory.*save_native"):
        activation_patch(fresh, p, "resid_pre", logit_diff, executor=executor, progress=False)
    assert executor.start() == pids  # refused before any worker was touched
    saved = interp.load(interp.models.save_native(fresh, tmp_path / "fresh"))
    assert saved.reload_arguments()["name_or_path"] == str((tmp_path / "fresh").resolve())
    changed = copy.deepcopy(saved)
    with torch.no_grad():
        next(changed.module.parameters()).add_(1.0)
    with pytest.raises(DistributedError, match="has changed since interp.load"):
        causal_trace(changed, p, subject_positions=[1], kinds=("resid",), executor=executor, progress=False)


def test_unreachable_address_is_named():
    with pytest.raises(DistributedError, match=r"address '127\.0\.0\.1:9'"):
        RayExecutor(address="127.0.0.1:9")


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DistributedError, match=r"interp-toolkit\[distributed\]"):
        RayExecutor(num_workers=2)


def test_bad_executor_arguments():
    with pytest.raises(DistributedError, match="num_workers"):
        RayExecutor(num_workers=0)
    with pytest.raises(DistributedError, match="resources_per_worker"):
        RayExecutor(resources_per_worker={"GPU": -1})


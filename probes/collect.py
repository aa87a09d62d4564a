"""Collect activations at chosen sites and positions into an `ActivationStore`.

    store = collect(model, tokens, ["blocks.1.hook_resid_pre", Site("z", 0, head=2)], positions="all")
    X = store["blocks.1.hook_resid_pre"]             # [rows d_model], one row per (prompt, position)
    store.prompt_ids, store.positions, store.token_ids   # where each row came from
    for chunk in store.iter_chunks(Site("resid_pre", 1), 4096): ...    # stream without loading all
    disk = collect(model, tokens, sites, store="acts/")  # disk shards; ActivationStore.load("acts/")

A probe reads one vector per example. `collect` runs the model in batches, keeps only the requested
sites (each cached activation is detached), picks the positions asked for (the last token, every
token, a fixed index, one index per prompt, or a boolean mask), and flattens whatever is left of
the activation after batch and position into one feature axis (``z`` of every head becomes
``head*d_head`` features; a site with ``head=`` keeps that head only). Rows are ordered by prompt,
then by position, and the same rows are kept for every site, so ``store[a][i]`` and ``store[b][i]``
describe the same token. Rows live on the CPU (where probes fit) and are float32 even for a
bfloat16 or float16 model (widened exactly; a float64 model keeps float64).

With ``store=DIR`` each batch is written as a shard of ``.npy`` files as soon as it is computed,
so memory stays bounded by one batch however many prompts there are; reading maps the shards
(``np.load(mmap_mode="r")``) and `ActivationStore.iter_chunks` streams them chunk by chunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import einops
import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError, SiteError
from interp.models import HookedModel
from interp.sites import Site, SiteLike, as_site

FORMAT_VERSION = 1
_META = ("prompt_ids", "positions", "token_ids")
# Probe features are float32 even for half-precision models: these are widened (exactly) to float32.
_WIDEN = {torch.bfloat16: torch.float32, torch.float16: torch.float32}

Positions = str | int | Int[Tensor, " batch"] | Bool[Tensor, "batch pos"]


# =============================================================================== the store
class ActivationStore:
    """Rows of activations, one tensor ``[rows d]`` per site, in memory or in disk shards.

        store[Site("resid_pre", 1)]          # or store["blocks.1.hook_resid_pre"] -> [rows d]
        len(store), store.sites, store.dim(site)
        store.prompt_ids[i], store.positions[i], store.token_ids[i]   # origin of row i

    Build one with `collect`, from tensors with `ActivationStore.from_tensors`, or reopen a disk
    store with `ActivationStore.load(path)`.
    """

    def __init__(self, sites: Sequence[Site], dims: Mapping[Site, int], meta: Mapping[str, Tensor] | None,
                 data: Mapping[Site, Tensor] | None = None, path: Path | None = None,
                 shard_rows: Sequence[int] = (), info: Mapping[str, Any] | None = None):
        self._sites = list(sites)
        self._dims = dict(dims)
        self._data = None if data is None else dict(data)
        self._meta = None if meta is None else dict(meta)
        self.path = path
        self._shard_rows = list(shard_rows)
        self.info = dict(info or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tensors(
        cls,
        activations: Mapping[SiteLike, Float[Tensor, "rows d"]],
        prompt_ids: Int[Tensor, " rows"] | None = None,
        positions: Int[Tensor, " rows"] | None = None,
        token_ids: Int[Tensor, " rows"] | None = None,
    ) -> ActivationStore:
        """An in-memory store from ``{site: [rows d]}`` (synthetic data, or activations read elsewhere).

        Missing metadata defaults to ``prompt_ids = arange(rows)``, ``positions = 0`` and
        ``token_ids = -1`` (unknown).
        """
        if not activations:
            raise InputError("from_tensors needs at least one site: give {site: Tensor[rows d]}.")
        data: dict[Site, Tensor] = {}
        for key, x in activations.items():
            site = as_site(key)
            x = torch.as_tensor(x)
            if x.ndim != 2:
                raise InputError(f"Activations for {site} must be [rows d] (rank 2), got shape {tuple(x.shape)}; "
                                 f"flatten the other axes first.")
            data[site] = x
        rows = {s: x.shape[0] for s, x in data.items()}
        if len(set(rows.values())) != 1:
            raise InputError(f"Every site must have the same number of rows; got {', '.join(f'{s}: {n}' for s, n in rows.items())}.")
        n = next(iter(rows.values()))
        defaults = dict(prompt_ids=torch.arange(n), positions=torch.zeros(n, dtype=torch.long),
                        token_ids=torch.full((n,), -1, dtype=torch.long))
        meta = {}
        for name, value in zip(_META, (prompt_ids, positions, token_ids), strict=True):
            value = defaults[name] if value is None else torch.as_tensor(value).long().reshape(-1)
            if value.shape[0] != n:
                raise InputError(f"{name} has {value.shape[0]} entries but the activations have {n} rows.")
            meta[name] = value
        return cls(list(data), {s: x.shape[1] for s, x in data.items()}, meta, data=data)

    @classmethod
    def load(cls, path: str | Path) -> ActivationStore:
        """Reopen a disk store written by ``collect(..., store=path)``; nothing is read until asked."""
        path = Path(path)
        index = path / "store.json"
        if not index.exists():
            hint = (" It has shards but no store.json, so the collection did not finish; run the same collect "
                    "again with resume=True to compute only the missing batches."
                    if path.exists() and any(path.glob("shard_*")) else "")
            raise InputError(f"{path} is not an activation store (no store.json).{hint} "
                             f"Create one with probes.collect(model, tokens, sites, store={str(path)!r}).")
        info = json.loads(index.read_text())
        if info.get("version") != FORMAT_VERSION:
            raise InputError(f"{path} was written by format version {info.get('version')}; this code reads "
                             f"version {FORMAT_VERSION}. Collect the activations again.")
        sites = [Site(s["kind"], s["layer"], s["head"], s["pos"]) for s in info["sites"]]
        dims = {site: s["dim"] for site, s in zip(sites, info["sites"], strict=True)}
        return cls(sites, dims, None, path=path, shard_rows=info["shard_rows"], info=info)

    # ------------------------------------------------------------------ description
    @property
    def sites(self) -> list[Site]:
        """The sites held, in the order they were collected."""
        return list(self._sites)

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def __len__(self) -> int:
        if self._data is not None:
            return int(self._meta["prompt_ids"].shape[0])
        return int(sum(self._shard_rows))

    def dim(self, site: SiteLike) -> int:
        """Number of features at ``site``."""
        return self._dims[self._key(site)]

    def __contains__(self, site) -> bool:
        try:
            self._key(site)
        except SiteError:
            return False
        return True

    def __repr__(self) -> str:
        where = f"disk {str(self.path)!r}" if self.on_disk else "memory"
        sites = ", ".join(f"{s} ({self._dims[s]})" for s in self._sites)
        return f"ActivationStore({len(self)} rows in {where}; sites: {sites})"

    def _key(self, site: SiteLike) -> Site:
        try:
            key = as_site(site)
        except SiteError as e:
            raise SiteError(f"{e} This store holds: {', '.join(map(str, self._sites))}.") from None
        if key not in self._dims:
            raise SiteError(
                f"{key} is not in this store; it holds: {', '.join(map(str, self._sites))}. "
                f"Collect it with probes.collect(model, tokens, [..., {str(key)!r}])."
            )
        return key

    # ------------------------------------------------------------------ reading
    def __getitem__(self, site: SiteLike) -> Float[Tensor, "rows d"]:
        """All rows of ``site`` as one tensor ``[rows d]`` (read from the shards when on disk)."""
        key = self._key(site)
        if self._data is not None:
            return self._data[key]
        parts = [np.load(self._file(i, key), mmap_mode="r") for i in range(len(self._shard_rows))]
        if not parts:
            return torch.empty(0, self._dims[key])
        return torch.from_numpy(np.concatenate(parts, axis=0))

    def iter_chunks(self, site: SiteLike, chunk_rows: int) -> Iterator[Float[Tensor, "chunk d"]]:
        """Consecutive chunks of ``chunk_rows`` rows (the last may be shorter), covering each row once.

        On disk only one chunk (plus a view of the current shard) is in memory at a time.
        """
        key = self._key(site)
        if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
            raise InputError(f"chunk_rows must be a positive int, got {chunk_rows!r}.")
        if self._data is not None:
            x = self._data[key]
            for start in range(0, x.shape[0], chunk_rows):
                yield x[start:start + chunk_rows]
            return
        pending: list[np.ndarray] = []
        have = 0
        for i in range(len(self._shard_rows)):
            block = np.load(self._file(i, key), mmap_mode="r")
            start = 0
            while start < block.shape[0]:
                take = min(chunk_rows - have, block.shape[0] - start)
                pending.append(np.asarray(block[start:start + take]))
                have += take
                start += take
                if have == chunk_rows:
                    yield torch.from_numpy(np.concatenate(pending, axis=0))
                    pending, have = [], 0
        if have:
            yield torch.from_numpy(np.concatenate(pending, axis=0))

    def read_rows(self, site: SiteLike, start: int, stop: int) -> Float[Tensor, "rows d"]:
        """Rows ``[start, stop)`` of ``site``; on disk only the shards they lie in are read (memory-mapped)."""
        key = self._key(site)
        if not 0 <= start <= stop <= len(self):
            raise InputError(f"Rows [{start}, {stop}) lie outside this store of {len(self)} rows.")
        if self._data is not None:
            return self._data[key][start:stop]
        bounds = np.cumsum([0, *self._shard_rows])
        parts = [np.empty((0, self.dim(key)), dtype=np.float32)]
        for i in range(max(0, int(np.searchsorted(bounds, start, side="right")) - 1), len(self._shard_rows)):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            if lo >= stop:
                break
            block = np.load(self._file(i, key), mmap_mode="r")
            parts.append(np.asarray(block[max(start, lo) - lo:min(stop, hi) - lo]))
        return torch.from_numpy(np.concatenate(parts, axis=0))

    def _metadata(self, name: str) -> Tensor:
        if self._meta is not None:
            return self._meta[name]
        parts = [np.load(self._file(i, self._sites[0]).with_name(f"{name}.npy")) for i in range(len(self._shard_rows))]
        return torch.from_numpy(np.concatenate(parts)) if parts else torch.empty(0, dtype=torch.long)

    @property
    def prompt_ids(self) -> Int[Tensor, " rows"]:
        """Index (into the collected prompts) of the prompt each row came from."""
        return self._metadata("prompt_ids")

    @property
    def positions(self) -> Int[Tensor, " rows"]:
        """Token position (from 0) each row was read at."""
        return self._metadata("positions")

    @property
    def token_ids(self) -> Int[Tensor, " rows"]:
        """Token id at that position (-1 where unknown)."""
        return self._metadata("token_ids")

    def _file(self, shard: int, site: Site) -> Path:
        file = self.path / f"shard_{shard:05d}" / f"act_{self._sites.index(site)}.npy"
        if not file.exists():
            raise InputError(f"{file} is missing: the store at {self.path} was changed or overwritten after "
                             f"it was opened. Reopen it with ActivationStore.load({str(self.path)!r}).")
        return file


# =============================================================================== writers
class _MemoryWriter:
    def __init__(self, sites: list[Site]):
        self.sites = sites
        self.parts: dict[Site, list[Tensor]] = {s: [] for s in sites}
        self.meta: dict[str, list[Tensor]] = {m: [] for m in _META}

    def write(self, acts: dict[Site, Tensor], meta: dict[str, Tensor]) -> None:
        for s in self.sites:
            self.parts[s].append(acts[s])
        for m in _META:
            self.meta[m].append(meta[m])

    def finish(self, dims: dict[Site, int], info: dict) -> ActivationStore:
        data = {s: torch.cat(p) if p else torch.empty(0, dims[s]) for s, p in self.parts.items()}
        meta = {m: torch.cat(p) if p else torch.empty(0, dtype=torch.long) for m, p in self.meta.items()}
        return ActivationStore(self.sites, dims, meta, data=data, info=info)


class _DiskWriter:
    """Shards ``shard_{batch:05d}/`` (one per batch, even an empty one), each written under a temporary
    name and renamed into place when complete, so a shard on disk is always whole and written once;
    ``collect.json`` describes the job, so that an interrupted collection can be resumed."""

    def __init__(self, path: Path, sites: list[Site], overwrite: bool, resume: bool, job: dict):
        self.path, self.sites, self.job = path, sites, job
        if resume and path.is_dir() and (path / "collect.json").exists():
            held = json.loads((path / "collect.json").read_text())
            if held != job:
                differs = sorted(k for k in set(held) | set(job) if held.get(k) != job.get(k))
                raise InputError(
                    f"{path} holds another collection (it differs in {', '.join(differs)}), so it cannot be resumed "
                    f"with these arguments; pass the same model, prompts, sites, positions and batch_size, or "
                    f"overwrite=True to start again."
                )
            for stale in path.glob(".shard_*.tmp-*"):  # a shard being written when the collection stopped
                shutil.rmtree(stale, ignore_errors=True)
            return
        if path.exists() and (path.is_file() or any(path.iterdir())):
            if not overwrite:
                hint = " or resume=True to finish it" if (path / "collect.json").exists() else ""
                raise InputError(f"{path} already exists and is not empty; choose a new directory, pass overwrite=True{hint}.")
            if not any((path / f).exists() for f in ("store.json", "collect.json")) and not any(path.glob("shard_*")):
                raise InputError(f"{path} is not an activation store, so overwrite=True will not delete it; choose another directory.")
            shutil.rmtree(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"Cannot create the activation store directory {str(path)!r}: {e.strerror or e}. "
                             f"Pass store= a directory you can write to (it is created with its parents), "
                             f"or store=None to keep the activations in memory.") from None
        _write_atomic(path / "collect.json", json.dumps(job, indent=1) + "\n")

    def done(self, batch: int) -> bool:
        return (self.path / f"shard_{batch:05d}").is_dir()

    def write(self, batch: int, acts: dict[Site, Tensor], meta: dict[str, Tensor]) -> None:
        final = self.path / f"shard_{batch:05d}"
        if final.exists():  # written already (a chunk run twice): keep the first, whole copy
            return
        tmp = self.path / f".shard_{batch:05d}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        for j, s in enumerate(self.sites):
            np.save(tmp / f"act_{j}.npy", acts[s].cpu().numpy())
        for m in _META:
            np.save(tmp / f"{m}.npy", meta[m].cpu().numpy().astype(np.int64))
        try:
            os.rename(tmp, final)
        except OSError:  # another copy got there first
            shutil.rmtree(tmp, ignore_errors=True)

    def finish(self, n_batches: int, info: dict) -> ActivationStore:
        missing = [b for b in range(n_batches) if not self.done(b)]
        if missing:
            raise InputError(f"{self.path} lacks shards {missing[:5]}{' ...' if len(missing) > 5 else ''}; run collect again with resume=True.")
        shard_rows = [int(np.load(self.path / f"shard_{b:05d}" / "prompt_ids.npy", mmap_mode="r").shape[0]) for b in range(n_batches)]
        first = [np.load(self.path / "shard_00000" / f"act_{j}.npy", mmap_mode="r") for j in range(len(self.sites))]
        info = {
            "version": FORMAT_VERSION,
            "sites": [dict(kind=s.kind, layer=s.layer, head=s.head, pos=s.pos, name=str(s), dim=int(x.shape[1]))
                      for s, x in zip(self.sites, first, strict=True)],
            "shard_rows": shard_rows,
            "rows": int(sum(shard_rows)),
            "dtype": str(first[0].dtype),
            **info,
        }
        _write_atomic(self.path / "store.json", json.dumps(info, indent=1) + "\n")
        return ActivationStore.load(self.path)


def _write_atomic(file: Path, text: str) -> None:
    tmp = file.with_name(f".{file.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, file)


# =============================================================================== collect
def collect(
    model: HookedModel,
    tokens_or_prompts: Int[Tensor, "batch pos"] | Sequence[str] | Any,
    sites: SiteLike | Iterable[SiteLike],
    positions: Positions = "last",
    store: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    executor=None,
) -> ActivationStore:
    """Run ``model`` over the prompts in batches and keep ``sites`` at ``positions`` as rows.

    ``tokens_or_prompts``: token ids ``[batch pos]``, a list of texts (right-padded by the
    tokenizer; "last", "all" and negative positions then respect each text's own length), or a
    `PromptSet` (its clean tokens). ``positions``: ``"last"``, ``"all"``, an int (negative counts
    from the end), a LongTensor ``[batch]`` with one position per prompt, or a BoolTensor mask
    ``[batch pos]``. ``store``: None keeps the rows in memory; a directory writes one shard per
    batch there, each complete before it appears under its name (``overwrite=True`` replaces an
    existing store; ``resume=True`` finishes an interrupted collection of the same job, computing
    only the batches that have no shard yet). ``executor``: None runs here; an
    `interp.distributed.RayExecutor` runs chunks of batches on its workers, and the shards are
    written here as they arrive. Returns an `ActivationStore`.
    """
    tokens, lengths = _as_tokens(model, tokens_or_prompts)
    n, seq = tokens.shape
    site_list = [as_site(s) for s in ([sites] if isinstance(sites, Site | str) else list(sites))]
    if not site_list:
        raise InputError("collect needs at least one site, e.g. sites=['blocks.0.hook_resid_post'].")
    if len(set(site_list)) != len(site_list):
        raise InputError(f"Sites repeat in {[str(s) for s in site_list]}; give each once.")
    for site in site_list:
        if site.pos is not None:
            raise InputError(
                f"{site} selects a position, but collect chooses positions for every site with "
                f"positions=. Pass Site({site.kind!r}, {site.layer}, head={site.head}) and positions={site.pos}."
            )
        site.validate(model, seq)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}.")
    mask = position_mask(positions, tokens, lengths)
    info = {"model": model.name, "n_prompts": n, "seq_len": seq,
            "positions": positions if isinstance(positions, str | int) else type(positions).__name__}
    n_batches = -(-n // batch_size)
    if store is None:
        writer, todo = _MemoryWriter(site_list), list(range(n_batches))
    else:
        job = _job(model, tokens, mask, site_list, batch_size, info)
        writer = _DiskWriter(Path(store), site_list, overwrite, resume, job)
        todo = [b for b in range(n_batches) if not writer.done(b)]
    dims: dict[Site, int] = {}
    job_args = (tokens.cpu(), mask, site_list, batch_size)

    def keep(batch: int, rows) -> None:
        acts, meta, batch_dims = rows
        dims.update(batch_dims)
        if store is None:
            writer.write(acts, meta)
        else:
            writer.write(batch, acts, meta)

    if executor is None:
        with torch.no_grad():
            for b in tqdm(todo, desc="collect", unit="batch", disable=not progress):
                keep(b, _batch_rows(model, *job_args, b))
    else:
        from interp.distributed import chunk_ranges

        chunks = [todo[c.start : c.stop] for c in chunk_ranges(len(todo), executor.chunks)]
        results = {}

        def arrived(i: int, rows: list) -> None:
            for b, r in zip(chunks[i], rows, strict=True):
                if store is None:
                    results[b] = r  # kept in batch order below
                else:
                    keep(b, r)  # written at once: memory holds one chunk

        executor.map(_collect_chunk, chunks, shared=job_args, model=model, progress=progress, on_result=arrived,
                     weights=[len(c) for c in chunks], desc=f"collect on {executor.num_workers} workers")
        for b in sorted(results):
            keep(b, results.pop(b))
    if store is None:
        return writer.finish(dims, info)
    return writer.finish(n_batches, info)


def _job(model, tokens: Tensor, mask: Tensor, sites: list[Site], batch_size: int, info: dict) -> dict:
    """What identifies a collection (for resume): the model, a digest of the tokens and positions, the sites."""
    digest = hashlib.sha256(tokens.cpu().long().numpy().tobytes() + mask.numpy().tobytes()).hexdigest()
    return {"model": model.name, "tokens_sha256": digest, "shape": list(tokens.shape), "sites": [str(s) for s in sites],
            "batch_size": batch_size, "positions": info["positions"]}


def _batch_rows(model: HookedModel, tokens: Tensor, mask: Tensor, site_list: list[Site], batch_size: int, b: int):
    """The rows of batch ``b``: ``({site: [rows d]}, metadata, {site: d})`` on the CPU."""
    start = b * batch_size
    batch, batch_mask = tokens[start:start + batch_size], mask[start:start + batch_size]
    with torch.no_grad():
        _, cache = model.run_with_cache(batch, site_list)
    b_idx, p_idx = batch_mask.nonzero(as_tuple=True)
    acts, dims = {}, {}
    for site in site_list:
        act = cache[site]
        if site.kind == "pattern" and site.head is None:  # [b head q k] -> [b q head k]
            act = einops.rearrange(act, "b head q k -> b q head k")
        act = einops.rearrange(act, "b p ... -> b p (...)")
        rows = act[b_idx.to(act.device), p_idx.to(act.device)]
        acts[site] = rows.to("cpu", _WIDEN.get(rows.dtype, rows.dtype)).contiguous()
        dims[site] = act.shape[-1]
    meta = dict(prompt_ids=b_idx + start, positions=p_idx, token_ids=batch.cpu()[b_idx, p_idx])
    del cache
    return acts, meta, dims


def _collect_chunk(model: HookedModel, job, batches: list[int], memo: dict) -> list:
    """A worker's share of an executor's collection: the rows of ``batches``."""
    tokens, mask, site_list, batch_size = job
    return [_batch_rows(model, tokens, mask, site_list, batch_size, b) for b in batches]


def _as_tokens(model: HookedModel, prompts) -> tuple[Tensor, Tensor]:
    """Token ids [batch pos] and each prompt's length (texts are right-padded)."""
    if hasattr(prompts, "clean") and isinstance(prompts.clean, Tensor):  # a PromptSet
        prompts = prompts.clean
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, list | tuple) and prompts and all(isinstance(p, str) for p in prompts):
        tokens = model.to_tokens(list(prompts))
        single = [model.to_tokens(p) for p in prompts]
        lengths = torch.tensor([t.shape[1] for t in single])
        return tokens, lengths
    tokens = model.check_tokens(prompts)
    return tokens, torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)


def position_mask(positions: Positions, tokens: Int[Tensor, "batch pos"], lengths: Int[Tensor, " batch"] | None = None) -> Bool[Tensor, "batch pos"]:
    """Which (prompt, position) pairs `collect` keeps, as a mask ``[batch pos]`` (on the CPU)."""
    n, seq = tokens.shape
    lengths = torch.full((n,), seq, dtype=torch.long) if lengths is None else lengths.cpu().long()
    arange = torch.arange(seq)
    if isinstance(positions, str):
        if positions == "all":
            return arange[None, :] < lengths[:, None]
        if positions == "last":
            return arange[None, :] == (lengths - 1)[:, None]
        raise InputError(f"positions={positions!r} is not understood; use 'last', 'all', an int, a LongTensor [batch] or a BoolTensor mask [batch pos].")
    if isinstance(positions, int) and not isinstance(positions, bool):
        per_prompt = torch.full((n,), positions, dtype=torch.long)
    elif isinstance(positions, Tensor) and positions.dtype == torch.bool:
        if tuple(positions.shape) != (n, seq):
            raise InputError(f"A position mask must have the tokens' shape {(n, seq)}, got {tuple(positions.shape)}.")
        return positions.cpu()
    elif isinstance(positions, Tensor) and not positions.is_floating_point() and positions.ndim == 1:
        if positions.shape[0] != n:
            raise InputError(f"positions has {positions.shape[0]} entries but there are {n} prompts; give one position per prompt.")
        per_prompt = positions.cpu().long()
    else:
        raise InputError(
            f"positions must be 'last', 'all', an int, a LongTensor [batch] or a BoolTensor [batch pos]; "
            f"got {type(positions).__name__}{'' if not isinstance(positions, Tensor) else f' {positions.dtype} {tuple(positions.shape)}'}."
        )
    resolved = torch.where(per_prompt < 0, per_prompt + lengths, per_prompt)
    bad = (resolved < 0) | (resolved >= lengths)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise InputError(f"Position {int(per_prompt[i])} is outside prompt {i}, which has {int(lengths[i])} tokens "
                         f"(valid: 0 to {int(lengths[i]) - 1}, or negative from the end).")
    return arange[None, :] == resolved[:, None]

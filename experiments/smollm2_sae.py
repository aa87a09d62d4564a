"""A sparse autoencoder on SmolLM2-135M's residual stream, trained on a corpus made here (issue 26).

    python -m experiments.smollm2_sae corpus      # generate the corpus (skipped when the stored one is there)
    python -m experiments.smollm2_sae all         # corpus, collect, train, evaluate, write assets/sae/smollm2-135m-L14
    python -m experiments.smollm2_sae evaluate    # re-measure the shipped SAE (evaluation.json)

What it does, in order (every step seeded; interrupted steps resume):

1. **Corpus** (`interp.tasks.corpus`): SmolLM2-135M-Instruct continues hand-written openings
   (312 over 26 genres, in a seeded order; `CORPUS`: the first 156 documents, one per opening, which
   is what 24 minutes of sampling gave on 2 shared cores), 128 tokens each, temperature 1, top-p
   0.95, plus 256 documents of Python's reference documentation (human text); held out by opening
   and by topic. Stored in ``assets/corpora/smollm2-135m`` (uint16 ids + manifest with SHA-256).
2. **Activations**: `SITE` (``resid_post`` of block 14, the middle of 30) at every position but the
   first of each training document (`residual_rows`: a forward that stops after block 14, equal to
   `probes.collect`'s rows; kept in memory, 120 MB, and cached as ``.npy`` under ``.cache``). The
   BOS position is left out (its activation is the same in every document), and so are the few
   tokens of *massive* residual norm (`MASSIVE_NORM`; Sun et al. 2024, "Massive activations in
   large language models"): a delimiter right after the BOS reaches a norm of about 24,000 against
   117-200 for ordinary tokens, and 34 such rows would otherwise carry most of the squared error.
3. **SAE**: TopK (Gao et al. 2024; `probes.sae.train_sae`) with `D_SAE` latents (4 x d_model) and
   `K` active per token, AuxK for dead latents, Adam, seeded; checkpoints so that a killed run resumes.
4. **Evaluation** on held-out documents (`EVAL_DOCS`: the first 12 of each source): L0, FVU, dead / dense latents (`probes.sae.evaluate_sae`
   on the held-out rows), and the next-token loss recovered when the reconstruction replaces the
   activation, against zero and mean ablation (`loss_recovered`: the same definitions as
   `evaluate_sae`, with the BOS and massive tokens left untouched in every run, as in training), for the whole
   held-out set, per source (generated / human), for a small slice that the tests re-measure, and
   for a random dictionary of the same size (the baseline the trained one must beat).
5. **Assets**: ``assets/sae/smollm2-135m-L14/`` with ``cfg.json`` + ``sae_weights.safetensors``
   (SAELens format, float16: 5.3 MB), ``training.json`` (settings, rows, time, loss curve) and
   ``evaluation.json`` (every number above and the command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.sites import Site

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "assets" / "corpora" / "smollm2-135m"
CACHE = ROOT / ".cache" / "smollm2-sae"
MODEL = "smollm2-135m"
#: 3 batches of 52 generated documents (156 of the 312 openings, in a seeded order) took 24 minutes of
#: wall time on 2 cores shared with five other jobs, the corpus budget; the order's next batches would extend it.
CORPUS = dict(docs_per_opening=1, generated_docs=156, doc_len=128, human_docs=256, seed=0, held_out=0.1, batch_size=52)
SITE = Site("resid_post", 14)
SAE_DIR = ROOT / "assets" / "sae" / f"smollm2-135m-L{SITE.layer}"
D_SAE = 2304
K = 32
STEPS = 1500
BATCH = 512
SEED = 0
#: documents of the held-out slice the tests re-measure: the first held-out documents of each source.
SLICE = dict(generated=3, pydoc=1)
#: held-out documents evaluated (the first of each source): the loss runs are 5 forwards of each.
EVAL_DOCS = dict(generated=12, pydoc=12)
COMMAND = "python -m experiments.smollm2_sae all"
#: Residual norms above this are "massive activations" (Sun et al. 2024): at block 14 the typical token
#: has norm 117-200 (1st-99th percentile of the training rows, 254 at the 99.99th), but a delimiter or
#: function word right after the BOS (33 of 383 training documents: "\n", ",", ".", ":", "-", " to")
#: reaches about 24,000, like the BOS itself, acting as another attention sink. Such tokens are left out
#: of training and never spliced or ablated, like the BOS: 34 rows would otherwise carry most of the loss.
MASSIVE_NORM = 1000.0


# ---------------------------------------------------------------------------- corpus and model
def load_model():
    """SmolLM2-135M on the nnsight backend (its key/value cache is what corpus sampling needs)."""
    from interp import load

    return load(MODEL, backend="nnsight")


def make_corpus(model=None, progress: bool = True):
    """The stored corpus, built first (with ``model``, or one loaded here) if it is not there."""
    from interp.tasks.corpus import build_corpus, load_corpus

    if (CORPUS_DIR / "manifest.json").is_file():
        return load_corpus(CORPUS_DIR)
    model = model if model is not None else load_model()
    return build_corpus(model, CORPUS_DIR, model_name=MODEL, progress=progress, **CORPUS)


def doc_tokens(corpus, docs) -> Int[Tensor, "doc doc_len"]:
    """Token ids of documents ``docs`` as a LongTensor ``[n doc_len]``."""
    return torch.from_numpy(corpus.tokens[np.asarray(docs)].astype(np.int64))


def held_out_docs(corpus, source: str | None = None) -> np.ndarray:
    """Indices of the held-out documents (of one ``source``: "generated" or "pydoc")."""
    if source is None:
        return corpus.held_out
    sources = np.array(corpus.sources())
    return corpus.held_out[sources[corpus.held_out] == source]


def eval_docs(corpus) -> np.ndarray:
    """The held-out documents `evaluate` measures: the first `EVAL_DOCS` of each source."""
    return np.concatenate([held_out_docs(corpus, s)[:n] for s, n in EVAL_DOCS.items()])


def slice_docs(corpus) -> np.ndarray:
    """The small held-out slice the tests re-measure (`SLICE`)."""
    return np.concatenate([held_out_docs(corpus, s)[:n] for s, n in SLICE.items()])


def after_bos(tokens: Tensor) -> Tensor:
    """Boolean mask ``[batch pos]``: every position but the first (the BOS)."""
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    return mask


# ---------------------------------------------------------------------------- activations and training
class _Stop(Exception):
    pass


def residual_rows(model, tokens: Int[Tensor, "doc pos"], batch_size: int = 16, progress: bool = False):
    """`SITE` at every position but the BOS of ``tokens``, as an in-memory `probes.ActivationStore`
    (rows ordered by document, then position; metadata as `probes.collect` records it).

    Blocks after `SITE` cannot change it, so the forward stops there: a hook on block 14 of the
    Hugging Face model under the nnsight backend keeps its output and ends the pass (half the
    cost of `probes.collect`'s full forward, which gives the same rows: a test checks it)."""
    from probes import ActivationStore

    hf = model.module
    kept: list[Tensor] = []

    def hook(module, args, output):
        kept.append((output[0] if isinstance(output, tuple) else output)[:, 1:].detach().float())
        raise _Stop

    handle = hf.model.layers[SITE.layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            for i in tqdm(range(0, tokens.shape[0], batch_size), desc=f"collect {SITE}", disable=not progress):
                try:
                    hf(input_ids=tokens[i:i + batch_size], use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    acts = torch.cat(kept)  # [doc pos-1 d]
    n, p = acts.shape[:2]
    return ActivationStore.from_tensors({SITE: acts.reshape(n * p, -1)},
                                        prompt_ids=torch.arange(n).repeat_interleave(p),
                                        positions=torch.arange(1, p + 1).repeat(n),
                                        token_ids=tokens[:, 1:].reshape(-1))


def collect_rows(model, tokens: Int[Tensor, "doc pos"], out: Path | None = None, progress: bool = True):
    """`residual_rows` of ``tokens``, kept in ``out`` (a ``.npy`` of ``float32 [rows d_model]``) and
    read back from there when it holds the rows of the same tokens."""
    from probes import ActivationStore

    if out is not None:
        key = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()[:16]
        file = Path(out) / f"rows-{key}.npy"
        if file.is_file():
            n, p = tokens.shape[0], tokens.shape[1] - 1
            return ActivationStore.from_tensors({SITE: torch.from_numpy(np.load(file))},
                                                prompt_ids=torch.arange(n).repeat_interleave(p),
                                                positions=torch.arange(1, p + 1).repeat(n),
                                                token_ids=tokens[:, 1:].reshape(-1))
    store = residual_rows(model, tokens, progress=progress)
    if out is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file.with_suffix(".tmp.npy"), store[SITE].numpy())
        file.with_suffix(".tmp.npy").rename(file)
    return store


def train(store, seed: int = SEED, steps: int = STEPS, progress: bool = True):
    """Train the TopK SAE on ``store``; checkpoints under ``.cache`` so a killed run resumes."""
    from probes.sae import train_sae

    ckpt = CACHE / f"ckpt-seed{seed}"
    sae, history = train_sae(store, D_SAE, kind="topk", k=K, site=SITE, steps=steps, batch_size=BATCH, seed=seed,
                             progress=progress, checkpoint_dir=ckpt, checkpoint_every=250, resume=True)
    sae.metadata.update(hook_name=SITE.hook_name, model_name=MODEL, seed=seed, steps=steps, prepend_bos=True,
                        context_size=CORPUS["doc_len"], dataset_path="assets/corpora/smollm2-135m")
    return sae, history


def to_shipped(sae):
    """``sae`` as it is shipped and read back: weights rounded to float16, computing in float32."""
    return sae.to(torch.float16).to(torch.float32)


def load_sae(path: str | Path = SAE_DIR):
    """The shipped SAE (stored in float16) in float32."""
    from probes.sae import load_saelens

    return load_saelens(path).to(torch.float32)


def random_sae(sae, seed: int = 0):
    """A random dictionary of ``sae``'s size and kind: unit decoder rows in random directions,
    ``W_enc = W_dec.T``, ``b_enc = 0`` and ``sae``'s ``b_dec`` (so it differs only in its directions)."""
    from probes.sae import SAE

    g = torch.Generator().manual_seed(seed)
    out = SAE(sae.d_in, sae.d_sae, sae.kind, k=sae.k, metadata=dict(sae.metadata, random=True))
    with torch.no_grad():
        W = torch.randn(sae.d_sae, sae.d_in, generator=g)
        out.W_dec.copy_(W / W.norm(dim=-1, keepdim=True))
        out.W_enc.copy_(out.W_dec.T)
        out.b_dec.copy_(sae.b_dec)
    return out.requires_grad_(False)


# ---------------------------------------------------------------------------- evaluation
@dataclass(frozen=True, eq=False)
class OrdinaryTokens:
    """An intervention applied to the ordinary tokens only: every position but the first (the BOS),
    and not where the residual norm exceeds `MASSIVE_NORM`; those keep their clean activation."""

    inner: object

    def __call__(self, act: Tensor) -> Tensor:
        keep = act.norm(dim=-1) <= MASSIVE_NORM
        keep[:, 0] = False
        out = act.clone()
        out[keep] = self.inner(act[keep]).to(act.dtype)
        return out


def ordinary_rows(store):
    """The rows of ``store`` whose norm is at most `MASSIVE_NORM` (metadata kept alongside)."""
    from probes import ActivationStore

    X = store[SITE]
    keep = X.norm(dim=-1) <= MASSIVE_NORM
    return ActivationStore.from_tensors({SITE: X[keep]}, prompt_ids=store.prompt_ids[keep],
                                        positions=store.positions[keep], token_ids=store.token_ids[keep])


@dataclass(frozen=True, eq=False)
class _Constant:
    value: Tensor

    def __call__(self, act: Tensor) -> Tensor:
        return self.value.to(act.device, act.dtype).expand_as(act).clone()


def _ce_per_doc(logits: Tensor, tokens: Tensor) -> Tensor:
    """Summed next-token cross-entropy per document ``[batch]`` of the predictions made at
    positions 1.. (the prediction at the BOS is the same in every run and is left out)."""
    pred = logits[:, 1:-1].float()
    ce = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), tokens[:, 2:].reshape(-1), reduction="none")
    return ce.reshape(tokens.shape[0], -1).double().sum(-1)


def doc_losses(model, saes: dict, tokens: Int[Tensor, "doc pos"], batch_size: int = 16, progress: bool = False) -> dict:
    """Summed next-token cross-entropy per document (nats, ``[doc]`` arrays): ``clean``; with
    `SITE` replaced by each SAE's reconstruction (``saes``: name -> SAE); and by zeros and by its
    mean over these documents' tokens (``zero``, ``mean``), always at every position but the BOS."""
    from interp.interventions import Scale
    from probes.sae import splice_sae

    batches = [tokens[i:i + batch_size] for i in range(0, tokens.shape[0], batch_size)]
    total, count, clean = 0.0, 0, []
    with torch.no_grad():
        for b in tqdm(batches, desc="clean run", disable=not progress):
            logits, cache = model.run_with_cache(b, [SITE])
            act = cache[SITE][:, 1:]
            act = act[act.norm(dim=-1) <= MASSIVE_NORM]  # the ordinary tokens [n d]
            total = total + act.double().sum(0)
            count += act.shape[0]
            clean.append(_ce_per_doc(logits, b))
        mean = (total / count).float()
        out = {"clean": torch.cat(clean).numpy()}
        edits = {**{name: splice_sae(sae) for name, sae in saes.items()}, "zero": Scale(0.0), "mean": _Constant(mean)}
        for name, iv in edits.items():
            with model.edit({SITE: OrdinaryTokens(iv)}):
                out[name] = torch.cat([_ce_per_doc(model(b), b)
                                       for b in tqdm(batches, desc=f"{name} run", disable=not progress)]).numpy()
    return out


def recovered(losses: dict, name: str = "sae", docs=None) -> dict:
    """Mean cross-entropies (per prediction) and the loss recovered by SAE ``name`` against zero
    and mean ablation, ``(CE_abl - CE_sae) / (CE_abl - CE_clean)``, over documents ``docs`` (all if None)."""
    pick = slice(None) if docs is None else np.asarray(docs)
    ce = {key: float(losses[key][pick].sum()) for key in ("clean", name, "zero", "mean")}
    n = len(losses["clean"][pick]) * losses["predictions_per_doc"]
    out = {"ce_clean": ce["clean"] / n, "ce_sae": ce[name] / n, "ce_zero": ce["zero"] / n, "ce_mean": ce["mean"] / n,
           "n_predictions": int(n)}
    for abl in ("zero", "mean"):
        out[f"recovered_{abl}"] = (ce[abl] - ce[name]) / (ce[abl] - ce["clean"])
    return out


def loss_recovered(model, sae, tokens: Int[Tensor, "doc pos"], batch_size: int = 16, progress: bool = False) -> dict:
    """Next-token cross-entropy (nats per prediction) clean, with `SITE` replaced by the SAE's
    reconstruction, by zeros and by its mean over the tokens, all at every position but the BOS;
    and the fraction of each ablation's loss gap the reconstruction recovers (`recovered`)."""
    losses = doc_losses(model, {"sae": sae}, tokens, batch_size, progress)
    losses["predictions_per_doc"] = tokens.shape[1] - 2
    return recovered(losses)


def activation_stats(sae, rows) -> dict:
    """L0, FVU, MSE, dead and dense latents (`probes.sae.evaluate_sae`) on rows or a store."""
    from probes.sae import evaluate_sae

    ev = evaluate_sae(sae, rows)
    s = ev.summary()
    return {k: s[k] for k in ("l0", "fvu", "mse", "n_rows", "dead", "dense")}


def evaluate_tokens(model, sae, tokens: Tensor, rows=None, progress: bool = False) -> dict:
    """Activation statistics and loss recovered of ``sae`` on documents ``tokens`` (``rows``: their
    activations, if already collected)."""
    if rows is None:
        rows = ordinary_rows(collect_rows(model, tokens, progress=False))
    return {**activation_stats(sae, rows), **loss_recovered(model, sae, tokens, progress=progress)}


def _rounded(d: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


def evaluate(model, corpus, sae, progress: bool = True) -> dict:
    """Every number of ``evaluation.json``: the held-out set (all, generated, human), a random
    dictionary's numbers on the same documents, and the slice the tests re-measure."""
    rand = random_sae(sae)
    held = eval_docs(corpus)
    tokens = doc_tokens(corpus, held)
    rows = ordinary_rows(collect_rows(model, tokens, CACHE / "acts-held-out", progress=progress))
    X = rows[SITE]
    sources = np.array(corpus.sources())[held]
    row_src = sources[rows.prompt_ids.numpy()]
    losses = doc_losses(model, {"sae": sae, "random": rand}, tokens, progress=progress)
    losses["predictions_per_doc"] = tokens.shape[1] - 2
    out = {"command": "python -m experiments.smollm2_sae evaluate", "site": SITE.hook_name, "model": MODEL,
           "corpus_sha256": corpus.manifest["sha256"],
           "tokens": f"the BOS and tokens of residual norm > {MASSIVE_NORM:g} are never read, spliced or ablated; losses are "
                     "over the predictions at positions 1..",
           "mean_ablation": "the mean activation over the evaluated documents' ordinary tokens",
           "held_out": {"n_docs": int(len(held)), **_rounded({**activation_stats(sae, X), **recovered(losses)})}}
    for src in ("generated", "pydoc"):
        pick = np.flatnonzero(sources == src)
        part = {**activation_stats(sae, X[torch.from_numpy(row_src == src)]), **recovered(losses, docs=pick)}
        out[f"held_out_{src}"] = {"n_docs": int(len(pick)), **_rounded(part)}
    out["random_dictionary_held_out"] = _rounded({**activation_stats(rand, X), **recovered(losses, "random")})
    docs = slice_docs(corpus)
    small = doc_tokens(corpus, docs)
    out["slice"] = {"docs": [int(d) for d in docs], **_rounded(evaluate_tokens(model, sae, small))}
    out["random_dictionary_slice"] = _rounded(evaluate_tokens(model, rand, small))
    return out


# ---------------------------------------------------------------------------- the whole run
def run_all(progress: bool = True) -> None:
    from probes.sae import save_saelens

    model = load_model()
    corpus = make_corpus(model, progress)
    train_tokens = doc_tokens(corpus, corpus.train)
    t0 = time.time()
    cached = (CACHE / "acts-train").is_dir() and any((CACHE / "acts-train").glob("rows-*.npy"))
    every_row = collect_rows(model, train_tokens, CACHE / "acts-train", progress=progress)
    store = ordinary_rows(every_row)
    collect_s = None if cached else round(time.time() - t0, 1)  # None: read back from an earlier run's .npy
    t1 = time.time()
    sae, history = train(store, progress=progress)
    train_s = time.time() - t1
    shipped = to_shipped(sae)
    save_saelens(shipped.to(torch.float16), SAE_DIR, overwrite=True)
    df = history.to_dataframe()
    every = max(1, len(df) // 60)
    info = {"command": COMMAND, "site": SITE.hook_name, "d_sae": D_SAE, "k": K, "kind": "topk", "steps": STEPS,
            "batch_size": BATCH, "seed": SEED, "rows": len(store), "train_docs": int(len(corpus.train)),
            "positions": f"every position but the BOS, and not the {len(every_row) - len(store)} rows of norm > {MASSIVE_NORM:g}", "weights_dtype": "float16 (trained in float32)",
            "corpus": str(CORPUS_DIR.relative_to(ROOT)), "corpus_sha256": corpus.manifest["sha256"],
            "collect_wall_s": collect_s, "train_wall_s": round(train_s, 1),
            "threads": torch.get_num_threads(), "final_fvu": float(df["fvu"].iloc[-1]),
            "curve": {c: [round(float(v), 5) for v in df[c].iloc[::every]] for c in ("fvu", "l0", "dead_fraction")},
            "curve_steps": [int(s) for s in df.index[::every]]}
    (SAE_DIR / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    evaluation = evaluate(model, corpus, load_sae(), progress=progress)
    (SAE_DIR / "evaluation.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    print(json.dumps({k: evaluation[k] for k in ("held_out", "slice", "random_dictionary_slice")}, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["corpus", "all", "evaluate"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "corpus":
        make_corpus()
    elif args.what == "all":
        run_all()
    else:
        model = load_model()
        evaluation = evaluate(model, make_corpus(model), load_sae())
        (SAE_DIR / "evaluation.json").write_text(json.dumps(evaluation, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

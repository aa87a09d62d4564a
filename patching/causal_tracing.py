"""Causal tracing (ROME): which hidden states carry a fact from the subject to the answer?

    result = causal_trace(model, tokens, subject_positions=[1, 2], answers=answer_ids)
    result.effects["mlp"]          # [prompt layer pos]: indirect effect of restoring MLP outputs
    result.mean("resid")           # [layer pos], averaged over prompts
    result.aggregate()             # ROME's six position groups × layer
    result.plot()                  # three heatmaps: residual stream, MLP, attention

The method (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", section 2.1).
Three runs of the same prompt: the *clean* run; the *corrupted* run, where Gaussian noise is added
to the token embeddings of the subject (std = ``noise`` × the std of the model's token-embedding
matrix; ROME uses 3×), so that the model mostly loses the answer; and *corrupted-with-restoration*
runs, where one hidden state is set back to its clean value. The *indirect effect* of a state is
``p(answer | corrupted + restored) − p(answer | corrupted)``; the *total effect* of the subject is
``p(answer | clean) − p(answer | corrupted)``. Each is averaged over ``samples`` noise draws.

What is restored, here:
  * ``resid``: the residual stream *after* layer ``l`` (``resid_post``, ROME's "hidden state of
    layer l") at one token;
  * ``mlp`` / ``attn``: the MLP (``mlp_out``) or attention (``attn_out``) outputs at one token in a
    window of ``window`` consecutive layers centred on ``l`` (layers ``l − window//2`` to
    ``l + ceil(window/2) − 1``, clipped to the model), as ROME does; the default window keeps
    ROME's proportion, 10 of 48 layers: ``max(1, round(n_layers · 10/48))``;
  * ``severed`` (ROME Figure 3): restore the residual stream at ``(l, t)`` while the MLP (or
    attention) outputs at token ``t`` in every layer after ``l`` are frozen at their values in the
    corrupted run, so that the restored state cannot act through them.

Batching: all restorations of one layer (every token position × every noise sample, the same
noise repeated for each position) run as one forward over a stacked batch, in chunks of at most
``max_batch`` rows. Prompts must be unpadded token sequences of one length (a ``[prompt pos]``
tensor, texts that tokenise to the same length, or a `PromptSet`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp import HookedModel, InputError, Site
from interp.distributed import chunk_ranges
from interp.tasks import PromptSet
from interp.tokenizers import plot_label

#: trace kind -> the site kind it restores.
TRACE_SITES = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
#: ROME's position groups (Figure 2 / the averaged traces).
GROUPS = ("first subject token", "middle subject tokens", "last subject token",
          "first subsequent token", "further tokens", "last token")


# =============================================================================== the result
@dataclass
class TraceResult:
    """Restored probabilities per kind ``[prompt layer pos]`` with the runs they are measured against.

    ``effects[kind]`` (indirect effects) = ``probs[kind] − p_corrupted``; kinds are ``resid``,
    ``mlp``, ``attn`` and ``resid_severed_mlp`` / ``resid_severed_attn``. ``noise[i, s, j]`` is
    the noise added in sample ``s`` at prompt ``i``'s ``j``-th subject position (sorted; zero-padded
    when prompts have subjects of different lengths), kept so any cell can be re-run by hand.
    """

    probs: dict[str, Float[Tensor, "prompt layer pos"]]
    p_clean: Float[Tensor, " prompt"]
    p_corrupted: Float[Tensor, " prompt"]
    tokens: Int[Tensor, "prompt pos"]
    answers: Int[Tensor, " prompt"]
    subject_positions: list[list[int]]
    noise: Float[Tensor, "prompt sample subject d_model"]
    str_tokens: list[list[str]] | None = None
    settings: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        n, layers = self.tokens.shape[0], next(iter(self.probs.values())).shape[1]
        return (f"TraceResult(prompts={n}, layers={layers}, positions={self.tokens.shape[1]}, kinds={list(self.probs)}, "
                f"p_clean={float(self.p_clean.mean()):.3f}, p_corrupted={float(self.p_corrupted.mean()):.3f})")

    @property
    def effects(self) -> dict[str, Float[Tensor, "prompt layer pos"]]:
        """Indirect effects: restored probability minus the corrupted run's, per prompt."""
        return {k: v - self.p_corrupted[:, None, None] for k, v in self.probs.items()}

    @property
    def total_effect(self) -> Float[Tensor, " prompt"]:
        return self.p_clean - self.p_corrupted

    def mean(self, kind: str = "resid") -> Float[Tensor, "layer pos"]:
        """The indirect effect of ``kind`` averaged over prompts."""
        return self._effect(kind).mean(0)

    def _effect(self, kind: str) -> Tensor:
        if kind not in self.probs:
            raise InputError(f"This trace has no kind {kind!r}; it holds {', '.join(self.probs)}.")
        return self.effects[kind]

    def aggregate(self, subject_positions: Sequence | None = None) -> dict[str, Float[Tensor, "layer group"]]:
        """Indirect effects averaged into ROME's six position groups (`GROUPS`), then over prompts.

        A group that is empty for a prompt (e.g. middle subject tokens of a one-token subject)
        does not count for that prompt; a group empty for every prompt is NaN.
        """
        subjects = self.subject_positions if subject_positions is None else _subject_lists(
            subject_positions, self.tokens.shape[0], self.tokens.shape[1])
        n_pos = self.tokens.shape[1]
        out = {}
        for kind in self.probs:
            eff = self._effect(kind)  # [prompt layer pos]
            per_prompt = torch.full((eff.shape[0], eff.shape[1], len(GROUPS)), math.nan)
            for i, subj in enumerate(subjects):
                for g, positions in enumerate(position_groups(subj, n_pos)):
                    if positions:
                        per_prompt[i, :, g] = eff[i][:, positions].mean(-1)
            out[kind] = per_prompt.nanmean(0)
        return out

    def to_dataframe(self) -> pd.DataFrame:
        """Long table: prompt, kind, layer, pos, token, prob, effect."""
        rows = []
        for kind, eff in self.effects.items():
            for i, layer, t in np.ndindex(*eff.shape):
                token = self.str_tokens[i][t] if self.str_tokens else str(int(self.tokens[i, t]))
                rows.append(dict(prompt=i, kind=kind, layer=layer, pos=t, token=token,
                                 prob=float(self.probs[kind][i, layer, t]), effect=float(eff[i, layer, t])))
        return pd.DataFrame(rows)

    def plot(self, prompt: int | None = None, kinds: Sequence[str] | None = None):
        """ROME's heatmaps (token × layer), one per kind: a prompt's, or the mean over prompts."""
        import matplotlib.pyplot as plt

        kinds = [k for k in (kinds or ("resid", "mlp", "attn", "resid_severed_mlp", "resid_severed_attn")) if k in self.probs]
        if not kinds:
            raise InputError(f"Nothing to plot: this trace holds {', '.join(self.probs)}.")
        n = self.tokens.shape[0]
        if prompt is not None and not -n <= prompt < n:
            raise InputError(f"prompt {prompt} is out of range for {n} prompts.")
        index = 0 if prompt is None else prompt
        subj = set(self.subject_positions[index])
        if self.str_tokens is not None and (prompt is not None or n == 1):
            labels = [f"{tok}*" if t in subj else tok for t, tok in enumerate(self.str_tokens[index])]
        elif self.str_tokens is not None:
            # the mean over prompts: name a position by its token where every prompt has the same one
            labels = []
            for t in range(self.tokens.shape[1]):
                same = len({row[t] for row in self.str_tokens}) == 1
                labels.append(f"{self.str_tokens[0][t] if same else ('(subject)' if t in subj else f'pos {t}')}{'*' if t in subj else ''}")
        else:
            labels = [f"pos {t}{'*' if t in subj else ''}" for t in range(self.tokens.shape[1])]
        cmaps = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
        titles = {"resid": "Restoring the residual stream", "mlp": "Restoring MLP outputs",
                  "attn": "Restoring attention outputs", "resid_severed_mlp": "Residual stream, MLPs severed",
                  "resid_severed_attn": "Residual stream, attention severed"}
        window = self.settings.get("window")
        n_layers = next(iter(self.probs.values())).shape[1]
        step = 1 if n_layers <= 12 else 5  # a tick per layer on small models, every fifth on deep ones
        fig, axes = plt.subplots(1, len(kinds), figsize=(max(3.6, 1.6 + 0.12 * n_layers) * len(kinds), 0.32 * len(labels) + 1.8),
                                 squeeze=False, layout="constrained")
        for ax, kind in zip(axes[0], kinds, strict=True):
            data = (self.mean(kind) if prompt is None else self._effect(kind)[prompt]).T  # [pos layer]
            im = ax.imshow(data.numpy(), cmap=cmaps.get(kind.split("_")[0], "Purples"), aspect="auto",
                           vmin=min(0.0, float(data.min())))
            ax.set_yticks(range(len(labels)), [plot_label(t) for t in labels])
            ax.set_xticks(range(0, data.shape[1], step))
            ax.set_xlabel(f"centre of {window}-layer window" if kind in ("mlp", "attn") else "layer")
            ax.set_ylabel("token (* = corrupted subject)")
            what = "mean over prompts" if prompt is None else f"prompt {prompt}"
            ax.set_title(f"{titles.get(kind, kind)}\n({what})", fontsize=9)
            fig.colorbar(im, ax=ax, label="indirect effect Δp(answer)")
        return fig


def position_groups(subject: Sequence[int], n_pos: int) -> list[list[int]]:
    """ROME's position groups for one prompt: lists of positions in the order of `GROUPS`."""
    first, last = min(subject), max(subject)
    end = n_pos - 1
    return [
        [first],
        [t for t in range(first + 1, last)],
        [last],
        [last + 1] if last + 1 <= end else [],
        list(range(last + 2, end)),
        [end],
    ]


# =============================================================================== helpers
def embedding_std(model: HookedModel) -> float:
    """Standard deviation of the model's token-embedding matrix (over all entries)."""
    module = model.module
    weight = None
    getter = getattr(module, "get_input_embeddings", None)
    if callable(getter):
        try:
            weight = getattr(getter(), "weight", None)
        except (NotImplementedError, AttributeError):
            weight = None
    if weight is None:
        weight = getattr(getattr(module, "embed", None), "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[0] < model.d_vocab:
        # Any model: read the embedding of every token through Site("embed").
        ids = torch.arange(model.d_vocab, device=model.device)
        width = min(model.n_ctx, model.d_vocab)
        pad = (-model.d_vocab) % width
        rows = torch.cat([ids, ids[:pad]]).reshape(-1, width)
        with torch.no_grad():
            _, cache = model.run_with_cache(rows, [Site("embed")])
        weight = cache[Site("embed")].reshape(-1, cache[Site("embed")].shape[-1])[: model.d_vocab]
    return float(weight.detach().float().std())


def _subject_lists(subject_positions, n_prompts: int, n_pos: int) -> list[list[int]]:
    if subject_positions is None:
        raise InputError(
            "causal_trace needs subject_positions: the token positions to corrupt (a list of ints for "
            "every prompt, or one list per prompt), or a PromptSet with metadata['subject_positions']."
        )
    if isinstance(subject_positions, Tensor):
        subject_positions = subject_positions.tolist()
    if isinstance(subject_positions, int):
        subject_positions = [subject_positions]
    subject_positions = list(subject_positions)
    if subject_positions and all(isinstance(p, int | np.integer) for p in subject_positions):
        lists = [list(subject_positions)] * n_prompts
    else:
        lists = [list(p.tolist() if isinstance(p, Tensor) else p) for p in subject_positions]
        if len(lists) != n_prompts:
            raise InputError(f"Got subject positions for {len(lists)} prompts but there are {n_prompts}; give one list per prompt.")
    out = []
    for i, positions in enumerate(lists):
        if not positions:
            raise InputError(f"Prompt {i} has no subject positions; give at least one position to corrupt.")
        bad = [p for p in positions if not -n_pos <= int(p) < n_pos]
        if bad:
            raise InputError(
                f"Subject positions {bad} of prompt {i} lie outside its {n_pos} tokens (valid: 0 to {n_pos - 1}, "
                f"or negative from the end). Count positions in the tokenised prompt, BOS included."
            )
        out.append(sorted({int(p) % n_pos for p in positions}))
    return out


def _prob(logits: Tensor, pos: int, answer: int) -> Tensor:
    return logits[:, pos].float().softmax(-1)[:, answer]


# =============================================================================== the trace
def causal_trace(
    model: HookedModel,
    prompts: PromptSet | Int[Tensor, "prompt pos"] | Sequence[str],
    subject_positions: Sequence[int] | Sequence[Sequence[int]] | None = None,
    answers: Int[Tensor, " prompt"] | Sequence[int] | None = None,
    noise: float = 3.0,
    noise_std: float | None = None,
    samples: int = 10,
    window: int | None = None,
    kinds: Sequence[str] = ("resid", "mlp", "attn"),
    severed: str | Sequence[str] | None = None,
    answer_pos: int | None = None,
    seed: int = 0,
    max_batch: int = 256,
    progress: bool = True,
    executor=None,
) -> TraceResult:
    """ROME causal tracing of every layer × token for each prompt (see the module docstring).

    ``prompts``: a `PromptSet` (its clean tokens, answers, answer_pos and, unless given,
    ``metadata["subject_positions"]`` are used), token ids ``[prompt pos]`` or texts.
    ``subject_positions``: positions to corrupt, one list for all prompts or one per prompt.
    ``answers``: the answer token id per prompt, read at ``answer_pos`` (default: the last position).
    ``noise``: noise std in units of the token-embedding std (``noise_std`` sets it absolutely).
    ``severed``: "mlp", "attn" or both: also trace the residual stream with those outputs frozen.
    ``executor``: None runs here; an `interp.distributed.RayExecutor` traces chunks of prompts on its
    workers. The noise of prompt ``i`` is drawn here (``samples`` draws per prompt, in prompt order,
    from one generator seeded with ``seed``), so it depends on the prompt's index, never on the
    worker, and the result equals the single-process one exactly.
    """
    # ---------------------------------------------------------------- inputs
    if isinstance(prompts, PromptSet):
        tokens = prompts.clean
        answers = prompts.answers if answers is None else answers
        answer_pos = prompts.answer_pos if answer_pos is None else answer_pos
        if subject_positions is None:
            subject_positions = prompts.metadata.get("subject_positions")
    else:
        tokens = prompts
    tokens = model.check_tokens(tokens)
    n_prompts, n_pos = tokens.shape
    answer_pos = -1 if answer_pos is None else int(answer_pos)
    if not -n_pos <= answer_pos < n_pos:
        raise InputError(f"answer_pos {answer_pos} is outside prompts of {n_pos} tokens.")
    if answers is None:
        raise InputError("causal_trace needs answers: the token id of the correct answer for each prompt.")
    answers = torch.as_tensor(answers, dtype=torch.long).reshape(-1)
    if answers.shape[0] != n_prompts:
        raise InputError(f"Expected {n_prompts} answers (one per prompt), got {answers.shape[0]}.")
    if int(answers.min()) < 0 or int(answers.max()) >= model.d_vocab:
        raise InputError(f"Answer ids must lie in [0, {model.d_vocab}); got {answers.tolist()}.")
    subjects = _subject_lists(subject_positions, n_prompts, n_pos)
    kinds = list(dict.fromkeys(kinds))
    unknown = [k for k in kinds if k not in TRACE_SITES]
    if unknown:
        raise InputError(f"Unknown trace kinds {unknown}; choose from {', '.join(TRACE_SITES)}.")
    severed = [] if severed is None else [severed] if isinstance(severed, str) else list(severed)
    bad = [s for s in severed if s not in ("mlp", "attn")]
    if bad:
        raise InputError(f"severed must be 'mlp', 'attn' or both, got {bad}.")
    if not model.has_mlp and ("mlp" in kinds or "mlp" in severed):
        raise InputError("This model is attention-only, so it has no MLP outputs to restore; use kinds=('resid', 'attn').")
    L = model.n_layers
    if window is None:
        window = max(1, round(L * 10 / 48))
    if not isinstance(window, int) or not 1 <= window <= L:
        raise InputError(f"window={window} must be an int from 1 to the number of layers ({L}); ROME uses 10 of 48.")
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}.")
    if noise_std is None:
        if noise < 0:
            raise InputError(f"noise must be non-negative (a multiple of the embedding std), got {noise}.")
        noise_std = noise * embedding_std(model)
    if noise_std < 0:
        raise InputError(f"noise_std must be non-negative, got {noise_std}.")

    # ---------------------------------------------------------------- tracing
    S, d = samples, model.d_model
    gen = torch.Generator().manual_seed(seed)
    eps = [torch.randn(S, len(subj), d, generator=gen) * noise_std for subj in subjects]  # prompt i's noise
    all_noise = torch.zeros(n_prompts, S, max(len(s) for s in subjects), d)
    for i, e in enumerate(eps):
        all_noise[i, :, : e.shape[1]] = e
    job = _Job(tokens, subjects, answers, eps, answer_pos, kinds, severed, window, max(1, max_batch // S))
    if executor is None:
        bar = tqdm(total=n_prompts * len(job.keys) * L, desc="causal trace", disable=not progress)
        probs, p_clean, p_corr = job.run(model, range(n_prompts), bar.update)
        bar.close()
    else:
        chunks = chunk_ranges(n_prompts, executor.chunks)
        parts = executor.map(_trace_chunk, chunks, shared=job.to("cpu"), model=model, progress=progress,
                             desc=f"causal trace on {executor.num_workers} workers",
                             weights=[len(c) * len(job.keys) * L for c in chunks])
        probs = {k: torch.cat([part[0][k] for part in parts]) for k in job.keys}
        p_clean, p_corr = (torch.cat([part[j] for part in parts]) for j in (1, 2))
    str_tokens = None
    if model.tokenizer is not None:
        try:
            str_tokens = model.to_str_tokens(tokens.cpu())
        except Exception:  # noqa: BLE001 - token strings are only labels
            str_tokens = None
    return TraceResult(
        probs=probs, p_clean=p_clean, p_corrupted=p_corr, tokens=tokens.cpu(), answers=answers.cpu(),
        subject_positions=subjects, noise=all_noise, str_tokens=str_tokens,
        settings=dict(noise=noise, noise_std=noise_std, samples=samples, window=window, kinds=tuple(kinds),
                      severed=tuple(severed), answer_pos=answer_pos, seed=seed,
                      restored=dict(resid="resid_post", mlp="mlp_out", attn="attn_out")),
    )


@dataclass
class _Job:
    """What tracing a prompt needs beyond the model: its tokens, subject, answer and noise."""

    tokens: Tensor  # [prompt pos]
    subjects: list[list[int]]
    answers: Tensor  # [prompt]
    eps: list[Tensor]  # per prompt: [sample subject d_model]
    answer_pos: int
    kinds: list[str]
    severed: list[str]
    window: int
    chunk: int  # positions per forward

    @property
    def keys(self) -> list[str]:
        return [*self.kinds, *(f"resid_severed_{s}" for s in self.severed)]

    def to(self, device) -> _Job:
        return dataclasses.replace(self, tokens=self.tokens.to(device))

    def run(self, model: HookedModel, prompts: Sequence[int], update=lambda k: None):
        """Restored probabilities ``{key: [prompt layer pos]}``, p_clean and p_corrupted ``[prompt]``
        of ``prompts`` (indices), each prompt traced on its own."""
        tokens = self.tokens.to(model.device)
        L, n_pos, keys, window, answer_pos = model.n_layers, tokens.shape[1], self.keys, self.window, self.answer_pos
        need = {TRACE_SITES[k] for k in self.kinds + self.severed} | ({"resid_post"} if self.severed else set())
        probs = {k: torch.zeros(len(prompts), L, n_pos) for k in keys}
        p_clean, p_corr = torch.zeros(len(prompts)), torch.zeros(len(prompts))
        site_list = [Site(kind, layer) for kind in sorted(need) for layer in range(L)]
        with torch.no_grad():
            for r, i in enumerate(prompts):
                row, answer, eps, S = tokens[i : i + 1], int(self.answers[i]), self.eps[i], self.eps[i].shape[0]
                noise_full = torch.zeros(S, n_pos, eps.shape[2])
                noise_full[:, self.subjects[i]] = eps
                noise_full = noise_full.to(model.device)
                clean_logits, clean = model.run(row, reads=site_list)
                p_clean[r] = _prob(clean_logits, answer_pos, answer)[0]
                corr_logits, corrupted = model.run(
                    row.expand(S, n_pos), reads=site_list, edits={Site("embed"): _add(noise_full)})
                p_corr[r] = _prob(corr_logits, answer_pos, answer).mean()

                run = _Restorer(model, row, noise_full, answer, answer_pos, S, self.chunk, clean, corrupted)
                fast = _restored_fast(model, row, noise_full, answer, answer_pos, self.kinds, window, self.chunk * S)
                for key, value in (fast or {}).items():
                    probs[key][r] = value
                    update(L)
                for key in keys:
                    if fast is not None and key in fast:
                        continue
                    for layer in range(L):
                        if key == "resid":
                            probs[key][r, layer] = run(layer, "resid_post", [layer])
                        elif key in ("mlp", "attn"):
                            lo, hi = max(0, layer - window // 2), min(L, layer - (-window // 2))
                            probs[key][r, layer] = run(layer, TRACE_SITES[key], range(lo, hi))
                        else:
                            frozen = TRACE_SITES[key.rsplit("_", 1)[1]]
                            probs[key][r, layer] = run(layer, "resid_post", [layer], frozen, range(layer + 1, L))
                        update(1)
        return probs, p_clean, p_corr


def _restored_fast(model: HookedModel, row: Tensor, noise: Tensor, answer: int, answer_pos: int, kinds: Sequence[str],
                   window: int, batch_size: int) -> dict[str, Float[Tensor, "layer pos"]] | None:
    """The restorations of ``kinds`` (not the severed ones) for one prompt on the fast engine
    (`patching.fast`), or None where it does not apply: one sweep whose interventions restore the clean
    state at one position in a window of layers, over the noised run (``noise [sample pos d_model]``
    on the embedding) as its base, so the layers before the window and the positions before the
    first noised one are computed once."""
    from patching import fast, metrics

    samples, n_pos = noise.shape[0], row.shape[1]
    L = model.n_layers
    cells, shape = [], []
    for key in kinds:
        for layer in range(L):
            lo, hi = (layer, layer + 1) if key == "resid" else (max(0, layer - window // 2), min(L, layer - (-window // 2)))
            cells += [[Site(TRACE_SITES[key], j, pos=pos) for j in range(lo, hi)] for pos in range(n_pos)]
        shape.append(key)
    tokens = row.expand(samples, n_pos)
    prompts = PromptSet(tokens, tokens, torch.full((samples,), answer), None, answer_pos=answer_pos)
    run = fast.FastRun.setup(model, prompts, cells, metrics.prob, "denoise", "other", None, None, batch_size,
                             base_noise=noise)
    if run is None:
        return None
    values = run.values().float().view(len(shape), L, n_pos)
    return {key: values[i] for i, key in enumerate(shape)}


def _trace_chunk(model: HookedModel, job: _Job, chunk: range, memo: dict):
    """A worker's share of an executor's trace: prompts ``chunk``."""
    return job.run(model, chunk)


@dataclass
class _Restorer:
    """Corrupted runs of one prompt with clean states restored, one token position per batch row group."""

    model: HookedModel
    row: Tensor  # [1 pos]
    noise: Tensor  # [sample pos d_model], zero outside the subject
    answer: int
    answer_pos: int
    samples: int
    chunk: int  # positions per forward
    clean: dict  # Site -> [1 pos d] from the clean run
    corrupted: dict  # Site -> [sample pos d] from the corrupted run

    def __call__(self, layer: int, kind: str, layers: Sequence[int], frozen_kind: str | None = None,
                 frozen_layers: Sequence[int] = ()) -> Float[Tensor, " pos"]:
        """p(answer) with ``kind`` restored in ``layers`` at each position in turn (mean over samples);
        ``frozen_kind`` outputs in ``frozen_layers`` are held at their corrupted values at that position."""
        n_pos, S = self.row.shape[1], self.samples
        out = torch.zeros(n_pos)
        for start in range(0, n_pos, self.chunk):
            positions = torch.arange(start, min(n_pos, start + self.chunk))
            T = len(positions)
            onehot = torch.nn.functional.one_hot(positions, n_pos).bool().to(self.noise.device)
            mask = einops.repeat(onehot, "t p -> (t s) p 1", s=S)
            edits = [(Site("embed"), _add(einops.repeat(self.noise, "s p d -> (t s) p d", t=T)))]
            for j in layers:
                edits.append((Site(kind, j), _where(mask, self.clean[Site(kind, j)])))
            for j in frozen_layers:
                value = einops.repeat(self.corrupted[Site(frozen_kind, j)], "s p d -> (t s) p d", t=T)
                edits.append((Site(frozen_kind, j), _where(mask, value)))
            logits, _ = self.model.run(self.row.expand(T * S, n_pos), edits=edits)
            p = _prob(logits, self.answer_pos, self.answer)
            out[positions] = einops.reduce(p.cpu(), "(t s) -> t", "mean", s=S)
        return out


def _add(value: Tensor):
    return lambda act: act + value.to(act.dtype)


def _where(mask: Tensor, value: Tensor):
    """Set the rows × positions marked in ``mask [rows pos 1]`` to ``value`` (broadcast to the activation)."""
    return lambda act: torch.where(mask, value.to(act.dtype), act)

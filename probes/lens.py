"""Reading the residual stream in vocabulary space: the logit lens and direct logit attribution.

    lens = logit_lens(model, tokens, answers="next")       # every layer's residual decoded
    lens.answer_prob            # [layer batch pos] probability of the answer at each layer
    lens.top_tokens(prompt=0, pos=-1); lens.plot("prob")
    dla = direct_logit_attribution(model, prompts)       # each head, MLP, embedding, bias
    dla.heads                   # [layer head] mean contribution to the logit difference
    dla.top(10); dla.plot()

A transformer's logits are ``unembed(norm(resid_final))``, and ``resid_final`` is the sum of the
embeddings and every attention and MLP layer's write. The **logit lens** (nostalgebraist 2020)
decodes an *intermediate* residual stream through the same final norm and unembedding, to see what
the model would predict if it stopped there. The final norm can be applied two ways, and both are
offered: ``norm="recomputed"`` (the usual logit lens) normalises each intermediate residual by its
own scale; ``norm="frozen"`` divides every residual by the *final* residual's scale, which makes the
read-out linear in the residual (TransformerLens's ``apply_ln_to_stack`` default).

**Direct logit attribution** uses the frozen form: with the final norm's scale fixed at its value on
the actual run, the logit (or logit difference, or any direction) is a sum over the residual's
components, so each head's, each MLP's and the embeddings' *direct* contribution can be read off,
plus one term for the biases (the final norm's bias and the unembedding's). The contributions add
up to the actual logit difference. Direct effects ignore what later layers do with a component's
write; patching (`patching.activation_patch`) measures total effects.

Both read the final norm and unembedding from the model's anatomy (`patching.anatomy.read_out`:
LayerNorm, RMSNorm and Gemma's ``1 + w`` RMSNorm) and check that together they reproduce the
model's logits; a model whose read-out they cannot reproduce gets an error rather than wrong numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InputError, InterpError
from interp.models import token_texts
from interp.sites import Site
from interp.tokenizers import plot_label
from patching.anatomy import NormSpec, read_out, softcap
from probes.collect import _as_tokens as _tokens_and_lengths

NORM_MODES = ("recomputed", "frozen")


class ReadoutError(InterpError):
    """The model's final norm and unembedding could not be read as a LayerNorm / RMSNorm and a linear map."""


# =============================================================================== the read-out
@dataclass
class Readout:
    """A model's final norm and unembedding as float32 tensors, read from its anatomy
    (`patching.anatomy.read_out`).

        r = Readout.of(model)
        r.logits(resid)                  # [... vocab] = unembed(norm(resid)), soft-capped if the model does
        r.normalize(resid, scale=None)   # recomputed norm; pass ``scale`` [... 1] to freeze it
        r.scale(resid)                   # [... 1] the norm's divisor for ``resid``

    ``norm`` is the final norm (`patching.anatomy.NormSpec`: ``kind`` "layer", "rms" or "none";
    its ``weight`` includes Gemma's ``+1``); ``W_U`` is ``[d_model vocab]``.
    """

    norm: NormSpec
    W_U: Float[Tensor, "d_model vocab"]
    b_U: Float[Tensor, " vocab"] | None
    softcap: float | None = None

    @property
    def kind(self) -> str:
        return self.norm.kind

    @property
    def bias(self) -> Float[Tensor, " d_model"] | None:
        return self.norm.bias

    def scale(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... 1"]:
        return self.norm.scale(x.float())

    def normalize(self, x: Float[Tensor, "... d_model"], scale: Tensor | None = None, with_bias: bool = True) -> Float[Tensor, "... d_model"]:
        """The final norm of ``x`` (its own scale, or ``scale`` frozen from another residual)."""
        return self.norm(x, scale, with_bias)

    def unembed(self, y: Float[Tensor, "... d_model"], cap: bool = True) -> Float[Tensor, "... vocab"]:
        logits = y.float() @ self.W_U
        if self.b_U is not None:
            logits = logits + self.b_U
        return softcap(logits, self.softcap if cap else None)

    def logits(self, x: Float[Tensor, "... d_model"], scale: Tensor | None = None) -> Float[Tensor, "... vocab"]:
        return self.unembed(self.normalize(x, scale))

    def cpu(self) -> Readout:
        """The same read-out with its tensors on the CPU."""
        return dataclasses.replace(self, norm=self.norm.to("cpu"), W_U=self.W_U.cpu(), b_U=None if self.b_U is None else self.b_U.cpu())

    @classmethod
    def of(cls, model) -> Readout:
        """Read ``model``'s final norm and unembedding (either backend) from its anatomy."""
        try:
            norm, W_U, b_U, cap = read_out(model)
        except ValueError as error:
            raise ReadoutError(f"The logit lens and direct logit attribution cannot read this model: {error}. Decode "
                               f"residuals with the model's own modules instead.") from None
        return cls(norm, W_U.detach().float().T.contiguous(), None if b_U is None else b_U.detach().float(), cap)


def _check_final(readout: Readout, resid_final: Tensor, logits: Tensor) -> None:
    """The read-out applied to the final residual must give the model's logits (to float32 rounding, or
    to half precision's where the model computes in 16 bits: judged by the logits' own dtype)."""
    ours = readout.logits(resid_final).float()
    theirs = logits.float()
    diff = float((ours - theirs).abs().max())
    limit = (1e-3 if logits.dtype == torch.float32 else 5e-2) * max(1.0, float(theirs.abs().max()))
    if diff > limit:
        raise ReadoutError(f"The final norm and unembedding read from this model reproduce its logits only to {diff:.3g} "
                           f"(allowed {limit:.3g}): something after the last block that the read-out does not know "
                           f"changes them, so the lens would be wrong for this model.")


# =============================================================================== tokens and answers
def _as_tokens(model, tokens) -> Int[Tensor, "batch pos"]:
    """Token ids ``[batch pos]`` from ids or text(s), as `probes.collect` reads them."""
    return _tokens_and_lengths(model, tokens)[0]


def _answer_ids(model, answers, tokens: Tensor) -> Tensor | None:
    """Answers as ``[batch pos]`` token ids (-1 where a position has none)."""
    batch, seq = tokens.shape
    if answers is None:
        return None
    if isinstance(answers, str):
        if answers != "next":
            raise InputError(f"answers={answers!r}: give 'next' (each position's next token), token ids [batch] or "
                             f"[batch pos], or None.")
        out = torch.full_like(tokens, -1)
        out[:, :-1] = tokens[:, 1:]
        return out
    ids = torch.as_tensor(answers, device=tokens.device)
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise InputError(f"answers must be integer token ids, got dtype {ids.dtype}.")
    ids = ids.long()
    if ids.ndim == 1 and ids.shape[0] == batch:
        ids = ids[:, None].expand(batch, seq)
    if ids.shape != (batch, seq):
        raise InputError(f"answers of shape {tuple(ids.shape)} do not fit tokens {tuple(tokens.shape)}: give one id per "
                         f"prompt [{batch}], one per position [{batch} {seq}], or 'next'.")
    bad = ids[(ids < -1) | (ids >= model.d_vocab)]
    if bad.numel():
        raise InputError(f"answer id {int(bad[0])} is outside the vocabulary [0, {model.d_vocab}); use ids the model has.")
    return ids


# =============================================================================== logit lens
@dataclass
class LensResult:
    """What each decoded residual stream predicts.

    ``labels``: one per decoded state (``"0_pre"``, ``"0_mid"``, ..., ``"final_post"``, as in
    TransformerLens's ``accumulated_resid``). Tensors are on the CPU, float32:
    ``top_ids`` / ``top_probs`` ``[layer batch pos k]``; with answers, ``answer_prob``,
    ``answer_log_prob`` and ``answer_rank`` (0 = top) ``[layer batch pos]``, NaN / -1 where a
    position has no answer; ``logits`` ``[layer batch pos vocab]`` only with ``keep_logits=True``.
    """

    labels: list[str]
    tokens: Int[Tensor, "batch pos"]
    top_ids: Int[Tensor, "layer batch pos k"]
    top_probs: Float[Tensor, "layer batch pos k"]
    answer_prob: Float[Tensor, "layer batch pos"] | None = None
    answer_log_prob: Float[Tensor, "layer batch pos"] | None = None
    answer_rank: Int[Tensor, "layer batch pos"] | None = None
    logits: Float[Tensor, "layer batch pos vocab"] | None = None
    str_tokens: list[list[str]] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.settings.items() if k != "vocab"}  # the id -> text table can be long
        return f"LensResult(states={len(self.labels)}, tokens={tuple(self.tokens.shape)}, settings={shown})"

    def _token(self, i: int) -> str:
        return (self.settings.get("vocab") or {}).get(i, str(i))

    def top_tokens(self, prompt: int = 0, pos: int = -1):
        """A DataFrame of the top-k predictions of every decoded state at one prompt and position."""
        import pandas as pd

        rows = []
        for layer, label in enumerate(self.labels):
            for rank in range(self.top_ids.shape[-1]):
                token = int(self.top_ids[layer, prompt, pos, rank])
                rows.append(dict(state=label, rank=rank, token_id=token, token=self._token(token),
                                 prob=float(self.top_probs[layer, prompt, pos, rank])))
        return pd.DataFrame(rows)

    def to_dataframe(self):
        """One row per (state, prompt, position): the top token and, with answers, the answer's probability and rank."""
        import pandas as pd

        L, B, S, _ = self.top_ids.shape
        index = torch.cartesian_prod(torch.arange(L), torch.arange(B), torch.arange(S))
        data = dict(state=[self.labels[i] for i in index[:, 0].tolist()], prompt=index[:, 1].numpy(), pos=index[:, 2].numpy(),
                    top_token_id=self.top_ids[..., 0].reshape(-1).numpy(), top_prob=self.top_probs[..., 0].reshape(-1).numpy())
        if self.answer_prob is not None:
            data.update(answer_prob=self.answer_prob.reshape(-1).numpy(), answer_rank=self.answer_rank.reshape(-1).numpy())
        return pd.DataFrame(data)

    def plot(self, value: str = "prob", prompt: int | None = None, title: str | None = None):
        """Heatmap of the answer's probability (``value="prob"``), log-probability (``"log_prob"``)
        or rank (``"rank"``) by decoded state × position, averaged over prompts (or one ``prompt``);
        token strings of the first (or chosen) prompt label the position axis. Returns the Figure."""
        import matplotlib.pyplot as plt

        if self.answer_prob is None:
            raise InputError("This lens was computed without answers; pass answers= (e.g. 'next') to plot their probability.")
        tables = {"prob": self.answer_prob, "log_prob": self.answer_log_prob, "rank": self.answer_rank.float()}
        if value not in tables:
            raise InputError(f"value={value!r}: choose 'prob', 'log_prob' or 'rank'.")
        data = tables[value].clone()
        data[self.answer_rank < 0] = float("nan")
        grid = data.nanmean(1) if prompt is None else data[:, prompt]
        fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * grid.shape[1] + 2.5), max(2.5, 0.35 * grid.shape[0] + 1.5)))
        cmap = "viridis_r" if value == "rank" else "viridis"
        image = ax.imshow(grid.numpy(), aspect="auto", cmap=cmap)
        ax.set_yticks(range(len(self.labels)), self.labels)
        ax.set_ylabel("residual stream decoded")
        row = 0 if prompt is None else prompt
        ticks = [plot_label(t) for t in self.str_tokens[row]] if self.str_tokens else [str(i) for i in range(grid.shape[1])]
        ax.set_xticks(range(grid.shape[1]), ticks, rotation=90)
        ax.set_xlabel("position" + (" (tokens of prompt 0)" if prompt is None and self.str_tokens else ""))
        label = {"prob": "p(answer)", "log_prob": "log p(answer)", "rank": "rank of the answer (0 = top)"}[value]
        fig.colorbar(image, ax=ax, label=label + ("" if prompt is not None else ", mean over prompts"))
        ax.set_title(title or f"logit lens ({self.settings.get('norm')} final norm)")
        fig.tight_layout()
        return fig


def _lens_sites(model, sublayers: bool) -> tuple[list[Site], list[str]]:
    sites, labels = [], []
    mid = sublayers and "resid_mid" in model.supported_kinds
    if sublayers and not mid:
        raise InputError(f"sublayers=True needs resid_mid, which this model does not have ({model.why_unsupported('resid_mid') or 'no MLP'}); "
                         f"use sublayers=False.")
    for layer in range(model.n_layers):
        sites.append(Site("resid_pre", layer))
        labels.append(f"{layer}_pre")
        if mid:
            sites.append(Site("resid_mid", layer))
            labels.append(f"{layer}_mid")
    sites.append(Site("resid_post", model.n_layers - 1))
    labels.append("final_post")
    return sites, labels


@torch.no_grad()
def logit_lens(
    model,
    tokens: Int[Tensor, "batch pos"] | str | list[str],
    answers: Int[Tensor, " batch"] | Int[Tensor, "batch pos"] | str | None = None,
    norm: str = "recomputed",
    sublayers: bool = False,
    k: int = 5,
    keep_logits: bool = False,
) -> LensResult:
    """Decode the residual stream before every layer (and after the last) through the final norm
    and the unembedding.

    ``tokens``: ``[batch pos]`` ids or text(s). ``answers``: None, ``"next"`` (each position's next
    token: the lens of next-token prediction), ids ``[batch]`` (one answer per prompt, scored at
    every position) or ``[batch pos]``. ``norm``: ``"recomputed"`` (each residual's own norm scale)
    or ``"frozen"`` (the final residual's scale: linear, as direct logit attribution uses).
    ``sublayers``: also decode the residual between attention and MLP (``resid_mid``). ``k``: top
    predictions kept per state. ``keep_logits``: keep ``[layer batch pos vocab]`` logits (large for
    real vocabularies). Returns a `LensResult` (CPU, float32).
    """
    if norm not in NORM_MODES:
        raise InputError(f"norm={norm!r}: choose 'recomputed' (each residual's own scale) or 'frozen' (the final residual's).")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= model.d_vocab:
        raise InputError(f"k={k!r} must be an int from 1 to the vocabulary size {model.d_vocab}.")
    tokens = _as_tokens(model, tokens)
    answer_ids = _answer_ids(model, answers, tokens)
    readout = Readout.of(model)
    sites, labels = _lens_sites(model, sublayers)
    logits, cache = model.run_with_cache(tokens, sites)
    final = cache[sites[-1]].float()
    _check_final(readout, final, logits)
    frozen = readout.scale(final) if norm == "frozen" else None
    tops, top_p, probs, logps, ranks, kept = [], [], [], [], [], []
    for site in sites:
        state_logits = readout.logits(cache[site].float(), frozen)
        log_probs = state_logits.log_softmax(-1)
        p, ids = log_probs.topk(k, dim=-1)
        tops.append(ids.cpu())
        top_p.append(p.exp().cpu())
        if answer_ids is not None:
            has = answer_ids >= 0
            lp = log_probs.gather(-1, answer_ids.clamp(min=0)[..., None])[..., 0]
            rank = (state_logits > state_logits.gather(-1, answer_ids.clamp(min=0)[..., None])).sum(-1)
            logps.append(torch.where(has, lp, torch.nan).cpu())
            probs.append(torch.where(has, lp.exp(), torch.nan).cpu())
            ranks.append(torch.where(has, rank, -1).cpu())
        if keep_logits:
            kept.append(state_logits.cpu())
    str_tokens = _str_tokens(model, tokens)
    top_ids = torch.stack(tops)
    return LensResult(
        labels=labels, tokens=tokens.cpu(), top_ids=top_ids, top_probs=torch.stack(top_p),
        answer_prob=torch.stack(probs) if probs else None, answer_log_prob=torch.stack(logps) if logps else None,
        answer_rank=torch.stack(ranks) if ranks else None, logits=torch.stack(kept) if kept else None,
        str_tokens=str_tokens, settings=dict(norm=norm, sublayers=sublayers, k=k, answers=answers if isinstance(answers, str) else
                                             (None if answers is None else "ids"), vocab=_token_strings(model, top_ids)),
    )


def _str_tokens(model, tokens: Tensor) -> list[list[str]] | None:
    try:
        return model.to_str_tokens(tokens.cpu())
    except InterpError:
        return None


def _token_strings(model, ids: Tensor) -> dict[int, str] | None:
    """``{id: token string}`` for the ids that occur in ``ids`` (not the whole vocabulary)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return None
    unique = ids.unique().tolist()
    try:
        return dict(zip(unique, token_texts(tok, unique), strict=True))
    except Exception:  # a tokenizer without that method: the tables show ids
        return None


# =============================================================================== direct logit attribution
@dataclass
class DLAResult:
    """Each component's direct contribution to a logit difference (or direction).

    ``per_prompt`` ``[prompt component]`` (CPU, float32) with ``labels`` (``"embed"``,
    ``"L{l}H{h}"``, ``"L{l} attn bias"``, ``"L{l} MLP"``, ``"bias"``; ``"other"`` only where the
    named components do not add up to the final residual). ``values`` is the mean over prompts;
    ``heads`` ``[layer head]`` and ``mlps`` ``[layer]`` are views of it; ``total`` ``[prompt]`` sums
    the components and ``actual`` ``[prompt]`` is the model's own logit difference (before any
    logit soft-capping): they agree to float precision.
    """

    per_prompt: Float[Tensor, "prompt component"]
    labels: list[str]
    n_layers: int
    n_heads: int
    actual: Float[Tensor, " prompt"]
    settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        top = self.top(3)
        lead = ", ".join(f"{c} {v:+.3g}" for c, v in zip(top["component"], top["mean"], strict=True))
        return (f"DLAResult(prompts={self.per_prompt.shape[0]}, components={len(self.labels)}, "
                f"actual={float(self.actual.mean()):.4g}, top: {lead}, settings={self.settings})")

    @property
    def values(self) -> Float[Tensor, " component"]:
        return self.per_prompt.mean(0)

    @property
    def total(self) -> Float[Tensor, " prompt"]:
        return self.per_prompt.sum(1)

    def _pick(self, names: list[str]) -> Tensor:
        index = {name: i for i, name in enumerate(self.labels)}
        return self.values[[index[n] for n in names]]

    @property
    def heads(self) -> Float[Tensor, "layer head"]:
        names = [f"L{a}H{h}" for a in range(self.n_layers) for h in range(self.n_heads)]
        return self._pick(names).reshape(self.n_layers, self.n_heads)

    @property
    def mlps(self) -> Float[Tensor, " layer"] | None:
        names = [f"L{a} MLP" for a in range(self.n_layers)]
        return self._pick(names) if names[0] in self.labels else None

    def component(self, name: str) -> Float[Tensor, " prompt"]:
        """One component's contribution per prompt, by label (e.g. ``"L1H3"``, ``"L0 MLP"``, ``"embed"``)."""
        if name not in self.labels:
            from interp.errors import closest

            raise InputError(f"No component {name!r}.{closest(name, self.labels)} Components: {', '.join(self.labels[:6])}, ...")
        return self.per_prompt[:, self.labels.index(name)]

    def to_dataframe(self):
        """One row per component: ``component``, ``kind``, ``layer``, ``head``, ``mean``, ``std``."""
        import pandas as pd

        rows = []
        for i, name in enumerate(self.labels):
            kind, layer, head = _parse_label(name)
            rows.append(dict(component=name, kind=kind, layer=layer, head=head, mean=float(self.values[i]),
                             std=float(self.per_prompt[:, i].std()) if self.per_prompt.shape[0] > 1 else 0.0))
        return pd.DataFrame(rows)

    def top(self, k: int = 10):
        """The ``k`` components of largest mean |contribution| (a DataFrame, largest first)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"top(k) needs a positive int k, got {k!r}.")
        df = self.to_dataframe()
        order = df["mean"].abs().sort_values(ascending=False, kind="stable").index
        return df.loc[order[:k]].reset_index(drop=True)

    def plot(self, title: str | None = None):
        """A layer × head heatmap of the heads' mean contributions beside bars for the MLPs, the
        embeddings and the biases (one colour scale, centred at zero). Returns the Figure."""
        import matplotlib.pyplot as plt

        heads = self.heads.numpy()
        others = [n for n in self.labels if not n.startswith("L") or not _parse_label(n)[0] == "head"]
        other_values = self._pick(others).numpy()
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(4 + 0.45 * self.n_heads + 0.3 * len(others), 0.4 * self.n_layers + 3),
                                     gridspec_kw=dict(width_ratios=[max(self.n_heads, 2), max(len(others) // 2, 2)]))
        limit = float(max(abs(heads).max(), 1e-9))
        image = ax.imshow(heads, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(self.n_heads), [f"H{h}" for h in range(self.n_heads)])
        ax.set_yticks(range(self.n_layers), [f"L{a}" for a in range(self.n_layers)])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title("attention heads")
        fig.colorbar(image, ax=ax, label=self.settings.get("target", "contribution"))
        colours = ["#b2182b" if v > 0 else "#2166ac" for v in other_values]
        bx.barh(range(len(others)), other_values, color=colours)
        bx.set_yticks(range(len(others)), others)
        bx.invert_yaxis()
        bx.axvline(0, color="black", linewidth=0.8)
        bx.set_xlabel(self.settings.get("target", "contribution"))
        bx.set_title("MLPs, embeddings, biases")
        fig.suptitle(title or f"direct logit attribution (mean over {self.per_prompt.shape[0]} prompts; "
                              f"sum {float(self.total.mean()):.3g}, actual {float(self.actual.mean()):.3g})")
        fig.tight_layout()
        return fig


def _parse_label(name: str) -> tuple[str, int | None, int | None]:
    if name.startswith("L") and "H" in name and " " not in name:
        layer, head = name[1:].split("H")
        return "head", int(layer), int(head)
    if name.startswith("L") and name.endswith(" MLP"):
        return "mlp", int(name[1:-4]), None
    if name.startswith("L") and name.endswith(" attn bias"):
        return "attn_bias", int(name[1:].split(" ")[0]), None
    return name, None, None


def _target_directions(readout: Readout, answers: Tensor, wrong: Tensor | None, direction: Tensor | None,
                       batch: int, d_model: int) -> tuple[Float[Tensor, "batch d_model"], Float[Tensor, " batch"], str]:
    """The direction in the normalised residual that each prompt's target reads, and the
    unembedding bias's share of the target."""
    if direction is not None:
        d = torch.as_tensor(direction).float()
        if d.shape != (d_model,):
            raise InputError(f"direction has shape {tuple(d.shape)}; give one vector [{d_model}] in the (normalised) residual stream.")
        return d.expand(batch, d_model), torch.zeros(batch), "direction"
    W_U, b_U = readout.W_U, readout.b_U if readout.b_U is not None else torch.zeros(readout.W_U.shape[1])
    dirs, bias = W_U[:, answers].T, b_U[answers]
    if wrong is None:
        return dirs, bias, "logit of the answer"
    return dirs - W_U[:, wrong].T, bias - b_U[wrong], "logit difference (answer - wrong)"


def _checked_ids(model, ids, batch: int, name: str) -> Tensor | None:
    if ids is None:
        return None
    t = torch.as_tensor(ids)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise InputError(f"{name} must be integer token ids, got dtype {t.dtype}.")
    t = t.long().reshape(-1).cpu()
    if t.shape[0] != batch:
        raise InputError(f"Expected {batch} {name} (one per prompt), got {t.shape[0]}.")
    bad = t[(t < 0) | (t >= model.d_vocab)]
    if bad.numel():
        raise InputError(f"{name} id {int(bad[0])} is outside the vocabulary [0, {model.d_vocab}).")
    return t


@torch.no_grad()
def direct_logit_attribution(
    model,
    tokens,
    answers: Int[Tensor, " batch"] | None = None,
    wrong: Int[Tensor, " batch"] | None = None,
    pos: int | None = None,
    direction: Float[Tensor, " d_model"] | None = None,
) -> DLAResult:
    """Every component's direct contribution to the answer's logit (``wrong`` None), to the logit
    difference answer − wrong, or to ``direction`` (a vector in the normalised residual stream), at
    position ``pos``, through the final norm with its scale frozen at the actual run's.

    ``tokens``: ``[batch pos]`` ids, text(s) or a `PromptSet` (its clean tokens; ``answers``,
    ``wrong`` and ``pos`` default to its answers, wrong answers and answer position). Components:
    the embeddings, each head's write (``head_out``), each layer's attention bias (``attn_out``
    minus the heads' writes), each MLP, and the biases of the final norm and the unembedding.
    Returns a `DLAResult` (CPU, float32) whose components sum to the actual target.
    """
    from interp.tasks import PromptSet

    if isinstance(tokens, PromptSet):
        prompts = tokens
        tokens = prompts.clean
        answers = prompts.answers if answers is None else answers
        wrong = prompts.wrong if wrong is None else wrong
        pos = prompts.answer_pos if pos is None else pos
    tokens = _as_tokens(model, tokens)
    batch, seq = tokens.shape
    pos = -1 if pos is None else pos
    if not isinstance(pos, int) or isinstance(pos, bool) or not -seq <= pos < seq:
        raise InputError(f"pos={pos!r} is outside prompts of {seq} tokens; give a position from {-seq} to {seq - 1}.")
    if direction is None and answers is None:
        raise InputError("direct_logit_attribution needs answers (token ids [batch]) or a direction [d_model].")
    answers = _checked_ids(model, answers, batch, "answers")
    wrong = _checked_ids(model, wrong, batch, "wrong answers") if direction is None else None
    if "head_out" not in model.supported_kinds:
        raise InputError("direct_logit_attribution needs each head's write (head_out), which this model's backend does not expose.")
    readout = Readout.of(model)
    L = model.n_layers
    sites = [Site("resid_pre", 0), Site("resid_post", L - 1)]
    for layer in range(L):
        sites += [Site("head_out", layer), Site("attn_out", layer)] + ([Site("mlp_out", layer)] if model.has_mlp else [])
    logits, cache = model.run_with_cache(tokens, sites)
    at = lambda site: cache[site][:, pos].float().cpu()  # noqa: E731
    final = at(Site("resid_post", L - 1))
    _check_final(readout, cache[Site("resid_post", L - 1)].float(), logits)
    parts, labels = [at(Site("resid_pre", 0))], ["embed"]
    for layer in range(L):
        heads = at(Site("head_out", layer))  # [batch head d_model]
        parts += list(heads.unbind(1))
        labels += [f"L{layer}H{h}" for h in range(heads.shape[1])]
        parts.append(at(Site("attn_out", layer)) - heads.sum(1))
        labels.append(f"L{layer} attn bias")
        if model.has_mlp:
            parts.append(at(Site("mlp_out", layer)))
            labels.append(f"L{layer} MLP")
    other = final - torch.stack(parts).sum(0)
    if float(other.abs().max()) > 1e-4 * max(1.0, float(final.abs().max())):
        parts.append(other)
        labels.append("other")
    cpu = readout.cpu()
    dirs, unembed_bias, target = _target_directions(cpu, answers, wrong, direction, batch, model.d_model)
    scale = cpu.scale(final)  # [batch 1], frozen
    contributions = [(cpu.normalize(c, scale, with_bias=False) * dirs).sum(-1) for c in parts]
    norm_bias = (dirs * cpu.bias).sum(-1) if cpu.bias is not None else torch.zeros(batch)
    contributions.append(norm_bias + unembed_bias)
    labels.append("bias")
    actual = (cpu.normalize(final, scale) * dirs).sum(-1) + unembed_bias
    return DLAResult(torch.stack(contributions, dim=1), labels, L, model.n_heads, actual,
                     settings=dict(target=target, pos=pos, prompts=batch))

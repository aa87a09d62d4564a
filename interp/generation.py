"""Generation under interventions: `HookedModel.generate` applies the enclosing ``edit`` blocks to every step.

    with model.edit({Site("resid_pre", 2, pos=-1): Add(4.0 * direction)}):   # steer each new token
        out = model.generate(tokens, max_new_tokens=10)                     # [batch pos+10] ids

How an edit's position reads during generation:

- ``pos=None`` (every position): applies to the prompt and to every new token as it is generated;
- ``pos=p >= 0`` (a fixed position): applies once, to the token at position ``p`` (in the prompt, or
  when that position is generated);
- ``pos=-1``: the newest token at each step (the prompt's last token, then each generated token).
  Other negative positions have no fixed meaning while the sequence grows and are refused.

With ``use_cache=True`` (the default) each step runs only the new token, reading the earlier
tokens' keys and values from the cache, exactly as the model's own generation does; an edited
token's keys and values are the edited ones, so they persist. ``use_cache=False`` recomputes the
whole sequence every step, applying each edit at every position it has covered so far: the two
give the same tokens (a test checks this under edits).

The cache is used on the nnsight backend (the Hugging Face model's own cache). The
transformer_lens backend always recomputes: TransformerLens 4.3's bridge returns wrong logits
when it is handed a key/value cache (measured on a random GPT-2: a logit error of 4.9 at the first
cached step, and its own ``generate()`` then departs from Hugging Face's greedy tokens, while its
uncached path matches them), so there ``use_cache`` changes only the speed it would have had.
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InputError
from interp.interventions import Intervention
from interp.sites import Site


def _step_edits(edits: list[tuple[Site, Intervention]], start: int, stop: int, prompt_len: int,
                cached: bool) -> list[tuple[Site, Intervention]]:
    """The edits of one forward over absolute positions ``[start, stop)``, with positions made
    relative to that chunk (cached) or expanded to every position they have covered (uncached)."""
    out = []
    for site, iv in edits:
        if site.pos is None:
            out.append((site, iv))
        elif site.pos >= 0:
            if start <= site.pos < stop:
                out.append((dataclasses.replace(site, pos=site.pos - start), iv))
        elif cached:  # pos == -1: the newest token, the chunk's last
            out.append((site, iv))
        else:  # the newest token of every step so far: prompt_len - 1 .. stop - 1
            out += [(dataclasses.replace(site, pos=p), iv) for p in range(prompt_len - 1, stop)]
    return out


def _check_edits(edits: list[tuple[Site, Intervention]], cached: bool) -> None:
    for site, _ in edits:
        if site.pos is not None and site.pos < -1:
            raise InputError(f"{site} edits position {site.pos}, which has no fixed meaning while the sequence grows; "
                             f"use pos=-1 (the newest token at each step), a fixed position >= 0, or pos=None.")
        if cached and site.kind == "pattern":
            raise InputError(f"{site}: attention-pattern edits need the whole key axis, which cached generation does "
                             f"not recompute; pass use_cache=False, or edit 'z' / 'head_out' instead.")


def _next_tokens(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    logits = logits.float()
    if temperature == 0.0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(logits.device)


def generate(
    model,
    tokens: Int[Tensor, "batch pos"] | str | list[str],
    max_new_tokens: int = 10,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    use_cache: bool = True,
) -> Int[Tensor, "batch pos_plus_new"]:
    """Continue ``tokens`` by ``max_new_tokens`` tokens under the enclosing ``edit`` blocks.

    ``tokens``: ``[batch pos]`` ids (equal-length prompts) or text(s) (tokenised with BOS).
    ``use_cache``: run each step on the new token only, with the earlier keys and values cached
    (backends that support it; see the module docstring).
    ``temperature`` 0 is greedy; above 0 samples from ``softmax(logits / temperature)``, restricted
    to the ``top_k`` most likely tokens if given, with a generator seeded by ``seed`` (the same
    call gives the same tokens). Returns the prompt and the new tokens, ``[batch pos + new]``, on
    the model's device; decode with ``model.to_str_tokens`` or the tokenizer.
    """
    if isinstance(tokens, str) or (isinstance(tokens, list | tuple) and tokens and isinstance(tokens[0], str)):
        tokens = model.to_tokens(tokens)
    tokens = model.check_tokens(tokens)
    prompt_len = tokens.shape[1]
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens={max_new_tokens!r} must be a positive int.")
    if prompt_len + max_new_tokens > model.n_ctx:
        raise InputError(f"max_new_tokens={max_new_tokens} after a prompt of {prompt_len} tokens exceeds this model's "
                         f"context of {model.n_ctx} tokens; generate at most {model.n_ctx - prompt_len} new tokens.")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature < 0:
        raise InputError(f"temperature={temperature!r} must be a number >= 0 (0 = greedy).")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= model.d_vocab):
        raise InputError(f"top_k={top_k!r} must be None or an int from 1 to the vocabulary size {model.d_vocab}.")
    use_cache = use_cache and model.backend.supports_kv_cache
    edits = list(model._edits)
    _check_edits(edits, use_cache)
    generator = torch.Generator().manual_seed(seed) if temperature > 0 else None
    out, past = tokens, None
    with torch.no_grad():
        for step in range(max_new_tokens):
            length = out.shape[1]
            if use_cache:
                start = 0 if step == 0 else length - 1
                logits, past = model.run_step(out[:, start:], _step_edits(edits, start, length, prompt_len, True), past)
            else:
                logits = model.run_step(out, _step_edits(edits, 0, length, prompt_len, False), None, use_cache=False)[0]
            new = _next_tokens(logits[:, -1], float(temperature), top_k, generator)
            out = torch.cat([out, new[:, None].to(out.dtype)], dim=1)
    return out

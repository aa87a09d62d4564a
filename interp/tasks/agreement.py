"""Subject-verb agreement across an attractor (CausalGym's agreement tasks, Arora et al. 2024).

    sampler, causal_model, choices = agreement_task(model)
    data = patching.counterfactual_dataset(sampler, causal_model, n=64, require_change=True, choices=choices)
    # base "The dog next to the cars" -> " is"; a source with a plural subject makes the label " are"

Prompts are ``The {subject} next to the {attractor}`` with single-token singular / plural nouns, so
every prompt has the same length and the subject is always at `SUBJECT_POS`. The high-level causal
model reads one variable, the subject's number, and answers `` is`` or `` are``; the attractor's
number is drawn independently and must not matter.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from interp.errors import InputError

NOUNS = (("dog", "dogs"), ("cat", "cats"), ("car", "cars"), ("house", "houses"), ("book", "books"), ("key", "keys"),
         ("boy", "boys"), ("girl", "girls"), ("tree", "trees"), ("door", "doors"), ("friend", "friends"),
         ("teacher", "teachers"), ("table", "tables"), ("bird", "birds"), ("student", "students"),
         ("window", "windows"), ("road", "roads"), ("letter", "letters"), ("song", "songs"), ("river", "rivers"))
TEMPLATE = "The {subject} next to the {attractor}"
SUBJECT_POS = 2  # BOS, "The", subject


def _one_token(tokenizer, word: str) -> int | None:
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def agreement_task(model) -> tuple[Callable, Callable, list[int]]:
    """``(sampler, causal_model, choices)`` for `patching.counterfactual_dataset` on ``model``'s tokenizer.

    The sampler draws ``(tokens, (subject_plural, attractor_plural))``; the causal model answers the
    id of `` are`` when the subject is plural, else `` is``; ``choices`` are those two ids (what
    the interchange is scored on: the next token of a real model is rarely forced to be a verb).
    """
    tok = model.tokenizer
    nouns = [pair for pair in NOUNS if all(_one_token(tok, w) is not None for w in pair)]
    verbs = [_one_token(tok, v) for v in ("is", "are")]
    if len(nouns) < 2 or None in verbs:
        raise InputError("This tokenizer lacks single-token nouns or verbs for the agreement task.")

    def sampler(rng: np.random.Generator):
        a, b = rng.choice(len(nouns), size=2, replace=False)
        plural, attractor = (int(x) for x in rng.integers(0, 2, size=2))
        text = TEMPLATE.format(subject=nouns[a][plural], attractor=nouns[b][attractor])
        return model.to_tokens(text)[0], (plural, attractor)

    def causal_model(base, source) -> int:
        return verbs[source[0]]  # the subject's number comes from the source; nothing else matters

    return sampler, causal_model, verbs


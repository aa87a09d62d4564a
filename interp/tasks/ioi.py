"""Indirect-object identification (Wang et al. 2022) for tokenizers of real language models.

    prompts = ioi_prompts(model, n=8, seed=0)                 # PromptSet, ABB order, corrupted = ABC
    prompts = ioi_prompts(model, n=8, templates="held_out")   # templates never used by default

A clean prompt names two people and repeats one of them as the subject of the final clause:
``When Mary and John went to the store, John gave a drink to`` → `` Mary`` (the indirect object,
IO); the wrong answer is the subject `` John`` (S). The corrupted prompt replaces the repeated
subject with a third name (``..., Tom gave a drink to``), so that nothing in it says which of the
first two names is the answer: the "ABC" distribution of Wang et al. Names are single tokens with
their leading space, so clean and corrupted prompts align position by position. Half the prompts
put the IO first (ABB), half second (BAB), unless ``order`` says otherwise.

``metadata``: ``io_pos``, ``s1_pos``, ``s2_pos`` (positions of the IO, the first and the second
subject mention, ``[prompt]``; the end is the last position) and ``template`` (index per prompt).
"""

from __future__ import annotations

import random

import torch

from interp.errors import InputError
from interp.tasks.promptset import PromptSet

NAMES = ("Mary John Tom James Sarah Paul Anna Mark Lisa David Emma Peter Alice Robert Kate Michael "
         "Laura Daniel Susan Steven Amy Kevin Jane Brian Rachel Eric Helen Frank Linda George").split()
PLACES = "store park school office station market garden beach library hospital".split()
OBJECTS = "drink book ring flower letter bag key ball gift pen".split()

# {A} {B}: the two names introduced; {S}: the subject mention; the IO is the answer.
TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
    "After {A} and {B} arrived at the {place}, {S} handed a {object} to",
    "While {A} and {B} were at the {place}, {S} passed a {object} to",
    "Once {A} and {B} got to the {place}, {S} threw a {object} to",
    "As {A} and {B} walked into the {place}, {S} tossed a {object} to",
    "When {A} and {B} met at the {place}, {S} sent a {object} to",
    "Since {A} and {B} were at the {place}, {S} lent a {object} to",
)
# Every template is 15 tokens on SmolLM2's tokenizer (BOS included), so any split stacks.
TEMPLATE_SPLITS = {"train": (0, 1, 2, 3), "held_out": (4, 5, 6), "all": tuple(range(len(TEMPLATES)))}


def single_token_names(tokenizer, names=NAMES) -> list[str]:
    """The names that are one token with a leading space (`` Mary``) and at the start of a text."""
    def one(text: str) -> bool:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1

    return [n for n in names if one(" " + n) and one(n)]


def ioi_prompts(model, n: int = 8, seed: int = 0, templates: str | tuple[int, ...] = "train",
                order: str = "mixed") -> PromptSet:
    """``n`` IOI prompt pairs (clean ABB/BAB, corrupted ABC) for ``model``'s tokenizer; see the module docstring.

    ``templates``: "train" (the first four), "held_out" (the last three), "all", or template indices;
    every prompt of one set uses templates of one token length, so they stack without padding
    (a set of mixed lengths raises). ``order``: "mixed" (IO first in even prompts), "ABB" or "BAB".
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(f"n must be a positive number of prompts, got {n!r}.")
    if order not in ("mixed", "ABB", "BAB"):
        raise InputError(f"order must be 'mixed', 'ABB' or 'BAB', got {order!r}.")
    chosen = TEMPLATE_SPLITS.get(templates) if isinstance(templates, str) else tuple(templates)
    if chosen is None or not chosen or any(not 0 <= t < len(TEMPLATES) for t in chosen):
        raise InputError(f"templates must be one of {sorted(TEMPLATE_SPLITS)} or indices below {len(TEMPLATES)}, got {templates!r}.")
    tok = model.tokenizer
    names = single_token_names(tok)
    if len(names) < 3:
        raise InputError("This tokenizer has fewer than three single-token names; IOI prompts need three.")
    rng = random.Random(seed)
    rows, meta = [], {k: [] for k in ("io_pos", "s1_pos", "s2_pos", "template")}
    answers, wrong = [], []
    for i in range(n):
        t = chosen[i % len(chosen)]
        io, s, c = rng.sample(names, 3)
        io_first = order == "ABB" or (order == "mixed" and i % 2 == 0)
        a, b = (io, s) if io_first else (s, io)
        fill = dict(place=rng.choice(PLACES), object=rng.choice(OBJECTS))
        clean = model.to_tokens(TEMPLATES[t].format(A=a, B=b, S=s, **fill))[0]
        corrupted = model.to_tokens(TEMPLATES[t].format(A=a, B=b, S=c, **fill))[0]
        name_ids = {x: _id(tok, x) for x in (io, s, c)}
        positions = [p for p, v in enumerate(clean.tolist()) if v in (name_ids[io], name_ids[s])]
        if len(positions) != 3 or clean.shape != corrupted.shape:
            raise InputError(f"Template {t} did not tokenize into aligned prompts with three name positions.")
        rows.append((clean, corrupted))
        meta["io_pos"].append(positions[0] if io_first else positions[1])
        meta["s1_pos"].append(positions[1] if io_first else positions[0])
        meta["s2_pos"].append(positions[2])
        meta["template"].append(t)
        answers.append(name_ids[io])
        wrong.append(name_ids[s])
    lengths = {len(r[0]) for r in rows}
    if len(lengths) != 1:
        raise InputError(f"Templates {chosen} give prompts of {sorted(lengths)} tokens; choose templates of one length "
                         f"(e.g. one template index at a time).")
    return PromptSet(torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]), torch.tensor(answers),
                     torch.tensor(wrong), metadata={k: torch.tensor(v) for k, v in meta.items()})


def _id(tokenizer, name: str) -> int:
    return tokenizer(" " + name, add_special_tokens=False)["input_ids"][0]

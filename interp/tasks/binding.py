"""In-context entity binding, after Feng & Steinhardt 2023 ("How do language models bind entities
in context?").

    prompts = binding_prompts(n=100, n_pairs=3, seed=0)     # PromptSet; answer = the bound entity
    # BOS tea ann . jam bob . figs cal . who likes jam   -> bob
    base, source, source_query, positional = positional_pairs(n=100, n_pairs=3, seed=0)
    tokens, mask = training_batch(128, gen, queries=5)  # context sizes 2..5 mixed; loss on the answers only
    binding_accuracy(model)                     # held-out accuracy per size: {"acc_2": ..., "acc_5": ...}

Every prompt draws its entities and attributes at random (all distinct within the prompt) from
pools of 30 one-token names and 30 one-token attributes, so no binding can be memorised: the model
has to read it from the context. With ``k = n_pairs`` pairs, every position is fixed by ``k``::

    0              BOS
    1 + 3i         attribute of pair i       (i = 0 .. k-1, the pair's "slot")
    2 + 3i         entity of pair i
    3 + 3i         .
    1+3k .. 3+3k   who likes <attribute of the queried pair>    (query position: 3 + 3k, the last)

so a prompt has ``4 + 3k`` tokens and the answer (the queried pair's entity) is the next token.

Why the attribute comes first (``tea ann .``, not ``ann likes tea .``) and the query has no ``?``:
with the entity first, the answer must be copied *backwards* (from the entity into the attribute
after it, then to the query). Every 4-layer model tried that way sat at ``1/k`` accuracy (it
answered with *some* entity of the context) for 1,250 to 5,000 steps: learning rates 1e-3 to
5e-3, widths 64 and 128, 1, 3 or 5 queries per context, half of them "forward" queries, with or
without a trailing ``?``; a 2-layer attention-only model stalled too. In this layout the query
token is the attribute itself and each entity directly follows its attribute, so the task is the
induction pattern (``jam bob ... jam`` -> ``bob``): match the query against the context and copy
the token after the match. It is learnable, but how long the ``1/k`` plateau lasts still depends on
the initialisation (500 steps for one seed, over 750 for two others), so `binding-4l`'s recipe
mixes plain induction sequences into every batch (`interp.recipes.train_binding_4l`), which ends
the plateau by step 1,000 for every seed tried. The task itself is unchanged: name the entity bound
to the queried attribute, read from a context the model has never seen.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.errors import InputError
from interp.tasks.promptset import PromptSet

NAMES = "ann bob cal dee eli fay gus hal ivy jan kim lou max ned oda pam quin rex sal tom uma val wes xia yul zed ada ben cyd dot".split()
ATTRIBUTES = "tea jam rice milk cake soup pie figs corn beans kale plums eggs ham nuts oats pears limes tuna yams honey bread salt peas grapes dates cocoa mint olives leeks".split()
FILLER = ["likes", ".", "who"]
#: Words of ids 1..d_vocab-1 (id 0 is ``<bos>``, also the padding of `training_batch`).
VOCAB: list[str] = NAMES + ATTRIBUTES + FILLER
d_vocab: int = len(VOCAB) + 1
IDS: dict[str, int] = {w: i + 1 for i, w in enumerate(VOCAB)}
BOS = 0
MIN_PAIRS, MAX_PAIRS = 2, 5
SIZES: tuple[int, ...] = tuple(range(MIN_PAIRS, MAX_PAIRS + 1))
#: Base seed of the held-out evaluation prompts (size k uses ``EVAL_SEED + k``); never used in training.
EVAL_SEED = 90_000

_NAME_IDS = torch.tensor([IDS[w] for w in NAMES])
_ATTR_IDS = torch.tensor([IDS[w] for w in ATTRIBUTES])
_LIKES, _DOT, _WHO = (IDS[w] for w in FILLER)


def vocabulary() -> list[str]:
    """The words of ids 1..d_vocab-1, for `interp.tokenizers.word_tokenizer`."""
    return list(VOCAB)


def prompt_length(n_pairs: int) -> int:
    """Tokens in a prompt with ``n_pairs`` pairs (BOS up to and including the queried attribute)."""
    _check_pairs(n_pairs)
    return 4 + 3 * n_pairs


def entity_positions(n_pairs: int) -> list[int]:
    """Token position of each pair's entity, slot 0 first."""
    _check_pairs(n_pairs)
    return [2 + 3 * i for i in range(n_pairs)]


def attribute_positions(n_pairs: int) -> list[int]:
    """Token position of each pair's attribute, slot 0 first."""
    _check_pairs(n_pairs)
    return [1 + 3 * i for i in range(n_pairs)]


def to_text(tokens: Int[Tensor, " pos"]) -> str:
    """The words of one prompt (ids 0 shown as ``<bos>``)."""
    return " ".join("<bos>" if t == BOS else VOCAB[t - 1] for t in tokens.tolist())


# =============================================================================== validation
def _check_pairs(n_pairs) -> None:
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or not MIN_PAIRS <= n_pairs <= MAX_PAIRS:
        raise InputError(
            f"n_pairs must be an integer from {MIN_PAIRS} to {MAX_PAIRS} (the context sizes the "
            f"binding task and binding-4l cover), got {n_pairs!r}."
        )


def _check_n(n, name: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{name} (the number of prompts) must be a positive integer, got {n!r}.")


def _check_query(query_index, n_pairs: int) -> None:
    if query_index is None:
        return
    if isinstance(query_index, bool) or not isinstance(query_index, int) or not 0 <= query_index < n_pairs:
        raise InputError(
            f"query_index picks the queried pair (0-based) and must lie in 0..{n_pairs - 1} for "
            f"n_pairs={n_pairs}, got {query_index!r}; pass None to draw it at random per prompt."
        )


# =============================================================================== sampling
def _distinct(n: int, k: int, pool: Tensor, gen: torch.Generator, avoid: Tensor | None = None) -> Tensor:
    """``[n, k]`` ids drawn from ``pool`` without replacement per row, never any id in ``avoid[row]``."""
    scores = torch.rand(n, len(pool), generator=gen)
    if avoid is not None:
        scores = scores + (pool[None, :, None] == avoid[:, None, :]).any(-1).float() * 2  # sorts them last
    return pool[scores.argsort(-1)[:, :k]]


def _assemble(entities: Int[Tensor, "n k"], attributes: Int[Tensor, "n k"], query: Int[Tensor, " n"]) -> Int[Tensor, "n pos"]:
    """The attribute-first prompts (`_layout_assemble` without filler), asking about slot ``query``."""
    query_attr = attributes.gather(1, query[:, None])[:, 0]
    return _layout_assemble(entities, attributes, query_attr, "attribute-first", torch.zeros_like(entities))[0]


def _sample(n: int, k: int, gen: torch.Generator, query_index: int | None = None):
    entities = _distinct(n, k, _NAME_IDS, gen)
    attributes = _distinct(n, k, _ATTR_IDS, gen)
    query = torch.randint(0, k, (n,), generator=gen) if query_index is None else torch.full((n,), query_index)
    return entities, attributes, query


def _other_slot(query: Int[Tensor, " n"], k: int, gen: torch.Generator) -> Int[Tensor, " n"]:
    """A slot other than ``query`` in each row, uniform over the ``k - 1`` others."""
    return (query + torch.randint(1, k, query.shape, generator=gen)) % k


# =============================================================================== public API
def training_batch(
    batch: int, gen: torch.Generator, sizes: tuple[int, ...] = SIZES, queries: int = 1
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos_minus_1"]]:
    """Fresh random prompts followed by their answers, context sizes drawn uniformly from ``sizes``.

    With ``queries = q > 1`` each context is followed by ``min(q, k)`` queries about distinct
    pairs, each answered: ``who likes A E who likes A' E' ...``. The first query and its answer
    are exactly a `binding_prompts` prompt and its answer, so evaluation stays the single-query
    task; later queries only add training signal per context.

    Parameters
    ----------
    batch : int
        Number of sequences.
    gen : torch.Generator
        Source of randomness (the training loop's data generator).
    sizes : tuple of int
        Context sizes (numbers of pairs) to mix, each in 2..5.
    queries : int
        Queries per context (at least 1; capped at the context's number of pairs).

    Returns
    -------
    tokens : Int[Tensor, "batch pos"]
        ``BOS context (query answer)*``, right-padded with 0 to ``pos = 1 + 3*5 + 4*min(q, 5)``
        tokens (a fixed width whatever sizes are drawn; 20 for one query).
    mask : Bool[Tensor, "batch pos-1"]
        True at each query's attribute: the next-token predictions that count in the loss.
    """
    return layout_batch(batch, gen, "attribute-first", sizes, queries)


def binding_prompts(n: int, n_pairs: int, query_index: int | None = None, seed: int = 0) -> PromptSet:
    """Patching prompts of one context size (all of length ``prompt_length(n_pairs)``).

    Clean: a random context and a query about pair ``query_index`` (random per prompt if None);
    answer: that pair's entity. Corrupted: the same context queried about another pair's attribute
    (clean and corrupted differ only at the queried attribute, the last position); wrong: that other
    pair's entity.

    Parameters
    ----------
    n : int
        Number of prompts (at least 1).
    n_pairs : int
        Entity-attribute pairs in the context, 2..5.
    query_index : int or None
        Queried slot (0-based, ``< n_pairs``) for every prompt, or None to draw it per prompt.
    seed : int
        Seed of the prompts; the same seed gives the same prompts.

    Returns
    -------
    PromptSet
        ``clean``, ``corrupted``: ``[n, 4 + 3*n_pairs]``; ``answers``, ``wrong``: ``[n]``.
        ``metadata``: ``query_index`` and ``corrupted_query_index`` ``[n]``; ``entity_pos`` and
        ``attribute_pos`` ``[n, n_pairs]`` (token positions per slot); ``entities`` and
        ``attributes`` ``[n, n_pairs]`` (token ids per slot); ``query_pos`` (int, the last
        position: the queried attribute, where the answer is read);
        ``n_pairs`` (int).
    """
    _check_n(n)
    _check_pairs(n_pairs)
    _check_query(query_index, n_pairs)
    gen = torch.Generator().manual_seed(int(seed))
    entities, attributes, query = _sample(n, n_pairs, gen, query_index)
    other = _other_slot(query, n_pairs, gen)
    clean = _assemble(entities, attributes, query)
    corrupted = _assemble(entities, attributes, other)
    return PromptSet(
        clean, corrupted, entities.gather(1, query[:, None])[:, 0], entities.gather(1, other[:, None])[:, 0],
        metadata=_metadata(n, n_pairs, entities, attributes, query, corrupted_query_index=other),
    )


class PositionalPairs(NamedTuple):
    """What `positional_pairs` returns (unpacks as a 4-tuple)."""

    base: PromptSet
    source: Int[Tensor, "n pos"]
    source_query_index: Int[Tensor, " n"]
    positional_answer: Int[Tensor, " n"]


def positional_pairs(n: int, n_pairs: int, seed: int = 0) -> PositionalPairs:
    """(base, source) prompt pairs for the positional-retrieval test (Feng & Steinhardt 2023).

    The source is a fresh context (its entities and its other attributes share nothing with the
    base) that places the base's queried attribute in a different slot, and queries that same
    attribute. Patching the query-position activation from source into base then predicts:

    - the base answer if the query position carries *which attribute* is asked (content);
    - ``positional_answer``, the base entity at the source's queried slot, if it carries *which
      slot* is asked (position);
    - the source's own answer (``base.metadata["source_answer"]``, absent from the base) if it
      carries the answer itself.

    Parameters
    ----------
    n : int
        Number of pairs (at least 1).
    n_pairs : int
        Entity-attribute pairs in both contexts, 2..5.
    seed : int
        Seed of the prompts.

    Returns
    -------
    PositionalPairs
        ``base``: the base `PromptSet` ``[n, 4 + 3*n_pairs]``, with ``corrupted`` = the source
        tokens, ``answers`` = the base answer and ``wrong`` = the positional answer, metadata as in
        `binding_prompts` plus ``source_query_index``, ``positional_answer`` and ``source_answer``
        ``[n]``; ``source``: the source tokens ``[n, 4 + 3*n_pairs]`` (same length as the base);
        ``source_query_index``: ``[n]``, always different from ``base.metadata["query_index"]``;
        ``positional_answer``: ``[n]``.
    """
    _check_n(n)
    _check_pairs(n_pairs)
    gen = torch.Generator().manual_seed(int(seed))
    entities, attributes, query = _sample(n, n_pairs, gen)
    source_query = _other_slot(query, n_pairs, gen)
    source_entities = _distinct(n, n_pairs, _NAME_IDS, gen, avoid=entities)
    source_attributes = _distinct(n, n_pairs, _ATTR_IDS, gen, avoid=attributes)
    rows = torch.arange(n)
    source_attributes[rows, source_query] = attributes[rows, query]
    base_tokens = _assemble(entities, attributes, query)
    source = _assemble(source_entities, source_attributes, source_query)
    answers = entities[rows, query]
    positional = entities[rows, source_query]
    meta = _metadata(n, n_pairs, entities, attributes, query)
    meta.update(source_query_index=source_query, positional_answer=positional, source_answer=source_entities[rows, source_query])
    base = PromptSet(base_tokens, source, answers, positional, metadata=meta)
    return PositionalPairs(base, source, source_query, positional)


class LexicalPairs(NamedTuple):
    """What `lexical_pairs` returns (unpacks as a 4-tuple)."""

    base: PromptSet
    source: Int[Tensor, "n pos"]
    lexical_answer: Int[Tensor, " n"]
    positional_answer: Int[Tensor, " n"]


def lexical_pairs(n: int, n_pairs: int, seed: int = 0) -> LexicalPairs:
    """(base, source) pairs that tell *which attribute is asked* apart from *which slot is asked*.

    The source holds the base's attributes in a shuffled order (no attribute keeps its slot) with
    fresh entities, and queries one of the base's *other* attributes ``A_r``. Interchanging the
    query position from source into base then predicts:

    - ``lexical_answer``, the base entity bound to ``A_r``, if the activation carries the attribute;
    - ``positional_answer``, the base entity in the slot where ``A_r`` sits in the source, if it
      carries the slot (always a different entity from the lexical answer);
    - the source's own answer (``base.metadata["source_answer"]``, absent from the base) if it
      already carries the retrieved entity.

    Returns
    -------
    LexicalPairs
        ``base``: `PromptSet` ``[n, 4 + 3*n_pairs]`` with ``corrupted`` = the source tokens,
        ``answers`` = the base answer and ``wrong`` = the lexical answer, metadata as in
        `binding_prompts` plus ``lexical_answer``, ``positional_answer``, ``source_answer``
        ``[n]``; ``source`` ``[n, 4 + 3*n_pairs]``; ``lexical_answer`` and ``positional_answer`` ``[n]``.
    """
    _check_n(n)
    _check_pairs(n_pairs)
    gen = torch.Generator().manual_seed(int(seed))
    k = n_pairs
    entities, attributes, query = _sample(n, k, gen)
    other = _other_slot(query, k, gen)  # the base slot r of the attribute the source asks about
    shift = torch.randint(1, k, (n, 1), generator=gen)  # a cyclic shift moves every slot
    perm = (torch.arange(k)[None, :] + shift) % k  # source slot j holds base slot perm[j]
    rows = torch.arange(n)
    source_attributes = attributes.gather(1, perm)
    source_entities = _distinct(n, k, _NAME_IDS, gen, avoid=entities)
    source_query = (perm == other[:, None]).float().argmax(1)  # where A_r sits in the source
    base_tokens = _assemble(entities, attributes, query)
    source = _assemble(source_entities, source_attributes, source_query)
    lexical = entities[rows, other]
    positional = entities[rows, source_query]
    meta = _metadata(n, k, entities, attributes, query)
    meta.update(lexical_answer=lexical, positional_answer=positional, source_answer=source_entities[rows, source_query])
    base = PromptSet(base_tokens, source, entities[rows, query], lexical, metadata=meta)
    return LexicalPairs(base, source, lexical, positional)


def _metadata(n: int, k: int, entities: Tensor, attributes: Tensor, query: Tensor, **extra) -> dict:
    length = prompt_length(k)
    return {
        "query_index": query,
        **extra,
        "entity_pos": torch.tensor(entity_positions(k)).expand(n, k).clone(),
        "attribute_pos": torch.tensor(attribute_positions(k)).expand(n, k).clone(),
        "entities": entities,
        "attributes": attributes,
        "query_pos": length - 1,
        "n_pairs": k,
    }


@torch.no_grad()
def binding_metrics(model, n: int = 500, seed: int = EVAL_SEED, sizes: tuple[int, ...] = SIZES) -> dict[str, float]:
    """Per context size k: ``acc_k``, the share of fresh prompts (`binding_prompts` with seed
    ``seed + k``) whose answer is the model's top-1 next token at the query position, and
    ``loss_k``, the mean cross-entropy of the answer (nats)."""
    _check_n(n)
    out: dict[str, float] = {}
    for k in sizes:
        prompts = binding_prompts(n, k, seed=seed + k)
        logits = model(prompts.clean)[:, -1].float()
        out[f"acc_{k}"] = (logits.argmax(-1) == prompts.answers).float().mean().item()
        out[f"loss_{k}"] = torch.nn.functional.cross_entropy(logits, prompts.answers).item()
    return out


def binding_accuracy(model, n: int = 500, seed: int = EVAL_SEED) -> dict[str, float]:
    """Held-out accuracy per context size, ``{"acc_2": ..., "acc_3": ..., "acc_4": ..., "acc_5": ...}``:
    the share of ``n`` fresh prompts per size (seed ``seed + k``, never used in training) whose
    bound entity is the model's top-1 prediction at the query position."""
    return {k: v for k, v in binding_metrics(model, n, seed).items() if k.startswith("acc_")}


# =============================================================================== other layouts
# The functions above build the attribute-first layout of `binding-4l`. Those below build any of
# `LAYOUTS` (the attribute-first one included, for comparisons), with optional filler between pairs,
# for the experiments of issue 19 (`experiments.binding`): layouts where copying the token after a
# content match is not enough, so that retrieval may have to go through the pair's slot.
#
#     tokens, mask = layout_batch(64, gen, "entity-first", sizes=(2,), queries=3)
#     prompts = layout_prompts(200, 3, "entity-first", seed=0)   # <bos> ann likes tea . bob likes jam . ... who likes jam -> bob
#     pairs = mechanism_pairs(400, 4, "entity-first", seed=0)    # Gur-Arieh et al.'s three-way counterfactuals

#: Words of one pair per layout (E = entity, A = attribute); every layout's query is ``who likes A``.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "attribute-first": ("A", "E", "."),
    "entity-first": ("E", "likes", "A", "."),
    "entity-first-short": ("E", "A", "."),
}
MAX_FILLER = 4
_WORD = {"likes": _LIKES, ".": _DOT}


def _check_layout(layout, filler) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}.")
    if isinstance(filler, bool) or not isinstance(filler, int) or not 0 <= filler <= MAX_FILLER:
        raise InputError(
            f"filler (extra '.' tokens per gap between pairs, on average) must be an integer from 0 to "
            f"{MAX_FILLER}, got {filler!r}."
        )


def layout_length(n_pairs: int, layout: str = "attribute-first", filler: int = 0) -> int:
    """Tokens of a `layout_prompts` prompt: BOS, the pairs, ``filler * (n_pairs - 1)`` filler
    tokens, and the 3-token query (the last token is the queried attribute)."""
    _check_pairs(n_pairs)
    _check_layout(layout, filler)
    return 1 + len(LAYOUTS[layout]) * n_pairs + filler * (n_pairs - 1) + 3


def _gaps(n: int, k: int, filler: int, gen: torch.Generator) -> Int[Tensor, "n k"]:
    """Extra '.' tokens after each pair: ``filler * (k - 1)`` in all, spread at random over the
    ``k - 1`` gaps between pairs (the last pair gets none), so lengths are fixed but slot positions vary."""
    gaps = torch.zeros(n, k, dtype=torch.long)
    if filler and k > 1:
        which = torch.randint(0, k - 1, (n, filler * (k - 1)), generator=gen)
        gaps[:, : k - 1] = torch.nn.functional.one_hot(which, k - 1).sum(1)
    return gaps


def _layout_assemble(entities: Tensor, attributes: Tensor, query_attr: Tensor, layout: str, gaps: Tensor):
    """Tokens ``[n, L]`` ending in ``who likes query_attr``, and per-slot positions ``[n, k]`` of
    entities and attributes."""
    n, k = entities.shape
    words = LAYOUTS[layout]
    length = 1 + len(words) * k + int(gaps[0].sum()) + 3
    tokens = torch.zeros(n, length, dtype=torch.long)
    start = 1 + torch.cat([torch.zeros(n, 1, dtype=torch.long), (len(words) + gaps[:, :-1]).cumsum(1)], 1)  # [n, k]
    rows = torch.arange(n)[:, None]
    for j, w in enumerate(words):
        tokens[rows, start + j] = entities if w == "E" else attributes if w == "A" else _WORD[w]
    fill = torch.ones(n, length, dtype=torch.bool)
    fill[:, 0] = False
    for j in range(len(words)):
        fill[rows, start + j] = False
    fill[:, -3:] = False
    tokens[fill] = _DOT
    tokens[:, -3], tokens[:, -2], tokens[:, -1] = _WHO, _LIKES, query_attr
    return tokens, start + words.index("E"), start + words.index("A")


def layout_batch(
    batch: int, gen: torch.Generator, layout: str = "entity-first", sizes: tuple[int, ...] = SIZES,
    queries: int = 1, filler: int = 0,
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos_minus_1"]]:
    """Training contexts of ``layout`` followed by ``min(queries, k)`` answered queries about distinct
    pairs (``who likes A E who likes A' E' ...``); the first query is a `layout_prompts` prompt.

    Returns
    -------
    tokens : Int[Tensor, "batch pos"]
        Right-padded with 0 to ``1 + pair_len*5 + filler*4 + 4*min(queries, 5)`` tokens, whatever
        sizes are drawn.
    mask : Bool[Tensor, "batch pos-1"]
        True at each query's attribute (the predictions that count in the loss).
    """
    _check_n(batch, "batch")
    _check_n(queries, "queries")
    _check_layout(layout, filler)
    if not sizes:
        raise InputError("sizes must name at least one context size from 2 to 5.")
    for k in sizes:
        _check_pairs(k)
    width = 1 + len(LAYOUTS[layout]) * MAX_PAIRS + filler * (MAX_PAIRS - 1) + 4 * min(queries, MAX_PAIRS)
    tokens = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width - 1, dtype=torch.bool)
    which = torch.randint(0, len(sizes), (batch,), generator=gen)
    for j, k in enumerate(sizes):
        rows = (which == j).nonzero().flatten()
        if len(rows) == 0:
            continue
        entities, attributes, query = _sample(len(rows), k, gen)
        n_q = min(queries, k)
        later = (query[:, None] + _distinct(len(rows), n_q - 1, torch.arange(1, k), gen)) % k
        order = torch.cat([query[:, None], later], 1)
        context, _, _ = _layout_assemble(entities, attributes, attributes.gather(1, query[:, None])[:, 0], layout,
                                         _gaps(len(rows), k, filler, gen))
        start = context.shape[1] - 3
        tokens[rows, :start] = context[:, :start]
        for q in range(n_q):
            slot = order[:, q : q + 1]
            at = start + 4 * q
            tokens[rows, at], tokens[rows, at + 1] = _WHO, _LIKES
            tokens[rows, at + 2] = attributes.gather(1, slot)[:, 0]
            tokens[rows, at + 3] = entities.gather(1, slot)[:, 0]
            mask[rows, at + 2] = True
    return tokens, mask


def layout_prompts(n: int, n_pairs: int, layout: str = "entity-first", filler: int = 0, seed: int = 0) -> PromptSet:
    """Single-query prompts of ``layout`` (all ``layout_length(n_pairs, layout, filler)`` tokens).

    Clean: a random context and a query about a random pair; answer: its entity. Corrupted: the same
    context queried about another pair; wrong: that pair's entity. ``metadata``: ``query_index`` [n];
    ``entity_pos``, ``attribute_pos``, ``entities``, ``attributes`` [n, n_pairs]; ``query_pos`` (the
    last position), ``n_pairs``, ``layout``, ``filler``.
    """
    _check_n(n)
    _check_pairs(n_pairs)
    _check_layout(layout, filler)
    gen = torch.Generator().manual_seed(int(seed))
    entities, attributes, query = _sample(n, n_pairs, gen)
    other = _other_slot(query, n_pairs, gen)
    gaps = _gaps(n, n_pairs, filler, gen)
    rows = torch.arange(n)
    clean, entity_pos, attribute_pos = _layout_assemble(entities, attributes, attributes[rows, query], layout, gaps)
    corrupted, _, _ = _layout_assemble(entities, attributes, attributes[rows, other], layout, gaps)
    meta = {"query_index": query, "corrupted_query_index": other, "entity_pos": entity_pos, "attribute_pos": attribute_pos,
            "entities": entities, "attributes": attributes, "query_pos": clean.shape[1] - 1, "n_pairs": n_pairs,
            "layout": layout, "filler": filler}
    return PromptSet(clean, corrupted, entities[rows, query], entities[rows, other], metadata=meta)


@torch.no_grad()
def layout_metrics(model, layout: str = "entity-first", filler: int = 0, n: int = 200, seed: int = EVAL_SEED + 200,
                   sizes: tuple[int, ...] = SIZES) -> dict[str, float]:
    """Per context size k: ``acc_k`` (top-1 accuracy on ``n`` fresh `layout_prompts`, seed ``seed + k``)
    and ``loss_k`` (mean cross-entropy of the answer, nats)."""
    out: dict[str, float] = {}
    for k in sizes:
        p = layout_prompts(n, k, layout, filler, seed=seed + k)
        logits = model(p.clean)[:, -1].float()
        out[f"acc_{k}"] = (logits.argmax(-1) == p.answers).float().mean().item()
        out[f"loss_{k}"] = torch.nn.functional.cross_entropy(logits, p.answers).item()
    return out


#: The outcomes `mechanism_pairs` tells apart, in the order of `MechanismPairs.answers`.
MECHANISMS = ("positional", "lexical", "reflexive", "base")
MIN_MECHANISM_PAIRS = 4


class MechanismPairs(NamedTuple):
    """What `mechanism_pairs` returns."""

    base: PromptSet
    source: Int[Tensor, "n pos"]
    answers: dict[str, Int[Tensor, " n"]]
    slots: dict[str, Int[Tensor, " n"]]


def mechanism_pairs(n: int, n_pairs: int, layout: str = "attribute-first", filler: int = 0, seed: int = 0) -> MechanismPairs:
    """Counterfactual pairs in which Gur-Arieh et al. (2025)'s three retrieval mechanisms, and the
    base run itself, each predict a different entity of the base context.

    The base binds entities ``E_0..E_{k-1}`` to attributes ``A_0..A_{k-1}`` and asks about ``A_q``.
    Three more distinct base slots ``p, l, r`` (all different from ``q``; hence ``k >= 4``) are drawn,
    and the source re-binds the *same* words: its slot ``p`` holds the pair ``(E_r, A_l)``, its other
    slots the remaining entities and attributes in random order, and it asks about ``A_l``. Interchanging
    the query position's activation from source into base then names:

    - ``positional``: ``E_p``, the base entity in the slot the source's query points to;
    - ``lexical``: ``E_l``, the base entity bound to the attribute the source asks about;
    - ``reflexive``: ``E_r``, the source's own answer (a direct pointer to that entity, which the
      base context also holds, in slot ``r``);
    - ``base``: ``E_q``, if the activation does not matter.

    Returns
    -------
    MechanismPairs
        ``base``: `PromptSet` ``[n, L]`` (``L = layout_length(n_pairs, layout, filler)``) with
        ``corrupted`` = the source; ``source`` ``[n, L]``; ``answers``: ``{outcome: [n]}`` token ids,
        distinct per row; ``slots``: ``{outcome: [n]}`` the base slot of each outcome's entity.
    """
    _check_n(n)
    _check_pairs(n_pairs)
    _check_layout(layout, filler)
    k = n_pairs
    if k < MIN_MECHANISM_PAIRS:
        raise InputError(
            f"mechanism_pairs needs n_pairs >= {MIN_MECHANISM_PAIRS} (the base query and the positional, lexical "
            f"and reflexive slots must all differ), got {k}."
        )
    gen = torch.Generator().manual_seed(int(seed))
    entities, attributes, query = _sample(n, k, gen)
    rows = torch.arange(n)
    # four distinct slots per row: q (given), then p, l, r among the others in random order
    others = (query[:, None] + 1 + torch.rand(n, k - 1, generator=gen).argsort(-1)) % k
    p, lex, r = others[:, 0], others[:, 1], others[:, 2]
    src_entities, src_attributes = torch.empty_like(entities), torch.empty_like(attributes)
    for i in range(n):
        rest = [s for s in range(k) if s != int(p[i])]
        e_rest = [s for s in range(k) if s != int(r[i])]
        a_rest = [s for s in range(k) if s != int(lex[i])]
        e_perm = torch.randperm(k - 1, generator=gen).tolist()
        a_perm = torch.randperm(k - 1, generator=gen).tolist()
        src_entities[i, p[i]], src_attributes[i, p[i]] = entities[i, r[i]], attributes[i, lex[i]]
        for j, s in enumerate(rest):
            src_entities[i, s] = entities[i, e_rest[e_perm[j]]]
            src_attributes[i, s] = attributes[i, a_rest[a_perm[j]]]
    base_gaps, src_gaps = _gaps(n, k, filler, gen), _gaps(n, k, filler, gen)
    base_tokens, entity_pos, attribute_pos = _layout_assemble(entities, attributes, attributes[rows, query], layout, base_gaps)
    source, _, _ = _layout_assemble(src_entities, src_attributes, attributes[rows, lex], layout, src_gaps)
    slots = {"positional": p, "lexical": lex, "reflexive": r, "base": query}
    answers = {name: entities[rows, s] for name, s in slots.items()}
    meta = {"query_index": query, "entity_pos": entity_pos, "attribute_pos": attribute_pos, "entities": entities,
            "attributes": attributes, "query_pos": base_tokens.shape[1] - 1, "n_pairs": k, "layout": layout,
            "filler": filler, "source_entities": src_entities, "source_attributes": src_attributes,
            **{f"{name}_slot": s for name, s in slots.items()}, **{f"{name}_answer": a for name, a in answers.items()}}
    base = PromptSet(base_tokens, source, answers["base"], answers["positional"], metadata=meta)
    return MechanismPairs(base, source, answers, slots)

"""interp.tasks.world_facts on SmolLM2-135M's tokenizer (no model forward: the tokenizer alone).

Single-token answers, prompts that decode to the fact, subject positions that decode to the
subject, one PromptSet per length, corrupted prompts of another answer, and a deterministic split.
"""

from __future__ import annotations

import collections
import os
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from interp import pretrained
from interp.errors import InputError
from interp.tasks.world_facts import FACTS, RELATIONS, Fact, encode, fact_prompts, split

pytestmark = pytest.mark.xdist_group("real")

NAME = "smollm2-135m"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(pretrained.local_dir(NAME)), local_files_only=True)
    tok.bos_token = pretrained.get(NAME).bos_token  # what interp.load sets: <|endoftext|>, id 0
    return tok


@pytest.fixture(scope="module")
def model(tokenizer):
    """What fact_prompts reads of a HookedModel: its tokenizer and prepend_bos."""
    return types.SimpleNamespace(tokenizer=tokenizer, prepend_bos=True)


@pytest.fixture(scope="module")
def groups(model):
    return fact_prompts(model, FACTS)


def test_the_fact_set_is_large_and_clean():
    pairs = {(f.relation, f.subject) for f in FACTS}
    assert len(pairs) >= 150 and len(FACTS) == len(set(FACTS))
    assert all(2 <= len(t) <= 3 for t in RELATIONS.values()) and len(RELATIONS) >= 5
    per_pair = collections.Counter((f.relation, f.subject) for f in FACTS)
    assert all(per_pair[(f.relation, f.subject)] == len(RELATIONS[f.relation]) for f in FACTS)
    assert all(f.answer and not f.answer.startswith(" ") and f.template.count("{}") == 1 for f in FACTS)
    assert FACTS[0].prompt[0].isupper() and FACTS[0].target == " " + FACTS[0].answer


def test_every_answer_is_one_token(tokenizer):
    answers = {f.target for f in FACTS}
    several = {a: tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers}
    assert {a: ids for a, ids in several.items() if len(ids) != 1} == {}


def test_prompts_and_subject_positions_decode_to_the_fact(groups, tokenizer):
    assert sum(len(p) for p in groups.values()) == len(FACTS)
    for n_tokens, prompts in groups.items():
        assert prompts.clean.shape == prompts.corrupted.shape == (len(prompts), n_tokens)
        assert prompts.clean[:, 0].eq(0).all() and prompts.corrupted[:, 0].eq(0).all()  # <|endoftext|> first
        meta = prompts.metadata
        for row, i in enumerate(meta["index"].tolist()):
            fact, other = meta["facts"][i], meta["corrupted_facts"][i]
            assert tokenizer.decode(prompts.clean[row, 1:]) == fact.prompt
            assert tokenizer.decode(prompts.corrupted[row, 1:]) == other.prompt
            assert tokenizer.decode(prompts.answers[row]) == fact.target and tokenizer.decode(prompts.wrong[row]) == other.target
            assert other.answer != fact.answer
            positions = meta["subject_positions"][row].tolist()
            k = int(meta["subject_len"][row])
            assert positions[k:] == [positions[k - 1]] * (len(positions) - k)  # padded by repeating the last
            start, end = fact.subject_span
            assert tokenizer.decode(prompts.clean[row, positions[:k]]).strip() == fact.prompt[start:end]
            assert positions[:k] == list(range(positions[0], positions[0] + k))
            if meta["aligned"][row]:  # only the subject's tokens differ
                differ = (prompts.clean[row] != prompts.corrupted[row]).nonzero().flatten().tolist()
                assert set(differ) <= set(positions[:k])


def test_prompt_sets_slice_and_most_corruptions_are_aligned(groups):
    prompts = groups[11]
    part = prompts[3:7]
    assert part.metadata["subject_positions"].shape[0] == 4
    assert [part.metadata["facts"][i] for i in part.metadata["index"]] == prompts.metadata["facts"][3:7]
    aligned = sum(int(p.metadata["aligned"].sum()) for p in groups.values())
    assert aligned >= 0.8 * len(FACTS)


def test_bad_facts_are_refused(tokenizer):
    with pytest.raises(InputError, match="single-token"):
        encode(tokenizer, Fact("Kenya", "country_capital", "Addis Ababa", "The capital of {} is"), 0)
    with pytest.raises(InputError, match="at least one"):
        fact_prompts(types.SimpleNamespace(tokenizer=tokenizer, prepend_bos=True), [])


def test_split_is_deterministic_by_subject():
    train, held = split(FACTS, seed=0)
    assert len(train) + len(held) == len(FACTS) and not set(train) & set(held)
    held_pairs = {(f.relation, f.subject) for f in held}
    assert all((f.relation, f.subject) not in held_pairs for f in train)  # all templates on one side
    assert 0.25 < len(held_pairs) / len({(f.relation, f.subject) for f in FACTS}) < 0.35
    again = split(list(reversed(FACTS)), seed=0)[1]
    assert set(again) == set(held)
    assert set(split(FACTS, seed=1)[1]) != set(held)
    assert split(FACTS[:30], held_out=0.0)[1] == []

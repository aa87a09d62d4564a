import pytest
import torch

from interp import InputError
from interp.tasks.facts import RELATIONS, KnowledgeBase, recall_accuracy


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase.build(seed=0)


def test_knowledge_base_is_seeded_and_needs_both_name_tokens(kb):
    assert len(kb.subjects) == len(set(kb.subjects)) == 300
    assert KnowledgeBase.build(seed=0).facts == kb.facts and KnowledgeBase.build(seed=1).facts != kb.facts
    firsts = [f for f, _ in kb.subjects]
    assert max(firsts.count(f) for f in set(firsts)) > 1  # a first name alone is ambiguous
    assert len(kb.all_facts()) == 300 * sum(len(t) for _, t in RELATIONS.values())


def test_batches_mask_only_the_answer(kb):
    items = kb.all_facts()[:5] + kb.all_facts()[-5:]
    tokens, mask = kb.batch(items)
    assert mask.sum(1).tolist() == [1] * 10
    for row, (rel, template, subject) in zip(range(10), items, strict=True):
        ids, answer, subject_pos = kb.encode(rel, template, subject)
        assert tokens[row, len(ids)] == answer and mask[row, len(ids) - 1]
        assert tokens[row, subject_pos].tolist() == [kb.ids[w] for w in kb.subjects[subject]]


def test_fact_prompts_replace_the_subject_only(kb):
    p = kb.fact_prompts("works_as", template=1, subjects=list(range(20)))
    diff = (p.clean != p.corrupted)
    assert diff.any(0).nonzero().flatten().tolist() == p.metadata["subject_pos"][0].tolist()
    assert (p.answers != p.wrong).all()
    with pytest.raises(InputError, match="Unknown relation"):
        kb.fact_prompts("likes")


def test_recall_of_a_blank_model_is_low(kb, tmp_path):
    from interp.models import build_native
    from interp.recipes import FACTS_CONFIG
    from interp.tokenizers import word_tokenizer

    model = build_native({**FACTS_CONFIG, "n_layers": 1, "d_model": 32, "d_head": 8, "d_mlp": 64, "d_vocab": kb.d_vocab}, word_tokenizer(kb.vocab, tmp_path), seed=0)
    assert recall_accuracy(model, kb) < 0.1
    with torch.no_grad():  # an oracle that puts all mass on the answer scores 1
        tokens, mask = kb.batch(kb.all_facts())
    assert mask.sum() == len(kb.all_facts())

"""The biography task (`interp.tasks.bio`): seeded worlds, disjoint question / held-out split,
paraphrase and order variety, pronouns, Zipf frequencies, label positions, recall groups, errors."""

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch

from interp import InputError
from interp.tasks import bio
from interp.tasks.bio import BioConfig, Biographies, plateau, rome_ratio

ID = bio.IDS
PRONOUN_IDS = {ID[w] for w in ("he", "she", "him", "her", "his")}


@pytest.fixture(scope="module")
def world():
    return Biographies(BioConfig(n_individuals=300, pronoun_share=0.5, question_share=0.5, profile=True, seed=3))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _name_ids(w, i):
    return [ID[t] for t in w.names[i]]


def test_pools_are_disjoint_and_the_vocabulary_is_fixed():
    pools = [bio.FIRST, bio.LAST, *bio.VALUES.values()]
    words = [w for p in pools for w in p]
    assert len(words) == len(set(words))
    template_words = {w for rel in bio.TEMPLATES.values() for ts in rel.values() for t in ts for w in t.split()}
    template_words |= {w for rel in bio.QUESTIONS.values() for q in rel.values() for w in q.split()}
    assert not template_words & set(words)
    assert len(bio.VOCAB) == len(set(bio.VOCAB)) == bio.d_vocab - 1
    small = Biographies(BioConfig(n_individuals=5, relations=("major",)))
    assert small.vocab == bio.VOCAB and small.d_vocab == bio.d_vocab  # shared by every run's tokenizer


def test_world_and_batches_are_seeded(world):
    again = Biographies(world.config)
    assert again.names == world.names and again.attributes == world.attributes
    assert again.question_set == world.question_set and torch.equal(again.weights, world.weights)
    other = Biographies(BioConfig(**{**world.config.to_dict(), "seed": 4}))
    assert other.names != world.names
    a, ma = world.training_batch(32, _gen(0))
    b, mb = again.training_batch(32, _gen(0))
    c, _ = world.training_batch(32, _gen(1))
    assert torch.equal(a, b) and torch.equal(ma, mb) and not torch.equal(a, c[:, : a.shape[1]] if c.shape[1] >= a.shape[1] else c)
    firsts = Counter(f for f, _ in world.names)
    assert max(firsts.values()) > 1  # a first name alone does not identify anyone


def test_question_set_and_held_out_are_disjoint_and_question_rows_use_only_the_question_set(world):
    q, h = set(world.question_set), set(world.held_out)
    assert not q & h and q | h == set(range(300)) and len(q) == 150
    tokens, _ = world.training_batch(400, _gen(5))
    qmark = ID["?"]
    names_in_qa = {tuple(row[1:3].tolist()) for row in tokens if (row == qmark).any()}
    assert len(names_in_qa) > 20
    by_name = {tuple(_name_ids(world, i)): i for i in range(300)}
    assert {by_name[n] for n in names_in_qa} <= q
    share = sum(bool((row == qmark).any()) for row in tokens) / len(tokens)
    assert 0.15 < share < 0.35  # question_rows = 0.25
    no_q = Biographies(BioConfig(n_individuals=50))
    assert no_q.question_set == [] and not (no_q.training_batch(64, _gen(0))[0] == qmark).any()


def test_biographies_vary_in_order_and_paraphrase_and_pronouns_follow_the_first_mention(world):
    rng = random.Random(0)
    rows = [world.biography(7, rng) for _ in range(60)]
    orders = {tuple(r for _, r in row.targets) for row in rows}
    assert len(orders) > 20  # 7 sentences shuffled
    texts = Counter(bio.to_text(row.tokens) for row in rows)
    assert len(texts) == 60
    name = _name_ids(world, 7)
    pronoun = bio.PRONOUNS[world.genders[7]]["{S}"]
    wrong_gender = PRONOUN_IDS - {ID[v] for v in bio.PRONOUNS[world.genders[7]].values()}
    for row in rows:
        assert row.tokens[1:3] == name  # the first sentence names the individual
        assert not wrong_gender & set(row.tokens)
    assert any(ID[pronoun] in row.tokens for row in rows)
    # paraphrases: each relation uses exactly `paraphrases` templates
    fixed = Biographies(BioConfig(n_individuals=20, paraphrases=1, shuffle=False, seed=0))
    rows = {tuple(fixed.biography(0, random.Random(s)).tokens) for s in range(20)}
    assert len(rows) == 1
    three = Biographies(BioConfig(n_individuals=20, paraphrases=3, shuffle=False, seed=0))
    rows = {tuple(three.biography(0, random.Random(s)).tokens) for s in range(200)}
    assert len(rows) > 50


def test_profile_follows_the_name_with_every_attribute(world):
    rng = random.Random(4)
    starts = set()
    for _ in range(30):
        row = world.biography(11, rng)
        name = _name_ids(world, 11)
        at = [k for k in range(len(row.tokens) - 2) if row.tokens[k : k + 2] == name and row.tokens[k + 2] in
              {ID[world.attributes[r][11]] for r in world.config.relations}]
        assert len(at) == 1  # the profile: the name, then an attribute
        k = at[0] + 2
        n = len(world.config.relations)
        assert sorted(row.tokens[k : k + n]) == sorted(ID[world.attributes[r][11]] for r in world.config.relations)
        assert row.tokens[k + n] == ID["."]
        starts.add(row.tokens[k])
    assert len(starts) > 1  # shuffled: the attribute right after the name varies


def test_pronoun_share_zero_and_one():
    none = Biographies(BioConfig(n_individuals=40, pronoun_share=0.0, paraphrases=1))  # first templates: one mention each
    allp = Biographies(BioConfig(n_individuals=40, pronoun_share=1.0))
    rng = random.Random(0)
    for i in range(40):
        row = none.biography(i, rng)
        assert not PRONOUN_IDS & set(row.tokens)
        assert sum(row.tokens[k : k + 2] == _name_ids(none, i) for k in range(len(row.tokens))) == len(none.config.relations)
        row = allp.biography(i, rng)
        assert sum(row.tokens[k : k + 2] == _name_ids(allp, i) for k in range(len(row.tokens))) == 1


def test_zipf_frequencies():
    n = 200
    uni = Biographies(BioConfig(n_individuals=n, layout="sentence"))
    zipf = Biographies(BioConfig(n_individuals=n, layout="sentence", frequencies="zipf", zipf_exponent=1.0))
    assert torch.allclose(uni.weights, torch.full((n,), 1 / n, dtype=torch.float64))
    w = zipf.weights.sort(descending=True).values.numpy()
    slope = np.polyfit(np.log(np.arange(1, n + 1)), np.log(w), 1)[0]
    assert slope == pytest.approx(-1.0, abs=1e-6)
    assert not torch.equal(zipf.weights.argsort(descending=True)[:10], torch.arange(10))  # ranks are a permutation
    tokens, _ = zipf.training_batch(4000, _gen(0))
    by_name = {tuple(_name_ids(zipf, i)): i for i in range(n)}
    counts = Counter(by_name[tuple(row[1:3].tolist())] for row in tokens if tuple(row[1:3].tolist()) in by_name)
    top = int(zipf.weights.argmax())
    expected = zipf.weights[top].item() * len(tokens)
    assert abs(counts[top] - expected) < 5 * math.sqrt(expected)
    freq = np.array([counts[i] for i in range(n)], dtype=float) / len(tokens)
    assert np.corrcoef(freq, zipf.weights.numpy())[0, 1] > 0.95


def test_label_positions_masks_and_length_bound(world):
    rng = random.Random(1)
    for i in range(0, 300, 37):
        for row, copies in ((world.biography(i, rng), 2), (world.question_row(i, rng), 1)):  # a profile repeats each attribute
            assert sorted(r for _, r in row.targets) == sorted(world.config.relations * copies)
            for pos, rel in row.targets:
                assert row.tokens[pos] == ID[world.attributes[rel][i]]
    tokens, mask = world.training_batch(128, _gen(2))
    assert tokens.shape[1] <= world.max_len
    lengths = (tokens != bio.BOS).sum(1) + 1  # <bos> first, then padding
    assert torch.equal(mask.sum(1), lengths - 1)
    assert all(sorted(r for _, r in row.targets) == sorted(world.config.relations) for row in world.eval_rows([0, 1, 2]))
    rows = world.eval_rows([0, 1])
    t, m, attr = bio.pad_rows(rows)
    for k, row in enumerate(rows):
        assert attr[k].nonzero().flatten().add(1).tolist() == sorted(p for p, _ in row.targets)
        assert m[k].sum() == len(row.tokens) - 1


@pytest.mark.parametrize("form,order", [("bio", "after"), ("bio", "before"), ("question", "after"), ("question", "before")])
def test_fact_prompts_replace_only_the_subject(world, form, order):
    p = world.fact_prompts("employer", form=form, order=order, individuals=list(range(25)))
    pos = p.metadata["subject_pos"][0].tolist()
    assert (p.clean != p.corrupted).any(0).nonzero().flatten().tolist() == pos
    assert (pos == [1, 2]) == (order == "after")
    for k, i in enumerate(p.metadata["individual"].tolist()):
        assert p.clean[k, pos].tolist() == _name_ids(world, i)
        assert p.answers[k] == ID[world.attributes["employer"][i]]
    assert (p.answers != p.wrong).all()
    with pytest.raises(InputError, match="Unknown relation"):
        world.fact_prompts("likes")


def test_pronoun_prompts_name_the_individual_first_and_refer_back(world):
    p = world.fact_prompts("employer", form="pronoun", individuals=list(range(30)))
    assert p.metadata["subject_pos"][0].tolist() == [1, 2] and p.clean.shape[1] > 8
    for k, i in enumerate(p.metadata["individual"].tolist()):
        assert p.clean[k, 1:3].tolist() == _name_ids(world, i)
        assert ID[bio.PRONOUNS[world.genders[i]]["{S}"]] in p.clean[k].tolist()
        assert p.answers[k] == ID[world.attributes["employer"][i]]
        assert ID[world.attributes["employer"][i]] not in p.clean[k].tolist()  # the answer is not in the context
    with pytest.raises(InputError, match="one relation"):
        Biographies(BioConfig(n_individuals=10, relations=("major",))).fact_prompts("major", form="pronoun")


def test_recall_groups_with_an_oracle_and_a_blank_model(world):
    def oracle(tokens):  # reads the next token: recall 1 wherever the labels line up
        return torch.nn.functional.one_hot(tokens.roll(-1, 1), bio.d_vocab).float() * 30

    who = world.eval_individuals(40, seed=0)
    assert len(who) == 40 and len(set(who) & set(world.question_set)) == 20
    m = world.recall_metrics(oracle, who)
    assert m["bio_recall"] == m["qa_recall_seen"] == m["qa_recall_unseen"] == 1.0
    assert m["attribute_loss"] < 1e-6
    blank = world.recall_metrics(lambda t: torch.zeros(*t.shape, bio.d_vocab), who)
    assert blank["bio_recall"] < 0.05 and blank["attribute_loss"] == pytest.approx(math.log(bio.d_vocab), rel=1e-5)
    only_held_out = world.recall_metrics(oracle, world.held_out[:5])
    assert "qa_recall_unseen" in only_held_out and "qa_recall_seen" not in only_held_out
    assert 0 < world.no_knowledge_loss() < math.log(40)


def test_sentence_layout_rows_hold_one_fact():
    w = Biographies(BioConfig(n_individuals=30, layout="sentence", order="mixed"))
    tokens, _ = w.training_batch(64, _gen(0))
    rows = w.eval_rows([0, 1, 2])
    assert len(rows) == 3 * len(w.config.relations) and all(len(r.targets) == 1 for r in rows)
    assert tokens.shape[1] <= 14


def test_plateau_and_rome_ratio():
    history = [{"step": s, "attribute_loss": loss, "bio_recall": r} for s, loss, r in
               [(0, 6.0, 0.0), (50, 3.1, 0.02), (100, 3.0, 0.03), (150, 2.9, 0.1), (200, 1.0, 0.6), (250, 0.1, 0.95)]]
    p = plateau(history, baseline=3.0)
    assert p["plateau_steps"] == 100 and p["plateau_start"] == 50 and p["plateau_end"] == 150
    assert p["recall_half_step"] == 200 and p["recall_90_step"] == 250
    assert math.isnan(plateau(history[:2], 3.0)["recall_half_step"])
    assert rome_ratio([0.3, 0.4, 0.1, 0.0], [0.2, 0.5, 0.8, 0.1]) == pytest.approx(0.5)
    assert rome_ratio([0.9, 0.1, 0.1, 0.0], [0.2, 0.5, 0.8, 0.1]) == pytest.approx(0.125)
    assert rome_ratio([0.9, 0.1, 0.1, 0.0], [0.2, 0.5, 0.8, 0.1], include_layer0=True) == pytest.approx(1.125)
    with pytest.raises(InputError, match="per-layer"):
        rome_ratio([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="attribute_loss"):
        plateau([{"step": 0}], 3.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_individuals=1), "n_individuals"),
    (dict(n_individuals=10_001), "10000"),
    (dict(relations=("birth_city", "shoe_size")), "relations"),
    (dict(order="middle"), "order"),
    (dict(paraphrases=4), "paraphrases"),
    (dict(pronoun_share=1.5), "pronoun_share"),
    (dict(question_share=0.5, question_rows=0), "question_rows > 0"),
    (dict(layout="sentence", profile=True), "layout='biography'"),
    (dict(frequencies="powerlaw"), "zipf"),
    (dict(frequencies="zipf", zipf_exponent=0), "zipf_exponent"),
])
def test_bad_settings_say_what_to_do(kwargs, match):
    with pytest.raises(InputError, match=match):
        BioConfig(**kwargs)


def test_bad_calls_say_what_to_do(world):
    with pytest.raises(InputError, match="BioConfig"):
        Biographies({"n_individuals": 3})
    with pytest.raises(InputError, match="batch"):
        world.training_batch(0, _gen())
    with pytest.raises(InputError, match="form"):
        world.fact_prompts("major", form="essay")
    with pytest.raises(InputError, match="0..299"):
        world.recall_metrics(lambda t: t, [300])

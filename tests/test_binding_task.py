import pytest
import torch

from interp import InputError
from interp.tasks import binding
from interp.tasks.binding import binding_accuracy, binding_prompts, positional_pairs, training_batch


def _bound(prompts, row: int) -> dict[int, int]:
    """attribute id -> entity id, read off the clean tokens of one prompt."""
    k = prompts.metadata["n_pairs"]
    tokens = prompts.clean[row]
    ent, attr = binding.entity_positions(k), binding.attribute_positions(k)
    return {tokens[a].item(): tokens[e].item() for e, a in zip(ent, attr, strict=True)}


@pytest.mark.parametrize("n_pairs", binding.SIZES)
def test_answer_is_the_entity_bound_to_the_queried_attribute(n_pairs):
    p = binding_prompts(200, n_pairs, seed=3)
    assert p.clean.shape == p.corrupted.shape == (200, binding.prompt_length(n_pairs))
    assert (p.clean[:, 0] == binding.BOS).all()
    assert p.metadata["query_pos"] == p.seq_len - 1
    assert p.clean[:, -3:-1].tolist() == [[binding.IDS["who"], binding.IDS["likes"]]] * 200
    meta = p.metadata
    for i in range(len(p)):
        bound = _bound(p, i)
        assert len(bound) == n_pairs  # attributes distinct
        assert len(set(bound.values())) == n_pairs  # entities distinct
        assert set(bound) <= {binding.IDS[w] for w in binding.ATTRIBUTES}
        assert set(bound.values()) <= {binding.IDS[w] for w in binding.NAMES}
        query_attr = p.clean[i, -1].item()
        assert p.answers[i].item() == bound[query_attr]
        q = meta["query_index"][i].item()
        assert p.clean[i, meta["attribute_pos"][i, q]] == query_attr
        assert p.clean[i, meta["entity_pos"][i, q]] == p.answers[i]
        assert meta["entities"][i].tolist() == p.clean[i, meta["entity_pos"][i]].tolist()
        assert meta["attributes"][i].tolist() == p.clean[i, meta["attribute_pos"][i]].tolist()
        # corrupted: same context, another pair queried; wrong = that pair's entity
        c = meta["corrupted_query_index"][i].item()
        assert c != q and p.wrong[i].item() == bound[p.corrupted[i, -1].item()] != p.answers[i].item()
    assert (p.clean != p.corrupted).any(0).nonzero().flatten().tolist() == [p.seq_len - 1]
    # every slot gets queried when the index is random
    assert set(meta["query_index"].tolist()) == set(range(n_pairs))


def test_prompts_read_back_through_the_word_tokenizer(tmp_path):
    from interp.tokenizers import word_tokenizer

    tok = word_tokenizer(binding.vocabulary(), tmp_path)
    assert len(tok) == binding.d_vocab
    p = binding_prompts(3, 4, seed=0)
    for row in p.clean:
        assert tok(binding.to_text(row))["input_ids"] == row.tolist()
    text = binding.to_text(p.clean[0])
    assert text.startswith("<bos> ") and " who likes " in text and text.split()[3] == "."
    assert text.split()[-1] in binding.ATTRIBUTES


def test_query_index_fixes_the_queried_slot():
    p = binding_prompts(50, 5, query_index=3, seed=1)
    assert (p.metadata["query_index"] == 3).all()
    assert (p.answers == p.metadata["entities"][:, 3]).all()
    assert (p.clean[:, -1] == p.metadata["attributes"][:, 3]).all()


def test_seeded_prompts_are_deterministic_and_differ_across_seeds():
    a, b, c = binding_prompts(40, 3, seed=7), binding_prompts(40, 3, seed=7), binding_prompts(40, 3, seed=8)
    assert torch.equal(a.clean, b.clean) and torch.equal(a.corrupted, b.corrupted) and torch.equal(a.answers, b.answers)
    assert not torch.equal(a.clean, c.clean)
    p, q = positional_pairs(20, 4, seed=2), positional_pairs(20, 4, seed=2)
    assert torch.equal(p.source, q.source) and torch.equal(p.base.clean, q.base.clean)
    assert not torch.equal(p.source, positional_pairs(20, 4, seed=3).source)


def test_training_batch_mixes_sizes_and_masks_only_the_answer():
    gen = torch.Generator().manual_seed(0)
    tokens, mask = training_batch(400, gen)
    width = binding.prompt_length(binding.MAX_PAIRS) + 1
    assert tokens.shape == (400, width) and mask.shape == (400, width - 1)
    assert (tokens[:, 0] == binding.BOS).all() and (mask.sum(1) == 1).all()
    query_pos = mask.float().argmax(1)
    sizes = ((query_pos + 1 - 4) // 3).tolist()
    assert set(sizes) == set(binding.SIZES)
    who, likes = binding.IDS["who"], binding.IDS["likes"]
    for row, (pos, k) in enumerate(zip(query_pos.tolist(), sizes, strict=True)):
        t = tokens[row]
        assert t[pos - 1] == likes and t[pos - 2] == who
        ent, attr = binding.entity_positions(k), binding.attribute_positions(k)
        bound = {t[a].item(): t[e].item() for e, a in zip(ent, attr, strict=True)}
        assert len(bound) == k == len(set(bound.values()))
        assert t[pos + 1].item() == bound[t[pos].item()]  # the answer follows the queried attribute
        assert (t[pos + 2 :] == 0).all()  # right padding
    only_two, _ = training_batch(50, gen, sizes=(2,))
    assert (only_two[:, binding.prompt_length(2) + 1 :] == 0).all()


def test_training_batch_with_several_queries_asks_about_distinct_pairs():
    gen = torch.Generator().manual_seed(1)
    tokens, mask = training_batch(300, gen, queries=3)
    assert tokens.shape == (300, 1 + 3 * binding.MAX_PAIRS + 4 * 3)
    single, _ = training_batch(1, torch.Generator().manual_seed(0))
    for row in range(300):
        t, m = tokens[row], mask[row]
        k = (m.nonzero()[0].item() - 3) // 3  # the first query's attribute sits at 3 + 3k
        assert t[3 * k] == binding.IDS["."] and set(t[2 : 3 * k : 3].tolist()) <= {binding.IDS[w] for w in binding.NAMES}
        assert (t[1 + 3 * k] == binding.IDS["who"]) and m.sum() == min(3, k)
        ent, attr = binding.entity_positions(k), binding.attribute_positions(k)
        bound = {t[a].item(): t[e].item() for e, a in zip(ent, attr, strict=True)}
        asked = []
        for pos in m.nonzero().flatten().tolist():
            assert t[pos - 2] == binding.IDS["who"] and t[pos + 1].item() == bound[t[pos].item()]
            asked.append(t[pos].item())
        assert len(set(asked)) == len(asked)  # distinct pairs queried
        # the first query and its answer form exactly a single-query prompt + answer
        first = m.nonzero()[0].item()
        assert first == binding.prompt_length(k) - 1
    assert single.shape[1] == binding.prompt_length(binding.MAX_PAIRS) + 1
    with pytest.raises(InputError, match="queries"):
        training_batch(4, gen, queries=0)


@pytest.mark.parametrize("n_pairs", binding.SIZES)
def test_positional_pairs_move_the_queried_attribute_to_another_slot(n_pairs):
    base, source, source_query, positional = positional_pairs(100, n_pairs, seed=4)
    meta = base.metadata
    assert source.shape == base.clean.shape == (100, binding.prompt_length(n_pairs))
    assert torch.equal(base.corrupted, source) and torch.equal(base.wrong, positional)
    assert (source_query != meta["query_index"]).all()
    rows = torch.arange(100)
    ent_pos, attr_pos = meta["entity_pos"], meta["attribute_pos"]
    # the source queries the base's attribute, which sits at the source's queried slot
    assert (source[:, -1] == base.clean[:, -1]).all()
    assert (source[rows, attr_pos[rows, source_query]] == base.clean[:, -1]).all()
    # positional answer: the base entity at the source's queried slot; base answer at the base slot
    assert (positional == base.clean[rows, ent_pos[rows, source_query]]).all()
    assert (base.answers == base.clean[rows, ent_pos[rows, meta["query_index"]]]).all()
    assert (positional != base.answers).all()
    # source entities and its other attributes share nothing with the base
    for i in range(100):
        src_ent = set(source[i, ent_pos[i]].tolist())
        assert not src_ent & set(base.clean[i, ent_pos[i]].tolist())
        assert set(source[i, attr_pos[i]].tolist()) & set(base.clean[i, attr_pos[i]].tolist()) == {base.clean[i, -1].item()}
        assert meta["source_answer"][i].item() in src_ent
    assert set(source_query.tolist()) == set(range(n_pairs))


def test_binding_accuracy_of_a_blank_model_is_near_chance(tmp_path):
    from interp.models import build_native
    from interp.tokenizers import word_tokenizer

    cfg = dict(n_layers=1, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=32, d_vocab=binding.d_vocab,
               normalization_type="LN", positional_embedding_type="standard", act_fn="gelu")
    model = build_native(cfg, word_tokenizer(binding.vocabulary(), tmp_path), seed=0)
    acc = binding_accuracy(model, n=100)
    assert set(acc) == {"acc_2", "acc_3", "acc_4", "acc_5"}
    assert all(0 <= v < 0.2 for v in acc.values())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: binding_prompts(10, 1), "n_pairs must be an integer from 2 to 5"),
        (lambda: binding_prompts(10, 6), "got 6"),
        (lambda: binding_prompts(10, 3.0), "n_pairs must be an integer"),
        (lambda: binding_prompts(10, 3, query_index=3), r"must lie in 0\.\.2 for n_pairs=3, got 3"),
        (lambda: binding_prompts(10, 3, query_index=-1), "query_index"),
        (lambda: binding_prompts(0, 3), "n \\(the number of prompts\\) must be a positive integer, got 0"),
        (lambda: positional_pairs(5, 7), "n_pairs must be an integer from 2 to 5"),
        (lambda: positional_pairs(-1, 3), "positive integer, got -1"),
        (lambda: training_batch(0, torch.Generator()), "batch"),
        (lambda: training_batch(8, torch.Generator(), sizes=(2, 9)), "got 9"),
        (lambda: training_batch(8, torch.Generator(), sizes=()), "at least one context size"),
        (lambda: binding.prompt_length(1), "from 2 to 5"),
    ],
)
def test_bad_input_raises_a_helpful_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_recipe_batch_mixes_binding_and_induction_rows():
    from interp.recipes import BINDING_INDUCTION_ROWS, binding_batch

    tokens, mask = binding_batch(torch.Generator().manual_seed(0), batch=128)
    n_bind = 128 - BINDING_INDUCTION_ROWS
    assert tokens.shape[0] == 128 and mask.shape == (128, tokens.shape[1] - 1)
    # binding rows: loss only on the answers (2..5 per row); induction rows: loss on every token
    assert ((mask[:n_bind].sum(1) >= 2) & (mask[:n_bind].sum(1) <= 5)).all()
    assert mask[n_bind:].all()
    ind = tokens[n_bind:]
    assert (ind[:, 0] == binding.BOS).all() and (ind[:, 1:] >= 1).all() and (ind < binding.d_vocab).all()
    # every induction row repeats a segment of at least 4 tokens
    for row in ind.tolist():
        body = row[1:]
        grams = [tuple(body[i : i + 4]) for i in range(len(body) - 3)]
        assert len(set(grams)) < len(grams)

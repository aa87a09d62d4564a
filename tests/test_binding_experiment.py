"""The binding experiment (issue 19, part 4): the other layouts and Gur-Arieh-style counterfactual
pairs are what their docstrings claim, a tiny attempt runs end to end and writes the record the figure
reads, and the figure draws from stored records only."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from experiments import binding as exp
from interp import InputError
from interp.figures import binding_experiment as figs
from interp.tasks import binding

STORE = Path(__file__).resolve().parent.parent / "assets" / "experiments" / "binding"


@pytest.mark.parametrize("layout", list(binding.LAYOUTS))
@pytest.mark.parametrize("filler", [0, 2])
def test_layout_prompts_bind_as_claimed(layout, filler):
    for k in binding.SIZES:
        p = binding.layout_prompts(50, k, layout, filler, seed=k)
        meta = p.metadata
        assert p.clean.shape == p.corrupted.shape == (50, binding.layout_length(k, layout, filler))
        assert (p.clean[:, 0] == binding.BOS).all()
        assert p.clean[:, -3:-1].tolist() == [[binding.IDS["who"], binding.IDS["likes"]]] * 50
        rows = torch.arange(50)[:, None]
        assert (p.clean[rows, meta["entity_pos"]] == meta["entities"]).all()
        assert (p.clean[rows, meta["attribute_pos"]] == meta["attributes"]).all()
        order = binding.LAYOUTS[layout]
        assert ((meta["attribute_pos"] - meta["entity_pos"]) == order.index("A") - order.index("E")).all()
        q = meta["query_index"]
        assert (p.clean[:, -1] == meta["attributes"][torch.arange(50), q]).all()
        assert (p.answers == meta["entities"][torch.arange(50), q]).all()
        assert (p.wrong != p.answers).all()
        # every other token is '.' (pair separators and filler) or the layout's 'likes'
        other = torch.ones_like(p.clean, dtype=torch.bool)
        other[:, 0] = other[:, -3:] = False
        other[rows, meta["entity_pos"]] = other[rows, meta["attribute_pos"]] = False
        assert set(p.clean[other].tolist()) <= {binding.IDS["."], binding.IDS["likes"]}
        if filler and k > 2:  # filler moves the slots: positions vary across prompts
            assert len({tuple(r) for r in meta["entity_pos"].tolist()}) > 1


def test_layout_batch_first_query_is_a_prompt_and_mask_marks_answers():
    gen = torch.Generator().manual_seed(0)
    tokens, mask = binding.layout_batch(40, gen, "entity-first", sizes=(2, 5), queries=3, filler=1)
    assert tokens.shape == (40, 1 + 4 * 5 + 4 + 12) and mask.shape == (40, tokens.shape[1] - 1)
    for row, m in zip(tokens, mask, strict=True):
        at = m.nonzero().flatten()
        assert 2 <= len(at) <= 3
        for a in at:  # the answer follows its attribute in the context, after 'likes'
            attr, ent = row[a], row[a + 1]
            ctx = row[: at[0] - 2].tolist()
            i = ctx.index(attr.item())
            assert ctx[i - 2] == ent and ctx[i - 1] == binding.IDS["likes"]


@pytest.mark.parametrize("layout", list(binding.LAYOUTS))
def test_mechanism_pairs_point_each_outcome_at_a_distinct_entity(layout):
    for k in (4, 5):
        mp = binding.mechanism_pairs(60, k, layout, filler=1, seed=k)
        meta = mp.base.metadata
        rows = torch.arange(60)
        answers = torch.stack([mp.answers[m] for m in binding.MECHANISMS], 1)
        assert all(len(set(r)) == 4 for r in answers.tolist())
        ent, attr = meta["entities"], meta["attributes"]
        src_ent, src_attr = meta["source_entities"], meta["source_attributes"]
        p, lex, r = mp.slots["positional"], mp.slots["lexical"], mp.slots["reflexive"]
        # the source re-binds the base's own words: slot p holds (E_r, A_l) and is queried
        assert (src_ent.sort(1).values == ent.sort(1).values).all() and (src_attr.sort(1).values == attr.sort(1).values).all()
        assert (src_ent[rows, p] == ent[rows, r]).all() and (src_attr[rows, p] == attr[rows, lex]).all()
        assert (mp.source[:, -1] == attr[rows, lex]).all() and (mp.base.clean[:, -1] == attr[rows, meta["query_index"]]).all()
        assert (mp.answers["positional"] == ent[rows, p]).all() and (mp.answers["lexical"] == ent[rows, lex]).all()
        assert (mp.answers["reflexive"] == ent[rows, r]).all() and (mp.answers["base"] == mp.base.answers).all()
        assert mp.source.shape == mp.base.clean.shape


def test_bad_inputs_raise_clear_errors():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(InputError, match="layout must be one of"):
        binding.layout_prompts(5, 3, "entity-last")
    with pytest.raises(InputError, match="filler"):
        binding.layout_batch(5, gen, "entity-first", filler=9)
    with pytest.raises(InputError, match="n_pairs >= 4"):
        binding.mechanism_pairs(5, 3)
    with pytest.raises(InputError, match="n_pairs"):
        binding.layout_prompts(5, 6)
    with pytest.raises(InputError, match="No attempt"):
        exp.run("ef-curriculm", out_dir=Path("/nonexistent"))
    with pytest.raises(InputError, match="--out"):
        exp.run("ef-curriculum", steps=5)


def test_defaults_of_the_attribute_first_functions_are_unchanged():
    a = binding.layout_prompts(20, 3, "attribute-first", seed=1)
    assert a.clean.shape[1] == binding.prompt_length(3)
    assert a.metadata["entity_pos"][0].tolist() == binding.entity_positions(3)


def test_curriculum_and_plateau_exit():
    att = exp.ATTEMPTS["ef-curriculum"]
    assert att.sizes_at(0) == (2,) and att.sizes_at(att.steps - 1) == binding.SIZES
    mixed = exp.ATTEMPTS["ef-from-short"]
    assert mixed.layout_at(0) == "entity-first-short" and mixed.layout_at(mixed.steps - 1) == mixed.layout == "entity-first"
    hist = [{"step": 0, **{f"acc_{k}": 1 / k for k in binding.SIZES}}, {"step": 50, "acc_2": 0.8, "acc_3": 0.7, "acc_4": 0.6, "acc_5": 0.5},
            {"step": 100, "acc_2": 0.8, "acc_3": 0.7, "acc_4": 0.7, "acc_5": 0.61}]
    assert exp.plateau_exit(hist) == 100
    assert exp.plateau_exit(hist[:2]) is None


def test_registry_has_six_levers():
    assert len(exp.ATTEMPTS) >= 6 and len({a.lever for a in exp.ATTEMPTS.values()}) >= 6


def test_tiny_attempt_round_trips_and_the_figure_draws(tmp_path):
    tiny = exp.Attempt("tiny", "test", curriculum=((0.5, (2,)),), induction_rows=4, steps=4, batch_size=8,
                       model=dict(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64))
    record = exp.run("tiny", out_dir=tmp_path, progress=False, attempts={"tiny": tiny})
    stored = json.loads((tmp_path / "tiny.json").read_text())
    assert stored == json.loads(json.dumps(record))
    assert [row["step"] for row in stored["history"]] == [0, 4]
    assert stored["settings"]["curriculum"] == [[0.5, [2]]] and stored["model"]["n_layers"] == 2
    assert stored["left_plateau"] is False and stored["shares"] is None
    assert exp.load_records(tmp_path)[0]["name"] == "tiny"
    # the shares of the tiny model, measured the way a shipped model's are
    from interp.models import load_native_dir

    model = load_native_dir(tmp_path / "models" / "tiny")
    shares = exp.mechanism_shares(model, "entity-first", n=8, sizes=(4,))
    assert len(shares["sites"]) == 3
    for i in range(3):
        assert sum(shares["shares"][m][i] for m in (*binding.MECHANISMS, "other")) == pytest.approx(1.0, abs=1e-3)
    # the figure: from stored records only; a measured attempt appears beside binding-4l
    with pytest.raises(InputError, match="shares binding-4l"):
        figs.binding_mechanisms(out_dir=tmp_path / "fig", records=tmp_path)
    shutil.copy(STORE / "binding-4l.shares.json", tmp_path)
    result = figs.binding_mechanisms(out_dir=tmp_path / "fig", records=tmp_path)
    assert result.paths[0].exists() and "no attempt left" in result.caption
    stored.update(name="tiny-found", left_plateau=True, plateau_exit_step=4, shares=shares)
    (tmp_path / "tiny-found.json").write_text(json.dumps(stored))
    result = figs.binding_mechanisms(out_dir=tmp_path / "fig", records=tmp_path)
    assert "tiny-found" in result.caption
    assert result.numbers["found_positional_0"] == shares["shares"]["positional"][0]
    assert result.numbers["binding-4l_lexical_0"] == 1.0


def test_stored_records_draw():
    """The records that `make reproduce` draws are present, and the figure reproduces their numbers."""
    attempts = figs.load_attempts()
    assert len(attempts) >= 3, "run the attempts of experiments.binding (python -m experiments.binding run NAME)"
    for r in attempts:
        assert exp.plateau_exit(r["history"]) == r["plateau_exit_step"]
    ref = figs.load_shares("binding-4l")
    assert ref["shares"]["positional"] == [0.0] * 5  # binding-4l retrieves lexically (its card)


def test_binding_ef_recipe_draws_the_batches_of_attempt_ef_all():
    """binding-ef-4l's recipe is attempt ef-all (the card says it reproduces it): same model shape, same batches."""
    from interp.recipes import BINDING_EF_CONFIG, binding_ef_batch

    att = exp.ATTEMPTS["ef-all"]
    assert {**exp.MODEL, **att.model} == BINDING_EF_CONFIG
    make = exp.batch_fn(att, binding.d_vocab)
    for step in (0, 1100, 1800, 2500, 3499):
        a, b = torch.Generator().manual_seed(step), torch.Generator().manual_seed(step)
        (ta, ma), (tb, mb) = make(a, step), binding_ef_batch(b, step, att.steps)
        assert torch.equal(ta, tb) and torch.equal(ma, mb)

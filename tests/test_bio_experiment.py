"""The biography experiment: its registry covers the issue's axes, a tiny run writes the record the
figures read, and the figure functions draw every stored run with the numbers the runs stored."""

import json
import math

import pytest
import torch

from experiments import bio as exp
from interp.figures import bio as figs
from interp.tasks.bio import BioConfig

FIGURES = (figs.bio_rome_ratio, figs.bio_plateau, figs.bio_learning_curves, figs.bio_name_probe)


def _n_params(model: dict) -> int:
    d, layers, mlp = model["d_model"], model["n_layers"], model["d_mlp"]
    return layers * (4 * d * d + 2 * d * mlp)


def test_registry_covers_the_axes():
    for run in exp.RUNS.values():
        BioConfig(**run.task)  # every registered world is valid
        assert run.axes and set(run.axes) <= set(figs.AXES)
    on = {axis: [r for r in exp.RUNS.values() if axis in r.axes] for axis in figs.AXES}
    assert len({r.task["n_individuals"] for r in on["individuals"]}) >= 3
    assert sorted(r.model["n_layers"] for r in on["depth"]) == [4, 6, 8]
    base = _n_params(exp.RUNS["bio-n1000"].model)
    assert all(abs(_n_params(r.model) / base - 1) < 0.1 for r in on["depth"])  # depth at fixed parameters
    assert {exp.AXIS_LABELS["design"](r) for r in on["design"]} <= set(figs.DESIGN_ORDER)
    assert {r.task.get("frequencies", "uniform") for r in on["frequencies"]} == {"uniform", "zipf"}


@pytest.fixture(scope="module")
def tiny_record(tmp_path_factory):
    """A registered-run record from a run of 6 steps of a tiny model (a couple of seconds)."""
    out = tmp_path_factory.mktemp("runs")
    tiny = exp.Run("tiny", exp._bio(20, question_share=0.5, pronoun_share=0.5), model=dict(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64),
                   axes=("individuals", "design"), steps=8, batch_size=8, eval_every=4)
    saved = dict(exp.RUNS)
    exp.RUNS["tiny"] = tiny
    cache = exp.CACHE
    exp.CACHE = out / "cache"
    try:
        record = exp.run("tiny", out_dir=out, progress=False)
    finally:
        exp.RUNS.clear()
        exp.RUNS.update(saved)
        exp.CACHE = cache
        torch.set_num_threads(1)
    return out, record


def test_a_run_stores_its_command_history_and_traces(tiny_record):
    out, record = tiny_record
    stored = json.loads((out / "tiny.json").read_text())
    assert stored["command"].endswith("experiments.bio run tiny") and stored["task"]["n_individuals"] == 20
    assert [h["step"] for h in stored["history"]] == [0, 2, 4, 8]  # every 4 steps and the traced quarter
    assert {"bio_recall", "qa_recall_seen", "qa_recall_unseen", "attribute_loss"} <= set(stored["history"][-1])
    assert {(t["step"], t["form"]) for t in stored["traces"]} == {(s, f) for s in (2, 4, 8) for f in ("bio", "question", "pronoun")}
    assert len(stored["traces"][-1]["groups"]["mlp"]["last token"]) == 2
    assert set(stored["probe"]["accuracy"]) == set(stored["task"]["relations"])  # None where too few individuals
    assert (out / "cache" / "tiny" / "model.safetensors").exists()  # the final weights, for later analysis


def test_figures_recompute_what_the_runs_stored(tiny_record, tmp_path):
    out, _ = tiny_record
    for fn in FIGURES:
        result = fn(out_dir=tmp_path, runs=out)
        assert all(p.exists() and p.stat().st_size > 5000 for p in result.paths)
    numbers = figs.run_numbers(json.loads((out / "tiny.json").read_text()))
    stored = json.loads((out / "tiny.json").read_text())
    assert numbers["plateau_steps"] == stored["plateau"]["plateau_steps"]
    ratio = stored["rome_ratio"]
    assert (ratio is None and math.isnan(numbers["rome_ratio_bio"])) or numbers["rome_ratio_bio"] == pytest.approx(ratio)


def test_figures_draw_the_stored_runs(tmp_path):
    records = figs.load_runs()
    assert records, "no biography run is stored under assets/experiments/bio: make reproduce draws them from there"
    for fn in FIGURES:
        result = fn(out_dir=tmp_path)
        assert all(p.exists() and p.stat().st_size > 5000 for p in result.paths)
    numbers = figs.bio_plateau(out_dir=tmp_path).numbers
    for r in records:
        assert numbers[f"{r['name']}_plateau_steps"] == r["plateau"]["plateau_steps"]

"""Causal tracing (ROME) on the tiny native model with MLPs from conftest."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from interp import InputError, Site
from interp.tasks import PromptSet
from patching.causal_tracing import (
    GROUPS,
    TraceResult,
    causal_trace,
    embedding_std,
    position_groups,
)

SUBJECT = [1, 2, 3]



@pytest.fixture(scope="module")
def prompts(mlp_model):
    tokens = torch.randint(1, 32, (2, 8), generator=torch.Generator().manual_seed(5))
    answers = mlp_model(tokens)[:, -1].argmax(-1)
    return tokens, answers


@pytest.fixture(scope="module")
def trace(mlp_model, prompts) -> TraceResult:
    tokens, answers = prompts
    return causal_trace(mlp_model, tokens, SUBJECT, answers, noise=3.0, samples=3, severed="mlp", seed=0, progress=False)


def test_shapes_and_settings(mlp_model, trace):
    assert set(trace.probs) == {"resid", "mlp", "attn", "resid_severed_mlp"}
    for eff in trace.effects.values():
        assert eff.shape == (2, mlp_model.n_layers, 8)
    assert trace.mean("mlp").shape == (mlp_model.n_layers, 8)
    assert trace.settings["window"] == 1  # ROME's 10/48 of 2 layers, at least 1
    assert trace.settings["noise_std"] == pytest.approx(3 * float(mlp_model.module.embed.weight.detach().std()), rel=1e-5)
    assert embedding_std(mlp_model) == pytest.approx(float(mlp_model.module.embed.weight.detach().std()), rel=1e-6)
    assert trace.noise.shape == (2, 3, len(SUBJECT), mlp_model.d_model)
    assert torch.allclose(trace.total_effect, trace.p_clean - trace.p_corrupted)
    assert not torch.allclose(trace.p_clean, trace.p_corrupted)  # the noise does something


def test_zero_noise_gives_zero_effects(mlp_model, prompts):
    tokens, answers = prompts
    result = causal_trace(mlp_model, tokens, SUBJECT, answers, noise=0.0, samples=2, progress=False)
    for eff in result.effects.values():
        assert eff.abs().max() < 1e-6
    assert result.total_effect.abs().max() < 1e-6


def test_restoring_the_final_state_restores_the_clean_answer(mlp_model, prompts, trace):
    # The last layer's residual stream at the answer position determines the answer's probability.
    last = trace.probs["resid"][:, -1, -1]
    assert torch.allclose(last, trace.p_clean, atol=1e-5)
    # Restoring a state at a position before any corrupted token changes nothing.
    assert trace.effects["resid"][:, :, 0].abs().max() < 1e-6
    # Restoring layer 0's output at every position at once gives back the clean run exactly.
    tokens, answers = prompts
    _, clean = mlp_model.run(tokens[:1], reads=[Site("resid_post", 0)])
    noise = torch.zeros(1, 8, mlp_model.d_model)
    noise[0, SUBJECT] = trace.noise[0, 0]
    logits, _ = mlp_model.run(tokens[:1], edits={Site("embed"): lambda a: a + noise, Site("resid_post", 0): clean[Site("resid_post", 0)]})
    p = float(logits.detach()[0, -1].softmax(-1)[answers[0]])
    assert p == pytest.approx(float(trace.p_clean[0]), abs=1e-6)


def _reference(model, tokens, answer, noise, layer, pos, site_kinds_layers, sever_layers=()):
    """One restoration, one noise sample at a time, with plain Site edits."""
    n_pos = tokens.shape[1]
    reads = [Site(k, lay) for k, lay in site_kinds_layers] + [Site("mlp_out", j) for j in sever_layers]
    _, clean = model.run(tokens, reads=reads)
    probs = []
    for eps in noise:
        full = torch.zeros(1, n_pos, model.d_model)
        full[0, SUBJECT] = eps
        add = lambda a, full=full: a + full  # noqa: E731
        edits = {Site("embed"): add}
        if sever_layers:
            _, corrupted = model.run(tokens, reads=[Site("mlp_out", j) for j in sever_layers], edits={Site("embed"): add})
            for j in sever_layers:
                edits[Site("mlp_out", j, pos=pos)] = corrupted[Site("mlp_out", j)][:, pos]
        for k, lay in site_kinds_layers:
            edits[Site(k, lay, pos=pos)] = clean[Site(k, lay)][:, pos]
        logits, _ = model.run(tokens, edits=edits)
        probs.append(float(logits.detach()[0, -1].softmax(-1)[answer]))
    return sum(probs) / len(probs)


@pytest.mark.parametrize("kind, layer, pos", [("resid", 0, 2), ("resid", 0, 6), ("mlp", 1, 3), ("attn", 0, 7), ("resid_severed_mlp", 0, 3)])
def test_batched_equals_one_at_a_time(mlp_model, prompts, trace, kind, layer, pos):
    tokens, answers = prompts
    i = 1
    site = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out", "resid_severed_mlp": "resid_post"}[kind]
    sever = range(layer + 1, mlp_model.n_layers) if kind == "resid_severed_mlp" else ()
    expected = _reference(mlp_model, tokens[i : i + 1], int(answers[i]), trace.noise[i], layer, pos, [(site, layer)], sever)
    assert float(trace.probs[kind][i, layer, pos]) == pytest.approx(expected, abs=1e-5)


def test_windowed_restoration_matches_reference(mlp_model, prompts):
    tokens, answers = prompts
    result = causal_trace(mlp_model, tokens[:1], SUBJECT, answers[:1], samples=2, window=2, kinds=("mlp",), progress=False)
    # window 2 centred on layer 1 covers layers 0 and 1; centred on layer 0 covers layer 0 only
    both = _reference(mlp_model, tokens[:1], int(answers[0]), result.noise[0], 1, 4, [("mlp_out", 0), ("mlp_out", 1)])
    only0 = _reference(mlp_model, tokens[:1], int(answers[0]), result.noise[0], 0, 4, [("mlp_out", 0)])
    assert float(result.probs["mlp"][0, 1, 4]) == pytest.approx(both, abs=1e-5)
    assert float(result.probs["mlp"][0, 0, 4]) == pytest.approx(only0, abs=1e-5)


def test_chunking_does_not_change_results(mlp_model, prompts, trace):
    tokens, answers = prompts
    small = causal_trace(mlp_model, tokens, SUBJECT, answers, samples=3, severed="mlp", seed=0, max_batch=4, progress=False)
    for kind in trace.probs:
        assert torch.allclose(small.probs[kind], trace.probs[kind], atol=1e-6)


def test_seeds(mlp_model, prompts, trace):
    tokens, answers = prompts
    same = causal_trace(mlp_model, tokens, SUBJECT, answers, samples=3, severed="mlp", seed=0, progress=False)
    other = causal_trace(mlp_model, tokens, SUBJECT, answers, samples=3, kinds=("resid",), seed=1, progress=False)
    assert torch.equal(same.noise, trace.noise)
    for kind in trace.probs:
        assert torch.equal(same.probs[kind], trace.probs[kind])
    assert not torch.equal(other.noise, trace.noise)
    assert not torch.allclose(other.probs["resid"], trace.probs["resid"])


def test_promptset_input(mlp_model, prompts, trace):
    tokens, answers = prompts
    ps = PromptSet(tokens, tokens, answers, metadata={"subject_positions": [SUBJECT, SUBJECT]})
    result = causal_trace(mlp_model, ps, samples=3, severed="mlp", seed=0, progress=False)
    assert torch.equal(result.probs["resid"], trace.probs["resid"])


def test_aggregate_groups(trace):
    assert position_groups([1, 2, 3], 8) == [[1], [2], [3], [4], [5, 6], [7]]
    assert position_groups([2], 4) == [[2], [], [2], [3], [], [3]]
    agg = trace.aggregate()
    assert agg["resid"].shape == (trace.probs["resid"].shape[1], len(GROUPS))
    eff = trace.effects["mlp"]
    assert torch.allclose(agg["mlp"][:, 1], eff[:, :, 2].mean(0))  # middle subject token
    assert torch.allclose(agg["mlp"][:, 4], eff[:, :, 5:7].mean(-1).mean(0))  # further tokens
    one = trace.aggregate([2])
    assert torch.isnan(one["resid"][:, 1]).all()  # a one-token subject has no middle


def test_plot(trace):
    matplotlib.use("Agg")
    fig = trace.plot(prompt=0)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 4
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels[1].endswith("*") and not labels[0].endswith("*")
    assert labels[0].startswith("<bos>") or labels[0].startswith("t")
    assert axes[0].get_xlabel() == "layer"
    assert len(fig.axes) == 8  # each heatmap has a colour bar
    assert trace.plot().axes
    import matplotlib.pyplot as plt

    plt.close("all")


def test_errors(mlp_model, attn_only_model, prompts):
    tokens, answers = prompts
    with pytest.raises(InputError, match="outside"):
        causal_trace(mlp_model, tokens, [1, 9], answers, samples=1, progress=False)
    with pytest.raises(InputError, match="window"):
        causal_trace(mlp_model, tokens, SUBJECT, answers, samples=1, window=3, progress=False)
    with pytest.raises(InputError, match="attention-only"):
        causal_trace(attn_only_model, tokens, SUBJECT, answers, samples=1, progress=False)
    with pytest.raises(InputError, match="Unknown trace kinds"):
        causal_trace(mlp_model, tokens, SUBJECT, answers, kinds=("mlp_out",), progress=False)
    with pytest.raises(InputError, match="answers"):
        causal_trace(mlp_model, tokens, SUBJECT, answers[:1], progress=False)
    with pytest.raises(InputError, match="subject_positions"):
        causal_trace(mlp_model, tokens, None, answers, progress=False)


@pytest.mark.parametrize("model_name", ["mlp_model", "gpt2_transformer_lens", "gpt2_nnsight"])
def test_fast_engine_restorations_equal_the_hook_restorer(request, monkeypatch, gpt2_dir, model_name):
    """Causal tracing runs its restorations as one fast-engine sweep per prompt where the engine applies
    (native and Hugging Face models): the same probabilities as restoring through hooks, window and all."""
    import interp
    from patching import causal_tracing, fast

    if model_name == "mlp_model":
        model = request.getfixturevalue("mlp_model")
    else:
        model = interp.load(gpt2_dir, backend=model_name.split("_", 1)[1])
    tokens = torch.randint(1, 32, (2, 8), generator=torch.Generator().manual_seed(5))
    answers = model(tokens)[:, -1].argmax(-1)
    args = dict(samples=3, window=2, severed="attn", seed=0, progress=False)
    calls = []
    original = fast.FastRun.setup.__func__

    def counting(cls, *a, **k):
        run = original(cls, *a, **k)
        calls.append(run is not None)
        return run

    monkeypatch.setattr(fast.FastRun, "setup", classmethod(counting))
    quick = causal_trace(model, tokens, SUBJECT, answers, **args)
    assert calls and all(calls)  # the fast engine ran for each prompt
    monkeypatch.setattr(causal_tracing, "_restored_fast", lambda *a, **k: None)
    hooks = causal_trace(model, tokens, SUBJECT, answers, **args)
    assert set(quick.probs) == set(hooks.probs) == {"resid", "mlp", "attn", "resid_severed_attn"}
    for kind in quick.probs:
        torch.testing.assert_close(quick.probs[kind], hooks.probs[kind], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(quick.p_corrupted, hooks.p_corrupted)

"""Logit lens and direct logit attribution, against TransformerLens's ActivationCache on the same model."""

from __future__ import annotations

import pytest
import torch

from interp import InputError, Site
from interp.models import build_native
from interp.tasks import PromptSet
from probes import direct_logit_attribution, logit_lens
from probes.lens import Readout
from tests.conftest import D_VOCAB, TINY


@pytest.fixture(scope="module")
def rms_model(tokenizer):
    return build_native({**TINY, "attn_only": False, "d_mlp": 64, "normalization_type": "RMS"}, tokenizer, seed=2, name="tiny-rms")


@pytest.fixture(scope="module")
def lens_tokens():
    return torch.randint(1, D_VOCAB, (3, 10), generator=torch.Generator().manual_seed(3))


def _tl_cache(model, tokens):
    return model.module.run_with_cache(tokens)


def _ln_final(model):
    return model.module.ln_final._original_component


@pytest.mark.parametrize("name", ["mlp_model", "rms_model", "attn_only_model"])
def test_readout_reproduces_the_models_logits(request, name, lens_tokens):
    model = request.getfixturevalue(name)
    readout = Readout.of(model)
    _, cache = model.run_with_cache(lens_tokens, [Site("resid_post", model.n_layers - 1)])
    torch.testing.assert_close(readout.logits(cache[Site("resid_post", model.n_layers - 1)]), model(lens_tokens), atol=1e-5, rtol=1e-5)
    assert readout.kind == ("rms" if name == "rms_model" else "layer")


@pytest.mark.parametrize("norm", ["recomputed", "frozen"])
def test_logit_lens_equals_transformer_lens(mlp_model, lens_tokens, norm):
    model = mlp_model
    lens = logit_lens(model, lens_tokens, answers="next", norm=norm, sublayers=True, keep_logits=True)
    logits, cache = _tl_cache(model, lens_tokens)
    stack, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    assert lens.labels == labels
    normed = cache.apply_ln_to_stack(stack, recompute_ln=(norm == "recomputed"))  # centred and divided, no weights
    ln = _ln_final(model)
    expected = (normed * ln.weight + ln.bias) @ model.module.W_U + model.module.b_U
    torch.testing.assert_close(lens.logits, expected.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lens.logits[-1], logits.detach(), atol=1e-4, rtol=1e-4)  # the last state is the output
    # answer statistics are read from those logits
    lp = expected.log_softmax(-1)[..., :-1, :].gather(-1, lens_tokens[None, :, 1:, None].expand(len(labels), -1, -1, 1))[..., 0]
    torch.testing.assert_close(lens.answer_log_prob[..., :-1], lp.detach(), atol=1e-4, rtol=1e-4)
    assert torch.isnan(lens.answer_prob[..., -1]).all() and (lens.answer_rank[..., -1] == -1).all()
    top = expected.topk(5, dim=-1).indices
    assert torch.equal(lens.top_ids, top)


def test_recomputed_and_frozen_agree_at_the_final_state_only(mlp_model, lens_tokens):
    rec = logit_lens(mlp_model, lens_tokens, answers="next", keep_logits=True)
    fro = logit_lens(mlp_model, lens_tokens, answers="next", norm="frozen", keep_logits=True)
    torch.testing.assert_close(rec.logits[-1], fro.logits[-1])
    assert not torch.allclose(rec.logits[0], fro.logits[0], atol=1e-3)


def _prompts(tokens):
    gen = torch.Generator().manual_seed(4)
    answers = torch.randint(1, D_VOCAB, (tokens.shape[0],), generator=gen)
    wrong = (answers + 1 + torch.randint(0, D_VOCAB - 2, answers.shape, generator=gen)) % D_VOCAB
    return PromptSet(tokens, tokens.flip(1), answers, wrong)


@pytest.mark.parametrize("name", ["mlp_model", "rms_model"])
def test_direct_logit_attribution_equals_transformer_lens_and_sums_to_the_logit_difference(request, name, lens_tokens):
    model = request.getfixturevalue(name)
    prompts = _prompts(lens_tokens)
    dla = direct_logit_attribution(model, prompts)
    logits, cache = _tl_cache(model, lens_tokens)
    ln = _ln_final(model)
    w = ln.weight.detach()
    dirs = model.module.W_U[:, prompts.answers] - model.module.W_U[:, prompts.wrong]  # [d batch]
    heads = cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=True) * w  # [layer*head batch d]
    expected_heads = torch.einsum("cbd,db->cb", heads, dirs).reshape(model.n_layers, model.n_heads, -1).mean(-1)
    torch.testing.assert_close(dla.heads, expected_heads.detach(), atol=1e-4, rtol=1e-4)
    parts, labels = cache.decompose_resid(apply_ln=True, pos_slice=-1, return_labels=True)
    per = torch.einsum("cbd,db->cb", parts * w, dirs).detach()
    for layer in range(model.n_layers):
        torch.testing.assert_close(dla.component(f"L{layer} MLP"), per[labels.index(f"{layer}_mlp_out")], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dla.component("embed"), per[labels.index("embed")] + per[labels.index("pos_embed")], atol=1e-4, rtol=1e-4)
    actual = logits[torch.arange(3), -1, prompts.answers] - logits[torch.arange(3), -1, prompts.wrong]
    torch.testing.assert_close(dla.actual, actual.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dla.total, actual.detach(), atol=1e-4, rtol=1e-4)
    assert "other" not in dla.labels


def test_dla_on_a_direction_and_the_answers_logit(mlp_model, lens_tokens):
    prompts = _prompts(lens_tokens)
    one = direct_logit_attribution(mlp_model, lens_tokens, answers=prompts.answers)
    logits = mlp_model(lens_tokens)[:, -1]
    torch.testing.assert_close(one.total, logits[torch.arange(3), prompts.answers], atol=1e-4, rtol=1e-4)
    u = Readout.of(mlp_model).W_U[:, 5]
    along = direct_logit_attribution(mlp_model, lens_tokens, direction=u)
    b_U = Readout.of(mlp_model).b_U[5]
    torch.testing.assert_close(along.total + b_U, logits[:, 5], atol=1e-4, rtol=1e-4)


def test_dla_tables_and_plot(mlp_model, lens_tokens):
    dla = direct_logit_attribution(mlp_model, _prompts(lens_tokens))
    df = dla.to_dataframe()
    assert len(df) == len(dla.labels) == 1 + mlp_model.n_layers * (mlp_model.n_heads + 2) + 1
    assert set(df["kind"]) == {"embed", "head", "attn_bias", "mlp", "bias"}
    top = dla.top(3)
    assert len(top) == 3 and top["mean"].abs().is_monotonic_decreasing
    fig = dla.plot()
    assert len(fig.axes) >= 2
    lens = logit_lens(mlp_model, lens_tokens, answers="next")
    assert len(lens.plot("rank").axes) == 2 and len(lens.top_tokens(0, -1)) == len(lens.labels) * 5
    assert len(lens.to_dataframe()) == len(lens.labels) * 3 * 10


def test_lens_on_both_backends_of_a_hugging_face_gpt2(gpt2_dir, lens_tokens):
    import interp

    results = [logit_lens(interp.load(gpt2_dir, backend=b), lens_tokens, answers="next", keep_logits=True)
               for b in ("transformer_lens", "nnsight")]
    torch.testing.assert_close(results[0].logits, results[1].logits, atol=1e-4, rtol=1e-4)
    dlas = [direct_logit_attribution(interp.load(gpt2_dir, backend=b), _prompts(lens_tokens)) for b in ("transformer_lens", "nnsight")]
    torch.testing.assert_close(dlas[0].per_prompt, dlas[1].per_prompt, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dlas[1].total, dlas[1].actual, atol=1e-4, rtol=1e-4)


def test_bad_inputs_name_the_problem(mlp_model, lens_tokens):
    prompts = _prompts(lens_tokens)
    cases = [
        (lambda: logit_lens(mlp_model, lens_tokens, norm="frozn"), "frozn"),
        (lambda: logit_lens(mlp_model, lens_tokens, answers=torch.tensor([1, 2])), "(2,)"),
        (lambda: logit_lens(mlp_model, lens_tokens, answers=torch.tensor([1, 2, 99])), "99"),
        (lambda: logit_lens(mlp_model, lens_tokens, answers="previous"), "previous"),
        (lambda: logit_lens(mlp_model, lens_tokens, k=0), "k=0"),
        (lambda: direct_logit_attribution(mlp_model, lens_tokens, answers=torch.tensor([1, 2, 40])), "40"),
        (lambda: direct_logit_attribution(mlp_model, lens_tokens), "answers"),
        (lambda: direct_logit_attribution(mlp_model, prompts, pos=12), "pos=12"),
        (lambda: direct_logit_attribution(mlp_model, lens_tokens, direction=torch.ones(5)), "(5,)"),
        (lambda: direct_logit_attribution(mlp_model, prompts).component("L9H0"), "L9H0"),
    ]
    for call, names in cases:
        with pytest.raises(InputError) as info:
            call()
        assert names in str(info.value), str(info.value)

import pytest
import torch

from interp import InputError
from interp.models import build_native, load_native_dir, load_weights, save_native, state_dict_of
from interp.tasks import PromptSet
from interp.tasks.induction import (
    induction_metrics,
    induction_prompts,
    random_tokens,
    repeated_tokens,
    training_batch,
)
from interp.train import TrainConfig, lr_at, train
from tests.conftest import TINY


def test_repeated_and_control_tokens():
    t = repeated_tokens(5, 7, 32, seed=3)
    assert t.shape == (5, 15) and (t[:, 0] == 0).all() and torch.equal(t[:, 1:8], t[:, 8:])
    assert torch.equal(t, repeated_tokens(5, 7, 32, seed=3)) and not torch.equal(t, repeated_tokens(5, 7, 32, seed=4))
    c = random_tokens(200, 14, 32, seed=0)
    assert c.shape == (200, 15) and (c[:, 1:] >= 1).all() and (c[:, 1:] < 32).all()
    assert (c[:, 1:8] == c[:, 8:]).all(dim=1).sum() == 0  # the control plants no repeat


def test_training_batch_plants_one_repeated_segment():
    gen = torch.Generator().manual_seed(0)
    batch = training_batch(32, 48, 64, gen)
    assert batch.shape == (32, 48) and (batch[:, 0] == 0).all()
    for row in batch[:, 1:].tolist():  # some 4-gram occurs twice
        grams = [tuple(row[i : i + 4]) for i in range(len(row) - 3)]
        assert len(set(grams)) < len(grams)


def test_induction_prompts_differ_at_one_position():
    p = induction_prompts(10, 6, 32, seed=0)
    assert isinstance(p, PromptSet) and p.clean.shape == (10, 12)
    diff = (p.clean != p.corrupted).nonzero()[:, 1]
    assert (diff == 6).all() and len(diff) == 10
    assert torch.equal(p.answers, p.clean[:, 6]) and torch.equal(p.wrong, p.corrupted[:, 6])
    assert (p.answers != p.wrong).all()


def test_promptset_rejects_mismatched_lengths():
    with pytest.raises(InputError, match="align them"):
        PromptSet(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long), [1, 2])


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, batch_size=1, lr=1.0, warmup=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] == pytest.approx(0.1, abs=0.01)


def _tiny_run(tokenizer, tmp_path, seed):
    model = build_native({**TINY, "attn_only": True}, tokenizer, seed=seed)
    probe = repeated_tokens(8, 5, 32, seed=1)
    result = train(
        model, lambda gen, step: training_batch(8, 16, 32, gen, max_seg=5), TrainConfig(steps=12, batch_size=8, seed=seed, eval_every=5, warmup=2),
        eval_fn=lambda m, step: induction_metrics(m, probe), checkpoint_steps=[0, 6, 12], checkpoint_dir=tmp_path, progress=False,
    )
    return model, result


def test_training_is_deterministic_and_checkpoints(tokenizer, tmp_path):
    a, ra = _tiny_run(tokenizer, tmp_path / "a", seed=0)
    b, rb = _tiny_run(tokenizer, tmp_path / "b", seed=0)
    c, _ = _tiny_run(tokenizer, tmp_path / "c", seed=1)
    sa, sb, sc = state_dict_of(a), state_dict_of(b), state_dict_of(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and ra.losses == rb.losses
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["step_000000.safetensors", "step_000006.safetensors", "step_000012.safetensors"]
    assert [h["step"] for h in ra.history] == [0, 5, 6, 10, 12]
    fresh = build_native({**TINY, "attn_only": True}, tokenizer, seed=0)
    load_weights(fresh, tmp_path / "a" / "step_000012.safetensors")
    assert all(torch.equal(state_dict_of(fresh)[k], sa[k]) for k in sa)


def test_half_precision_checkpoints_load_into_the_float32_model(tokenizer, tmp_path):
    from safetensors.torch import load_file

    model = build_native({**TINY, "attn_only": True}, tokenizer, seed=0)
    train(model, lambda gen, step: training_batch(8, 16, 32, gen, max_seg=5), TrainConfig(steps=4, batch_size=8, seed=0, warmup=1),
          checkpoint_steps=[4], checkpoint_dir=tmp_path, checkpoint_dtype=torch.float16, progress=False)
    stored = load_file(str(tmp_path / "step_000004.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    fresh = load_weights(build_native({**TINY, "attn_only": True}, tokenizer, seed=1), tmp_path / "step_000004.safetensors")
    for k, v in state_dict_of(model).items():
        got = state_dict_of(fresh)[k]
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, v, atol=1e-2, rtol=1e-3)  # float16 rounding, not another model


def test_save_load_round_trip_is_bit_identical(mlp_model, tokens, tmp_path):
    save_native(mlp_model, tmp_path / "m", extra={"task": "test"})
    loaded = load_native_dir(tmp_path / "m")
    assert torch.equal(loaded(tokens), mlp_model(tokens))
    assert loaded.info["task"] == "test" and loaded.n_layers == mlp_model.n_layers


def test_bad_train_config():
    with pytest.raises(InputError, match="steps must be at least 1"):
        TrainConfig(steps=0, batch_size=1).validate()

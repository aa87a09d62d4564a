"""Sparse autoencoders (probes.sae): planted-dictionary recovery, every architecture, streaming
from disk stores, exact resumption, evaluation, features and feature edits in a model, SAELens's
format, and errors for bad input. Everything runs on tiny data in a few seconds."""

from __future__ import annotations

import json

import pytest
import torch

from interp.errors import InputError, InterpError, LoadError
from interp.sites import Site
from probes import (
    SAE,
    ablate_features,
    clamp_features,
    collect,
    evaluate_sae,
    features,
    load_saelens,
    save_saelens,
    splice_sae,
    steer_features,
    train_sae,
)
from tests.conftest import hook_count

SITE = Site("resid_post", 1)


def planted(n: int = 20000, d: int = 32, m: int = 64, seed: int = 0):
    """Rows that are sparse non-negative sums of ``m`` unit-norm random atoms (about 3 active each)."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(m, d, generator=g)
    atoms = atoms / atoms.norm(dim=-1, keepdim=True)
    active = torch.rand(n, m, generator=g) < 3 / m
    magnitudes = 0.5 + torch.rand(n, m, generator=g)
    return (active * magnitudes) @ atoms, atoms


@pytest.fixture(scope="module")
def planted_data():
    return planted()


def best_cosines(sae: SAE, atoms: torch.Tensor) -> torch.Tensor:
    """For each planted atom, the cosine of the decoder row that matches it best."""
    w = sae.W_dec.detach()
    w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (atoms @ w.T).max(dim=1).values


@pytest.mark.parametrize("kind, options", [("topk", dict(k=3)), ("relu", dict(l1_coefficient=2.0))])
def test_planted_dictionary_is_recovered(planted_data, kind, options):
    X, atoms = planted_data
    sae, history = train_sae(X, 128, kind=kind, steps=600, batch_size=256, seed=0, progress=False, **options)
    cos = best_cosines(sae, atoms)
    recovered = float((cos >= 0.9).float().mean())
    print(f"{kind}: {recovered:.3f} of atoms at cosine >= 0.9, median {float(cos.median()):.4f}, "
          f"final FVU {history.metrics['fvu'][-1]:.3f}, L0 {history.metrics['l0'][-1]:.2f}")
    assert recovered >= 0.9
    mse, loss = history.metrics["mse"], history.metrics["loss"]
    assert sum(mse[-50:]) / 50 < 0.5 * sum(mse[:10]) / 10
    assert sum(loss[-50:]) / 50 < sum(loss[30:40]) / 10  # after the 30 warm-up steps of the L1 coefficient
    assert len(history.steps) == 600 and history.to_dataframe().shape[0] == 600


def test_seeded_training_repeats_exactly(planted_data):
    X, _ = planted_data
    runs = [train_sae(X[:4096], 64, kind="topk", k=3, steps=40, batch_size=128, seed=s, progress=False)
            for s in (3, 3, 4)]
    a, b, c = (r[0].state_dict() for r in runs)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert runs[0][1].metrics == runs[1][1].metrics
    assert not torch.equal(a["W_dec"], c["W_dec"])


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "jumprelu", "relu"])
def test_each_architecture_trains(planted_data, kind):
    X, _ = planted_data
    options = dict(topk=dict(k=4), batchtopk=dict(k=4), jumprelu=dict(l0_coefficient=0.5, lr=1e-2),
                   relu=dict(l1_coefficient=2.0))
    sae, history = train_sae(X[:8192], 96, kind=kind, steps=150, batch_size=256, seed=0, progress=False,
                             **options[kind])
    loss = history.metrics["loss"]
    assert all(torch.isfinite(torch.tensor(loss)))
    assert sum(loss[-10:]) < sum(loss[:10])
    ev = evaluate_sae(sae, X[8192:12288])
    assert ev.fvu < 0.5 and 0 < ev.l0 < 25
    norms = sae.W_dec.norm(dim=-1)
    if kind == "relu":  # free decoder, L1 weighted by its norms
        assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)
    else:
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    if kind == "topk":
        assert ((sae.encode(X[:100]) > 0).sum(-1) <= 4).all()
    if kind == "batchtopk":  # a global inference threshold, about k active per row on average
        assert float(sae.threshold.min()) == float(sae.threshold.max()) > 0
        assert 2 <= ev.l0 <= 8
    if kind == "jumprelu":  # the thresholds rose from their start (0.1 in normalised units) under the L0 penalty
        assert float((sae.threshold * sae.metadata["input_scale"]).mean()) > 0.2
        assert history.metrics["l0"][-1] < 0.5 * history.metrics["l0"][0]


def test_auxk_and_resampling_touch_dead_latents(planted_data):
    X, _ = planted_data
    _, history = train_sae(X[:4096], 256, kind="topk", k=2, steps=60, batch_size=128, dead_after=512, seed=0,
                           progress=False)
    assert max(history.metrics["aux"]) > 0 and history.metrics["aux"][0] == 0
    before, h0 = train_sae(X[:4096], 256, kind="relu", l1_coefficient=8.0, steps=60, batch_size=128, dead_after=512,
                           seed=0, progress=False)
    after, h1 = train_sae(X[:4096], 256, kind="relu", l1_coefficient=8.0, steps=60, batch_size=128, dead_after=512,
                          resample_every=50, seed=0, progress=False)
    assert h0.metrics["dead_fraction"][49] > 0 and h1.metrics["dead_fraction"][49] == 0  # resampled after step 50
    assert h0.metrics["loss"][:49] == h1.metrics["loss"][:49] and not torch.equal(before.W_dec, after.W_dec)


@pytest.mark.parametrize("kind, options", [("topk", dict(k=3)), ("relu", dict(resample_every=7, dead_after=256)),
                                           ("jumprelu", {}), ("batchtopk", dict(k=3))])
def test_resume_gives_the_uninterrupted_result(planted_data, tmp_path, kind, options):
    X = planted_data[0][:1500]  # 20 steps of 128 rows run into a second epoch
    args = dict(kind=kind, steps=20, batch_size=128, block_rows=400, seed=1, progress=False, **options)
    full, full_history = train_sae(X, 64, **args)

    def stop(step, sae, metrics):
        if step == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sae(X, 64, checkpoint_dir=tmp_path, checkpoint_every=5, callback=stop, **args)
    resumed, history = train_sae(X, 64, checkpoint_dir=tmp_path, checkpoint_every=5, resume=True, **args)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert history.metrics == full_history.metrics and history.steps == list(range(20))
    again, _ = train_sae(X, 64, checkpoint_dir=tmp_path, resume=True, **args)  # finished: nothing left to do
    assert torch.equal(again.W_dec, full.W_dec)
    with pytest.raises(InputError, match="differs in k|differs in .*seed"):
        train_sae(X, 64, checkpoint_dir=tmp_path, resume=True, **{**args, "seed": 2})
    with pytest.raises(InputError, match="resume=True"):
        train_sae(X, 64, checkpoint_dir=tmp_path, **args)


def test_disk_store_streams_like_a_tensor(mlp_model, tmp_path, monkeypatch):
    from probes.collect import ActivationStore

    tokens = torch.randint(1, 32, (24, 16), generator=torch.Generator().manual_seed(5))
    store = collect(mlp_model, tokens, [SITE, Site("resid_pre", 1)], positions="all", store=tmp_path / "acts",
                    batch_size=5, progress=False)
    assert store.on_disk and len(store) == 384
    X = store[SITE].clone()
    args = dict(kind="topk", k=4, steps=12, batch_size=64, block_rows=100, seed=0, progress=False)
    from_tensor, h2 = train_sae(X, 64, **args)

    def whole_site(self, site):
        raise AssertionError("read every row of a disk store at once")

    monkeypatch.setattr(ActivationStore, "__getitem__", whole_site)  # streaming never loads a whole site
    from_disk, h1 = train_sae(store, 64, site=SITE, **args)  # blocks of 100 rows straddle the 80-row shards
    assert torch.equal(from_disk.W_enc, from_tensor.W_enc) and h1.metrics == h2.metrics
    ev_disk, ev_tensor = evaluate_sae(from_disk, store, batch_size=50), evaluate_sae(from_disk, X)
    assert ev_disk.l0 == ev_tensor.l0 and ev_disk.fvu == pytest.approx(ev_tensor.fvu, rel=1e-9)
    monkeypatch.undo()
    assert from_disk.metadata["hook_name"] == str(SITE)
    with pytest.raises(InputError, match="choose one with site="):
        train_sae(store, 64, **args)


# ----------------------------------------------------------------------------- evaluation
def identity_sae(d: int) -> SAE:
    """A ReLU SAE that reconstructs perfectly: relu(x) - relu(-x) = x."""
    sae = SAE(d, 2 * d, kind="relu", apply_b_dec_to_input=False)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def test_evaluate_perfect_sae_recovers_all_the_loss(mlp_model):
    tokens = torch.randint(1, 32, (8, 12), generator=torch.Generator().manual_seed(1))
    ev = evaluate_sae(identity_sae(32), model=mlp_model, site=SITE, tokens=tokens, token_batch_size=3)
    assert ev.n_rows == 96 and ev.fvu < 1e-10 and ev.l0 == pytest.approx(32.0)
    assert abs(ev.ce_spliced - ev.ce_clean) < 1e-5
    assert ev.ce_zero != ev.ce_clean and ev.ce_mean != ev.ce_clean  # (a random model: ablation may even help)
    assert ev.recovered_zero == pytest.approx(1.0, abs=1e-4) and ev.recovered_mean == pytest.approx(1.0, abs=1e-4)
    assert ev.dead.numel() == 0 and "recovered" in repr(ev)


def test_evaluate_counts_match_a_direct_computation(mlp_model, tokens):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(500, 32, generator=g) * 3 + 1
    sae = SAE(32, 48, kind="relu")
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(32, 48, generator=g) * 0.2)
        sae.W_dec.copy_(torch.randn(48, 32, generator=g) * 0.2)
        sae.b_enc.copy_(torch.randn(48, generator=g))
        sae.b_enc[:5] = -1e4  # never fire
        sae.b_enc[5:9] = 1e4  # always fire
    ev = evaluate_sae(sae, X, batch_size=77)
    f = sae.encode(X).detach()
    err = X - sae.decode(f).detach()
    assert ev.l0 == pytest.approx(float((f > 0).sum(-1).float().mean()))
    assert ev.fvu == pytest.approx(float(err.pow(2).sum() / (X - X.mean(0)).pow(2).sum()), rel=1e-5)
    assert ev.dead.tolist()[:5] == [0, 1, 2, 3, 4] and set(range(5, 9)) <= set(ev.dense.tolist())
    assert torch.allclose(ev.frequency, (f > 0).float().mean(0))
    spliced = evaluate_sae(sae, model=mlp_model, site=SITE, tokens=tokens)
    assert spliced.ce_spliced != spliced.ce_clean
    gap = (spliced.ce_zero - spliced.ce_spliced) / (spliced.ce_zero - spliced.ce_clean)
    assert spliced.recovered_zero == pytest.approx(gap)
    assert spliced.recovered_mean == pytest.approx((spliced.ce_mean - spliced.ce_spliced) / (spliced.ce_mean - spliced.ce_clean))


# ----------------------------------------------------------------------------- features and edits
@pytest.fixture(scope="module")
def model_sae(mlp_model):
    tokens = torch.randint(1, 32, (32, 16), generator=torch.Generator().manual_seed(2))
    store = collect(mlp_model, tokens, SITE, positions="all", progress=False)
    sae, _ = train_sae(store, 64, kind="topk", k=6, steps=40, batch_size=128, seed=0, progress=False)
    return sae


def test_features_are_the_encoding_of_the_cached_activation(mlp_model, model_sae, tokens):
    f = features(mlp_model, model_sae, SITE, tokens)
    _, cache = mlp_model.run_with_cache(tokens, [SITE])
    assert f.shape == (3, 12, 64) and torch.equal(f, model_sae.encode(cache[SITE]))
    logits, f_last = features(mlp_model, model_sae, None, tokens, return_logits=True)  # site from metadata
    assert torch.equal(logits, mlp_model(tokens)) and torch.equal(f_last, f)
    assert features(mlp_model, model_sae, Site("resid_post", 1, pos=-1), tokens).shape == (3, 64)


def test_feature_edits_are_exact(mlp_model, model_sae, tokens):
    sae = model_sae
    clean = mlp_model(tokens)
    f = features(mlp_model, sae, SITE, tokens)
    with mlp_model.edit({SITE: ablate_features(sae, [])}):
        assert torch.equal(mlp_model(tokens), clean)
    i = int(f.sum((0, 1)).argmax())  # a feature that fires
    with mlp_model.edit({SITE: clamp_features(sae, [i], f[..., i:i + 1])}):  # clamp to its own value
        assert (mlp_model(tokens) - clean).abs().max() <= 1e-6
    _, cache = mlp_model.run_with_cache(tokens, [SITE])
    for edit, delta in ((ablate_features(sae, i), -f[..., i]), (clamp_features(sae, i, 7.0), 7.0 - f[..., i]),
                        (steer_features(sae, i, -2.5), torch.full_like(f[..., i], -2.5))):
        with mlp_model.edit({SITE: edit}):
            logits, edited = mlp_model.run_with_cache(tokens, [SITE])
        expected = cache[SITE] + delta[..., None] * sae.W_dec[i].detach()
        assert (edited[SITE] - expected).abs().max() <= 1e-5
        assert not torch.equal(logits, clean)
    j = (i + 1) % 64
    with mlp_model.edit({Site("resid_post", 1, pos=-1): steer_features(sae, [i, j], [1.0, 2.0])}):
        _, edited = mlp_model.run_with_cache(tokens, [SITE])
    assert torch.equal(edited[SITE][:, :-1], cache[SITE][:, :-1])
    step = sae.W_dec[i] + 2.0 * sae.W_dec[j]
    assert torch.allclose(edited[SITE][:, -1] - cache[SITE][:, -1], step.detach().expand(3, -1), atol=1e-5)
    with mlp_model.edit({SITE: splice_sae(sae)}):
        assert torch.allclose(mlp_model.run_with_cache(tokens, [SITE])[1][SITE], sae(cache[SITE]).detach(), atol=1e-6)


def test_feature_edits_leave_nothing_behind(mlp_model, model_sae, tokens):
    hooks = hook_count(mlp_model.module)
    for _ in range(20):
        with mlp_model.edit({SITE: steer_features(model_sae, [1, 2], 3.0)}):
            mlp_model(tokens)
        features(mlp_model, model_sae, SITE, tokens)
    assert hook_count(mlp_model.module) == hooks and not mlp_model._edits


def test_jumprelu_threshold_gradient_is_the_straight_through_estimate():
    from probes.sae.model import jumprelu, step

    pre = torch.tensor([[0.49, 0.52, 0.7], [0.505, 0.1, 0.2]])
    threshold = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    step(pre, threshold, 0.04).sum().backward()  # rows within bandwidth/2 of the threshold: -1/bandwidth each
    assert torch.allclose(threshold.grad, torch.tensor([-2 / 0.04, -1 / 0.04, 0.0]))
    threshold.grad = None
    out = jumprelu(pre, threshold, 0.04)
    assert torch.equal(out, pre * (pre > 0.5))
    out.sum().backward()
    assert torch.allclose(threshold.grad, torch.tensor([-2 * 0.5 / 0.04, -0.5 / 0.04, 0.0]))  # -threshold/bandwidth


def test_z_site_without_a_head_is_flattened(mlp_model, tokens):
    site = Site("z", 0)
    store = collect(mlp_model, tokens, site, positions="all", progress=False)
    sae, _ = train_sae(store, 40, kind="relu", steps=5, batch_size=16, seed=0, progress=False)
    assert sae.d_in == 32
    f = features(mlp_model, sae, site, tokens)
    assert f.shape == (3, 12, 40)
    _, cache = mlp_model.run_with_cache(tokens, [site])
    with mlp_model.edit({site: steer_features(sae, 0, 1.0)}):
        _, edited = mlp_model.run_with_cache(tokens, [site])
    change = (edited[site] - cache[site]).flatten(-2)
    assert torch.allclose(change, sae.W_dec[0].detach().expand_as(change), atol=1e-6)
    ev = evaluate_sae(sae, model=mlp_model, site=site, tokens=tokens)
    assert ev.n_rows == 36 and ev.ce_mean is not None


# ----------------------------------------------------------------------------- SAELens format
@pytest.mark.parametrize("kind", ["topk", "batchtopk", "jumprelu", "relu"])
def test_saelens_round_trip(planted_data, tmp_path, kind):
    X, _ = planted_data
    sae, _ = train_sae(X[:2048], 48, kind=kind, k=4, steps=10, batch_size=128, seed=0, progress=False)
    sae.metadata["hook_name"] = "blocks.1.hook_resid_post"
    save_saelens(sae, tmp_path / "sae", model_name="tiny")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "batchtopk": "jumprelu"}.get(kind, kind)
    assert (cfg["d_in"], cfg["d_sae"], cfg["normalize_activations"]) == (32, 48, "none")
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and cfg["metadata"]["model_name"] == "tiny"
    if kind == "topk":
        assert cfg["k"] == 4 and cfg["rescale_acts_by_decoder_norm"] is False
    loaded = load_saelens(tmp_path / "sae")
    assert loaded.kind == ("jumprelu" if kind == "batchtopk" else kind)
    x = X[3000:3200]
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert torch.equal(loaded.decode(sae.encode(x)), sae.decode(sae.encode(x)))
    with pytest.raises(InputError, match="overwrite=True"):
        save_saelens(sae, tmp_path / "sae")


def test_saelens_older_configs_and_decoder_norm_rescaling(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    W_enc, W_dec = torch.randn(8, 16, generator=g), torch.randn(16, 8, generator=g)
    b_enc, b_dec = torch.randn(16, generator=g), torch.randn(8, generator=g)
    save_file(dict(W_enc=W_enc, W_dec=W_dec, b_enc=b_enc, b_dec=b_dec), str(tmp_path / "sae_weights.safetensors"))
    cfg = dict(architecture="topk", d_in=8, d_sae=16, k=3, rescale_acts_by_decoder_norm=True, dtype="float32",
               apply_b_dec_to_input=True, normalize_activations="none", metadata=dict(hook_name="blocks.0.hook_resid_pre"))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    x = torch.randn(5, 8, generator=g)
    norms = W_dec.norm(dim=-1)
    pre = ((x - b_dec) @ W_enc + b_enc) * norms  # SAELens's rescaled top-k
    values, idx = pre.topk(3, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, idx, values.relu()) / norms
    sae = load_saelens(tmp_path)
    assert torch.allclose(sae(x), acts @ W_dec + b_dec, atol=1e-5)
    old = dict(d_in=8, d_sae=16, hook_point="blocks.0.hook_resid_pre", activation_fn_str="relu")  # pre-6.0 layout
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    sae = load_saelens(tmp_path)
    assert sae.kind == "relu" and sae.metadata["hook_name"] == "blocks.0.hook_resid_pre"
    assert torch.allclose(sae(x), torch.relu((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec, atol=1e-6)
    (tmp_path / "cfg.json").write_text(json.dumps({**old, "architecture": "gated"}))
    with pytest.raises(LoadError, match="gated"):
        load_saelens(tmp_path)
    with pytest.raises(LoadError, match="not a SAELens SAE directory"):
        load_saelens(tmp_path / "missing")


# ----------------------------------------------------------------------------- errors
def test_bad_input_is_named(planted_data, mlp_model, tokens):
    X = planted_data[0][:512]
    sae = SAE(32, 64, kind="topk", k=4)
    with pytest.raises(InputError, match="reads d_in=32") as err:
        sae.encode(torch.zeros(3, 16))
    assert "train an SAE with d_in=16" in str(err.value)
    with pytest.raises(InputError, match="Did you mean 'topk'"):
        SAE(32, 64, kind="topkk")
    with pytest.raises(InputError, match="not an SAE architecture"):
        train_sae(X, 64, kind="gated", progress=False)
    with pytest.raises(InputError, match="k=80 is larger than d_sae=64"):
        train_sae(X, 64, kind="topk", k=80, progress=False)
    bad = X.clone()
    bad[7, 3] = float("nan")
    with pytest.raises(InputError, match="NaN/inf.*first at row") as err:
        train_sae(bad, 64, kind="topk", k=4, steps=2, batch_size=64, progress=False)
    assert "float32" in str(err.value)
    with pytest.raises(InputError, match="NaN/inf"):
        evaluate_sae(sae, bad)
    with pytest.raises(InputError, match="reads d_in=16"):
        evaluate_sae(SAE(16, 64, kind="relu"), X)
    with pytest.raises(InputError, match="d_in=16 features"):
        features(mlp_model, SAE(16, 64, kind="relu"), SITE, tokens)
    with pytest.raises(InputError, match=r"lie in \[0, 64\)"):
        ablate_features(sae, [64])
    with pytest.raises(InputError, match="resample_every applies to kind='relu'"):
        train_sae(X, 64, kind="topk", k=4, resample_every=10, progress=False)
    with pytest.raises(InputError, match="needs checkpoint_dir"):
        train_sae(X, 64, kind="topk", k=4, resume=True, progress=False)
    with pytest.raises(InputError, match=r"\[n d\]"):
        train_sae(X[None], 64, progress=False)
    with pytest.raises(InputError, match="pass site="):
        features(mlp_model, sae, None, tokens)
    assert issubclass(InputError, InterpError)

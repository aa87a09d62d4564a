"""probes: collection (memory and disk), linear probes, sweeps with control tasks, direction edits.

Ground truth comes from synthetic activations with a planted direction, and from a tiny random
model (the `attn_only_model` fixture) whose activations are compared with `run_with_cache`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from interp import InputError, InterpError, Scale, Site, SiteError
from interp.tasks.promptset import PromptSet
from probes import (
    ActivationStore,
    LinearProbe,
    ProbeNotFittedError,
    ProbeSweepResult,
    ablate_direction,
    collect,
    control_labels,
    edit_effect,
    probe_sweep,
    steer,
)
from tests.conftest import D_VOCAB, hook_count

D = 32


def unit(seed: int, d: int = D) -> torch.Tensor:
    u = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


def planted_binary(n: int = 1200, seed: int = 0, margin: float = 4.0):
    """Gaussian noise plus ±margin along a planted unit direction, the sign being the label."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    u = unit(seed + 100)
    X = torch.randn(n, D, generator=g) + margin * (2 * y[:, None] - 1) * u
    return X, y, u


def cosine(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float(a @ b / (a.norm() * b.norm()))


# =============================================================================== linear probe
def test_probe_recovers_planted_binary_feature_and_its_direction():
    X, y, u = planted_binary(seed=0)
    probe = LinearProbe("classification").fit(X[:800], y[:800])
    assert probe.score(X[800:], y[800:]) >= 0.99
    assert cosine(probe.direction(), u) >= 0.95
    assert probe.direction().shape == (D,) and abs(float(probe.direction().norm()) - 1) < 1e-6
    # coef_/intercept_ are in the raw basis: they reproduce the decision function on raw X.
    raw = X[800:].double().numpy() @ probe.coef_.T + probe.intercept_
    np.testing.assert_allclose(raw.ravel(), probe.decision_function(X[800:]), atol=1e-8)
    proba = probe.predict_proba(X[800:])
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    assert (probe.classes_[proba.argmax(1)] == probe.predict(X[800:])).all()
    # Without standardisation the direction is found too.
    assert cosine(LinearProbe(standardize=False).fit(X, y).direction(), u) >= 0.95
    # Per-feature standardisation still maps coef_ back to the raw basis exactly.
    pf = LinearProbe(standardize="per_feature").fit(X[:800], y[:800])
    raw = X[800:].double().numpy() @ pf.coef_.T + pf.intercept_
    np.testing.assert_allclose(raw.ravel(), pf.decision_function(X[800:]), atol=1e-8)


def test_default_probe_direction_rotates_with_the_activations():
    # The default standardisation (one common scale) keeps the L2 penalty rotation-invariant, so
    # probing rotated activations gives the rotated direction; per-feature scaling would not.
    X, y, _ = planted_binary(n=600, seed=10)
    R, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    X = X.double()
    d = LinearProbe().fit(X, y).direction().double()
    d_rot = LinearProbe().fit(X @ R, y).direction().double()
    assert cosine(d_rot, R.T @ d) >= 0.999


def test_regression_probe_recovers_planted_scalar():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1000, D, generator=g) * torch.linspace(0.5, 2.0, D)  # anisotropic on purpose
    w = unit(7) * 3.0
    y = X @ w + 0.01 * torch.randn(1000, generator=g)
    probe = LinearProbe("regression", alpha=1.0).fit(X[:700], y[:700])
    assert probe.score(X[700:], y[700:]) >= 0.99
    assert cosine(probe.direction(), w) >= 0.99
    with pytest.raises(InputError, match="only defined for task='classification'"):
        probe.predict_proba(X)


def test_probe_follows_scikit_learn_conventions():
    X, y, _ = planted_binary(n=300, seed=2)
    probe = LinearProbe("classification", C=0.3, max_iter=500)
    assert probe.get_params()["C"] == 0.3 and probe.get_params()["task"] == "classification"
    assert probe.set_params(C=2.0) is probe and probe.C == 2.0
    twin = clone(probe)
    assert twin.get_params() == probe.get_params() and not hasattr(twin, "coef_")
    scores = cross_val_score(LinearProbe(), X.numpy(), y.numpy(), cv=3)
    assert scores.min() >= 0.97
    with pytest.raises(ProbeNotFittedError, match="call probe.fit"):
        LinearProbe().predict(X)
    # The task is checked at construction (it decides what the estimator is); every parameter, also
    # one changed by set_params, is validated again in fit, with the bad value named.
    with pytest.raises(InputError, match="'clasification'"):
        LinearProbe(task="clasification")
    bad = LinearProbe().set_params(task="clasification")
    with pytest.raises(InputError, match="'clasification'"):
        bad.fit(X, y)
    with pytest.raises(InputError, match="C=-1"):
        LinearProbe(C=-1).fit(X, y)


def test_probe_bad_inputs_name_the_problem():
    X, y, _ = planted_binary(n=100, seed=3)
    with pytest.raises(InputError, match="99 labels for 100 rows"):
        LinearProbe().fit(X, y[:99])
    with pytest.raises(InputError, match="same class"):
        LinearProbe().fit(X, torch.ones(100, dtype=torch.long))
    Xn = X.clone()
    Xn[5, 3] = float("nan")
    with pytest.raises(InputError, match="NaN/inf.*first row 5"):
        LinearProbe().fit(Xn, y)
    with pytest.raises(InputError, match="rank 2"):
        LinearProbe().fit(X[:, :, None], y)
    probe = LinearProbe().fit(X, y)
    with pytest.raises(InputError, match="31 features but the probe was fitted on 32"):
        probe.predict(X[:, :31])
    multi = LinearProbe().fit(X, torch.arange(100) % 3)
    with pytest.raises(InputError, match="direction\\(output=i\\)"):
        multi.direction()
    assert multi.direction(output=2).shape == (D,)
    assert all(issubclass(e, InterpError) for e in (InputError, ProbeNotFittedError))


# =============================================================================== sweeps and controls
def test_sweep_separates_planted_site_from_uninformative_site_with_ci():
    X, y, _ = planted_binary(n=1000, seed=4)
    noise = torch.randn(1000, D, generator=torch.Generator().manual_seed(5))
    store = ActivationStore.from_tensors({Site("resid_post", 1): X, Site("resid_post", 0): noise})
    result = probe_sweep(store, y, cv=5, seed=0, progress=False)
    df = result.to_dataframe().set_index("site")
    planted, uninformative = df.loc["blocks.1.hook_resid_post"], df.loc["blocks.0.hook_resid_post"]
    assert planted.score >= 0.99
    assert result.chance == max(int(y.sum()), int((1 - y).sum())) / 1000
    assert abs(uninformative.score - result.chance) <= 0.05
    for row in (planted, uninformative):
        assert row.score_low <= row.score <= row.score_high
    assert result.scores.shape == (2, 5) and "selectivity" not in df
    # Same seed -> same folds -> same numbers; a different seed changes the folds.
    again = probe_sweep(store, y, cv=5, seed=0, progress=False)
    np.testing.assert_array_equal(again.scores, result.scores)
    assert not np.array_equal(probe_sweep(store, y, cv=5, seed=1, progress=False).scores[1], result.scores[1])


def test_control_labels_are_a_function_of_token_type_only():
    ids = torch.randint(0, 500, (3000,), generator=torch.Generator().manual_seed(0))
    labels = control_labels(ids, n_classes=3, seed=0)
    for t in ids.unique()[:50]:
        assert labels[ids == t].unique().numel() == 1
    # A token's label does not depend on which other tokens are present.
    assert torch.equal(control_labels(ids[:10], 3, seed=0), labels[:10])
    assert not torch.equal(control_labels(ids, 3, seed=1), labels)
    per_type = control_labels(torch.arange(20000), 2, seed=0, probs=[0.8, 0.2]).float().mean()
    assert abs(per_type - 0.2) < 0.02
    with pytest.raises(InputError, match="n_classes=1"):
        control_labels(ids, 1)


def test_selectivity_is_zero_when_the_site_only_encodes_token_identity():
    g = torch.Generator().manual_seed(6)
    n_types, n = 24, 1500
    embedding = torch.randn(n_types, 48, generator=g)
    token_ids = torch.randint(0, n_types, (n,), generator=g)
    parity = token_ids % 2                                  # a property of token identity
    identity_site = embedding[token_ids] + 0.05 * torch.randn(n, 48, generator=g)
    # A site that carries a per-row label but nothing about token identity.
    row_label = torch.randint(0, 2, (n,), generator=g)
    u = unit(9, 48)
    label_site = torch.randn(n, 48, generator=g) + 4.0 * (2 * row_label[:, None] - 1) * u

    store = ActivationStore.from_tensors({Site("embed"): identity_site}, token_ids=token_ids)
    res = probe_sweep(store, parity, control="tokens", cv=5, seed=0, progress=False)
    df = res.to_dataframe()
    assert df.score[0] >= 0.95 and df.control[0] >= 0.95
    assert abs(df.selectivity[0]) <= 0.05
    assert df.selectivity_low[0] <= df.selectivity[0] <= df.selectivity_high[0]

    store2 = ActivationStore.from_tensors({Site("resid_post", 0): label_site}, token_ids=token_ids)
    res2 = probe_sweep(store2, row_label, control="tokens", cv=5, seed=0, progress=False)
    assert res2.to_dataframe().selectivity[0] >= 0.35        # task ~1, control ~chance

    # Explicit control labels give the same numbers as control="tokens" with the same recipe.
    counts = np.bincount(parity.numpy()) / n
    explicit = control_labels(token_ids, 2, seed=0, probs=counts)
    res3 = probe_sweep(store, parity, control=explicit, cv=5, seed=0, progress=False)
    np.testing.assert_allclose(res3.control_scores, res.control_scores)


def test_sweep_result_plot_and_errors():
    import matplotlib.pyplot as plt

    X, y, _ = planted_binary(n=200, seed=8)
    store = ActivationStore.from_tensors(
        {Site("embed"): X, Site("resid_post", 0): X.flip(1), Site("resid_post", 1): X.roll(1, 1)},
        token_ids=torch.arange(200) % 7,
    )
    result = probe_sweep(store, y, cv=3, control="tokens", progress=False)
    assert isinstance(result, ProbeSweepResult)
    fig = result.plot()
    ax, sel = fig.axes
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "accuracy" and ax.get_title()
    assert "selectivity" in sel.get_ylabel() and sel.get_title()
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())          # chance
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"embed", "resid_post"}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["embed", "0", "1"]
    plt.close(fig)
    fig1 = probe_sweep(store, y, cv=3, progress=False).plot()
    assert len(fig1.axes) == 1
    plt.close(fig1)

    with pytest.raises(InputError, match="199"):
        probe_sweep(store, y[:199], progress=False)
    with pytest.raises(SiteError, match="not in this store; it holds"):
        probe_sweep(store, y, sites=[Site("resid_pre", 3)], progress=False)
    with pytest.raises(SiteError, match="resid_pre"):
        store["blocks.0.hook_resid_pre"]
    with pytest.raises(InputError, match="same class"):
        probe_sweep(store, torch.zeros(200), progress=False)


# =============================================================================== collection
def test_collect_rows_match_run_with_cache(attn_only_model):
    model = attn_only_model
    tokens = torch.randint(1, D_VOCAB, (5, 9), generator=torch.Generator().manual_seed(1))
    sites = [Site("resid_pre", 1), Site("z", 0), Site("z", 1, head=2), Site("pattern", 1)]
    _, cache = model.run_with_cache(tokens, sites)
    store = collect(model, tokens, sites, positions="all", batch_size=2, progress=False)
    assert len(store) == 45 and store.sites == sites
    assert store.dim(Site("z", 0)) == model.n_heads * model.d_head and store.dim(Site("z", 1, head=2)) == model.d_head
    # (batches of 2 vs one batch of 5 differ by float rounding only; a wrong row would differ by O(1))
    close = dict(atol=1e-5, rtol=0)
    for row in (0, 13, 44):
        b, p = int(store.prompt_ids[row]), int(store.positions[row])
        assert b == row // 9 and p == row % 9 and store.token_ids[row] == tokens[b, p]
        torch.testing.assert_close(store["blocks.1.hook_resid_pre"][row], cache[Site("resid_pre", 1)][b, p], **close)
        torch.testing.assert_close(store[Site("z", 0)][row], cache[Site("z", 0)][b, p].reshape(-1), **close)
        torch.testing.assert_close(store[Site("z", 1, head=2)][row], cache[Site("z", 1, head=2)][b, p], **close)
        torch.testing.assert_close(store[Site("pattern", 1)][row], cache[Site("pattern", 1)][b, :, p].reshape(-1), **close)
    one_batch = collect(model, tokens, sites, positions="all", batch_size=5, progress=False)
    assert torch.equal(one_batch[Site("z", 0)].reshape(5, 9, -1), cache[Site("z", 0)].flatten(2))

    last = collect(model, tokens, [Site("resid_pre", 1)], progress=False)
    assert torch.equal(last[Site("resid_pre", 1)], cache[Site("resid_pre", 1)][:, -1])
    from_prompts = collect(model, PromptSet(tokens, tokens.flip(1), tokens[:, 0]), [Site("resid_pre", 1)], progress=False)
    assert torch.equal(from_prompts[Site("resid_pre", 1)], last[Site("resid_pre", 1)])
    per_prompt = collect(model, tokens, ["blocks.1.hook_resid_pre"], positions=torch.tensor([0, 1, 2, -1, 4]), progress=False)
    assert per_prompt.positions.tolist() == [0, 1, 2, 8, 4]
    mask = torch.zeros(5, 9, dtype=torch.bool)
    mask[1, 3] = mask[4, 0] = mask[4, 7] = True
    masked = collect(model, tokens, ["blocks.1.hook_resid_pre"], positions=mask, progress=False)
    assert masked.prompt_ids.tolist() == [1, 4, 4] and masked.positions.tolist() == [3, 0, 7]
    assert collect(model, tokens, [Site("embed")], positions=-3, progress=False).positions.tolist() == [6] * 5

    # Texts of different lengths: "last" is each text's own last token, not the padding.
    texts = ["t1 t2 t3 t4", "t5 t6"]
    ragged = collect(model, texts, [Site("embed")], positions="last", progress=False)
    assert ragged.positions.tolist() == [4, 2] and ragged.token_ids.tolist() == [4, 6]
    assert len(collect(model, texts, [Site("embed")], positions="all", progress=False)) == 5 + 3

    with pytest.raises(InputError, match="positions="):
        collect(model, tokens, [Site("resid_pre", 1, pos=2)], progress=False)
    with pytest.raises(InputError, match="Position 9 is outside prompt 0"):
        collect(model, tokens, [Site("embed")], positions=9, progress=False)
    with pytest.raises(InputError, match="'first'"):
        collect(model, tokens, [Site("embed")], positions="first", progress=False)
    with pytest.raises(SiteError, match="layer 5 is out of range"):
        collect(model, tokens, [Site("resid_pre", 5)], progress=False)


def test_disk_store_equals_memory_store_bit_for_bit_and_chunks_cover_rows_once(attn_only_model, tmp_path):
    model = attn_only_model
    tokens = torch.randint(1, D_VOCAB, (11, 8), generator=torch.Generator().manual_seed(2))
    sites = [Site("embed"), Site("resid_post", 1), Site("z", 1, head=0)]
    mem = collect(model, tokens, sites, positions="all", batch_size=4, progress=False)
    disk = collect(model, tokens, sites, positions="all", batch_size=4, store=tmp_path / "acts", progress=False)
    assert disk.on_disk and not mem.on_disk
    assert sorted(p.name for p in (tmp_path / "acts").glob("shard_*")) == ["shard_00000", "shard_00001", "shard_00002"]
    reopened = ActivationStore.load(tmp_path / "acts")
    for other in (disk, reopened):
        assert len(other) == len(mem) == 88 and other.sites == sites
        for site in sites:
            assert other[site].dtype == mem[site].dtype and torch.equal(other[site], mem[site]), site
    for start, stop in ((0, 88), (30, 65), (31, 32), (64, 64)):  # shards hold 32, 32 and 24 rows
        for store in (mem, disk):
            assert torch.equal(store.read_rows(Site("resid_post", 1), start, stop), mem[Site("resid_post", 1)][start:stop])
    with pytest.raises(InputError, match=r"Rows \[80, 90\) lie outside this store of 88 rows"):
        disk.read_rows(Site("embed"), 80, 90)
        for name in ("prompt_ids", "positions", "token_ids"):
            assert torch.equal(getattr(other, name), getattr(mem, name))

    for store in (mem, reopened):
        for chunk_rows in (1, 13, 32, 88, 500):   # 13 and 32 straddle the 32-row shards
            chunks = list(store.iter_chunks(Site("resid_post", 1), chunk_rows))
            assert [c.shape[0] for c in chunks[:-1]] == [chunk_rows] * (len(chunks) - 1)
            assert sum(c.shape[0] for c in chunks) == 88 and len(chunks) == math.ceil(88 / chunk_rows)
            assert torch.equal(torch.cat(chunks), mem[Site("resid_post", 1)])
    with pytest.raises(InputError, match="chunk_rows"):
        next(mem.iter_chunks(Site("embed"), 0))

    # A probe sweep reads a disk store like a memory one.
    y = (mem.token_ids % 2).numpy()
    np.testing.assert_array_equal(
        probe_sweep(disk, y, cv=3, progress=False).scores, probe_sweep(mem, y, cv=3, progress=False).scores
    )

    with pytest.raises(InputError, match="overwrite=True"):
        collect(model, tokens, sites, store=tmp_path / "acts", progress=False)
    again = collect(model, tokens[:3], sites, store=tmp_path / "acts", overwrite=True, progress=False)
    assert len(ActivationStore.load(tmp_path / "acts")) == len(again) == 3       # positions="last"
    with pytest.raises(InputError, match="changed or overwritten"):
        disk[Site("embed")]                           # the old handle notices, rather than misreading
    with pytest.raises(InputError, match="not an activation store"):
        ActivationStore.load(tmp_path / "nothing")


# =============================================================================== interventions
def test_ablating_a_direction_through_edit_removes_it_and_leaves_nothing_behind(attn_only_model, tokens):
    model = attn_only_model
    site = Site("resid_post", 0)
    u = unit(11)
    clean_logits, clean = model.run_with_cache(tokens, [site])
    baseline = hook_count(model.module)  # the backend's own steady state
    with model.edit({site: ablate_direction(3 * u)}):
        edited_logits, edited = model.run_with_cache(tokens, [site])
    x, x_new = clean[site], edited[site]
    assert float((x_new @ u).abs().max()) < 1e-5
    torch.testing.assert_close(x_new, x - (x @ u)[..., None] * u, atol=1e-6, rtol=0)
    assert not torch.allclose(edited_logits, clean_logits)          # the edit reached the output
    assert hook_count(model.module) == baseline and model._edits == []
    assert torch.equal(model(tokens), clean_logits)

    # Steering adds alpha along the unit direction; only at the chosen position.
    with model.edit({Site("resid_post", 0, pos=-1): steer(u * 7, 2.5)}):
        _, steered = model.run_with_cache(tokens, [site])
    delta = steered[site] - x
    torch.testing.assert_close(delta[:, -1], (2.5 * u).expand(3, D), atol=1e-5, rtol=0)
    assert float(delta[:, :-1].abs().max()) == 0.0

    # Mean-ablation along u sets the coordinate to the given value.
    with model.edit({site: ablate_direction(u, value=1.5)}):
        _, fixed = model.run_with_cache(tokens, [site])
    torch.testing.assert_close(fixed[site] @ u, torch.full((3, 12), 1.5), atol=1e-5, rtol=0)


def test_direction_width_errors_and_edit_effect(attn_only_model, tokens):
    model = attn_only_model
    site = Site("resid_post", 1)
    model(tokens)
    baseline = hook_count(model.module)
    with pytest.raises(InputError, match="31 entries but the site's activation has 32"):
        with model.edit({site: ablate_direction(torch.ones(31))}):
            model(tokens)
    with pytest.raises(InputError, match="steer: the direction has 8 entries"):
        model.run(tokens, edits={site: steer(torch.ones(8), 1.0)})
    assert hook_count(model.module) == baseline and model._edits == []
    with pytest.raises(InputError, match="zero vector"):
        ablate_direction(torch.zeros(D))
    # d_head-wide directions act on every head of a z site.
    with model.edit({Site("z", 0): ablate_direction(unit(3, model.d_head))}):
        _, c = model.run_with_cache(tokens, [Site("z", 0)])
    assert float((c[Site("z", 0)] @ unit(3, model.d_head)).abs().max()) < 1e-5

    def answer_logit(logits, prompts):
        return logits[:, -1, 5]

    with torch.no_grad():
        plain = answer_logit(model(tokens), tokens)
    out = edit_effect(model, tokens, site, ablate_direction(unit(4)), answer_logit)
    assert out["before"] == pytest.approx(float(plain.mean()), abs=1e-6)
    with torch.no_grad(), model.edit({site: ablate_direction(unit(4))}):
        expected = answer_logit(model(tokens), tokens)
    assert out["after"] == pytest.approx(float(expected.mean()), abs=1e-6)
    assert out["effect"] == pytest.approx(out["after"] - out["before"], abs=1e-6) and out["effect"] != 0
    assert out["after_per_prompt"].shape == (3,)
    assert edit_effect(model, tokens, site, Scale(1.0), answer_logit)["effect"] == 0.0
    assert model._edits == [] and hook_count(model.module) == baseline


def test_repeated_collection_and_edits_keep_no_tensors_alive(attn_only_model, tokens):
    import gc

    model = attn_only_model
    site, u = Site("resid_post", 0), unit(12)

    def once():
        store = collect(model, tokens, [site], positions="all", batch_size=2, progress=False)
        edit_effect(model, tokens, site, ablate_direction(u), lambda logits, _: logits[:, -1, 0])
        del store

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    once()
    before = live_tensors()
    for _ in range(4):
        once()
    assert live_tensors() <= before
    assert model._edits == []

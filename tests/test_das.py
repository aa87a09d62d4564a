"""DAS and interchange interventions on hand-built models whose causal variable lives in a known subspace.

The planted model: token x -> h = c·U(v(x) − ½) + n(x) in R^8 (site resid_post 0) -> readout that
reads only Uᵀh. U [8 m] is a random orthonormal basis; v(x) ∈ {0,1}^m are the bits of x; n(x) is
large noise in the orthogonal complement of U, shared between the tokens of one group so that the
class means differ exactly along U. The output labels are the tokens 0..2^m−1 (one per value of v).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from interp import HookedModel, InputError, Site, SiteMap
from patching.das import (
    CounterfactualDataset,
    RotatedSubspace,
    baseline_directions,
    counterfactual_dataset,
    das_sweep,
    evaluate_directions,
    train_das,
)
from patching.interchange import check_basis, interchange

D = 8
SITE = Site("resid_post", 0)



class Planted(nn.Module):
    def __init__(self, m: int, c: float = 2.0, sigma: float = 2.0, alpha: float = 2.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(1000 + seed)  # not the seeds DAS starts from
        self.m, self.n_labels = m, 2**m
        self.first = self.n_labels  # input tokens start after the label tokens
        self.n_in = 16 * 2**m
        self.V = self.first + self.n_in
        self.U = torch.linalg.qr(torch.randn(D, D, generator=g)).Q[:, :m]
        perp = torch.eye(D) - self.U @ self.U.T
        x = torch.arange(self.n_in)
        bits = torch.stack([(x >> i) & 1 for i in range(m)], -1).float()  # [n_in m]
        shared = torch.randn(self.n_in // 2**m, D, generator=g) * sigma
        noise = shared[x // 2**m] + 0.05 * torch.randn(self.n_in, D, generator=g)
        table = torch.zeros(self.V, D)
        table[self.first:] = c * (bits - 0.5) @ self.U.T + noise @ perp
        self.embed = nn.Embedding(self.V, D)
        self.embed.weight.data.copy_(table)
        self.layers = nn.ModuleList([nn.Identity()])
        self.readout = nn.Linear(D, self.V)
        signs = torch.stack([2.0 * ((torch.arange(self.n_labels) >> i) & 1) - 1 for i in range(m)], -1)  # [labels m]
        W = torch.zeros(self.V, D)
        W[: self.n_labels] = alpha * signs @ self.U.T
        b = torch.full((self.V,), -20.0)
        b[: self.n_labels] = 0.0
        self.readout.weight.data.copy_(W)
        self.readout.bias.data.copy_(b)

    def forward(self, tokens):
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.readout(h)

    def bits(self, token: int) -> tuple[int, ...]:
        x = token - self.first
        return tuple((x >> i) & 1 for i in range(self.m))

    def label(self, bits) -> int:
        return sum(b << i for i, b in enumerate(bits))


def wrap(module: Planted) -> HookedModel:
    site_map = SiteMap(taps={"embed": "embed", "resid_post": "layers.{layer}"}, n_layers=1, n_heads=1,
                       d_model=D, d_head=D, d_vocab=module.V, n_ctx=4)
    return HookedModel.from_module(module.eval(), site_map=site_map)


def dataset(module: Planted, n: int, seed: int) -> CounterfactualDataset:
    def sampler(rng):
        token = int(rng.integers(module.first, module.V))
        return [token], module.bits(token)

    def causal_model(base_bits, source_bits):  # the variable is the whole of v: take it from the source
        return module.label(source_bits)

    return counterfactual_dataset(sampler, causal_model, n, seed=seed, require_change=True, d_vocab=module.V)


def max_principal_angle(A: torch.Tensor, B: torch.Tensor) -> float:
    """Largest principal angle (degrees) between span(A) and span(B), both orthonormal [d k]."""
    s = torch.linalg.svdvals(A.T.double() @ B.double()).clamp(max=1.0)
    return math.degrees(float(torch.arccos(s.min())))


@pytest.fixture(scope="module")
def planted1():
    module = Planted(m=1, seed=0)
    return module, wrap(module), dataset(module, 320, seed=0)


@pytest.fixture(scope="module")
def planted2():
    module = Planted(m=2, seed=1)
    return module, wrap(module), dataset(module, 400, seed=1)


# ------------------------------------------------------------------ the planted model behaves as designed
def test_planted_model_answers_its_variable(planted1):
    module, model, data = planted1
    logits = model(data.base)[:, -1]
    assert torch.equal(logits.argmax(-1), data.base_labels)
    # exchanging the whole site, or the planted direction, makes the base answer like the source
    assert torch.equal(interchange(model, data.base, data.source, SITE)[:, -1].argmax(-1), data.labels)
    planted = interchange(model, data.base, data.source, SITE, subspace=module.U)[:, -1].argmax(-1)
    assert torch.equal(planted, data.labels)
    # and exchanging the orthogonal complement changes nothing
    perp = torch.linalg.qr(torch.cat([module.U, torch.randn(D, D - 1, generator=torch.Generator().manual_seed(3))], 1)).Q[:, 1:]
    unchanged = interchange(model, data.base, data.source, SITE, subspace=perp)[:, -1].argmax(-1)
    assert torch.equal(unchanged, data.base_labels)


# ------------------------------------------------------------------ DAS
def test_das_recovers_planted_direction(planted1):
    module, model, data = planted1
    result = train_das(model, SITE, data, k=1, epochs=15, lr=0.05, batch_size=64, seed=0, progress=False)
    assert result.basis.shape == (D, 1)
    assert result.iia >= 0.98
    assert max_principal_angle(result.basis, module.U) <= 10.0
    assert result.losses[-1] < result.losses[0]
    assert result.log_odds > 0
    # the learned rotation is orthogonal
    Q = result.subspace.Q.detach()
    assert torch.allclose(Q.T @ Q, torch.eye(D), atol=1e-4)
    # model weights stayed frozen and were given back as they were
    assert all(p.requires_grad for p in model.parameters())


def test_das_recovers_planted_plane(planted2):
    module, model, data = planted2
    one = train_das(model, SITE, data, k=1, epochs=10, lr=0.05, seed=0, progress=False)
    two = train_das(model, SITE, data, k=2, epochs=15, lr=0.05, seed=0, progress=False)
    assert two.iia >= 0.98
    assert max_principal_angle(two.basis, module.U) <= 10.0
    assert one.iia < 0.8  # one direction cannot carry a two-bit variable


@pytest.mark.parametrize("which, expected", [("planted1", 1), ("planted2", 2)])
def test_boundless_das_learns_the_dimension(which, expected, request):
    module, model, data = request.getfixturevalue(which)
    result = train_das(model, SITE, data, k=4, boundless=True, epochs=20, lr=0.05, seed=0, progress=False)
    assert result.k == expected
    assert result.learned_k == expected
    assert result.iia >= 0.95
    assert max_principal_angle(result.basis, module.U) <= 10.0


def test_das_sweep_table(planted1):
    _, model, data = planted1
    table = das_sweep(model, [SITE, Site("embed")], data, k=1, epochs=3, lr=0.05, progress=False)
    assert list(table["site"]) == [str(SITE), str(Site("embed"))]
    assert {"iia", "k", "log_odds", "layer", "kind"} <= set(table.columns)
    assert table["iia"].between(0, 1).all()


# ------------------------------------------------------------------ baselines
def test_mean_difference_finds_direction_and_random_does_not(planted1):
    module, model, data = planted1
    tokens = torch.arange(module.first, module.V)[:, None]
    _, cache = model.run_with_cache(tokens, [SITE])
    acts = cache[SITE][:, 0]
    labels = torch.tensor([module.label(module.bits(int(t))) for t in tokens[:, 0]])
    dirs = baseline_directions(acts, labels, seed=0)
    assert set(dirs) == {"probe", "mean_diff", "pca", "lda", "kmeans", "random"}
    for v in dirs.values():
        assert v.shape == (D,) and abs(float(v.norm()) - 1) < 1e-5
    u = module.U[:, 0]
    assert abs(float(dirs["mean_diff"] @ u)) >= 0.95
    assert abs(float(dirs["random"] @ u)) < 0.95
    table = evaluate_directions(model, SITE, data, {"mean_diff": dirs["mean_diff"], "random": dirs["random"], "planted": u})
    by = table.set_index("method")
    assert by.loc["mean_diff", "iia"] >= 0.95
    assert by.loc["planted", "iia"] == 1.0
    assert by.loc["random", "iia"] < 0.5  # every pair changes the label, so chance (no effect) is 0
    assert by.loc["planted", "log_odds"] > by.loc["random", "log_odds"]


def test_baselines_need_two_classes():
    with pytest.raises(InputError, match="at least two"):
        baseline_directions(torch.randn(10, D), torch.zeros(10, dtype=torch.long))
    with pytest.raises(InputError, match="Unknown baseline"):
        baseline_directions(torch.randn(10, D), torch.arange(10) % 2, methods=("svm",))


# ------------------------------------------------------------------ bad input
def test_k_larger_than_site_width(planted1):
    _, model, data = planted1
    with pytest.raises(InputError, match="width 8"):
        train_das(model, SITE, data, k=9, epochs=1, progress=False)


def test_labels_outside_vocabulary(planted1):
    module, model, data = planted1
    bad = CounterfactualDataset(data.base, data.source, data.labels + 1000, data.base_labels)
    with pytest.raises(InputError, match="token ids must lie"):
        train_das(model, SITE, bad, epochs=1, progress=False)
    with pytest.raises(InputError, match="token ids must lie"):
        counterfactual_dataset(lambda rng: ([module.first], None), lambda b, s: 10_000, 4, d_vocab=module.V)
    with pytest.raises(InputError, match="token id"):
        counterfactual_dataset(lambda rng: ([module.first], None), lambda b, s: "yes", 4)


def test_interchange_checks_basis_and_shapes(planted1):
    module, model, data = planted1
    with pytest.raises(InputError, match="width 8"):
        interchange(model, data.base, data.source, SITE, subspace=torch.eye(5)[:, :2])
    with pytest.raises(InputError, match="qr"):
        interchange(model, data.base, data.source, SITE, subspace=2 * torch.eye(D)[:, :2])
    with pytest.raises(InputError, match="same number"):
        interchange(model, data.base, data.source[:3], SITE)
    with pytest.raises(InputError, match="length"):
        interchange(model, data.base[:2], torch.cat([data.source[:2]] * 2, 1), SITE)
    assert check_basis(torch.eye(D)[:, :3], D).shape == (D, 3)


def test_rotated_subspace_exchanges_first_coordinates():
    sub = RotatedSubspace(6, k=2, seed=0)
    base, source = torch.randn(5, 6), torch.randn(5, 6)
    out = sub(base, source)
    Q = sub.Q.detach()
    rb, rs, ro = base @ Q, source @ Q, out.detach() @ Q
    assert torch.allclose(ro[:, :2], rs[:, :2], atol=1e-5)
    assert torch.allclose(ro[:, 2:], rb[:, 2:], atol=1e-5)
    with pytest.raises(InputError):
        RotatedSubspace(6, k=7)


def test_a_warm_start_points_the_first_coordinates_along_the_given_directions():
    direction = torch.randn(16, generator=torch.Generator().manual_seed(2))
    sub = RotatedSubspace(16, k=1, init=direction)
    assert float(torch.nn.functional.cosine_similarity(sub.basis()[:, 0], direction, dim=0)) == pytest.approx(1.0, abs=1e-5)
    two = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    basis = RotatedSubspace(16, k=2, init=two).basis()
    torch.testing.assert_close(basis @ basis.T @ two, two, atol=1e-4, rtol=1e-4)  # same span
    for bad in (torch.zeros(16), torch.ones(15), torch.full((16,), math.nan), torch.ones(16, 2)):
        with pytest.raises(InputError, match="init must be finite, linearly independent"):
            RotatedSubspace(16, k=1, init=bad)


def test_choices_restrict_the_answer_to_the_candidates():
    from patching.das import _choice_loss, _predicted

    logits = torch.tensor([[0.0, 5.0, 1.0, 2.0], [3.0, 0.0, 1.0, 9.0]])
    choices = torch.tensor([0, 2])
    assert _predicted(logits, None).tolist() == [1, 3]
    assert _predicted(logits, choices).tolist() == [2, 0]
    expected = torch.nn.functional.cross_entropy(logits[:, [0, 2]], torch.tensor([1, 0]))
    torch.testing.assert_close(_choice_loss(logits, torch.tensor([2, 0]), choices), expected)
    with pytest.raises(InputError, match="must be one of the choices"):
        CounterfactualDataset(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), [0, 1], [0, 0],
                              choices=[0, 2])

"""Half precision: DAS losses, rotations and probe features are float32 even for a bfloat16 model.

The model runs in bfloat16 (8 significant bits); DAS widens the site's activations to float32,
rotates and exchanges them there, casts the result back to bfloat16 only where it is written into
the model, and computes its cross-entropy in float32. A loss computed in bfloat16 is a bfloat16
number (every value exactly representable in 8 bits); one computed in float32 almost never is, which
is what the tests read. `probes.collect` returns float32 rows on the CPU.

Every device present is a parameter: the CPU always, CUDA where ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import interp
from interp import Site
from interp.models import build_native
from patching.das import CounterfactualDataset, RotatedSubspace, evaluate_directions, train_das
from patching.interchange import interchange_with, project_exchange, site_activations
from probes import ActivationStore, LinearProbe, collect
from tests.conftest import D_VOCAB, TINY

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CONFIG = {**TINY, "attn_only": False, "d_mlp": 64}
SITE = Site("resid_post", 0, pos=-1)
#: bfloat16 keeps 8 significant bits; the first DAS loss (same rotation, same batch) of the bfloat16
#: model is within this fraction of the float32 model's (measured 0.1-1% here).
BF16_LOSS_TOLERANCE = 0.05


def _is_bfloat16_number(x: float) -> bool:
    return torch.tensor(x, dtype=torch.float32).bfloat16().float().item() == x


@pytest.fixture(scope="module")
def f32_model(tokenizer):
    return build_native(CONFIG, tokenizer, seed=1)


@pytest.fixture(scope="module")
def bf16_model(tokenizer):
    model = build_native(CONFIG, tokenizer, seed=1).to(torch.bfloat16)
    assert model.dtype == torch.bfloat16
    return model


def _dataset(n: int = 48, seed: int = 0) -> CounterfactualDataset:
    """Random 6-token pairs; the label is the source's second token (a variable the model may carry)."""
    g = torch.Generator().manual_seed(seed)
    base, source = torch.randint(1, D_VOCAB, (2, n, 6), generator=g)
    base[:, 0] = source[:, 0] = 0
    return CounterfactualDataset(base, source, source[:, 1].clone(), base[:, 1].clone())


@pytest.mark.parametrize("boundless", [False, True], ids=["fixed", "boundless"])
def test_train_das_on_bfloat16_model_trains_and_scores_in_float32(bf16_model, f32_model, boundless):
    data = _dataset()
    kw = dict(k=2, boundless=boundless, epochs=2, batch_size=16, seed=3, progress=False)
    result = train_das(bf16_model, SITE, data, **kw)

    assert len(result.losses) == 2 * math.ceil(38 / 16)  # 38 training pairs after the 20% split
    assert all(type(x) is float and math.isfinite(x) for x in result.losses)
    assert not all(map(_is_bfloat16_number, result.losses)), result.losses  # computed in float32
    for value in (result.iia, result.train_iia, result.log_odds):
        assert type(value) is float and math.isfinite(value)
    assert 0.0 <= result.iia <= 1.0 and 0.0 <= result.train_iia <= 1.0

    d = bf16_model.d_model
    Q = result.subspace.Q.detach()
    for t in (result.basis, Q):
        assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert result.basis.shape == (d, result.k)
    assert (Q.T @ Q - torch.eye(d)).abs().max() <= 1e-5  # still a rotation
    assert (Q - RotatedSubspace(d, 2, boundless, seed=3).Q.detach()).abs().max() > 1e-3  # it trained
    # the model is untouched: bfloat16 weights, gradients switched back on
    assert all(p.dtype == torch.bfloat16 and p.requires_grad for p in bf16_model.parameters())

    # The same run on the float32 twin starts from the same loss, up to bfloat16's precision.
    reference = train_das(f32_model, SITE, data, **kw)
    first, expected = result.losses[0], reference.losses[0]
    assert first != expected and abs(first - expected) <= BF16_LOSS_TOLERANCE * abs(expected)


def test_rotation_gets_float32_gradients_and_writes_the_models_dtype(bf16_model):
    data = _dataset(8)
    acts = site_activations(bf16_model, data.source, SITE)
    assert acts.dtype == torch.bfloat16
    sub = RotatedSubspace(bf16_model.d_model, k=3, seed=0)
    written = []

    def spy(base, source):
        out = sub(base, source)
        written.append((base, source, out))
        return out

    logits = interchange_with(bf16_model, data.base, acts, SITE, spy)
    assert logits.dtype == torch.bfloat16  # the model ran in bfloat16 ...
    (base, source, out), = written
    assert out.dtype == torch.bfloat16  # ... with the patched value cast back where it is written
    with torch.no_grad():  # exchanged in float32, rounded once
        Q, M = sub.Q.double(), sub.mask().double()
        b, s = base.double(), source.double()
        expected = (b + ((s - b) @ Q * M) @ Q.T).bfloat16()
    assert torch.equal(out.detach(), expected)

    F.cross_entropy(logits[:, -1].float(), data.labels).backward()
    grads = [p.grad for p in sub.parameters()]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert max(g.abs().max() for g in grads) > 0


def test_projection_on_bfloat16_is_the_float32_projection_rounded_once():
    g = torch.Generator().manual_seed(0)
    base, source = torch.randn(2, 5, 7, 32, generator=g).bfloat16()
    basis = torch.linalg.qr(torch.randn(32, 4, generator=g)).Q
    got = project_exchange(base, source, basis)
    assert got.dtype == torch.bfloat16
    expected = project_exchange(base.float(), source.float(), basis).bfloat16()
    assert torch.equal(got, expected)
    # rounding the basis and the arithmetic to bfloat16 (what a naive cast does) is measurably worse
    naive = base + ((source - base) @ basis.bfloat16()) @ basis.bfloat16().T
    truth = project_exchange(base.double(), source.double(), basis.double())
    assert (got.double() - truth).abs().max() < (naive.double() - truth).abs().max()


def test_whole_site_interchange_through_a_rotation_on_bfloat16_copies_the_source(bf16_model):
    """k = d: the exchange is the identity map onto the source, so a correct write in bfloat16
    gives the source run's own predictions (IIA 1 against the source's argmax)."""
    model = bf16_model
    site = Site("resid_post", model.n_layers - 1, pos=-1)
    data = _dataset(24, seed=5)
    data.labels = model(data.source)[:, -1].float().argmax(-1).cpu()
    result = train_das(model, site, data, k=model.d_model, epochs=1, batch_size=24, test_fraction=0.25, progress=False)
    assert result.iia == 1.0 and result.train_iia == 1.0
    table = evaluate_directions(model, Site("resid_post", 0, pos=-1), data, {"random": torch.randn(model.d_model)})
    assert table["iia"].dtype == "float64" and 0.0 <= float(table["iia"][0]) <= 1.0


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
@pytest.mark.parametrize("device", DEVICES)
def test_collect_on_bfloat16_model_gives_float32_rows_on_the_cpu(gpt2_dir, backend, device, tmp_path):
    model = interp.load(gpt2_dir, backend=backend, device=device, dtype=torch.bfloat16)
    tokens = torch.randint(1, D_VOCAB, (10, 7), generator=torch.Generator().manual_seed(1))
    sites = [Site("resid_post", 1), Site("z", 0), Site("pattern", 1, head=2)]
    store = collect(model, tokens, sites, positions="all", batch_size=4, progress=False)
    _, cache = model.run_with_cache(tokens, sites)
    for site in sites:
        rows = store[site]
        assert rows.dtype == torch.float32 and rows.device.type == "cpu", site
        assert cache[site].dtype == torch.bfloat16
        assert rows.shape == (70, store.dim(site))
        # widened exactly: the same numbers as the bfloat16 cache
        assert torch.equal(rows.bfloat16().float(), rows)
    flat = cache[Site("resid_post", 1)].float().cpu().reshape(70, -1)
    assert torch.equal(store[Site("resid_post", 1)], flat)

    disk = collect(model, tokens, sites, positions="all", batch_size=4, store=tmp_path / "acts", progress=False)
    reopened = ActivationStore.load(tmp_path / "acts")
    assert reopened.info["dtype"] == "float32"
    for site in sites:
        assert disk[site].dtype == torch.float32 and torch.equal(disk[site], store[site])

    labels = (tokens.reshape(-1) % 2).numpy()  # a probe fits the rows as they come
    probe = LinearProbe().fit(store[Site("resid_post", 1)], labels)
    assert 0.0 <= probe.score(store[Site("resid_post", 1)], labels) <= 1.0


@pytest.mark.parametrize("device", DEVICES)
def test_logit_lens_and_dla_on_a_bfloat16_model(bf16_model, f32_model, device):
    """The read-out of a bfloat16 model is checked against its logits at half precision's tolerance
    (it used to be judged at float32's and refused); lens and DLA agree with the float32 model's."""
    from probes import direct_logit_attribution, logit_lens

    tokens = torch.randint(1, D_VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    half, full = bf16_model.to(device), f32_model.to(device)
    try:
        lens16, lens32 = logit_lens(half, tokens, answers="next"), logit_lens(full, tokens, answers="next")
        assert lens16.answer_prob.dtype == torch.float32
        assert (lens16.answer_prob[:, :, :-1] - lens32.answer_prob[:, :, :-1]).abs().max() < 0.05
        dla = direct_logit_attribution(half, tokens, answers=tokens[:, -1], wrong=tokens[:, -2])
        assert (dla.total - dla.actual).abs().max() < 1e-4  # the components add up to the logit difference
    finally:
        half.to("cpu"), full.to("cpu")

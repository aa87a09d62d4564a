"""The shipped SAE on SmolLM2-135M (``assets/sae/smollm2-135m-L14``) and the corpus it was trained on.

The SAE loads at its stated site and shape; re-measured on a small held-out slice (documents never
trained on) its numbers agree with ``evaluation.json`` and beat a random dictionary of the same size
by a wide margin; the corpus file matches its manifest and its split is disjoint; corpus sampling is
deterministic for a seed and refuses bad settings. One xdist group: the model loads once.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from experiments import smollm2_sae as exp
from interp.errors import InputError
from interp.tasks import corpus as corpus_mod

pytestmark = pytest.mark.xdist_group("smollm2-sae")

#: tolerances of re-measured numbers against evaluation.json (another CPU changes the last bits;
#: a different batch composition changes float sums in the last places).
TOL = dict(l0=0.05, fvu=0.005, ce_clean=0.005, ce_sae=0.01, ce_zero=0.01, ce_mean=0.01, recovered_zero=0.005,
           recovered_mean=0.01)


@pytest.fixture(scope="module")
def model():
    return exp.load_model()


@pytest.fixture(scope="module")
def corpus():
    return corpus_mod.load_corpus(exp.CORPUS_DIR)


@pytest.fixture(scope="module")
def sae():
    return exp.load_sae()


@pytest.fixture(scope="module")
def stored():
    return json.loads((exp.SAE_DIR / "evaluation.json").read_text())


@pytest.fixture(scope="module")
def measured(model, corpus, sae, stored):
    """The slice re-measured: activation statistics and loss recovered of the shipped SAE and of a
    random dictionary, from one clean run and one spliced run each."""
    docs = exp.slice_docs(corpus)
    tokens = exp.doc_tokens(corpus, docs)
    rows = exp.ordinary_rows(exp.collect_rows(model, tokens, progress=False))[exp.SITE]
    rand = exp.random_sae(sae)
    losses = exp.doc_losses(model, {"sae": sae, "random": rand}, tokens)
    losses["predictions_per_doc"] = tokens.shape[1] - 2
    return dict(docs=docs,
                sae={**exp.activation_stats(sae, rows), **exp.recovered(losses, "sae")},
                random={**exp.activation_stats(rand, rows), **exp.recovered(losses, "random")})


def test_shipped_sae_reads_the_stated_site_with_the_stated_shape(sae):
    cfg = json.loads((exp.SAE_DIR / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == exp.SITE.hook_name == "blocks.14.hook_resid_post"
    assert cfg["metadata"]["model_name"] == "smollm2-135m"
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["k"], cfg["dtype"]) == ("topk", 576, exp.D_SAE, exp.K, "float16")
    assert (sae.kind, sae.d_in, sae.d_sae, sae.k, sae.dtype) == ("topk", 576, exp.D_SAE, exp.K, torch.float32)
    assert sae.W_dec.shape == (exp.D_SAE, 576) and sae.W_enc.shape == (576, exp.D_SAE)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(exp.D_SAE), atol=2e-3)  # unit rows, up to float16
    assert (exp.SAE_DIR / "sae_weights.safetensors").stat().st_size < 12e6
    training = json.loads((exp.SAE_DIR / "training.json").read_text())
    assert training["site"] == exp.SITE.hook_name and training["d_sae"] == exp.D_SAE and training["k"] == exp.K


def test_slice_is_held_out_and_matches_the_stored_evaluation(corpus, stored, measured):
    docs = measured["docs"]
    assert [int(d) for d in docs] == stored["slice"]["docs"]
    assert set(docs.tolist()) <= set(corpus.held_out.tolist()) and not set(docs.tolist()) & set(corpus.train.tolist())
    for key, tol in TOL.items():
        assert measured["sae"][key] == pytest.approx(stored["slice"][key], abs=tol), key
        assert measured["random"][key] == pytest.approx(stored["random_dictionary_slice"][key], abs=tol * 4), key
    assert measured["sae"]["n_rows"] == stored["slice"]["n_rows"] <= len(docs) * (corpus.doc_len - 1)


def test_trained_dictionary_beats_a_random_one_by_far(measured):
    sae, rand = measured["sae"], measured["random"]
    assert sae["l0"] == pytest.approx(exp.K) and rand["l0"] == pytest.approx(exp.K, abs=0.5)
    # stored (evaluation.json, slice): FVU 0.28 vs 0.79; recovered vs mean 0.92 vs 0.59, vs zero 0.94 vs 0.69;
    # spliced loss 3.34 vs 5.63 nats (clean 2.83)
    assert sae["fvu"] < 0.5 * rand["fvu"]
    assert sae["recovered_mean"] > rand["recovered_mean"] + 0.25
    assert sae["recovered_zero"] > rand["recovered_zero"] + 0.15
    assert sae["ce_sae"] < rand["ce_sae"] - 1.0


def test_corpus_matches_its_manifest(corpus):
    m = corpus.manifest
    assert corpus_mod.file_sha256(exp.CORPUS_DIR / "tokens.npy") == m["sha256"]
    assert corpus.tokens.dtype == np.uint16 and corpus.tokens.shape == (m["n_docs"], m["doc_len"])
    assert corpus.tokens.size == m["n_tokens"] and len(m["documents"]) == m["n_docs"]
    assert (corpus.tokens[:, 0] == 0).all()  # <|endoftext|> first in every document
    sources = np.array(corpus.sources())
    generated = corpus.tokens[sources == "generated"]
    assert len(generated) == m["sampler"]["generated_docs"] <= m["sampler"]["docs_per_opening"] * len(corpus_mod.OPENINGS_FLAT)
    assert (generated[:, 1:] >= corpus_mod.N_SPECIAL).all()  # special tokens are never sampled
    assert (sources == "pydoc").sum() == m["human"]["n_docs"]


def test_corpus_split_is_disjoint_by_opening_and_topic(corpus):
    train, held = set(corpus.train.tolist()), set(corpus.held_out.tolist())
    assert not train & held and train | held == set(range(len(corpus.tokens)))
    docs = corpus.manifest["documents"]
    for key in ("opening", "topic"):
        seen = {s: {d[key] for i, d in enumerate(docs) if key in d and i in ids} for s, ids in (("t", train), ("h", held))}
        assert seen["h"] and seen["t"] and not seen["t"] & seen["h"], key
    held_openings = corpus_mod.held_out_openings(0, 0.1)
    assert all((d["split"] == "held_out") == (d["opening"] in held_openings) for d in docs if "opening" in d)


def test_early_stopping_collection_equals_probes_collect(model, corpus):
    from probes import collect

    tokens = exp.doc_tokens(corpus, corpus.held_out[:1])[:, :24]
    fast = exp.residual_rows(model, tokens)
    full = collect(model, tokens, [exp.SITE], positions=exp.after_bos(tokens), progress=False)
    assert torch.equal(fast[exp.SITE], full[exp.SITE])
    for name in ("prompt_ids", "positions", "token_ids"):
        assert torch.equal(getattr(fast, name), getattr(full, name)), name
    assert not model.module.model.layers[exp.SITE.layer]._forward_hooks  # the stopping hook is gone


def test_corpus_generation_is_deterministic_for_a_seed(model):
    openings = [("story", "The river was"), ("letter", "Dear Sam,")]
    a = corpus_mod.generate_documents(model, openings, doc_len=12, seed=3, batch_size=2, progress=False)
    b = corpus_mod.generate_documents(model, openings, doc_len=12, seed=3, batch_size=2, progress=False)
    c = corpus_mod.generate_documents(model, openings, doc_len=12, seed=4, batch_size=2, progress=False)
    assert a.dtype == np.uint16 and a.shape == (2, 12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    prompt = model.tokenizer(openings[0][1], add_special_tokens=False)["input_ids"]
    assert a[0, 0] == 0 and a[0, 1:1 + len(prompt)].tolist() == prompt  # BOS, the opening, then samples


def test_corpus_sampling_refuses_bad_settings(model):
    with pytest.raises(InputError, match="temperature"):
        corpus_mod.generate_documents(model, ["Hello"], doc_len=8, temperature=0.0)
    with pytest.raises(InputError, match="top_p"):
        corpus_mod.generate_documents(model, ["Hello"], doc_len=8, top_p=1.5)
    with pytest.raises(InputError, match="doc_len"):
        corpus_mod.generate_documents(model, [corpus_mod.OPENINGS_FLAT[0][1]], doc_len=4)
    with pytest.raises(InputError, match="empty"):
        corpus_mod.generate_documents(model, [], doc_len=8)
    with pytest.raises(InputError, match="nnsight"):
        corpus_mod.generate_documents(type("TL", (), {"backend": object()})(), ["Hello"], doc_len=8)
    with pytest.raises(InputError, match="held_out"):
        corpus_mod.held_out_openings(0, 1.5)


def test_loading_a_damaged_corpus_is_refused(tmp_path, corpus):
    np.save(tmp_path / "tokens.npy", corpus.tokens[:2])
    (tmp_path / "manifest.json").write_text(json.dumps(corpus.manifest))
    with pytest.raises(InputError, match="SHA-256"):
        corpus_mod.load_corpus(tmp_path)
    with pytest.raises(InputError, match="no corpus"):
        corpus_mod.load_corpus(tmp_path / "missing")


def test_edits_leave_the_bos_and_massive_tokens_alone():
    act = torch.randn(2, 5, 576, generator=torch.Generator().manual_seed(0)) * 6  # norms about 144
    act[1, 2] *= 200  # a massive activation
    out = exp.OrdinaryTokens(torch.zeros_like)(act)
    assert torch.equal(out[:, 0], act[:, 0]) and torch.equal(out[1, 2], act[1, 2])
    assert (out[0, 1:] == 0).all() and (out[1, [1, 3, 4]] == 0).all()

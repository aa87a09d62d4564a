"""One table of bad inputs to every public entry point.

Each case calls one entry point (`load`, `run_with_cache`, `edit`, `PromptSet`, `activation_patch`,
`path_patch`, `attribution_patch`, `causal_trace`, `interchange`, `train_das`, `collect`,
`LinearProbe`, `probe_sweep`, `steer`, ...) with one bad value and checks four things: the error's
class, a message that names the bad value, no hook left on the model, and the model's logits
unchanged afterwards. The command line's bad inputs follow at the end (exit status 2 and a message
on stderr, no traceback).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import interp
from interp import InputError, LoadError, Site, SiteError
from interp.interventions import Replace, Scale
from interp.tasks import PromptSet
from patching import (
    CounterfactualDataset,
    MetricError,
    activation_patch,
    attribution_patch,
    causal_trace,
    interchange,
    logit_diff,
    path_patch,
    train_das,
)
from probes import ActivationStore, LinearProbe, collect, probe_sweep, steer
from tests.conftest import D_VOCAB, hook_count

N, SEQ = 4, 8


@dataclass
class Ctx:
    """What a case may use: the model, good prompts and tokens, and a temporary directory."""

    model: object
    prompts: PromptSet
    tokens: torch.Tensor
    tmp: object


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Ctx], object]
    error: type[Exception]
    names: str  # the bad value, as the message must show it (plain text, not a regex)


def _prompts() -> PromptSet:
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(1, D_VOCAB, (N, SEQ), generator=gen)
    corrupted = torch.randint(1, D_VOCAB, (N, SEQ), generator=gen)
    return PromptSet(clean, corrupted, clean[:, -1], corrupted[:, -1])


def _patch(**kwargs):
    base = dict(sites="resid_pre", metric=logit_diff, progress=False)
    return lambda c: activation_patch(c.model, c.prompts, **{**base, **kwargs})


def _trace(**kwargs):
    base = dict(subject_positions=[1, 2], samples=2, progress=False)
    return lambda c: causal_trace(c.model, c.prompts.clean, **{"answers": c.prompts.answers, **base, **kwargs})


def _das_data(c: Ctx, **kwargs) -> CounterfactualDataset:
    base = dict(base=c.prompts.clean, source=c.prompts.corrupted, labels=c.prompts.wrong, base_labels=c.prompts.answers)
    return CounterfactualDataset(**{**base, **kwargs})


def _edit_run(edits):
    def call(c: Ctx):
        with c.model.edit(edits):
            c.model(c.tokens)

    return call


def _collect_store(c: Ctx, **kwargs):
    return collect(c.model, c.tokens, ["blocks.0.hook_resid_post"], progress=False, **kwargs)


def _memory_store(c: Ctx) -> ActivationStore:
    return _collect_store(c, positions="all")


CASES = [
    # ---- load
    Case("load-unknown-name", lambda c: interp.load("inductoin-2l"), LoadError, "inductoin-2l"),
    Case("load-missing-dir", lambda c: interp.load(c.tmp / "no-such-model"), LoadError, "no-such-model"),
    Case("load-unknown-backend", lambda c: interp.load("induction-2l", backend="jax"), LoadError, "jax"),
    Case("load-dir-without-model", lambda c: (c.tmp / "notes.txt").write_text("hi") and interp.load(c.tmp), LoadError, "not a model directory"),
    # ---- run_with_cache and forward
    Case("cache-unknown-kind", lambda c: c.model.run_with_cache(c.tokens, [Site("resid_mide", 0)]), SiteError, "resid_mide"),
    Case("cache-unknown-hook-name", lambda c: c.model.run_with_cache(c.tokens, ["blocks.0.hook_resid_pr"]), SiteError, "blocks.0.hook_resid_pr"),
    Case("cache-layer-out-of-range", lambda c: c.model.run_with_cache(c.tokens, [Site("resid_pre", 7)]), SiteError, "layer 7"),
    Case("cache-head-out-of-range", lambda c: c.model.run_with_cache(c.tokens, [Site("z", 0, head=9)]), SiteError, "head 9"),
    Case("cache-position-out-of-range", lambda c: c.model.run_with_cache(c.tokens, [Site("resid_pre", 0, pos=40)]), SiteError, "position 40"),
    Case("forward-float-tokens", lambda c: c.model(torch.rand(2, 5)), InputError, "float32"),
    Case("forward-token-id-too-large", lambda c: c.model(torch.full((1, 5), 99)), InputError, "99"),
    Case("forward-negative-token-id", lambda c: c.model(torch.full((1, 5), -1)), InputError, "-1"),
    Case("forward-rank-3-tokens", lambda c: c.model(torch.zeros(2, 3, 4, dtype=torch.long)), InputError, "(2, 3, 4)"),
    Case("forward-longer-than-context", lambda c: c.model(torch.zeros(1, 40, dtype=torch.long)), InputError, "40"),
    # ---- edit
    Case("edit-unknown-site", _edit_run({"blocks.0.hook_resid_mod": Scale(0.0)}), SiteError, "blocks.0.hook_resid_mod"),
    Case("edit-layer-out-of-range", _edit_run({Site("resid_pre", 5): Scale(0.0)}), SiteError, "layer 5"),
    Case("edit-replace-wrong-shape", _edit_run({Site("resid_pre", 0): Replace(torch.zeros(5))}), InputError, "(5,)"),
    Case("edit-not-an-intervention", _edit_run({Site("resid_pre", 0): "zero"}), InputError, "'zero'"),
    # ---- PromptSet
    Case("promptset-2-answers-for-4-prompts", lambda c: PromptSet(c.prompts.clean, c.prompts.corrupted, [1, 2]), InputError, "(2,)"),
    Case("promptset-length-mismatch", lambda c: PromptSet(c.prompts.clean, c.prompts.corrupted[:, :-1], c.prompts.answers), InputError, "(4, 7)"),
    Case("promptset-float-tokens", lambda c: PromptSet(c.prompts.clean.float(), c.prompts.corrupted, c.prompts.answers), InputError, "float32"),
    Case("promptset-answer-pos-out-of-range", lambda c: PromptSet(c.prompts.clean, c.prompts.corrupted, c.prompts.answers, answer_pos=12), InputError, "answer_pos 12"),
    Case("promptset-wrong-count", lambda c: PromptSet(c.prompts.clean, c.prompts.corrupted, c.prompts.answers, [1, 2, 3]), InputError, "(3,)"),
    Case("promptset-float-answers", lambda c: PromptSet(c.prompts.clean, c.prompts.corrupted, c.prompts.answers.float()), InputError, "float32"),
    # ---- activation_patch
    Case("patch-unknown-kind", _patch(sites="resid_pree"), SiteError, "resid_pree"),
    Case("patch-bad-direction", _patch(direction="denoising"), InputError, "denoising"),
    Case("patch-bad-source", _patch(source="noise"), InputError, "noise"),
    Case("patch-layer-out-of-range", _patch(layers=[7]), InputError, "7"),
    Case("patch-batch-size-zero", _patch(batch_size=0), InputError, "batch_size"),
    Case("patch-nan-metric", _patch(metric=lambda logits, p: logit_diff(logits, p) * float("nan")), MetricError, "non-finite"),
    Case("patch-scalar-metric", _patch(metric=lambda logits, p: logit_diff(logits, p).mean()), MetricError, "one value per prompt"),
    Case("patch-bad-engine", _patch(engine="turbo"), InputError, "turbo"),
    # ---- path_patch
    Case("path-receiver-unknown-kind", lambda c: path_patch(c.model, c.prompts, [Site("z", 0, head=0)], [Site("qq", 1, head=0)], logit_diff, progress=False), SiteError, "qq"),
    Case("path-bad-direction", lambda c: path_patch(c.model, c.prompts, [Site("z", 0, head=0)], [Site("q", 1, head=0)], logit_diff, direction="both", progress=False), InputError, "both"),
    Case("path-sender-layer-out-of-range", lambda c: path_patch(c.model, c.prompts, [Site("z", 6, head=0)], [Site("q", 1, head=0)], logit_diff, progress=False), SiteError, "layer 6"),
    # ---- attribution_patch
    Case("attribution-unknown-kind", lambda c: attribution_patch(c.model, c.prompts, "mlp_outt", logit_diff), SiteError, "mlp_outt"),
    Case("attribution-bad-direction", lambda c: attribution_patch(c.model, c.prompts, "resid_pre", logit_diff, direction="up"), InputError, "up"),
    # ---- causal_trace
    Case("trace-subject-position-out-of-range", _trace(subject_positions=[1, 20]), InputError, "20"),
    Case("trace-negative-noise", _trace(noise=-1.0), InputError, "-1.0"),
    Case("trace-zero-samples", _trace(samples=0), InputError, "samples"),
    Case("trace-unknown-kind", _trace(kinds=("resid", "mlpp")), InputError, "mlpp"),
    Case("trace-answers-count", _trace(answers=[1, 2]), InputError, "2"),
    # ---- interchange
    Case("interchange-shape-mismatch", lambda c: interchange(c.model, c.tokens, c.tokens[:, :-1], "blocks.0.hook_resid_post"), InputError, "(3, 11)"),
    Case("interchange-basis-wrong-width", lambda c: interchange(c.model, c.tokens, c.tokens, "blocks.0.hook_resid_post", subspace=torch.eye(7)[:, :2]), InputError, "7"),
    Case("interchange-unknown-site", lambda c: interchange(c.model, c.tokens, c.tokens, "blocks.0.hook_resid_psot"), SiteError, "blocks.0.hook_resid_psot"),
    # ---- train_das and its dataset
    Case("das-k-larger-than-width", lambda c: train_das(c.model, "blocks.0.hook_resid_post", _das_data(c), k=64, epochs=1, progress=False), InputError, "64"),
    Case("das-k-zero", lambda c: train_das(c.model, "blocks.0.hook_resid_post", _das_data(c), k=0, epochs=1, progress=False), InputError, "k=0"),
    Case("das-unknown-site", lambda c: train_das(c.model, "blocks.0.hook_resid_pots", _das_data(c), epochs=1, progress=False), SiteError, "blocks.0.hook_resid_pots"),
    Case("das-labels-count", lambda c: _das_data(c, labels=[1, 2]), InputError, "2"),
    # ---- collect
    Case("collect-store-cannot-be-created", lambda c: (c.tmp / "file").write_text("x") and _collect_store(c, store=c.tmp / "file" / "acts"), InputError, "acts"),
    Case("collect-position-out-of-range", lambda c: _collect_store(c, positions=30), InputError, "30"),
    Case("collect-site-with-position", lambda c: collect(c.model, c.tokens, [Site("resid_pre", 0, pos=2)], progress=False), InputError, "positions=2"),
    Case("collect-batch-size-zero", lambda c: _collect_store(c, batch_size=0), InputError, "batch_size"),
    # ---- LinearProbe
    Case("probe-unknown-task", lambda c: LinearProbe("clustering"), InputError, "clustering"),
    Case("probe-negative-C", lambda c: LinearProbe(C=-1.0).fit(torch.randn(10, 4), [0, 1] * 5), InputError, "C=-1.0"),
    Case("probe-label-count", lambda c: LinearProbe().fit(torch.randn(10, 4), [0, 1, 0]), InputError, "3 labels"),
    # ---- probe_sweep
    Case("sweep-label-count", lambda c: probe_sweep(_memory_store(c), [0, 1], progress=False), InputError, "2"),
    Case("sweep-bad-control", lambda c: probe_sweep(_memory_store(c), torch.arange(3 * 12) % 2, control="bogus", progress=False), InputError, "bogus"),
    Case("sweep-cv-one", lambda c: probe_sweep(_memory_store(c), torch.arange(3 * 12) % 2, cv=1, progress=False), InputError, "cv"),
    # ---- steer
    Case("steer-direction-wrong-width", _edit_run({Site("resid_pre", 1): steer(torch.ones(5), 2.0)}), InputError, "5"),
    Case("steer-alpha-not-a-number", lambda c: steer(torch.ones(32), "big"), InputError, "big"),
]


def test_the_table_has_at_least_40_distinct_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def ctx(mlp_model, tmp_path_factory):
    tokens = torch.randint(1, D_VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))
    return Ctx(mlp_model, _prompts(), tokens, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_that_changes_nothing(case, ctx, tmp_path):
    model = ctx.model
    ctx = Ctx(model, _prompts(), ctx.tokens, tmp_path)
    logits, hooks, weights = model(ctx.tokens), hook_count(model.module), {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(case.error) as info:
        case.call(ctx)
    assert isinstance(info.value, interp.InterpError), f"{type(info.value).__name__} is not an InterpError: {info.value}"
    assert case.names in str(info.value), f"the message does not name {case.names!r}: {info.value}"
    assert hook_count(model.module) == hooks and model._edits == []
    assert torch.equal(model(ctx.tokens), logits)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_a_users_own_exception_propagates_unchanged_and_leaves_no_hook(ctx):
    model = ctx.model
    hooks, logits = hook_count(model.module), model(ctx.tokens)

    class Mine(Exception):
        pass

    def broken(act, **_):
        raise Mine("my bug")

    with pytest.raises(Mine, match="my bug"), model.edit({Site("resid_pre", 1): broken}):
        model(ctx.tokens)
    with pytest.raises(Mine, match="my bug"):
        activation_patch(model, ctx.prompts, "resid_pre", lambda logits, p: (_ for _ in ()).throw(Mine("my bug")), progress=False)
    assert hook_count(model.module) == hooks and model._edits == [] and torch.equal(model(ctx.tokens), logits)


CLI_CASES = [
    (["train", "inductoin-2l"], "inductoin-2l"),
    (["circuits", "inducton"], "inducton"),
    (["circuits", "induction", "--model", "/no/such/dir"], "/no/such/dir"),
    (["reproduce", "induction_atention"], "induction_atention"),
]


@pytest.mark.parametrize("argv, names", CLI_CASES, ids=[a[0] + "-" + a[1] for a, _ in CLI_CASES])
def test_command_line_bad_input_exits_2_with_a_message(argv, names, capsys):
    from interp.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err, err
    assert re.search(r"\S", err)

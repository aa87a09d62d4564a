"""Worker for `benchmarks/autocircuit.py`: auto-circuit's edge scores on induction-2l, run in auto-circuit's own venv.

    .cache/autocircuit-venv/bin/python benchmarks/autocircuit_worker.py DIR

Imports only torch, TransformerLens 2 and auto-circuit (not this project: TransformerLens 4 cannot
live in this venv). ``DIR/inputs.pt`` (written by the parent) holds the TransformerLens config, the
weights under ``HookedTransformer`` names, the clean / corrupted prompts, answers, wrong answers and
our logits on both prompt sets. The worker

1. builds a ``HookedTransformer`` from the config, loads the weights, and checks its logits against
   ours (exit code 3 with the difference if they differ by more than ``LOGIT_TOL``);
2. wraps it with ``patchable_model`` (factorized graph, separate q / k / v inputs, metric read at the
   last position) and times, in CPU seconds of this process with one thread:
   - ``eap``: ``mask_gradient_prune_scores`` with ``mask_val=0`` and ``grad_function="logit"``, which
     auto-circuit documents as equal to its edge attribution patching;
   - ``ig``: the same with ``integrated_grad_samples=STEPS`` (gradients averaged over edge masks
     from 0 to 1: auto-circuit's integrated gradients, on the masks rather than on the embeddings);
   - ``exact``: every edge patched alone with auto-circuit's ``patch_mode`` (one forward per edge);
   - ``acdc``: ``acdc_prune_scores`` with the KL target, once for each tau in ``acdc_taus``, edges
     tried in the order ``acdc_order`` (the edges it keeps, and the time of that run);
3. writes ``DIR/outputs.json``: versions, the logit check, each method's score per auto-circuit edge
   name and its CPU times.

Its metric is the mean over prompts of (answer logit - wrong logit) at the last position, as
``patching.logit_diff``; resample ablation from the corrupted prompts (auto-circuit's "corrupt").
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

LOGIT_TOL = 1e-4
STEPS = 5  # integrated-gradients samples, as `edge_scores(..., "eap_ig", steps=5)`


def cpu_time(fn):
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def main(folder: str) -> None:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = Path(folder)
    inp = torch.load(folder / "inputs.pt")
    repeats = inp["repeats"]

    # 1. the model, checked against our logits
    cfg = HookedTransformerConfig(**inp["config"], use_attn_result=True, use_split_qkv_input=True)
    model = HookedTransformer(cfg)
    missing, unexpected = model.load_state_dict(inp["state_dict"], strict=False)
    missing = [k for k in missing if not k.endswith(("attn.mask", "attn.IGNORE"))]
    if missing or unexpected:
        sys.exit(f"weights do not fit HookedTransformer: missing {missing}, unexpected {unexpected}")
    model.eval()
    clean, corrupt = inp["clean"], inp["corrupted"]
    with torch.no_grad():
        diffs = {name: float((model(tokens) - inp[f"logits_{name}"]).abs().max())
                 for name, tokens in (("clean", clean), ("corrupted", corrupt))}
    if max(diffs.values()) > LOGIT_TOL:
        print(f"LOGIT MISMATCH: HookedTransformer differs from our model by {diffs} (tolerance {LOGIT_TOL})", file=sys.stderr)
        sys.exit(3)

    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.types import AblationType
    from auto_circuit.utils.ablation_activations import batch_src_ablations
    from auto_circuit.utils.graph_utils import patch_mode, patchable_model
    from auto_circuit.utils.tensor_ops import batch_avg_answer_diff

    # 2. auto-circuit's graph and scores
    n = clean.shape[0]
    data = PromptDataset(clean, corrupt, inp["answers"].view(n, 1), inp["wrong"].view(n, 1))
    loader = PromptDataLoader(data, seq_len=None, diverge_idx=0, batch_size=n, shuffle=False)
    pm = patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True, device=torch.device("cpu"))
    edges = sorted(pm.edges, key=lambda e: e.name)

    def gradient_scores(samples):
        kw = dict(mask_val=0.0) if samples is None else dict(integrated_grad_samples=samples)
        ps = mask_gradient_prune_scores(pm, loader, None, grad_function="logit", answer_function="avg_diff",
                                        ablation_type=AblationType.RESAMPLE, clean_corrupt="corrupt", **kw)
        return {e.name: float(e.prune_score(ps)) for e in edges}

    def exact_scores():
        out = {}
        with torch.no_grad():
            for batch in loader:  # one batch: all prompts
                src_outs = batch_src_ablations(pm, [batch], AblationType.RESAMPLE, "corrupt")[batch.key]
                with patch_mode(pm, src_outs, edges=[]):  # every mask 0: the clean run
                    base = float(batch_avg_answer_diff(pm(batch.clean)[pm.out_slice], batch))
                for e in edges:
                    with patch_mode(pm, src_outs, edges=[e]):  # this edge's mask 1, the others 0
                        out[e.name] = float(batch_avg_answer_diff(pm(batch.clean)[pm.out_slice], batch)) - base
        return out

    runs = {"eap": lambda: gradient_scores(None), "ig": lambda: gradient_scores(STEPS), "exact": exact_scores}
    for fn in runs.values():  # warm-up
        fn()
    times = {key: [] for key in runs}
    scores = {}
    for i in range(max(repeats.values())):  # interleaved
        for key, fn in runs.items():
            if i < repeats[key]:
                t, out = cpu_time(fn)
                times[key].append(t)
                if key in scores and scores[key] != out:
                    sys.exit(f"auto-circuit's {key} scores changed between repeats")
                scores[key] = out

    # ACDC (KL to the clean run's last-position distribution), one run per tau; kept edges: score inf
    from auto_circuit.prune_algos.ACDC import acdc_prune_scores

    # Its order within a receiver layer is that of the set ``pm.edges`` (hash order, which changes
    # between runs: hash(None) is an address before Python 3.12); it sorts by layer with a stable
    # sort, so an ordered list gives our order and the same edges each run.
    by_name = {e.name: e for e in pm.edges}
    pm.edges = [by_name[name] for name in inp["acdc_order"]]
    acdc = {}
    for base, exp in inp["acdc_taus"]:
        t, ps = cpu_time(lambda b=base, e=exp: acdc_prune_scores(pm, loader, None, tao_exps=[e], tao_bases=[b],
                                                                  faithfulness_target="kl_div"))
        acdc[f"{base}e{exp}"] = {"tau": base * 10**exp, "time": t,
                                 "kept": [e.name for e in edges if float(e.prune_score(ps)) == float("inf")]}

    result = {
        "versions": {p: version(p) for p in ("auto-circuit", "transformer-lens", "torch", "transformers", "numpy")},
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "logit_max_diff": diffs,
        "n_edges": len(edges),
        "scores": scores,
        "times": times,
        "median_times": {key: statistics.median(v) for key, v in times.items()},
        "acdc": acdc,
    }
    (folder / "outputs.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])

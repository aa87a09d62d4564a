"""Edge scores of `patching.discovery` against auto-circuit's, on induction-2l, measured in one run.

    python -m benchmarks.autocircuit            # builds .cache/autocircuit-venv on first use (about a minute)
    python -m benchmarks.autocircuit --repeats 3

auto-circuit 1.0.1 wraps TransformerLens's ``HookedTransformer``, which TransformerLens 4 (this
project's) no longer has, so it runs in a virtual environment of its own, ``.cache/autocircuit-venv``,
built with the pins in `PINS` (torch 2.13.0 CPU first, then TransformerLens 2.18 and auto-circuit
without the dependencies that only its tracr models, word-translation tasks and image export use:
tracr-pypi, word2word, kaleido). This script writes induction-2l's weights (renamed to
``HookedTransformer``'s parameters), its config, the key-path prompts of `benchmarks/discovery.py` (32
x 40 tokens) and our logits to a temporary folder, runs `benchmarks/autocircuit_worker.py` there
(which checks that the rebuilt model gives our logits), and compares the scores.

Edge names: auto-circuit's ``Resid Start`` (``blocks.0.hook_resid_pre``: token plus position
embedding) is our sender ``input``; its head ``A{l}.{h}`` (``hook_result``: the head's write without
``b_O``) is our ``a{l}.h{h}``; its receivers ``A{l}.{h}.Q|K|V`` (``hook_q_input`` etc., before ``ln1``)
are our ``a{l}.h{h}.q|k|v``; ``MLP {l}`` would be our ``m{l}`` (induction-2l has none); ``Resid End``
(the last ``hook_resid_post``, before ``ln_final``) is our ``logits``. Both graphs have 81 edges here.

Signs: auto-circuit's mask gradient is the gradient of its *loss*, minus the mean logit difference,
with respect to a mask that moves the edge from clean (0) to corrupted (1): exactly minus our EAP
score (the estimated change of the mean metric when the edge is patched). The table compares
``-theirs`` with ours. Their exact scores (each edge patched alone through ``patch_mode``) have our
sign. Their integrated gradients average the gradient over masks 0, 1/5, ..., 1 (six points, the edges
interpolated); ours over five input embeddings between corrupted and clean: different estimators,
compared only by correlation.

Times are CPU seconds of each process (`time.process_time`), one thread each, medians of interleaved
repeats (EAP and IG 11 times, exact 3 times by default; first call of each not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks import venvs
from benchmarks.timing import cpu_time
from interp import zoo
from interp.circuits.induction import key_path_prompts
from patching import edge_scores, logit_diff

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "autocircuit-venv"
WORKER = Path(__file__).resolve().parent / "autocircuit_worker.py"
# Found to work here (Python 3.11, 2026-12-01). pyarrow is pinned because the newest needs NumPy 2,
# which TransformerLens 2.18 excludes; transformers and datasets are pulled by TransformerLens.
PINS = [
    ["torch==2.13.0"],
    ["torch==2.13.0", "transformer-lens==2.18.0", "transformers==4.57.6", "numpy==1.26.4", "pyarrow==21.0.0"],
    ["--no-deps", "auto-circuit==1.0.1"],
    ["torch==2.13.0", "einops==0.8.2", "ordered-set==4.1.0", "plotly==7.1.0", "vscode-tqdm==4.66.2", "blobfile==3.3.0"],
]
ACDC_TAUS = [(3, -3), (1, -2), (3, -2), (1, -1)]  # (base, exponent): auto-circuit's tau = base * 10**exponent
BIG = 1e-3  # edges whose |our exact score| is below this are ordered by float noise: Spearman also without them
IMPORT_CHECK = ("import transformer_lens; from auto_circuit.utils.graph_utils import patchable_model; "
                "from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores")


def ensure_venv(venv: Path = VENV) -> Path:
    """The venv's python, building the venv with `PINS` if it is missing or was built with other pins."""
    return venvs.ensure_venv(venv, PINS, IMPORT_CHECK, "auto-circuit")


def tl2_weights(model) -> dict[str, torch.Tensor]:
    """induction-2l's weights under ``HookedTransformer``'s parameter names (from the bridge's TL-style views)."""
    b = model.module
    sd = {"embed.W_E": b.W_E, "pos_embed.W_pos": b.W_pos, "unembed.W_U": b.W_U, "unembed.b_U": b.b_U,
          "ln_final.w": b.ln_final.weight, "ln_final.b": b.ln_final.bias}
    for layer, block in enumerate(b.blocks):
        sd[f"blocks.{layer}.ln1.w"], sd[f"blocks.{layer}.ln1.b"] = block.ln1.weight, block.ln1.bias
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            sd[f"blocks.{layer}.attn.{name}"] = getattr(block.attn, name)
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def our_name(theirs: str) -> str:
    """auto-circuit's edge name (``A0.1->A1.2.K``) as ours (``a0.h1 -> a1.h2.k``)."""
    def node(name: str) -> str:
        if name == "Resid Start":
            return "input"
        if name == "Resid End":
            return "logits"
        if name.startswith("MLP "):
            return f"m{name.split()[1]}"
        parts = name[1:].split(".")  # A{l}.{h}[.Q]
        return f"a{parts[0]}.h{parts[1]}" + (f".{parts[2].lower()}" if len(parts) == 3 else "")

    sender, receiver = theirs.split("->")
    return f"{node(sender)} -> {node(receiver)}"


def their_name(ours: str) -> str:
    """Our edge name (``a0.h1 -> a1.h2.k``) as auto-circuit's (``A0.1->A1.2.K``): `our_name` inverted."""

    def node(name: str) -> str:
        if name in ("input", "logits"):
            return {"input": "Resid Start", "logits": "Resid End"}[name]
        if name.startswith("m"):
            return f"MLP {name[1:]}"
        parts = name.split(".")  # a{l}.h{h}[.q]
        return f"A{parts[0][1:]}.{parts[1][1:]}" + (f".{parts[2].upper()}" if len(parts) == 3 else "")

    sender, receiver = ours.split(" -> ")
    return f"{node(sender)}->{node(receiver)}"


def acdc_order(model) -> list[str]:
    """The order in which our `acdc` tries the edges (receivers from the logits back, each receiver's
    senders from the latest back), in auto-circuit's names."""
    from patching.discovery import build_graph

    g = build_graph(model)
    order = sorted(range(g.n_edges), key=lambda i: (-g.receivers[g.edges[i][1]].time, g.edges[i][1], -g.edges[i][0]))
    return [their_name(g.edge_names[i]) for i in order]


def ours(model, prompts, repeats: dict[str, int]):
    """Our scores (by edge name) and median CPU times, with the worker's protocol."""
    runs = {"eap": "eap", "ig": "eap_ig", "exact": "exact"}
    for method in runs.values():  # warm-up
        edge_scores(model, prompts, logit_diff, method, progress=False)
    times, scores = {key: [] for key in runs}, {}
    for i in range(max(repeats.values())):
        for key, method in runs.items():
            if i < repeats[key]:
                t, out = cpu_time(lambda m=method: edge_scores(model, prompts, logit_diff, m, progress=False))
                times[key].append(t)
                scores[key] = dict(zip(out.graph.edge_names, out.scores.tolist(), strict=True))
    return scores, {key: statistics.median(v) for key, v in times.items()}


def correlations(a: list[float], b: list[float]) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    return float(spearmanr(a, b).statistic), float(pearsonr(a, b).statistic)


def compare_acdc(model, prompts, clean_logits, theirs: dict) -> None:
    """Our `acdc` with the same criterion as auto-circuit's KL target: KL(clean || run) at the last
    position, mean over prompts. Ours measures a drop in faithfulness (1 - KL / KL of the corrupted
    run), so their tau is ours times the corrupted run's KL. auto-circuit visits the edges by receiver
    layer from the logits back and, within a layer, in the order of its graph's edge set, which
    depends on object hashes (varies from run to run); the worker hands it ours (`acdc_order`)."""
    from patching.discovery import acdc
    from patching.metrics import kl_to

    metric = kl_to(clean_logits)
    with torch.no_grad():
        kl_corrupted = float(metric(model(prompts.corrupted), prompts).mean())
    header = f"| {'ACDC, KL target, tau':20} | {'our tau':7} | {'kept: ours':10} | {'theirs':6} | {'both':4} | {'ours (s)':8} | {'auto-circuit (s)':16} |"
    print(f"ACDC (KL of the corrupted run {kl_corrupted:.4f}):")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for run in theirs.values():
        tau = run["tau"]
        t, circuit = cpu_time(lambda tau=tau: acdc(model, prompts, metric, tau=tau / kl_corrupted, progress=False))
        mine, other = set(circuit.edge_names), {our_name(n) for n in run["kept"]}
        print(f"| {tau:20g} | {tau / kl_corrupted:7.5f} | {len(mine):10d} | {len(other):6d} | {len(mine & other):4d} | "
              f"{t:8.3f} | {run['time']:16.3f} |")
        if mine != other:
            print(f"|   only ours: {', '.join(sorted(mine - other)) or '-'}; only theirs: {', '.join(sorted(other - mine)) or '-'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=11, help="timed repeats of EAP and IG (exact: 3)")
    parser.add_argument("--exact-repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    repeats = {"eap": args.repeats, "ig": args.repeats, "exact": args.exact_repeats}

    try:
        python = ensure_venv()
    except venvs.SetupError as err:
        print(f"auto-circuit could not be set up, so nothing was compared:\n{err}")
        sys.exit(1)

    model = zoo.load_model("induction-2l")
    prompts = key_path_prompts(32, model.d_vocab)
    config = json.loads((zoo.model_dir("induction-2l") / "model.json").read_text())["tl_config"]
    config["eps"] = model.module.cfg.eps
    with torch.no_grad():
        logits = {name: model(getattr(prompts, name)).float() for name in ("clean", "corrupted")}

    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"config": config, "state_dict": tl2_weights(model), "clean": prompts.clean,
                    "corrupted": prompts.corrupted, "answers": prompts.answers, "wrong": prompts.wrong,
                    "logits_clean": logits["clean"], "logits_corrupted": logits["corrupted"],
                    "repeats": repeats, "acdc_taus": ACDC_TAUS,
                    "acdc_order": acdc_order(model)}, Path(tmp) / "inputs.pt")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([str(python), str(WORKER), tmp], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"auto-circuit's worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            sys.exit(1)
        theirs = json.loads((Path(tmp) / "outputs.json").read_text())

    mine, my_times = ours(model, prompts, repeats)
    v = theirs["versions"]
    print(f"auto-circuit {v['auto-circuit']} (transformer-lens {v['transformer-lens']}, torch {v['torch']}, "
          f"transformers {v['transformers']}, Python {theirs['python']}) vs this project (torch {torch.__version__}); "
          f"induction-2l, key-path prompts {len(prompts)} x {prompts.seq_len}, metric: mean logit difference; "
          f"1 thread each, CPU time; load average {os.getloadavg()[0]:.2f}")
    print(f"HookedTransformer vs our model, max |logit difference|: clean {theirs['logit_max_diff']['clean']:.1e}, "
          f"corrupted {theirs['logit_max_diff']['corrupted']:.1e}")

    mapped = {key: {our_name(name): s for name, s in vals.items()} for key, vals in theirs["scores"].items()}
    names = list(mine["exact"])
    matched = [n for n in names if n in mapped["eap"]]
    if len(matched) != len(names) or len(mapped["eap"]) != len(names):
        unmatched = sorted(set(mapped["eap"]) ^ set(names))
        print(f"edges not matched between the graphs: {unmatched}")

    def col(d, sign=1.0):
        return [sign * d[n] for n in matched]

    rows = [
        ("their EAP (-mask grad) vs our EAP", col(mapped["eap"], -1), col(mine["eap"]), True),
        ("their EAP (-mask grad) vs our exact", col(mapped["eap"], -1), col(mine["exact"]), False),
        ("their exact (patch_mode) vs our exact", col(mapped["exact"]), col(mine["exact"]), True),
        ("their mask-IG (-grad) vs our EAP-IG", col(mapped["ig"], -1), col(mine["ig"]), False),
        ("their mask-IG (-grad) vs our exact", col(mapped["ig"], -1), col(mine["exact"]), False),
        ("our EAP vs our exact (reference)", col(mine["eap"]), col(mine["exact"]), False),
        ("our EAP-IG vs our exact (reference)", col(mine["ig"]), col(mine["exact"]), False),
    ]
    big = [i for i, n in enumerate(matched) if abs(mine["exact"][n]) >= BIG]
    big_col = f"Spearman, {len(big)} edges"
    header = f"| {'comparison':40} | edges | Spearman | {big_col} | Pearson | max abs diff | max abs (2nd) |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for label, a, b, same in rows:
        rho, r = correlations(a, b)
        rho_big = correlations([a[i] for i in big], [b[i] for i in big])[0]
        diff = f"{max(abs(x - y) for x, y in zip(a, b, strict=True)):12.1e}" if same else f"{'(not same)':>12}"
        print(f"| {label:40} | {len(a):5d} | {rho:8.4f} | {rho_big:{len(big_col)}.4f} | {r:7.4f} | {diff} | {max(map(abs, b)):13.4f} |")

    compare_acdc(model, prompts, logits["clean"], theirs["acdc"])

    t = theirs["median_times"]
    header = f"| {'method':28} | {'ours (s)':8} | {'auto-circuit (s)':16} | {'ours faster by':14} |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for key, label in (("eap", "EAP"), ("ig", "IG (5 steps / 6 mask points)"), ("exact", "exact, every edge alone")):
        print(f"| {label:28} | {my_times[key]:8.4f} | {t[key]:16.4f} | {t[key] / my_times[key]:13.1f}x |")


if __name__ == "__main__":
    main()

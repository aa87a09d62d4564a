"""The fast engine on Hugging Face models against TransformerLens 4, measured in the same run.

    python -m benchmarks.patching --hf --threads 1            # sampled cells (minutes)
    python -m benchmarks.patching --hf --quick --threads 1    # fewer, smaller: a CI-sized check
    python -m benchmarks.patching --hf --full                 # every cell of every sweep (hours on a CPU)
    python -m benchmarks.patching_hf run1.log run2.log run3.log   # RESULTS.md's table from saved runs' output

Three shapes built from configs with random weights, saved with ``save_pretrained`` and loaded on
both backends: GPT-2 small (12 layers, d_model 768, vocabulary 50,257), Pythia-160M (GPT-NeoX,
12 layers, d_model 768, vocabulary 50,304, parallel residual, rotary on a quarter of each head) and
a Llama shape with grouped-query attention (8 layers, d_model 512, 8 query / 2 key-value heads,
vocabulary 32,000). Prompts of 4 x 16 and 8 x 64 tokens whose clean and corrupted versions differ
from position 5 on; sweeps resid_pre [layer pos], z [layer head], z [layer pos head], patched by
`activation_patch` (engine auto: the fast engine) and by ``transformer_lens.patching`` on the
bridge (the same cells, TL's generic patcher), timed interleaved (`timed_pair`) in CPU time of the
process (`clock`; run with ``--threads 1``).

A sweep at these sizes is thousands of forwards of a 100M-parameter model: on a 2-core CPU TL's
side of one 8 x 64 head sweep takes hours. So by default each side's time for the whole sweep is
extrapolated from a sample of its cells. TL runs ``--sample`` random cells
(a quarter of that at 8 x 64). At 4 x 16 ours runs the whole sweep, as a user would; at 8 x 64 it
runs whole groups of the cells the full sweep computes together (a layer's or a layer and
position's heads; resid_pre cells are single), chosen at random, three times TL's sample, and TL's
cells are drawn from those. Extrapolated: each side's per-sweep cost (ours: the base and source runs,
timed as a sweep whose only cell is a no-op; TL's: ``run_with_cache`` of the clean prompts) once,
plus the rest of the sampled time scaled by cells / sampled cells; ``--full`` runs every cell. The
work ratio divides our sweep time by what the sweep strictly needs: one forward for the source
activations, and per cell the layers from its own on, the positions from its own on (none inside
the shared prefix, where patching changes nothing) and the unembedding of the answer position
only, from a plain forward of the model's body and one of its unembedding, timed in the same
rounds as the sweeps (the machine's speed drifts).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import transformer_lens.patching as tlp

import interp
from interp.tasks import PromptSet
from interp.tokenizers import word_tokenizer
from patching import activation_patch, attribution_patch, logit_diff, metrics

#: the process's CPU time: with one torch thread it counts this process's work only, so other jobs on a
#: shared machine (and other runs of this benchmark) do not inflate either side's time
clock = time.process_time
FIRST_DIFF = 5
REGIMES = [(4, 16), (8, 64)]
QUICK_REGIMES = [(4, 16)]
#: speed-up targets of the issue: (sweep, regime) -> at least
TARGETS = {
    ("resid_pre [layer pos]", (4, 16)): 10.0, ("z [layer pos head]", (4, 16)): 15.0, ("z [layer head]", (4, 16)): 4.0,
    ("resid_pre [layer pos]", (8, 64)): 4.0, ("z [layer pos head]", (8, 64)): 6.0, ("z [layer head]", (8, 64)): 2.0,
}
SWEEPS = [
    ("resid_pre [layer pos]", "resid_pre", None, "resid_pre"),
    ("z [layer head]", "z", False, "z"),
    ("z [layer pos head]", "z", True, "z"),
]


def shapes(quick: bool) -> dict:
    """name -> a transformers model (random weights, seeded)."""
    import transformers as T

    torch.manual_seed(0)
    if quick:  # the same families, a quarter of the depth and width
        return {
            "gpt2 3L d192 v50257": T.GPT2LMHeadModel(T.GPT2Config(n_layer=3, n_embd=192, n_head=3)),
            "pythia 3L d192 v50304": T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
                num_hidden_layers=3, hidden_size=192, num_attention_heads=3, intermediate_size=768, vocab_size=50304,
                rotary_pct=0.25, use_parallel_residual=True)),
            "llama-gqa 2L d128 v32000": T.LlamaForCausalLM(T.LlamaConfig(
                num_hidden_layers=2, hidden_size=128, intermediate_size=352, num_attention_heads=8, num_key_value_heads=2,
                vocab_size=32000)),
        }
    return {
        "gpt2-small 12L d768 v50257": T.GPT2LMHeadModel(T.GPT2Config()),
        "pythia-160m 12L d768 v50304": T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
            num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072, vocab_size=50304,
            rotary_pct=0.25, use_parallel_residual=True)),
        "llama-gqa 8L d512 v32000": T.LlamaForCausalLM(T.LlamaConfig(
            num_hidden_layers=8, hidden_size=512, intermediate_size=1376, num_attention_heads=8, num_key_value_heads=2,
            vocab_size=32000)),
    }


def save_all(quick: bool, root: Path) -> dict[str, Path]:
    tok = word_tokenizer([f"w{i}" for i in range(1, 200)])
    out = {}
    for name, hf in shapes(quick).items():
        path = root / name.split()[0]
        hf.eval().save_pretrained(path)
        tok.save_pretrained(path)
        out[name] = path
    return out


def make_prompts(n: int, seq: int, vocab: int, seed: int = 0) -> PromptSet:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, seq), generator=g)
    corrupted = torch.randint(0, vocab, (n, seq), generator=g)
    corrupted[:, :FIRST_DIFF] = clean[:, :FIRST_DIFF]
    answers, wrong = torch.randint(0, vocab, (n,), generator=g), torch.randint(0, vocab, (n,), generator=g)
    return PromptSet(clean, corrupted, answers, wrong)


def timed(fn, runs: int = 3) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)


def timed_pair(ours, theirs, rounds: int, *others) -> tuple[float, object, float, object, list[float]]:
    """Medians of ``rounds`` interleaved calls of each (no warm-up: a call takes seconds), and of each of
    ``others`` (timed in the same rounds, so under the same load)."""
    t_mine, t_other, t_more = [], [], [[] for _ in others]
    for _ in range(rounds):
        t = clock()
        other = theirs()
        t_other.append(clock() - t)
        t = clock()
        mine = ours()
        t_mine.append(clock() - t)
        for fn, times in zip(others, t_more, strict=True):
            times.append(timed(fn, runs=1))
    return statistics.median(t_mine), mine, statistics.median(t_other), other, [statistics.median(t) for t in t_more]


def cells_of(kind: str, by_pos, L: int, H: int, S: int) -> list[tuple]:
    """Every cell of a sweep as (layer, pos or None, head or None)."""
    if kind == "resid_pre":
        return [(layer, pos, None) for layer in range(L) for pos in range(S)]
    if by_pos:
        return [(layer, pos, head) for layer in range(L) for pos in range(S) for head in range(H)]
    return [(layer, None, head) for layer in range(L) for head in range(H)]


def needed(cells: list[tuple], L: int, S: int, t_body: float, t_unembed: float) -> float:
    """The time a set of cells strictly needs (see the module docstring)."""
    total = 0.0
    for layer, pos, _ in cells:
        first = FIRST_DIFF if pos is None else pos
        if first < FIRST_DIFF:
            continue  # inside the shared prefix: the patch changes nothing
        total += (L - layer) / L * (S - first) / S * t_body + t_unembed / S
    return total


def sample_cells(every: list[tuple], kind: str, by_pos, ours_full: bool, tl_sample: int | None, seed: int):
    """(ours' cells, TL's cells). Ours: every cell, or whole groups of the cells the full sweep computes
    together (all heads of a layer, or of a layer and position) until there are three times TL's
    sample; TL's: a random ``tl_sample`` of ours' cells (TL runs each cell alone anyway)."""
    g = torch.Generator().manual_seed(seed)
    if tl_sample is None or tl_sample >= len(every):
        return every, every
    ours = every
    if not ours_full:
        groups: dict = {}
        for cell in every:
            groups.setdefault((cell[0], cell[1]), []).append(cell)  # resid_pre: one cell per group
        keys = list(groups)
        ours = []
        for i in torch.randperm(len(keys), generator=g).tolist():
            ours += groups[keys[i]]
            if len(ours) >= 3 * tl_sample:
                break
        ours = sorted(ours, key=every.index)
    theirs = [ours[i] for i in sorted(torch.randperm(len(ours), generator=g)[:tl_sample].tolist())]
    return ours, theirs


def run_cell(model, bridge, prompts, sweep, sample: int | None, seed: int, rounds: int, body, unembed,
             ours_full: bool) -> dict:
    """One sweep, ours and TL's, each on its sample (`sample_cells`; ``ours_full``: ours runs the whole
    sweep, as a user would), extrapolated to the whole sweep with the per-sweep costs counted once."""
    name, kind, by_pos, tl_name = sweep
    L, H, S = model.n_layers, model.n_heads, prompts.seq_len
    every = cells_of(kind, by_pos, L, H, S)
    ours_cells, cells = sample_cells(every, kind, by_pos, ours_full, sample, seed)
    sites = [[interp.Site(kind, layer, head, pos)] for layer, pos, head in ours_cells]
    tl_metric = metrics.mean(logit_diff, prompts)
    index_df = pd.DataFrame([(c[0],) + tuple(x for x in c[1:] if x is not None) for c in cells],
                            columns=["layer"] + (["pos"] if kind == "resid_pre" or by_pos else []) + (["head"] if kind == "z" else []))
    setter = {("resid_pre", None): tlp.layer_pos_patch_setter, ("z", False): tlp.layer_head_vector_patch_setter,
              ("z", True): tlp.layer_pos_head_vector_patch_setter}[(kind, by_pos)]

    def ours():
        return activation_patch(model, prompts, sites, logit_diff, progress=False)

    def theirs():
        _, cache = bridge.run_with_cache(prompts.clean)
        return tlp.generic_activation_patch(bridge, prompts.corrupted, cache, tl_metric, patch_setter=setter,
                                            activation_name=tl_name, index_df=index_df)

    t_ours, result, t_tl, tl_vals, (t_body, t_unembed) = timed_pair(ours, theirs, rounds, body, unembed)
    assert result.settings.get("engine") == "fast", result.settings
    values = result.values[torch.tensor([ours_cells.index(c) for c in cells])]
    diff = float((values - tl_vals.detach().float().cpu()).abs().max())
    if len(cells) < len(every):  # per-sweep costs once, per-cell costs scaled to every cell
        fixed_tl = timed(lambda: bridge.run_with_cache(prompts.clean))
        t_tl = fixed_tl + max(t_tl - fixed_tl, 0.0) * len(every) / len(cells)
    if len(ours_cells) < len(every):
        noop = [[interp.Site(kind, L - 1, 0 if kind == "z" else None, 0)]]  # inside the shared prefix: no work
        fixed_ours = timed(lambda: activation_patch(model, prompts, noop, logit_diff, progress=False))
        t_ours = fixed_ours + max(t_ours - fixed_ours, 0.0) * len(every) / len(ours_cells)
    return dict(sweep=name, cells=len(every), sampled=len(cells), ours_sampled=len(ours_cells), ours_s=t_ours, tl_s=t_tl,
                speedup=t_tl / t_ours, max_diff=diff, work_ratio=t_ours / (needed(every, L, S, t_body, t_unembed) + t_body))


def body_and_unembed(hf, tokens) -> tuple:
    """Functions running a plain forward of the model's body (no grad) and its unembedding of every position."""
    base, head = hf.base_model, hf.get_output_embeddings()
    with torch.no_grad():
        hidden = base(tokens).last_hidden_state

    def body():
        with torch.no_grad():
            base(tokens)

    def unembed():
        with torch.no_grad():
            head(hidden)

    return body, unembed


def run(quick: bool, full: bool, sample: int, seed: int, rounds: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for shape, path in save_all(quick, Path(root)).items():
            bridge_model = interp.load(path, backend="transformer_lens")
            bridge = bridge_model.module
            for backend in ("transformer_lens", "nnsight"):
                model = bridge_model if backend == "transformer_lens" else interp.load(path, backend="nnsight")
                from patching.anatomy import hf_model

                hf = hf_model(model)
                for n, seq in QUICK_REGIMES if quick else REGIMES:
                    prompts = make_prompts(n, seq, hf.config.vocab_size, seed)
                    body, unembed = body_and_unembed(hf, prompts.corrupted)
                    for sweep in SWEEPS:
                        per = None if full else (sample if seq <= 16 else max(4, sample // 4))  # 8 x 64: a quarter
                        row = run_cell(model, bridge, prompts, sweep, per, seed, rounds, body, unembed, ours_full=seq <= 16)
                        row.update(model=shape, backend=backend, regime=f"{n}x{seq}", target=TARGETS[(sweep[0], (n, seq))])
                        rows.append(row)
                        print(fmt(row), flush=True)
                    t_attr = timed(lambda m=model, p=prompts: attribution_patch(m, p, "z", logit_diff, by_pos=True), runs=3)
                    t_fwd = timed(lambda m=model, p=prompts: _forward(m, p.corrupted))
                    row = dict(model=shape, backend=backend, regime=f"{n}x{seq}", sweep="attribution z [layer pos head]",
                               forwards=t_attr / t_fwd)
                    rows.append(row)
                    print(fmt(row), flush=True)
    return rows


def _forward(model, tokens):
    with torch.no_grad():
        return model(tokens)


def fmt(r: dict) -> str:
    head = f"{r['model']:<28} {r['backend']:<16} {r['regime']:<5} {r['sweep']:<31}"
    if "forwards" in r:
        return f"{head} {r['forwards']:.2f} forwards [<=3: {'PASS' if r['forwards'] <= 3 else 'FAIL'}]"
    cells = f"ours {r['ours_sampled']}, TL {r['sampled']} of {r['cells']} cells"
    return (f"{head} ours {r['ours_s']:8.2f} s  TL {r['tl_s']:9.2f} s  ({cells})  "
            f"x{r['speedup']:5.1f} [>={r['target']:.0f}: {'PASS' if r['speedup'] >= r['target'] else 'FAIL'}]  "
            f"diff {r['max_diff']:.1e} [{'PASS' if r['max_diff'] <= 1e-4 else 'FAIL'}]  "
            f"work {r['work_ratio']:.2f} [<=1.5: {'PASS' if r['work_ratio'] <= 1.5 else 'FAIL'}]")


def main(args) -> list[dict]:
    print(f"Hugging Face shapes: torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}, "
          f"prompts differing from position {FIRST_DIFF}, {'every cell' if args.full else f'{args.sample} sampled cells per sweep (a quarter at 8 x 64)'}, "
          f"medians of {args.rounds} interleaved rounds of process CPU time; times scaled to the whole sweep")
    rows = run(args.quick, args.full, args.sample, args.seed, args.rounds)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return rows


def summarize(logs: list[str]) -> str:
    """A markdown table of several runs' printed rows (one column of speed-ups and work ratios per run;
    PASS / FAIL on the median of the runs)."""
    import re

    pattern = re.compile(r"^(?P<model>.+?) {2,}(?P<backend>transformer_lens|nnsight) +(?P<regime>\d+x\d+) +(?P<sweep>\S.*?\]) +"
                         r"(?:ours .*?x *(?P<speedup>[\d.]+) \[>=(?P<target>\d+).*?diff (?P<diff>\S+) .*?work (?P<work>[\d.]+)"
                         r"|(?P<forwards>[\d.]+) forwards)")
    cells: dict = {}
    for log in logs:
        for line in open(log).read().splitlines():
            m = pattern.match(line)
            if m:
                key = (m["model"].strip(), m["backend"], m["regime"], m["sweep"])
                cells.setdefault(key, []).append(m.groupdict())
    out = ["| model | backend | prompts | sweep | speed-up per run | target | work ratio per run | max diff | verdict |",
           "|---|---|---|---|---|---|---|---|---|"]
    for (model, backend, regime, sweep), runs in cells.items():
        if runs[0]["forwards"] is not None:
            values = [float(r["forwards"]) for r in runs]
            verdict = "PASS" if statistics.median(values) <= 3 else "FAIL"
            out.append(f"| {model} | {backend} | {regime} | {sweep} | {', '.join(f'{v:.2f} fwd' for v in values)} | <= 3 fwd | | | {verdict} |")
            continue
        speed = [float(r["speedup"]) for r in runs]
        work = [float(r["work"]) for r in runs]
        target = float(runs[0]["target"])
        ok = statistics.median(speed) >= target and statistics.median(work) <= 1.5
        diff = max(float(r["diff"]) for r in runs)
        out.append(f"| {model} | {backend} | {regime} | {sweep} | {', '.join(f'{v:.1f}x' for v in speed)} | >= {target:.0f}x | "
                   f"{', '.join(f'{v:.2f}' for v in work)} | {diff:.1e} | {'PASS' if ok and diff <= 1e-4 else 'FAIL'} |")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(summarize(sys.argv[1:]))

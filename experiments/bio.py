"""The biography experiment (issue 19): which data and model settings move fact storage to the
subject (ROME's two stages, Meng et al. 2022) and how long the learning plateau lasts (Zucchet et al. 2025).

    python -m experiments.bio list                        # the registry; which runs are stored
    python -m experiments.bio run bio-n1000               # train, evaluate, trace -> assets/experiments/bio/bio-n1000.json
    python -m experiments.bio run bio-n300 --steps 100 --out /tmp/smoke    # a cheap check of the pipeline
    python -m experiments.bio run qa-n1000 --save-model   # also ship the final fp16 weights (only runs worth shipping)
    python -m experiments.bio notes                       # the table of stored runs in assets/experiments/bio/NOTES.md
    python -m experiments.bio trace pronouns-n1000 pronoun   # more traces of a stored run, from .cache/bio-runs/NAME
    python -m experiments.bio probe bio-n1000             # the name-token probes of a stored run, from its cached weights

Each run builds a `interp.tasks.bio.Biographies` world from its `RUNS` entry, trains a fresh native
model on it with `interp.train.train` (language-model loss on every token), evaluates recall every
``eval_every`` steps on a fixed balanced subset of individuals (biographies, and questions about
individuals seen / not seen in question form), causal-traces (`patching.causal_trace`: noise 3× the
embedding std on both name tokens, 10 samples, window 1) the prompts ``<bos> first last <relation
words>`` of ``TRACE_PROMPTS`` individuals at a quarter, half and all of training, and writes one JSON
(``assets/experiments/bio/NAME.json``): the exact command and settings, the evaluation history,
linear probes for each attribute at the last name token (`probe_run`, Allen-Zhu & Li's test),
the training loss (means of 10 steps), final recall on every individual, the traces' per-layer
indirect effects in ROME's token groups, the ROME ratio (`interp.tasks.bio.rome_ratio`) and the
plateau (`interp.tasks.bio.plateau`). The final weights go to ``.cache/bio-runs/NAME`` (ignored by
git) for later analysis, and with ``--save-model`` to ``assets/experiments/bio/models/NAME`` in fp16.

The registry covers the issue's axes, each against one base run (``bio-n1000``: biographies of 1,000
individuals, 4 relations, 4 layers, d_model 128, uniform frequencies): ``individuals`` (300, 1,000,
3,000), ``depth`` (4, 6, 8 layers at about the same parameter count), ``design`` (templated
sentences; biographies; + profile; + pronouns; + questions for half with held-out extraction; the
same with relation words before the name) and ``frequencies`` (uniform vs Zipf). Every run takes
well under 20 minutes on 2 cores (one thread: ``OMP_NUM_THREADS=1``, ``--threads 1``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from experiments import git_commit, write_block

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "assets" / "experiments" / "bio"
CACHE = ROOT / ".cache" / "bio-runs"
TRACE_PROMPTS = 40
#: The biography template traced (index into the relation's paraphrases): template 1 of birth city,
#: ``{S} is a native of`` (after the name) / ``the city where {S} was born is`` (before it). Template
#: 0, ``was born in``, also starts the birth-year sentence, so a model that knows every fact put only
#: about half its probability on the city there (the traces before this change used it).
TRACE_TEMPLATE = 1
EVAL_INDIVIDUALS = 256
RELATIONS = ("birth_city", "birth_year", "university", "employer")

MODEL_4L = dict(n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512)
MODEL_6L = dict(n_layers=6, d_model=104, n_heads=4, d_head=26, d_mlp=416)  # about MODEL_4L's parameters
MODEL_8L = dict(n_layers=8, d_model=92, n_heads=4, d_head=23, d_mlp=368)
COMMON = dict(attn_only=False, normalization_type="LN", positional_embedding_type="standard", act_fn="gelu")


@dataclass(frozen=True)
class Run:
    """One registered run: the world (`BioConfig` fields), the model, the optimisation, and the
    axes of the experiment it is a point of."""

    name: str
    task: dict
    model: dict = field(default_factory=lambda: dict(MODEL_4L))
    axes: tuple[str, ...] = ()
    steps: int = 2500
    batch_size: int = 64
    lr: float = 1e-3
    eval_every: int = 50
    seed: int = 0
    note: str = ""


def _bio(n: int, **kw) -> dict:
    return dict(n_individuals=n, relations=RELATIONS, **kw)


RUNS: dict[str, Run] = {r.name: r for r in [
    Run("bio-n1000", _bio(1000), axes=("individuals", "depth", "design", "frequencies"), note="the base run: shuffled biographies, 3 paraphrases"),
    Run("bio-n300", _bio(300), axes=("individuals",)),
    Run("bio-n3000", _bio(3000), axes=("individuals", "frequencies")),
    Run("bio-n1000-6l", _bio(1000), model=dict(MODEL_6L), axes=("depth",)),
    Run("bio-n1000-8l", _bio(1000), model=dict(MODEL_8L), axes=("depth",)),
    Run("templates-n1000", _bio(1000, layout="sentence"), axes=("design",), note="one templated sentence per row (facts-4l's design, LM loss)"),
    Run("profile-n1000", _bio(1000, profile=True), axes=("design",), note="+ a profile sentence: the name followed by every attribute, shuffled"),
    Run("profile-qa-n1000", _bio(1000, profile=True, question_share=0.5), axes=("design",), note="+ a profile sentence and question rows for half of the individuals"),
    Run("pronouns-n1000", _bio(1000, pronoun_share=1.0), axes=("design",), note="every sentence after the first uses a pronoun"),
    Run("qa-n1000", _bio(1000, question_share=0.5), axes=("design",), note="question rows for half of the individuals"),
    Run("qa-before-n1000", _bio(1000, question_share=0.5, order="before"), axes=("design",), note="relation words before the name, in biographies and questions"),
    Run("qa-pronouns-n1000", _bio(1000, question_share=0.5, pronoun_share=1.0), axes=("design",), note="questions for half, pronouns after the first mention"),
    Run("bio-n1000-zipf", _bio(1000, frequencies="zipf"), axes=("frequencies",)),
    Run("bio-n3000-zipf", _bio(3000, frequencies="zipf"), axes=("frequencies",)),
]}

#: The label of each run on each axis's x-axis (figures read it from the stored JSON).
AXIS_LABELS = {
    "individuals": lambda r: str(r.task["n_individuals"]),
    "depth": lambda r: f"{r.model['n_layers']} layers",
    "design": lambda r: r.name.rsplit("-n", 1)[0],
    "frequencies": lambda r: f"{r.task.get('frequencies', 'uniform')} N={r.task['n_individuals']}",
}


# =============================================================================== running
def trace_forms(world) -> list[str]:
    """The prompt forms a run is traced on: the biography sentence; the question (about held-out
    individuals) when the run has question rows; the pronoun sentence when it has pronouns."""
    return ["bio"] + (["question"] if world.question_set else []) + (["pronoun"] if world.config.pronoun_share > 0 else [])


def trace_run(model, world, step: int, forms: list[str] | None = None) -> list[dict]:
    """Causal traces of each prompt form (default `trace_forms`) on held-out individuals where there
    are any: per-layer indirect effects in ROME's groups and the ROME ratio."""
    from interp.tasks.bio import rome_ratio, to_text
    from patching import causal_trace
    from patching.causal_tracing import GROUPS

    relation = world.config.relations[0]
    pool = world.held_out or list(range(len(world.names)))
    out = []
    for form in forms or trace_forms(world):
        who = pool[:: max(1, len(pool) // TRACE_PROMPTS)][:TRACE_PROMPTS]
        p = world.fact_prompts(relation, form=form, template=TRACE_TEMPLATE if form != "question" else 0, individuals=who, seed=0)
        trace = causal_trace(model, p.clean, p.metadata["subject_pos"].tolist(), p.answers, noise=3.0, samples=10,
                             window=1, seed=0, progress=False)
        agg = trace.aggregate()
        groups = {kind: {g: [round(float(v), 5) for v in agg[kind][:, i]] for i, g in enumerate(GROUPS)} for kind in agg}
        mlp = groups["mlp"]
        out.append({
            "step": step, "form": form, "order": p.metadata["order"], "relation": relation, "n_prompts": len(who),
            "prompt": to_text(p.clean[0]),
            "p_clean": float(trace.p_clean.mean()), "p_corrupted": float(trace.p_corrupted.mean()),
            "groups": groups,
            "rome_ratio": rome_ratio(mlp["last subject token"], mlp["last token"]),
            "rome_ratio_layer0": rome_ratio(mlp["last subject token"], mlp["last token"], include_layer0=True),
        })
    return out


def probe_run(model, world, max_individuals: int = 1000) -> dict:
    """Allen-Zhu & Li's test of storage at the name (`interp.circuits.facts_bio.name_probe`: linear
    probes for each relation's attribute at the last name token of ``<bos> first last``, 5-fold over
    individuals, after the embeddings and after each block), with the sites named and rounded."""
    from interp.circuits.facts_bio import name_probe

    probe = name_probe(model, world, max_individuals)
    return {"n_individuals": len(world.eval_individuals(max_individuals, seed=0)),
            "sites": ["embed"] + [f"after block {layer}" for layer in range(model.n_layers)],
            "accuracy": {r: None if a is None else [round(v, 4) for v in a] for r, a in probe["accuracy"].items()},
            "chance": probe["chance"]}


def add_probe(name: str, out_dir: Path = STORE) -> dict:
    """Probe the cached final weights of a stored run (``.cache/bio-runs/NAME``) and add the result to its JSON."""
    from interp.models import load_native_dir
    from interp.tasks.bio import BioConfig, Biographies

    path = Path(out_dir) / f"{name}.json"
    record = json.loads(path.read_text())
    model = load_native_dir(CACHE / name)
    record["probe"] = probe_run(model, Biographies(BioConfig(**record["task"])))
    path.write_text(json.dumps(_clean(record), indent=1) + "\n")
    return record


def add_traces(name: str, forms: list[str], out_dir: Path = STORE, all_steps: bool = False) -> dict:
    """Trace the cached weights of a stored run on ``forms`` and put the traces in its JSON (replacing
    any of the same step and form): the final weights, or with ``all_steps`` every traced step (the
    checkpoints in ``.cache/bio-runs/NAME/checkpoints`` and the final weights). The record's
    ``rome_ratio`` is then the final biography trace's."""
    from interp.errors import InputError
    from interp.models import load_native_dir, load_weights
    from interp.tasks.bio import BioConfig, Biographies

    path = Path(out_dir) / f"{name}.json"
    record = json.loads(path.read_text())
    world = Biographies(BioConfig(**record["task"]))
    final = record["train"]["steps"]
    steps = sorted({t["step"] for t in record["traces"]} | {final}) if all_steps else [final]
    new = []
    for step in steps:
        model = load_native_dir(CACHE / name)
        if step != final:
            file = CACHE / name / "checkpoints" / f"step_{step:06d}.safetensors"
            if not file.is_file():
                raise InputError(f"{file} is missing: retrace the final weights only (drop --all-steps) or rerun {name}.")
            load_weights(model, file)
        new += trace_run(model, world, step, forms)
    done = {(t["step"], t["form"]) for t in new}
    record["traces"] = sorted([t for t in record["traces"] if (t["step"], t["form"]) not in done] + new,
                              key=lambda t: (t["step"], t["form"]))
    record["trace_template"] = TRACE_TEMPLATE
    record["rome_ratio"] = next(t["rome_ratio"] for t in reversed(record["traces"]) if t["form"] == "bio" and t["step"] == final)
    path.write_text(json.dumps(_clean(record), indent=1) + "\n")
    return record


def run(name: str, out_dir: Path = STORE, steps: int | None = None, threads: int = 1, save_model: bool = False,
        progress: bool = True) -> dict:
    """Train, evaluate and trace run ``name`` of `RUNS`; write ``out_dir/NAME.json`` and return it."""
    from interp.errors import InputError, closest
    from interp.models import build_native, save_native, state_dict_of
    from interp.tasks.bio import BioConfig, Biographies, plateau
    from interp.tokenizers import word_tokenizer
    from interp.train import TrainConfig, train

    if name not in RUNS:
        raise InputError(f"No run {name!r}.{closest(name, RUNS)} Runs: {', '.join(RUNS)}.")
    spec = RUNS[name]
    if steps is not None and Path(out_dir).resolve() == STORE.resolve():
        raise InputError("--steps changes the run, so its history must not replace the registered one; add --out DIR.")
    steps = steps or spec.steps
    torch.set_num_threads(threads)
    world = Biographies(BioConfig(**spec.task, seed=spec.seed))
    cache = CACHE / name
    tokenizer = word_tokenizer(world.vocab, cache / "tokenizer")
    tl_config = {**COMMON, **spec.model, "d_vocab": world.d_vocab, "n_ctx": world.max_len}
    model = build_native(tl_config, tokenizer, seed=spec.seed, name=f"bio-{name}")
    n_params = sum(p.numel() for p in model.module.parameters())
    config = TrainConfig(steps=steps, batch_size=spec.batch_size, lr=spec.lr, warmup=100, seed=spec.seed,
                         eval_every=min(spec.eval_every, steps), weight_decay=0.01)
    subset = world.eval_individuals(EVAL_INDIVIDUALS, seed=0)
    trace_steps = sorted({steps // 4, steps // 2})
    traces: list[dict] = []

    def evaluate(m, step):
        metrics = world.recall_metrics(m, subset)
        if step in trace_steps:
            traces.extend(trace_run(m, world, step))
        if not progress:  # one log line per evaluation instead of the bar
            print(f"{name} step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
        return metrics

    result = train(model, lambda gen, step: world.training_batch(config.batch_size, gen), config, eval_fn=evaluate,
                   checkpoint_steps=trace_steps, checkpoint_dir=None if not trace_steps else cache / "checkpoints",
                   checkpoint_dtype=torch.float16, progress=progress)
    start = time.perf_counter()
    final = world.recall_metrics(model)
    traces.extend(trace_run(model, world, steps))
    probe = probe_run(model, world)
    plateau_numbers = plateau(result.history, world.no_knowledge_loss())
    plateau_numbers["censored"] = bool(plateau_numbers["plateau_end"] == result.history[-1]["step"])
    losses = np.asarray(result.losses)
    command = f"OMP_NUM_THREADS={threads} python -m experiments.bio run {name}" + (f" --steps {steps}" if steps != spec.steps else "")
    record = {
        "name": name, "command": command, "axes": list(spec.axes), "note": spec.note,
        "labels": {axis: AXIS_LABELS[axis](spec) for axis in spec.axes},
        "git_commit": git_commit(), "torch": torch.__version__, "threads": threads,
        "time_s": round(result.time_s + time.perf_counter() - start, 1),
        "task": world.config.to_dict(), "model": {**tl_config, "n_params": n_params}, "train": vars(config),
        "eval_individuals": len(subset), "no_knowledge_loss": world.no_knowledge_loss(),
        "history": result.history,
        "loss_every_10": [round(float(v), 4) for v in losses[: len(losses) // 10 * 10].reshape(-1, 10).mean(1)],
        "final": final, "traces": traces,
        "rome_ratio": next(t["rome_ratio"] for t in reversed(traces) if t["form"] == "bio"), "trace_template": TRACE_TEMPLATE,
        "plateau": plateau_numbers, "probe": probe,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(_clean(record), indent=1) + "\n")
    save_native(model, cache, extra={"run": name, "task": world.config.to_dict()})
    if save_model:
        target = out_dir / "models" / name
        save_native(model, target, extra={"run": name, "task": world.config.to_dict(), "command": command})
        from safetensors.torch import save_file

        save_file({k: v.half() if v.is_floating_point() else v for k, v in state_dict_of(model).items()}, str(target / "model.safetensors"))
    print(f"{name}: {summary(record)}\nwrote {path}")
    return record


def summary(record: dict) -> str:
    """One line: final recall, the ROME ratio and the plateau of a stored run."""
    f, p = record["final"], record["plateau"]
    qa = "".join(f", qa {g} {f[f'qa_recall_{g}']:.2f}" for g in ("seen", "unseen") if f"qa_recall_{g}" in f)
    return (f"bio recall {f['bio_recall']:.3f}{qa}; ROME ratio {record['rome_ratio']:.3f}; plateau {p['plateau_steps']:.0f} steps"
            f"{' (censored)' if p.get('censored') else ''}, recall 0.5 at {p['recall_half_step']}; {record['time_s']:.0f} s")


def load_runs(store: Path = STORE) -> list[dict]:
    """Every stored run record under ``store`` (sorted by name): what the figures read."""
    from interp.figures.bio import load_runs as stored_runs

    return stored_runs(store)


NOTES = STORE / "NOTES.md"
BLOCK = ("<!-- runs:start -->", "<!-- runs:end -->")


def notes_table(records: list[dict]) -> list[str]:
    """The table of stored runs written into ``NOTES.md`` by ``python -m experiments.bio notes``."""
    from interp.figures.bio import final_trace, run_numbers

    def f(v, fmt="{:.2f}"):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    lines = ["| run | axes | N | layers | steps | time (s) | bio recall | QA seen | QA held-out | ROME ratio | with layer 0 | "
             "question / pronoun prompt | subject MLP L1..L/2 | last-token MLP max | name probe (best layer / chance) | plateau (steps) | recall 0.5 at |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        n = run_numbers(r)
        if not r["task"]["question_share"]:  # held-out questions of a run without question rows: not a measurement
            n.pop("qa_recall_unseen", None)
        mlp = final_trace(r)["groups"]["mlp"]
        layers = r["model"]["n_layers"]
        subj = max(mlp["last subject token"][1 : layers // 2 + 1])
        lines.append(
            f"| `{r['name']}` | {', '.join(r['axes'])} | {r['task']['n_individuals']} | {layers} | {r['train']['steps']} | "
            f"{r['time_s']:.0f} | {f(n.get('bio_recall'))} | {f(n.get('qa_recall_seen'))} | {f(n.get('qa_recall_unseen'))} | "
            f"{f(n.get('rome_ratio_bio'), '{:.3f}')} | {f(n.get('rome_ratio_bio_layer0'), '{:.3f}')} | "
            f"{f(n.get('rome_ratio_question'), '{:.3f}')} / {f(n.get('rome_ratio_pronoun'), '{:.3f}')} | {subj:.3f} | {max(mlp['last token']):.3f} | {_probe_cell(r)} | "
            f"{n['plateau_steps']:.0f}{' (censored)' if n['censored'] else ''} | {f(n['recall_half_step'], '{:.0f}')} |")
    return lines


def _probe_cell(record: dict) -> str:
    """Mean over relations of the best-layer probe accuracy at the last name token, and of chance."""
    probe = record.get("probe")
    if not probe:
        return "–"
    measured = [r for r, acc in probe["accuracy"].items() if acc]
    if not measured:
        return "–"
    best = np.mean([max(probe["accuracy"][r]) for r in measured])
    return f"{best:.2f} / {np.mean([probe['chance'][r] for r in measured]):.2f}"


def write_notes(path: Path = NOTES) -> Path:
    """Rewrite the generated table of ``NOTES.md`` (between its markers) from the stored runs;
    the hand-written text around it stays."""
    return write_block(path, BLOCK, "Biography runs", notes_table(load_runs(path.parent)))


def _clean(x):
    """JSON without NaN: NaN -> None."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


# =============================================================================== command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bio", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered runs, their axes, and the stored outcome of each")
    p = sub.add_parser("trace", help="add causal traces of more prompt forms (bio, question, pronoun) to a stored run from its cached weights")
    p.add_argument("name")
    p.add_argument("forms", nargs="+", choices=("bio", "question", "pronoun"))
    p.add_argument("--all-steps", action="store_true", help="retrace every traced step from the cached checkpoints, not only the final weights")
    p = sub.add_parser("probe", help="add the name-token probes to a stored run from its cached weights (.cache/bio-runs/NAME)")
    p.add_argument("name")
    sub.add_parser("notes", help=f"rewrite the table of stored runs in {NOTES.relative_to(ROOT)}")
    p = sub.add_parser("run", help="train, evaluate and trace one registered run")
    p.add_argument("name")
    p.add_argument("--steps", type=int, default=None, help="fewer steps for a check (needs --out)")
    p.add_argument("--out", default=None, help=f"where the JSON goes (default {STORE.relative_to(ROOT)})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-model", action="store_true", help="also write the final fp16 weights under OUT/models/NAME")
    p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from interp.errors import InterpError

    try:
        if args.command == "list":
            stored = {r["name"]: r for r in load_runs()}
            for r in RUNS.values():
                state = summary(stored[r.name]) if r.name in stored else "not run"
                print(f"{r.name:<18} {','.join(r.axes):<36} {state}")
            return 0
        if args.command == "trace":
            record = add_traces(args.name, args.forms, all_steps=args.all_steps)
            print({t["form"]: round(t["rome_ratio"], 4) if t["rome_ratio"] is not None else None
                   for t in record["traces"] if t["step"] == record["train"]["steps"]})
            return 0
        if args.command == "probe":
            print(add_probe(args.name)["probe"])
            return 0
        if args.command == "notes":
            print(f"wrote {write_notes()}")
            return 0
        run(args.name, Path(args.out) if args.out else STORE, steps=args.steps, threads=args.threads,
            save_model=args.save_model, progress=not args.quiet)
        return 0
    except InterpError as e:
        print(f"experiments.bio: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

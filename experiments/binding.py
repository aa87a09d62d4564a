"""The binding experiment (issue 19, part 4): which training levers let a model learn a binding
layout where copying forward by content is not enough, and by which mechanism it then retrieves
(positional, lexical or reflexive: Gur-Arieh et al. 2025).

    python -m experiments.binding list                      # the registry; which attempts are stored
    python -m experiments.binding run ef-curriculum         # train + evaluate -> assets/experiments/binding/NAME.json
    python -m experiments.binding run ef-curriculum --steps 100 --out /tmp/smoke   # a cheap check of the pipeline
    python -m experiments.binding shares binding-4l         # mechanism shares of a shipped model -> binding-4l.shares.json
    python -m experiments.binding notes                     # the generated table in assets/experiments/binding/NOTES.md

Each attempt (`ATTEMPTS`) trains a fresh native model (binding-4l's shape unless it says otherwise) on
`interp.tasks.binding.layout_batch` contexts of its layout (``entity-first``: ``<bos> ann likes tea .
bob likes jam . who likes jam`` -> ``bob``), with its levers: a curriculum over the number of pairs,
induction rows mixed into each batch (as in binding-4l), learning rate and steps, heads, filler
between pairs. Held-out accuracy per context size (200 fresh prompts per size) is recorded every 50
steps. An attempt *leaves the plateau* at the first evaluation where every size k's accuracy is at
least halfway from chance to perfect (``(1 + 1/k) / 2``). An attempt that leaves it is then
measured: `mechanism_shares` interchanges the query position's residual stream (before each layer
and after the last) from `interp.tasks.binding.mechanism_pairs` sources and counts which entity the
patched run names (positional, lexical, reflexive, base, other). Every attempt runs in under 10
minutes on one thread (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from experiments import git_commit, write_block
from interp.circuits.binding_ef import mechanism_shares

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "assets" / "experiments" / "binding"
CACHE = ROOT / ".cache" / "binding-runs"
EVAL_EVERY = 50
EVAL_N = 200

MODEL = dict(n_layers=4, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=64, attn_only=False,
             normalization_type="LN", positional_embedding_type="standard", act_fn="gelu")


@dataclass(frozen=True)
class Attempt:
    """One registered attempt: layout, levers and optimisation.

    ``curriculum``: ``((until_fraction, sizes), ...)``: the context sizes drawn while the step is below
    ``until_fraction * steps`` (the last entry holds to the end); empty = all sizes 2..5 throughout.
    ``induction_rows``: plain induction sequences added to the ``batch_size`` binding rows of each batch.
    """

    name: str
    lever: str
    layout: str = "entity-first"
    filler: int = 0
    curriculum: tuple = ()
    induction_rows: int = 0
    queries: int = 3
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    model: dict = field(default_factory=dict)  # overrides of MODEL
    layouts: tuple = ()  # ((until_fraction, layout), ...): earlier layouts before `layout` (evaluated on `layout`)
    seed: int = 0
    note: str = ""

    def sizes_at(self, step: int) -> tuple[int, ...]:
        """The context sizes drawn at ``step``."""
        from interp.tasks.binding import SIZES

        for until, sizes in self.curriculum:
            if step < until * self.steps:
                return tuple(sizes)
        return SIZES

    def layout_at(self, step: int) -> str:
        """The layout of the training contexts at ``step``."""
        for until, layout in self.layouts:
            if step < until * self.steps:
                return layout
        return self.layout


CURRICULUM = ((0.3, (2,)), (0.5, (2, 3)), (0.7, (2, 3, 4)))
ATTEMPTS: dict[str, Attempt] = {a.name: a for a in [
    Attempt("ef-curriculum", "curriculum over the number of pairs (2 first)", curriculum=CURRICULUM,
            note="2 pairs for the first 30% of steps, then 2-3, 2-4, 2-5"),
    Attempt("ef-induction", "induction rows", induction_rows=32,
            note="32 plain induction rows beside the 64 binding rows of each batch (binding-4l's rescue)"),
    Attempt("efs-induction", "layout: entity directly before the attribute, + induction rows",
            layout="entity-first-short", induction_rows=32, curriculum=CURRICULUM, steps=3500,
            note="`ann tea . bob jam . who likes jam`: a previous-token head (which induction rows grow) puts the entity in the attribute's position"),
    Attempt("efs-induction-s1", "second seed of efs-induction", layout="entity-first-short", induction_rows=32,
            curriculum=CURRICULUM, steps=3500, seed=1, note="efs-induction with model and data seed 1"),
    Attempt("ef-filler", "filler between pairs", filler=2, curriculum=CURRICULUM, steps=3500,
            note="2 extra '.' per gap on average, spread at random, so slots sit at varying positions"),
    Attempt("ef-filler-long", "filler between pairs, longer", filler=2, curriculum=CURRICULUM, steps=5000,
            note="ef-filler (which reached 1.00 / 1.00 / 0.59 / 0.49 at 3,500 steps) trained for 5,000 steps"),
    Attempt("ef-8heads", "more heads", model=dict(n_heads=8, d_head=8), curriculum=CURRICULUM, steps=3500),
    Attempt("ef-lowlr-long", "longer training at a lower learning rate", lr=3e-4, steps=5000, batch_size=48,
            curriculum=CURRICULUM),
    Attempt("ef-all", "curriculum + induction rows + 8 heads", curriculum=CURRICULUM, induction_rows=32,
            model=dict(n_heads=8, d_head=8), steps=3500),
    Attempt("ef-from-short", "curriculum over layouts: entity-first-short, then entity-first", induction_rows=32,
            curriculum=CURRICULUM, layouts=((0.55, "entity-first-short"),), steps=3600,
            note="efs-induction's recipe for the first 55% of steps, then the issue's layout (`ann likes tea .`)"),
]}


# =============================================================================== running
def plateau_exit(history: list[dict], sizes: tuple[int, ...] | None = None) -> int | None:
    """The first evaluated step where every size k's accuracy is at least ``(1 + 1/k) / 2`` (halfway
    from chance to perfect), or None if the attempt never got there."""
    from interp.tasks.binding import SIZES

    for row in history:
        if all(row.get(f"acc_{k}", 0.0) >= (1 + 1 / k) / 2 for k in sizes or SIZES):
            return int(row["step"])
    return None


def batch_fn(attempt: Attempt, vocab_size: int):
    """``(gen, step) -> (tokens, mask)``: the attempt's binding rows, plus its induction rows."""
    from interp.tasks import binding, induction

    def make(gen: torch.Generator, step: int):
        tokens, mask = binding.layout_batch(attempt.batch_size, gen, attempt.layout_at(step), attempt.sizes_at(step),
                                            attempt.queries, attempt.filler)
        return induction.append_induction_rows(tokens, mask, attempt.induction_rows, vocab_size, gen)

    return make


def build(attempt: Attempt, out: Path):
    """A fresh model of the attempt's shape with the binding vocabulary's tokenizer under ``out``."""
    from interp.models import build_native
    from interp.tasks import binding
    from interp.tokenizers import word_tokenizer

    tokenizer = word_tokenizer(binding.vocabulary(), out / "tokenizer")
    tl_config = {**MODEL, **attempt.model, "d_vocab": binding.d_vocab}
    return build_native(tl_config, tokenizer, seed=attempt.seed, name=f"binding-{attempt.name}"), tl_config


def run(name: str, out_dir: Path = STORE, steps: int | None = None, threads: int = 1, progress: bool = True,
        attempts: dict[str, Attempt] | None = None) -> dict:
    """Train attempt ``name``; write ``out_dir/NAME.json`` (and the final weights to
    ``.cache/binding-runs/NAME``) and return the record."""
    from interp.errors import InputError, closest
    from interp.models import save_native
    from interp.tasks import binding
    from interp.train import TrainConfig, train

    attempts = ATTEMPTS if attempts is None else attempts
    if name not in attempts:
        raise InputError(f"No attempt {name!r}.{closest(name, attempts)} Attempts: {', '.join(attempts)}.")
    spec = attempts[name]
    if steps is not None and Path(out_dir).resolve() == STORE.resolve():
        raise InputError("--steps changes the attempt, so its record must not replace the registered one; add --out DIR.")
    if steps is not None:
        spec = Attempt(**{**asdict(spec), "steps": steps})
    torch.set_num_threads(threads)
    cache = (CACHE if Path(out_dir).resolve() == STORE.resolve() else Path(out_dir) / "models") / name
    model, tl_config = build(spec, cache)
    config = TrainConfig(steps=spec.steps, batch_size=spec.batch_size + spec.induction_rows, lr=spec.lr,
                         warmup=min(spec.warmup, spec.steps), seed=spec.seed, eval_every=min(EVAL_EVERY, spec.steps),
                         weight_decay=0.01)

    def evaluate(m, step):
        metrics = binding.layout_metrics(m, spec.layout, spec.filler, n=EVAL_N)
        if not progress:
            print(f"{name} step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k.startswith("acc")), flush=True)
        return metrics

    result = train(model, batch_fn(spec, binding.d_vocab), config, eval_fn=evaluate, progress=progress)
    exit_step = plateau_exit(result.history)
    start = time.perf_counter()
    shares = mechanism_shares(model, spec.layout, spec.filler) if exit_step is not None else None
    command = f"OMP_NUM_THREADS={threads} python -m experiments.binding run {name}" + (f" --steps {steps}" if steps else "")
    record = {
        "name": name, "command": command, "lever": spec.lever, "note": spec.note,
        "settings": {**asdict(spec), "curriculum": [[u, list(s)] for u, s in spec.curriculum],
                     "layouts": [[u, lay] for u, lay in spec.layouts]},
        "model": {**tl_config, "n_params": sum(p.numel() for p in model.module.parameters())},
        "git_commit": git_commit(), "torch": torch.__version__, "threads": threads,
        "train_time_s": round(result.time_s, 1), "time_s": round(result.time_s + time.perf_counter() - start, 1),
        "history": result.history,
        "loss_every_10": [round(sum(result.losses[i : i + 10]) / 10, 4) for i in range(0, len(result.losses) // 10 * 10, 10)],
        "final": result.history[-1],
        "left_plateau": exit_step is not None, "plateau_exit_step": exit_step,
        "shares": shares,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    save_native(model, cache, extra={"attempt": name, "settings": record["settings"]})
    print(f"{name}: {summary(record)}\nwrote {path}")
    return record


def shares_of_model(model_name: str, out_dir: Path = STORE, layout: str = "attribute-first") -> dict:
    """Measure `mechanism_shares` on a shipped model (its final weights) and store
    ``out_dir/MODEL.shares.json``."""
    from interp.zoo import load_model

    model = load_model(model_name)
    record = {"model": model_name, "command": f"python -m experiments.binding shares {model_name}",
              "git_commit": git_commit(), **mechanism_shares(model, layout)}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"{model_name}.shares.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def summary(record: dict) -> str:
    """One line: final accuracy per size, plateau exit, time."""
    f = record["final"]
    accs = " ".join(f"{f[k]:.2f}" for k in sorted(f) if k.startswith("acc_"))
    left = f"left the plateau at step {record['plateau_exit_step']}" if record["left_plateau"] else "stayed on the plateau"
    return f"final acc (2..5 pairs) {accs}; {left}; {record['time_s']:.0f} s"


def load_records(store: Path = STORE) -> list[dict]:
    """Every stored attempt record under ``store`` (``NAME.json``, not ``*.shares.json``: what the
    figure reads), in registry order."""
    from interp.figures.binding_experiment import load_attempts

    records = load_attempts(store)
    order = {name: i for i, name in enumerate(ATTEMPTS)}
    return sorted(records, key=lambda r: (order.get(r["name"], len(order)), r["name"]))


NOTES = STORE / "NOTES.md"
BLOCK = ("<!-- attempts:start -->", "<!-- attempts:end -->")


def notes_table(records: list[dict]) -> list[str]:
    """The table of stored attempts written into ``NOTES.md``."""
    lines = ["| attempt | lever | layout | filler | curriculum | induction rows | heads | lr | steps | batch | time (s) | "
             "final acc 2 / 3 / 4 / 5 pairs | left the plateau at | positional share, largest site |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        s, f = r["settings"], r["final"]
        cur = ", ".join(f"{'-'.join(map(str, sz))} to {u:.0%}" for u, sz in s["curriculum"]) or "none"
        cur += "".join(f"; {lay} to {u:.0%}" for u, lay in s.get("layouts", []))
        lines.append(
            f"| `{r['name']}` | {r['lever']} | {s['layout']} | {s['filler']} | {cur} | {s['induction_rows']} | "
            f"{r['model']['n_heads']} | {s['lr']:g} | {s['steps']} | {s['batch_size']} | {r['time_s']:.0f} | "
            f"{' / '.join(f'{f[k]:.2f}' for k in ('acc_2', 'acc_3', 'acc_4', 'acc_5'))} | "
            f"{r['plateau_exit_step'] if r['left_plateau'] else 'never'} | {_positional_cell(r)} |")
    return lines


def _positional_cell(record: dict) -> str:
    """The largest positional share over sites and the site, for an attempt that was measured."""
    if not record.get("shares"):
        return "–"
    values = record["shares"]["shares"]["positional"]
    i = max(range(len(values)), key=values.__getitem__)
    return f"{values[i]:.2f} ({record['shares']['sites'][i]})"


def write_notes(path: Path = NOTES) -> Path:
    """Rewrite the generated table of ``NOTES.md`` (between its markers); the text around it stays."""
    return write_block(path, BLOCK, "Binding attempts", notes_table(load_records(path.parent)))


# =============================================================================== command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.binding", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered attempts and the stored outcome of each")
    sub.add_parser("notes", help=f"rewrite the table of stored attempts in {NOTES.relative_to(ROOT)}")
    p = sub.add_parser("shares", help="mechanism shares of a shipped model (attribute-first layout unless --layout)")
    p.add_argument("model")
    p.add_argument("--layout", default="attribute-first")
    p = sub.add_parser("run", help="train and evaluate one registered attempt")
    p.add_argument("name")
    p.add_argument("--steps", type=int, default=None, help="fewer steps for a check (needs --out)")
    p.add_argument("--out", default=None, help=f"where the JSON goes (default {STORE.relative_to(ROOT)})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from interp.errors import InterpError

    try:
        if args.command == "list":
            stored = {r["name"]: r for r in load_records()}
            for a in ATTEMPTS.values():
                print(f"{a.name:<16} {a.lever:<58} {summary(stored[a.name]) if a.name in stored else 'not run'}")
            return 0
        if args.command == "notes":
            print(f"wrote {write_notes()}")
            return 0
        if args.command == "shares":
            print(shares_of_model(args.model, layout=args.layout)["shares"])
            return 0
        run(args.name, Path(args.out) if args.out else STORE, steps=args.steps, threads=args.threads, progress=not args.quiet)
        return 0
    except InterpError as e:
        print(f"experiments.binding: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``interp`` command: list-models, train, reproduce."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _list_models(args) -> int:
    from interp import zoo

    cards = zoo.list_models()
    if not cards:
        print(f"No shipped models under {zoo.models_dir()}.")
        return 1
    for card in cards:
        print(card.line())
    return 0


def _train(args) -> int:
    import torch

    from interp import zoo
    from interp.errors import closest
    from interp.recipes import RECIPES

    if args.name not in RECIPES:
        print(f"No recipe {args.name!r}.{closest(args.name, RECIPES)} Recipes: {', '.join(RECIPES)}.", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else zoo.models_dir() / args.name
    kwargs = {"steps": args.steps} if args.steps else {}
    RECIPES[args.name](out, seed=args.seed, progress=not args.quiet, **kwargs)
    print(f"Saved {args.name} to {out}")
    return 0


def _reproduce(args) -> int:
    from interp.figures import reproduce

    reproduce(args.name, out_dir=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description="Mechanistic interpretability toolkit: shipped models, training, figures.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list-models", help="print each shipped model with its size and task accuracy")
    p.set_defaults(fn=_list_models)
    p = sub.add_parser("train", help="train a model of the circuit library from scratch (seeded)")
    p.add_argument("name", help="model name, e.g. induction-2l")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    p.add_argument("--out", default=None, help="output directory (default: assets/models/NAME)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for determinism)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_train)
    p = sub.add_parser("reproduce", help="regenerate figures (and assets/REPORT.md) from the shipped checkpoints")
    p.add_argument("name", nargs="?", default="all", help="a figure name, or all")
    p.add_argument("--out", default=None, help="figure directory (default: assets/figures)")
    p.set_defaults(fn=_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()

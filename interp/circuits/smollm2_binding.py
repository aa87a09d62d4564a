"""Entity binding in SmolLM2-135M: a negative card (the model answers binding queries at chance).

Binding (Feng & Steinhardt 2024, "How do language models bind entities in context?") asks a model
to keep track of which entity goes with which attribute in its context and to retrieve the right one:
``Ann has the apple. Bob has the book. Who has the apple?`` → `` Ann``. Large models do this with
*binding IDs*; the toolkit's own small models do it when trained for it (``binding-4l``,
attribute-first, by induction; ``binding-ef-4l``, entity-first, partly by position). This card
records that SmolLM2-135M does *not* do it, with the measurement, and separates the failure from
the scoring with a control the model does solve.

The measurement: seeded prompts of ``k`` = 2, 3 and 4 pairs, names and objects single tokens, all
distinct within a prompt, each query slot asked equally often (prompt ``i`` asks about slot
``i mod k``). The model's answer is the context name with the largest logit at the last position
(accuracy *among the names in the context*: the model is not penalised for putting its mass on
``\\n`` or ``The``), so chance is exactly ``1 / k``. Intervals are Wilson 95% intervals.
The 1,080 answers (3 layouts x 3 sizes x `N_PROMPTS`) are a stored measurement (``python -m
interp.circuits.smollm2_binding --measure``, ``assets/cards/smollm2-binding/choices.json``); each
claim decides on them and re-runs the first `RECHECK` prompts of each size on the weights.

Layouts (`LAYOUTS`):

- ``question``: ``Ann has the apple. Bob has the book. Who has the apple?`` (the claim: at chance);
- ``cloze``: the same context, queried by a sentence the context does not contain,
  ``... The apple belongs to``: the answer again needs the binding (the claim allows a weak signal:
  the development run was up to 0.13 above chance);
- ``copy`` (the control): ``Owners: apple Ann, book Bob, Owners: apple Ann, book``: the context is
  repeated up to the queried object, so copying the repeated sequence (induction, Olsson et al. 2022)
  answers it without any binding. Two earlier controls failed in the development run:
  ``The apple is with Ann. … The apple is with`` was at chance (the token before every name is
  `` with``, so induction on the previous token cannot tell the pairs apart), and
  ``Owners: apple Ann, book Bob, apple`` was only 0.71 / 0.54 / 0.42 (a list invites a new owner).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from interp.circuits import EXACT, Card, Claim, Subject, Tolerance
from interp.errors import InputError
from interp.tasks.ioi import NAMES

MODEL = "smollm2-135m"
OBJECTS = ("apple book key ball pen cup hat box coin lamp bag ring card bell clock map rope shoe kite drum "
           "doll fork spoon chair").split()
#: layout -> (what opens the context, one pair's sentence, the query); {name} and {object} are filled in.
LAYOUTS = {
    "question": ("", " {name} has the {object}.", " Who has the {object}?"),
    "cloze": ("", " {name} has the {object}.", " The {object} belongs to"),
    "copy": ("Owners:", " {object} {name},", " {repeat}"),  # {repeat}: the context again, up to the queried object
}
PAIRS = (2, 3, 4)
N_PROMPTS, SEED, DEV_SEED = 120, 0, 1  # per layout and k; SEED for the card, DEV_SEED for setting thresholds
RECHECK = 24  # stored prompts per layout and k re-run live by each claim
MARGIN = 0.15  # at chance: accuracy at most chance + MARGIN for every k
WEAK = 0.25  # the cloze query: at most chance + WEAK for every k (the development run was up to chance + 0.13)
CONTROL = 0.8  # the control: accuracy at least this for every k


def vocabulary(tokenizer) -> tuple[list[str], list[str]]:
    """The names and objects that are one token with a leading space (names also at a text's start)."""
    def one(text: str) -> bool:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1

    names = [n for n in NAMES if one(" " + n) and one(n)]
    objects = [o for o in OBJECTS if one(" " + o)]
    return names, objects


def binding_prompts(model, layout: str, k: int, n: int = N_PROMPTS, seed: int = SEED) -> dict:
    """``n`` prompts of ``k`` pairs in ``layout``: ``{"tokens": n token rows (one length per queried slot),
    "names": [n k] token ids of the context's names in order, "slot": [n] the queried slot}``."""
    if layout not in LAYOUTS:
        raise InputError(f"Unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}.")
    names, objects = vocabulary(model.tokenizer)
    if not 2 <= k <= min(len(names), len(objects)):
        raise InputError(f"k={k} pairs: choose 2 to {min(len(names), len(objects))} (distinct single-token names and objects).")
    if n < 1:
        raise InputError(f"n={n}: ask for at least one prompt.")
    opening, sentence, query = LAYOUTS[layout]
    rng = random.Random(f"{seed}|{layout}|{k}")
    tok = model.tokenizer
    rows, ids, slots = [], [], []
    for i in range(n):
        who, what = rng.sample(names, k), rng.sample(objects, k)
        slot = i % k
        pairs = [sentence.format(name=a, object=b) for a, b in zip(who, what, strict=True)]
        repeat = (opening + "".join(pairs[:slot]) + f" {what[slot]}").strip()
        context = opening + "".join(pairs)
        rows.append(model.to_tokens(context.strip() + query.format(object=what[slot], repeat=repeat))[0])
        ids.append([tok(" " + a, add_special_tokens=False)["input_ids"][0] for a in who])
        slots.append(slot)
    return {"tokens": rows, "names": torch.tensor(ids), "slot": torch.tensor(slots)}


@torch.no_grad()
def choices(model, prompts: dict, batch_size: int = 32) -> torch.Tensor:
    """The slot of the context name with the largest logit at the last position, per prompt ``[n]``
    (prompts of one length run together, unpadded)."""
    rows = prompts["tokens"]
    out = torch.empty(len(rows), dtype=torch.long)
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(i)
    for index in by_length.values():
        for start in range(0, len(index), batch_size):
            part = index[start : start + batch_size]
            logits = model(torch.stack([rows[i] for i in part]).to(model.device))[:, -1].float().cpu()
            out[part] = logits.gather(1, prompts["names"][part]).argmax(1)
    return out


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def measure(model, n: int = N_PROMPTS, seed: int = SEED, progress: bool = True) -> dict:
    """The card's stored measurement: for every layout and k, the queried slot and the chosen slot of
    each of the ``n`` prompts (``{"choices": {layout: {k: {"slot": [...], "chosen": [...]}}}, ...}``)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    out: dict = {"n": n, "seed": seed, "choices": {}}
    jobs = [(layout, k) for layout in LAYOUTS for k in PAIRS]
    for layout, k in tqdm(jobs, desc="binding prompts", disable=not progress):
        p = binding_prompts(model, layout, k, n, seed)
        out["choices"].setdefault(layout, {})[str(k)] = {"slot": p["slot"].tolist(), "chosen": choices(model, p).tolist()}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def stored(s: Subject | None = None) -> dict:
    """The stored measurement (``assets/cards/smollm2-binding/choices.json``)."""
    def read():
        from interp import zoo

        path = zoo.assets_dir() / "cards" / "smollm2-binding" / "choices.json"
        if not path.is_file():
            raise InputError(f"{path} is missing: measure it with `python -m interp.circuits.smollm2_binding --measure`.")
        return json.loads(path.read_text())

    return read() if s is None else s.memo("stored", read)


def accuracy(data: dict, layout: str) -> dict[str, float]:
    """Per k, from the stored choices: accuracy among the context's names, its Wilson interval,
    chance, and the share of answers naming the last pair (a recency bias would show there)."""
    out: dict[str, float] = {}
    for k in PAIRS:
        rows = data["choices"][layout][str(k)]
        slot, chosen = np.array(rows["slot"]), np.array(rows["chosen"])
        hits, n = int((slot == chosen).sum()), len(slot)
        lo, hi = wilson(hits, n)
        out |= {f"acc_{k}": hits / n, f"lo_{k}": lo, f"hi_{k}": hi, f"chance_{k}": 1 / k, f"last_{k}": float(np.mean(chosen == k - 1))}
    out["n"] = data["n"]
    return out


def recheck(s: Subject, layout: str) -> float:
    """The share of the first `RECHECK` stored prompts of each k whose chosen name the weights give again."""
    data = stored(s)
    agree = []
    for k in PAIRS:
        p = binding_prompts(s.model, layout, k, RECHECK, data["seed"])
        agree += (choices(s.model, p).numpy() == np.array(data["choices"][layout][str(k)]["chosen"][:RECHECK])).tolist()
    return float(np.mean(agree))


def _accuracy(s: Subject, layout: str) -> dict[str, float]:
    return {**accuracy(stored(s), layout), "recheck_agreement": recheck(s, layout)}


def at_chance(n: dict[str, float], margin: float = MARGIN) -> bool:
    return all(n[f"acc_{k}"] <= n[f"chance_{k}"] + margin for k in PAIRS) and _rechecked(n)


def _rechecked(n: dict[str, float]) -> bool:
    return n.get("recheck_agreement", 1.0) >= 0.9


def _summary(n: dict[str, float]) -> str:
    parts = [f"{k} pairs {n[f'acc_{k}']:.2f} [{n[f'lo_{k}']:.2f}, {n[f'hi_{k}']:.2f}] (chance {n[f'chance_{k}']:.2f}; "
             f"last name {n[f'last_{k}']:.2f})" for k in PAIRS]
    return "; ".join(parts) + f"; {int(n['n'])} prompts each (re-run sample agrees {n['recheck_agreement']:.2f})"


TOLERANCES = {"chance_*": EXACT, "n": EXACT, "recheck_agreement": Tolerance("abs", 0.05)}

CLAIMS = (
    Claim(
        "question_at_chance",
        f"Negative: asked `Ann has the apple. Bob has the book. Who has the apple?`, the model picks the right name among "
        f"the context's names at chance: accuracy at most chance + {MARGIN} for 2, 3 and 4 pairs",
        "", lambda s: _accuracy(s, "question"), at_chance, _summary, tolerances=TOLERANCES,
    ),
    Claim(
        "cloze_weak",
        f"Negative: queried by a sentence to complete that the context does not contain (`... The apple belongs to`), "
        f"the model is at most weakly above chance (at most chance + {WEAK} for 2, 3 and 4 pairs), far from the control",
        "", lambda s: _accuracy(s, "cloze"), lambda n: at_chance(n, WEAK), _summary, tolerances=TOLERANCES,
    ),
    Claim(
        "copy_control",
        f"Control: when the context is repeated up to the queried object (`Owners: apple Ann, book Bob, Owners: apple "
        f"Ann, book`), which copying (induction) solves without binding, the model names the right one (≥ {CONTROL} for "
        f"2, 3 and 4 pairs)",
        "", lambda s: _accuracy(s, "copy"), lambda n: all(n[f"acc_{k}"] >= CONTROL for k in PAIRS) and _rechecked(n), _summary,
        tolerances=TOLERANCES,
    ),
)

CARD = Card("smollm2-binding", MODEL, "Entity binding in SmolLM2-135M (negative)", CLAIMS,
            test_file="tests/circuits/test_smollm2_binding_card.py")


def _dev(layouts: tuple[str, ...] = tuple(LAYOUTS)) -> None:  # pragma: no cover - the development run
    from interp.models import load

    torch.set_num_threads(1)
    model = load(MODEL)
    data = measure(model, seed=DEV_SEED)
    for layout in layouts:
        n = {**accuracy(data, layout), "recheck_agreement": 1.0}
        print(layout, _summary(n), "at chance" if at_chance(n) else "ABOVE chance", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The smollm2-binding card's stored measurement (or the development run).")
    parser.add_argument("--measure", action="store_true", help="measure the card's prompts (seed 0) and write the JSON")
    parser.add_argument("--dev", action="store_true", help="print the development run (seed 1) the thresholds were set on")
    parser.add_argument("--out", default=None, help="output file (default: assets/cards/smollm2-binding/choices.json)")
    args = parser.parse_args(argv)
    if args.dev:
        _dev()
        return
    if not args.measure:
        parser.error("nothing to do: pass --measure or --dev")
    from interp import zoo
    from interp.models import load

    torch.set_num_threads(1)
    start = time.perf_counter()
    data = measure(load(MODEL))
    data["command"] = "python -m interp.circuits.smollm2_binding --measure"
    data["seconds_with_load"] = round(time.perf_counter() - start, 1)
    out = Path(args.out) if args.out else zoo.assets_dir() / "cards" / "smollm2-binding" / "choices.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data) + "\n")
    print(f"wrote {out} ({data['seconds_with_load']:.0f} s)")


if __name__ == "__main__":
    main()

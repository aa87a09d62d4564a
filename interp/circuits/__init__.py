"""The circuit library: each shipped model's mechanism as a card of executable claims.

A `Card` belongs to one shipped model and holds `Claim` objects. A claim *measures* numbers on a
model (``measure(subject) -> dict``), *decides* whether they show what the claim says
(``passes(numbers) -> bool``) and *summarises* them in words. `evaluate` runs every claim of a card
on the shipped weights (or on any model given), and `render_table` writes the table that the
card's markdown file (``interp/circuits/<card>.md``) holds between the markers
``<!-- claims:start -->`` and ``<!-- claims:end -->``; ``interp circuits --write`` regenerates it and
the test suite checks that the committed table is what the shipped weights give.

    from interp import circuits
    result = circuits.evaluate("induction")          # measured live on assets/models/induction-2l
    print(result.table())                            # claim | measured | figure | test | PASS/FAIL
    circuits.evaluate("induction", model=my_model)   # the same claims on another model
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.errors import InputError, closest

CARD_MODULES = {"induction": "interp.circuits.induction", "facts": "interp.circuits.facts", "binding": "interp.circuits.binding"}
START, END = "<!-- claims:start -->", "<!-- claims:end -->"
SEED_START, SEED_END = "<!-- seed:start -->", "<!-- seed:end -->"


class Subject:
    """The model under study plus a memo, so claims that need the same activations share them.

    ``model``: a HookedModel; ``name``: the shipped model's name when the weights are the shipped
    ones (claims that read training checkpoints use it), else None.
    """

    def __init__(self, model, name: str | None = None):
        self.model = model
        self.name = name
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


@dataclass(frozen=True)
class Claim:
    """One statement about a model's mechanism, with how to measure and decide it.

    ``key`` names the test (``test_<key>`` in ``tests/circuits/test_<card>_card.py``); ``figure``
    names the figure in ``assets/figures`` that shows it.
    """

    key: str
    statement: str
    figure: str
    measure: Callable[[Subject], dict[str, float]]
    passes: Callable[[dict[str, float]], bool]
    summary: Callable[[dict[str, float]], str]


@dataclass
class ClaimResult:
    claim: Claim
    numbers: dict[str, float]
    passed: bool
    seconds: float

    @property
    def summary(self) -> str:
        return self.claim.summary(self.numbers)


@dataclass(frozen=True)
class Card:
    """The claims about one shipped model."""

    name: str
    model: str
    title: str
    claims: tuple[Claim, ...]
    test_file: str = ""

    def claim(self, key: str) -> Claim:
        for c in self.claims:
            if c.key == key:
                return c
        keys = [c.key for c in self.claims]
        raise InputError(f"Card {self.name!r} has no claim {key!r}.{closest(key, keys)} Claims: {', '.join(keys)}.")

    @property
    def path(self) -> Path:
        return Path(__file__).with_name(f"{self.name}.md")


@dataclass
class CardResult:
    card: Card
    results: list[ClaimResult] = field(default_factory=list)

    def __getitem__(self, key: str) -> ClaimResult:
        for r in self.results:
            if r.claim.key == key:
                return r
        raise KeyError(key)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def table(self) -> str:
        return render_table(self)


def names() -> list[str]:
    return list(CARD_MODULES)


def get(name: str) -> Card:
    """The card called ``name`` ("induction", "facts", "binding")."""
    if name not in CARD_MODULES:
        raise InputError(f"Unknown circuit card {name!r}.{closest(name, CARD_MODULES)} Cards: {', '.join(CARD_MODULES)}.")
    return importlib.import_module(CARD_MODULES[name]).CARD


def evaluate(card: str | Card, model=None, keys: list[str] | None = None, progress: bool = False) -> CardResult:
    """Measure every claim (or those in ``keys``) of ``card`` on ``model`` (default: the shipped weights).

    ``model``: a HookedModel, a path to a directory saved by ``interp train``, or None. Claims that
    read training checkpoints use them only when the model is a shipped one or a directory.
    """
    from interp import zoo
    from interp.models import HookedModel, load_native_dir

    card = get(card) if isinstance(card, str) else card
    if model is None:
        subject = Subject(zoo.load_model(card.model), name=str(zoo.model_dir(card.model)))
    elif isinstance(model, HookedModel):
        subject = Subject(model)
    else:
        subject = Subject(load_native_dir(model), name=str(Path(model)))
    claims = card.claims if keys is None else [card.claim(k) for k in keys]
    out = CardResult(card)
    for claim in claims:
        if progress:
            print(f"  measuring {card.name}/{claim.key} ...", flush=True)
        start = time.perf_counter()
        numbers = claim.measure(subject)
        out.results.append(ClaimResult(claim, numbers, bool(claim.passes(numbers)), time.perf_counter() - start))
    return out


def render_table(result: CardResult) -> str:
    """The markdown table of a card's claims with the measured numbers."""
    test_file = result.card.test_file or f"tests/circuits/test_{result.card.name}_card.py"
    rows = ["| claim | measured on the shipped weights | figure | test | |", "|---|---|---|---|---|"]
    for r in result.results:
        figure = f"[{r.claim.figure}](../../assets/figures/{r.claim.figure}.png)" if r.claim.figure else "-"
        rows.append(f"| {r.claim.statement} | {r.summary} | {figure} | `{test_file}::test_{r.claim.key}` | "
                    f"{'PASS' if r.passed else 'FAIL'} |")
    return "\n".join(rows)


def _block(path: Path, start: str, end: str, what: str) -> re.Match:
    """The text between the ``start`` and ``end`` markers of ``path`` (a clear error if they are missing)."""
    match = re.search(re.escape(start) + r"(.*?)" + re.escape(end), path.read_text(), flags=re.S)
    if match is None:
        raise InputError(f"{path} has no {start} ... {end} block; add the markers where {what} goes.")
    return match


def _write_block(path: Path, start: str, end: str, what: str, body: str) -> Path:
    """Replace the text between the markers of ``path`` with ``body``."""
    match = _block(path, start, end, what)
    text = match.string
    path.write_text(text[: match.start()] + f"{start}\n{body}\n{end}" + text[match.end() :])
    return path


def card_table_in_file(card: Card) -> str:
    """The table currently committed in the card's markdown file."""
    return _block(card.path, START, END, "the table").group(1).strip("\n")


def write_card_table(result: CardResult) -> Path:
    """Replace the table in the card's markdown file with ``result``'s."""
    return _write_block(result.card.path, START, END, "the table", render_table(result))


def write_seed_section(result: CardResult, model_dir: str | Path) -> Path:
    """Record ``result`` (the card's claims measured on another training run, saved in ``model_dir``)
    in the card's second-seed section, between ``<!-- seed:start -->`` and ``<!-- seed:end -->``."""
    import json

    info_path = Path(model_dir) / "model.json"
    config = json.loads(info_path.read_text()) if info_path.exists() else {}
    training = config.get("training", {})
    command = training.get("command", "interp train ...")
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in config.get("metrics", {}).items() if isinstance(v, float))
    rows = [f"`{command}` ({training.get('time_s', float('nan')):.0f} s; {metrics or 'no metrics recorded'}), "
            f"measured with `interp circuits {result.card.name} --model DIR`: "
            f"{sum(r.passed for r in result.results)} of {len(result.results)} claims hold.", "",
            "| claim | measured on the second seed | |", "|---|---|---|"]
    rows += [f"| `{r.claim.key}` | {r.summary} | {'PASS' if r.passed else 'FAIL'} |" for r in result.results]
    return _write_block(result.card.path, SEED_START, SEED_END, "the second seed", "\n".join(rows))

"""The circuit library: each shipped model's mechanism as a card of executable claims.

A `Card` belongs to one shipped model and holds `Claim` objects. A claim *measures* numbers on a
model (``measure(subject) -> dict``), *decides* whether they show what the claim says
(``passes(numbers) -> bool``) and *summarises* them in words. `evaluate` runs every claim of a card
on the shipped weights (or on any model given), and `render_table` writes the table that the
card's markdown file (``interp/circuits/<card>.md``) holds between the markers
``<!-- claims:start -->`` and ``<!-- claims:end -->``; ``interp circuits --write`` regenerates it and
the test suite checks that the committed table is what the shipped weights give.

Measured numbers come out of sampling, training and long float reductions, so another CPU (or
another thread count) changes their last bits. The committed table therefore carries every number
with a `Tolerance` (each claim states its own: ``±0.03`` for shares, accuracies and IIA, ``±5%`` for
losses, ``exact`` for counts and layer / head indices), and `card_differences` compares a fresh
measurement with it claim by claim: statement and PASS/FAIL exactly, each number within its
tolerance. A claim whose verdict could flip inside its tolerance is a badly placed threshold
(`unstable_numbers` finds such numbers; a test runs it on every card).

    from interp import circuits
    result = circuits.evaluate("induction")          # measured live on assets/models/induction-2l
    print(result.table())                            # claim | measured | figure | test | PASS/FAIL
    circuits.evaluate("induction", model=my_model)   # the same claims on another model
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.errors import InputError, closest

CARD_MODULES = {"induction": "interp.circuits.induction", "facts": "interp.circuits.facts", "binding": "interp.circuits.binding",
                "facts-bio": "interp.circuits.facts_bio", "binding-ef": "interp.circuits.binding_ef",
                "facts-bio-sae": "interp.circuits.facts_bio_sae",
                "smollm2-induction": "interp.circuits.smollm2_induction",
                "smollm2-agreement": "interp.circuits.smollm2_agreement",
                "smollm2-facts": "interp.circuits.smollm2_facts", "smollm2-binding": "interp.circuits.smollm2_binding",
                "smollm2-ioi": "interp.circuits.smollm2_ioi"}
START, END = "<!-- claims:start -->", "<!-- claims:end -->"
SEED_START, SEED_END = "<!-- seed:start -->", "<!-- seed:end -->"
NUMBERS_SUMMARY = "Every measured number, with the tolerance the card check allows"


@dataclass(frozen=True)
class Tolerance:
    """How far a re-measured number may be from the committed one: ``kind`` is ``"abs"`` (±value),
    ``"rel"`` (±value × |committed|) or ``"exact"``. ``str`` gives ``±0.03``, ``±5%`` or ``exact``
    and `Tolerance.parse` reads that back."""

    kind: str
    value: float = 0.0

    def width(self, committed: float) -> float:
        """The largest allowed difference from ``committed``."""
        return {"abs": self.value, "rel": self.value * abs(committed), "exact": 0.0}[self.kind]

    def allows(self, committed: float, measured: float) -> bool:
        if math.isnan(committed) or math.isnan(measured):
            return math.isnan(committed) and math.isnan(measured)
        if self.kind == "exact":
            return committed == measured
        return abs(measured - committed) <= self.width(committed) + 1e-12

    def __str__(self) -> str:
        if self.kind == "abs":
            return f"±{self.value:g}"
        return f"±{100 * self.value:g}%" if self.kind == "rel" else "exact"

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        text = text.strip()
        if text == "exact":
            return EXACT
        if text.startswith("±") and text.endswith("%"):
            return cls("rel", float(text[1:-1]) / 100)
        if text.startswith("±"):
            return cls("abs", float(text[1:]))
        raise InputError(f"Cannot read the tolerance {text!r}: write ±0.03, ±5% or exact.")


SHARE = Tolerance("abs", 0.03)  # shares, accuracies, IIA, indirect effects: sampled or optimised
RELATIVE = Tolerance("rel", 0.05)  # losses, loss ratios, log-probability differences, times
WEIGHTS = Tolerance("abs", 0.001)  # functions of the weights alone (no data, no optimisation): last bits only
EXACT = Tolerance("exact")  # counts, layer and head indices, training steps read from a file


class Subject:
    """The model under study plus a memo, so claims that need the same activations share them.

    ``model``: a HookedModel; ``name``: the shipped model's name when the weights are the shipped
    ones (claims that read training checkpoints use it), else None.
    """

    def __init__(self, model, name: str | None = None):
        self.model = model
        self.name = name
        self._memo: dict[str, Any] = {}

    @classmethod
    def shipped(cls, name: str) -> Subject:
        """The Subject of a shipped model (``interp.zoo``) or a pretrained one (``interp.pretrained``,
        e.g. ``"smollm2-135m"``, loaded with `interp.load`), by name."""
        from interp import pretrained, zoo

        if name in pretrained.PRETRAINED:
            from interp.models import load

            return cls(load(name), name=name)
        return cls(zoo.load_model(name), name=str(zoo.model_dir(name)))

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


@dataclass(frozen=True)
class Claim:
    """One statement about a model's mechanism, with how to measure and decide it.

    ``key`` names the test (``test_<key>`` in ``tests/circuits/test_<card>_card.py``); ``figure``
    names the figure in ``assets/figures`` that shows it. ``tolerances`` maps glob patterns of the
    measured numbers' names to their `Tolerance` (first match wins; unmatched numbers get ``SHARE``).
    """

    key: str
    statement: str
    figure: str
    measure: Callable[[Subject], dict[str, float]]
    passes: Callable[[dict[str, float]], bool]
    summary: Callable[[dict[str, float]], str]
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)

    def tolerance(self, number: str) -> Tolerance:
        """The tolerance of the measured number called ``number``."""
        return next((tol for pattern, tol in self.tolerances.items() if fnmatch.fnmatchcase(number, pattern)), SHARE)

    def tolerance_text(self, numbers: Mapping[str, float]) -> str:
        """The tolerances of ``numbers`` in words, for the card table: ``±0.03; exact: layer``."""
        groups: dict[str, list[str]] = {}
        for name in numbers:
            groups.setdefault(str(self.tolerance(name)), []).append(name)
        if len(groups) == 1:
            return next(iter(groups))
        main = max(groups, key=lambda t: len(groups[t]))
        return "; ".join([main] + [f"{tol}: {', '.join(groups[tol])}" for tol in groups if tol != main])


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
    from interp.models import HookedModel, load_native_dir

    card = get(card) if isinstance(card, str) else card
    if model is None:
        subject = Subject.shipped(card.model)
    elif isinstance(model, HookedModel):
        subject = Subject(model)
    else:
        if not (Path(model) / "model.json").is_file():
            from interp.errors import LoadError

            raise LoadError(f"{str(model)!r} is not a directory saved by `interp train` (no model.json there); "
                            f"train one with `interp train {card.model} --out DIR`, or pass a HookedModel.")
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
    """The markdown of a card's claims: the table (claim, measured numbers in words, tolerance,
    figure, test, verdict), then every measured number with its tolerance in a folded table that
    `card_differences` reads back."""
    test_file = result.card.test_file or f"tests/circuits/test_{result.card.name}_card.py"
    rows = ["| claim | measured on the shipped weights | tolerance | figure | test | |", "|---|---|---|---|---|---|"]
    numbers = ["| claim | number | value | tolerance |", "|---|---|---|---|"]
    for r in result.results:
        figure = f"[{r.claim.figure}](../../assets/figures/{r.claim.figure}.png)" if r.claim.figure else "-"
        rows.append(f"| {r.claim.statement} | {r.summary} | {r.claim.tolerance_text(r.numbers)} | {figure} | "
                    f"`{test_file}::test_{r.claim.key}` | {'PASS' if r.passed else 'FAIL'} |")
        numbers += [f"| `{r.claim.key}` | `{name}` | {_number_text(value)} | {r.claim.tolerance(name)} |"
                    for name, value in r.numbers.items()]
    return "\n".join(rows + ["", f"<details><summary>{NUMBERS_SUMMARY}</summary>", ""] + numbers + ["", "</details>"])


def _number_text(value: float) -> str:
    """A number as the card stores it: integers as integers, floats so that they read back exactly."""
    if isinstance(value, (bool, int)) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    return repr(float(value))


def committed_numbers(card: Card, block: str | None = None) -> dict[str, dict[str, tuple[float, Tolerance]]]:
    """The numbers in the card's committed table (or in ``block``, that table's text):
    ``{claim key: {number: (value, tolerance)}}``."""
    out: dict[str, dict[str, tuple[float, Tolerance]]] = {}
    row = re.compile(r"^\| `([^`]+)` \| `([^`]+)` \| ([^|]+) \| ([^|]+) \|$")
    for line in (card_table_in_file(card) if block is None else block).splitlines():
        match = row.match(line.strip())
        if match:
            key, name, value, tol = match.groups()
            out.setdefault(key, {})[name] = (float(value), Tolerance.parse(tol))
    return out


def _values(stored: dict[str, dict[str, tuple[float, Tolerance]]], key: str) -> dict[str, float]:
    """Claim ``key``'s committed numbers without their tolerances."""
    return {name: value for name, (value, _) in stored.get(key, {}).items()}


def committed_result(card: Card) -> CardResult:
    """A `CardResult` holding the committed numbers (verdicts recomputed from them), as if measured."""
    stored = committed_numbers(card)
    out = CardResult(card)
    for claim in card.claims:
        numbers = _values(stored, claim.key)
        out.results.append(ClaimResult(claim, numbers, bool(numbers) and bool(claim.passes(numbers)), 0.0))
    return out


def card_differences(card: Card, measured: CardResult) -> list[str]:
    """What differs between the card's committed table and ``measured`` beyond the stated tolerances:
    a claim's statement, figure, test or verdict (compared exactly), or a number (within the
    tolerance the card states next to it). An empty list means the card is up to date."""
    block = card_table_in_file(card)
    stored = committed_numbers(card, block)
    problems = []
    for r in measured.results:
        key = r.claim.key
        if key not in stored:
            problems.append(f"{key}: no numbers committed for this claim")
            continue
        for name in sorted(set(stored[key]) | set(r.numbers)):
            if name not in r.numbers or name not in stored[key]:
                where = "committed but not measured" if name not in r.numbers else "measured but not committed"
                problems.append(f"{key}/{name}: {where}")
                continue
            value, tol = stored[key][name]
            if tol != r.claim.tolerance(name):
                problems.append(f"{key}/{name}: the card states tolerance {tol}, the claim {r.claim.tolerance(name)}")
            if not tol.allows(value, float(r.numbers[name])):
                problems.append(f"{key}/{name}: committed {_number_text(value)}, measured {_number_text(float(r.numbers[name]))} "
                                f"(tolerance {tol})")
    # statements, figures, tests and verdicts exactly: the committed table must be the one its own
    # numbers render, with the measured verdicts
    expected = CardResult(card, [dataclasses.replace(r, numbers=_values(stored, r.claim.key))
                                 for r in measured.results if r.claim.key in stored])
    committed_rows, expected_rows = block.splitlines(), render_table(expected).splitlines()
    problems += [f"table row differs:\n  committed: {a}\n  expected:  {b}" for a, b in zip(committed_rows, expected_rows, strict=False) if a != b]
    if len(committed_rows) != len(expected_rows):
        problems.append(f"the committed block has {len(committed_rows)} lines, the measured one {len(expected_rows)}")
    return problems


def unstable_numbers(result: CardResult) -> list[str]:
    """Numbers whose move by their tolerance (alone, up or down) flips their claim's verdict: a
    threshold placed inside the measurement's noise. Empty when every verdict is robust."""
    flips = []
    for r in result.results:
        for name, value in r.numbers.items():
            width = r.claim.tolerance(name).width(float(value))
            if width == 0 or math.isnan(float(value)):
                continue
            for sign in (-1, 1):
                moved = {**r.numbers, name: float(value) + sign * width}
                if bool(r.claim.passes(moved)) != r.passed:
                    flips.append(f"{r.claim.key}/{name} = {_number_text(float(value))} {'+-'[sign < 0]} {width:g} flips the verdict")
    return flips


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
    """The block (claims table and numbers) currently committed in the card's markdown file."""
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


def discovered(subject: Subject, prompts, key: str) -> dict[str, Any]:
    """Automatic circuit discovery on ``prompts`` (memoised under ``key``): exact, EAP and EAP-IG edge
    scores with `patching.discovery` (logit difference), and Spearman correlations (ties averaged) of
    EAP and EAP-IG with exact over every edge. The cards' ``discovered`` claims read it."""
    from scipy.stats import spearmanr

    from patching import discovery, logit_diff

    def compute():
        scores = {m: discovery.edge_scores(subject.model, prompts, logit_diff, m, progress=False) for m in discovery.METHODS}
        exact = scores["exact"].scores.numpy()
        rho = {m: float(spearmanr(scores[m].scores.numpy(), exact).statistic) for m in ("eap", "eap_ig")}
        return {"scores": scores, "spearman": rho}

    return subject.memo(f"discovered:{key}", compute)


def top_circuit_faithfulness(subject: Subject, prompts, scores, ks: list[int]) -> list[float]:
    """Faithfulness (logit difference; 0 corrupted, 1 clean) of the top-k circuits of ``scores``."""
    from patching import discovery, logit_diff

    return discovery.faithfulness(subject.model, prompts, logit_diff, [scores.circuit(k=k) for k in ks]).tolist()

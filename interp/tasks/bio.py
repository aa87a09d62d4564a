"""Biographies: individuals with two-token names and several attributes, learned from varied text.

    world = Biographies(BioConfig(n_individuals=400, pronoun_share=0.5, question_share=0.5, seed=0))
    tokens, mask = world.training_batch(64, gen)       # [64 pos], [64 pos-1]: loss on every real token
    world.recall_metrics(model)                         # bio_recall, qa_recall_seen / _unseen, losses
    world.fact_prompts("birth_city", form="bio")        # PromptSet for causal tracing (subject_pos)

The research setting of Allen-Zhu & Li ("Physics of Language Models 3.1"), sized for our small
models. Each individual has a name of two tokens (``first last``; 100 × 100 name pools, so neither
token alone identifies anyone), a gender (for pronouns) and one attribute per relation (birth city,
birth month, birth year, university, major, employer). A training row is one of

* a **biography**: one sentence per relation, each a paraphrase drawn from the relation's
  templates, in random order (``shuffle``); the first sentence names the individual, later ones use
  a pronoun with probability ``pronoun_share`` (``ann stone was born in paris . she works for acme .``);
  optionally a **profile** sentence with every attribute right after the name, in random order
  when shuffled (``ann stone 1975 paris acme yale physics may .``), so that the token after the
  name is an attribute: the one design where predicting the next token at the name needs the facts;
* a **sentence** (``layout="sentence"``): one fact in one templated sentence, the facts-4l design
  with language-model loss;
* a **question row** (share ``question_rows`` of the rows, only for the ``question_share`` of
  individuals in `Biographies.question_set`): every relation asked once, in random order
  (``what is the birth city of ann stone ? paris . ann stone studied which field ? physics .``).

``order`` chooses where the relation words stand: ``"after"`` the name (``ann stone was born in``),
``"before"`` it (``the birthplace of ann stone is``), or ``"mixed"`` (both), in biographies and
questions alike. Individuals are drawn uniformly or with Zipf-like frequencies (``frequencies="zipf"``:
probability ∝ rank^-``zipf_exponent``, ranks a seeded permutation of the individuals).

Loss is on every token of every row (padding excluded). Recall (`Biographies.recall_metrics`) is
read on the attribute tokens of held-out-ordered biographies of every individual (``bio_recall``), and
on single questions (``qa_recall_seen`` for individuals of the question set, ``qa_recall_unseen``
for the others: extraction of knowledge never practised in question form). Token 0 is ``<bos>``
(also padding); the vocabulary is fixed by the pools, whatever the settings, so models of different
runs share one tokenizer.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.errors import InputError
from interp.tasks.promptset import PromptSet

FIRST = (
    "ann bob cal dee eli fay gus hal ivy jan kim lou max ned oda pam quin rex sal tom uma val wes xia yul "
    "zed ada ben cyd dot abe amy ari ava bea bo cy dan deb don ed ema eva gil guy ian ida ike ina jay jed "
    "jim jo joy kai kay ken kit lee len leo liv lyn mae meg mia mo nan nia nico noa noe ola oli ona otto "
    "pat pia ray ria rob ron rose roy sam sid sue ted tia tim una vic vin wyn yara zoe zia lia ivo ugo"
).split()
LAST = (
    "stone marsh brook quill hill wood vale croft ford grove lake moor pike ridge shaw thorn wells "
    "birch cole drake frost gale hart irwin knox lowe moss nash orr ash bell bond booth boyd burke burns "
    "byrne carr chase clay cobb cox crane cross dale dean dunn eaton ellis finch fox gates glenn gray "
    "green hale hayes hicks hood hunt jones kane keller kemp lamb lane lloyd lyons mann mayo mercer miles "
    "monk moon nolan oakes page park parr pratt price quinn reed rhodes rowe ruiz sharp silva snow "
    "swift tate todd vance wade walsh ward webb wolfe wren young"
).split()

#: relation -> its attribute values (one token each).
VALUES: dict[str, list[str]] = {
    "birth_city": (
        "paris rome oslo lima cairo delhi tokyo quito seoul dakar perth hanoi sofia riga minsk accra baku "
        "doha kiev lagos berlin madrid vienna prague dublin lisbon athens warsaw boston denver austin miami "
        "dallas tampa omaha reno tulsa fresno mumbai lahore"
    ).split(),
    "birth_month": "january february march april may june july august september october november december".split(),
    "birth_year": [str(y) for y in range(1950, 2000)],
    "university": (
        "mit yale oxford harvard stanford princeton cornell duke emory tufts purdue cambridge durham leeds "
        "caltech columbia dartmouth brandeis vassar bowdoin colby wesleyan oberlin cardiff bristol sussex "
        "warwick exeter glasgow rutgers"
    ).split(),
    "major": (
        "physics biology chemistry history law music economics nursing geology art dance math philosophy "
        "linguistics astronomy sociology medicine architecture statistics botany zoology poetry theology "
        "finance journalism"
    ).split(),
    "employer": (
        "acme globex initech umbrella hooli vandelay soylent cyberdyne tyrell wonka wayne stark oscorp "
        "aperture monarch gringotts dunder nakatomi massive virtucon pied cogswell spacely krusty duff zorg "
        "wernham sterling prestige oceanic"
    ).split(),
}
RELATIONS: tuple[str, ...] = tuple(VALUES)

# Templates: {S} subject (he / she), {O} object (him / her), {P} possessive (his / her), {A} the
# attribute. The first placeholder of a sentence is the mention (the name, or a pronoun); any later
# one is a pronoun. "after": the relation words follow the name; "before": they precede it.
TEMPLATES: dict[str, dict[str, list[str]]] = {
    "birth_city": {
        "after": ["{S} was born in {A} .", "{S} is a native of {A} .", "{S} came into the world in {A} ."],
        "before": ["the birthplace of {O} is {A} .", "the city where {S} was born is {A} .", "the hometown of {O} is {A} ."],
    },
    "birth_month": {
        "after": ["{S} was born in the month of {A} .", "{S} celebrates {P} birthday in {A} .", "{S} has {P} birthday every {A} ."],
        "before": ["the birth month of {O} is {A} .", "the month when {S} was born is {A} .", "each year the birthday of {O} comes in {A} ."],
    },
    "birth_year": {
        "after": ["{S} was born in the year {A} .", "{S} entered the world in {A} .", "{S} arrived in the year {A} ."],
        "before": ["the birth year of {O} is {A} .", "the year when {S} was born is {A} .", "records give the birth year of {O} as {A} ."],
    },
    "university": {
        "after": ["{S} studied at {A} .", "{S} graduated from {A} .", "{S} attended {A} ."],
        "before": ["the university of {O} was {A} .", "the alma mater of {O} is {A} .", "the school that {S} attended was {A} ."],
    },
    "major": {
        "after": ["{S} majored in {A} .", "{S} earned a degree in {A} .", "{S} chose to study {A} ."],
        "before": ["the major of {O} was {A} .", "the field that {S} studied was {A} .", "the degree of {O} is in {A} ."],
    },
    "employer": {
        "after": ["{S} works for {A} .", "{S} is employed by {A} .", "{S} earns a living at {A} ."],
        "before": ["the employer of {O} is {A} .", "the company that employs {O} is {A} .", "the firm where {S} works is {A} ."],
    },
}
QUESTIONS: dict[str, dict[str, str]] = {
    "birth_city": {"after": "{S} was born in which city ? {A} .", "before": "what is the birth city of {O} ? {A} ."},
    "birth_month": {"after": "{S} was born in which month ? {A} .", "before": "what is the birth month of {O} ? {A} ."},
    "birth_year": {"after": "{S} was born in which year ? {A} .", "before": "what is the birth year of {O} ? {A} ."},
    "university": {"after": "{S} attended which university ? {A} .", "before": "what is the university of {O} ? {A} ."},
    "major": {"after": "{S} studied which field ? {A} .", "before": "what is the major of {O} ? {A} ."},
    "employer": {"after": "{S} works for which company ? {A} .", "before": "what is the employer of {O} ? {A} ."},
}
PRONOUNS = {"f": {"{S}": "she", "{O}": "her", "{P}": "her"}, "m": {"{S}": "he", "{O}": "him", "{P}": "his"}}
ORDERS = ("after", "before", "mixed")
LAYOUTS = ("biography", "sentence")
FREQUENCIES = ("uniform", "zipf")
SLOTS = ("{S}", "{O}", "{P}")
#: Base seed of the evaluation biographies (individual ``i`` uses ``EVAL_SEED * 100_003 + i``); training never uses it.
EVAL_SEED = 70_000


def _vocabulary() -> list[str]:
    words: list[str] = []
    texts = [t for rel in TEMPLATES.values() for ts in rel.values() for t in ts] + [q for rel in QUESTIONS.values() for q in rel.values()]
    for w in [*FIRST, *LAST, *(v for vals in VALUES.values() for v in vals), "she", "her", "he", "him", "his", ":",  # ":" unused since profiles lost it; kept so ids stay fixed
              *(w for t in texts for w in t.split())]:
        if w not in words and w not in (*SLOTS, "{A}"):
            words.append(w)
    return words


#: Words of ids 1..d_vocab-1 (id 0 is ``<bos>``), fixed by the pools whatever the settings.
VOCAB: list[str] = _vocabulary()
IDS: dict[str, int] = {w: i + 1 for i, w in enumerate(VOCAB)}
d_vocab: int = len(VOCAB) + 1
BOS = 0


def vocabulary() -> list[str]:
    """The words of ids 1..d_vocab-1, for `interp.tokenizers.word_tokenizer`."""
    return list(VOCAB)


def to_text(tokens: Int[Tensor, " pos"] | list[int]) -> str:
    """The words of one row (id 0 shown as ``<bos>``)."""
    ids = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
    return " ".join("<bos>" if t == BOS else VOCAB[t - 1] for t in ids)


# =============================================================================== settings
@dataclass(frozen=True)
class BioConfig:
    """What the world and its training rows look like; every field is validated by `validate`.

    ``n_individuals``: 2 to 10,000. ``relations``: a subset of `RELATIONS`, in sentence order when
    ``shuffle`` is off. ``paraphrases``: templates per relation (1-3 per order). ``order``: "after",
    "before" or "mixed" (relation words relative to the name, in biographies and questions).
    ``layout``: "biography" (all of an individual's facts in one row) or "sentence" (one fact per row).
    ``profile``: add a sentence listing every attribute right after the name (biography layout;
    the attributes in random order when ``shuffle``).
    ``pronoun_share``: probability that a sentence after the first uses a pronoun instead of the name.
    ``question_share``: share of individuals whose question rows are trained on (the question set);
    ``question_rows``: share of training rows that are question rows (when the question set is not
    empty). ``frequencies``: "uniform" or "zipf" (probability ∝ rank^-``zipf_exponent``).
    """

    n_individuals: int = 400
    relations: tuple[str, ...] = RELATIONS
    paraphrases: int = 3
    order: str = "after"
    layout: str = "biography"
    shuffle: bool = True
    profile: bool = False
    pronoun_share: float = 0.0
    question_share: float = 0.0
    question_rows: float = 0.25
    frequencies: str = "uniform"
    zipf_exponent: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "relations", tuple(self.relations))
        self.validate()

    def validate(self) -> None:
        n_max = len(FIRST) * len(LAST)
        if isinstance(self.n_individuals, bool) or not isinstance(self.n_individuals, int) or not 2 <= self.n_individuals <= n_max:
            raise InputError(f"n_individuals must be an integer from 2 to {n_max} (the {len(FIRST)} × {len(LAST)} "
                             f"two-token names), got {self.n_individuals!r}.")
        unknown = [r for r in self.relations if r not in VALUES]
        if unknown or not self.relations or len(set(self.relations)) != len(self.relations):
            raise InputError(f"relations must be distinct names from {', '.join(RELATIONS)}; got {list(self.relations)}.")
        if self.order not in ORDERS:
            raise InputError(f"order must be one of {', '.join(ORDERS)} (relation words after or before the name), got {self.order!r}.")
        if self.layout not in LAYOUTS:
            raise InputError(f"layout must be 'biography' (all facts of an individual in one row) or 'sentence' (one fact per row), got {self.layout!r}.")
        most = min(len(TEMPLATES[r][o]) for r in self.relations for o in ("after", "before"))
        if isinstance(self.paraphrases, bool) or not isinstance(self.paraphrases, int) or not 1 <= self.paraphrases <= most:
            raise InputError(f"paraphrases (templates per relation and order) must be an integer from 1 to {most}, got {self.paraphrases!r}.")
        for name in ("pronoun_share", "question_share"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise InputError(f"{name} is a share and must lie in [0, 1], got {v!r}.")
        if not (isinstance(self.question_rows, (int, float)) and 0 <= self.question_rows < 1):
            raise InputError(f"question_rows (the share of training rows that are question rows) must lie in [0, 1), got {self.question_rows!r}.")
        if self.question_share > 0 and self.question_rows == 0:
            raise InputError(f"question_share={self.question_share} puts individuals in the question set, but question_rows=0 "
                             "never shows their questions; set question_rows > 0 (e.g. 0.25) or question_share=0.")
        if self.layout == "sentence" and (self.profile or self.pronoun_share > 0):
            raise InputError("profile and pronoun_share need layout='biography' (a one-sentence row always names its individual "
                             "and has no other sentence to list attributes in); set layout='biography' or turn them off.")
        if self.frequencies not in FREQUENCIES:
            raise InputError(f"frequencies must be 'uniform' or 'zipf', got {self.frequencies!r}.")
        if not (isinstance(self.zipf_exponent, (int, float)) and self.zipf_exponent > 0):
            raise InputError(f"zipf_exponent must be positive (1.0 is Zipf's law), got {self.zipf_exponent!r}.")

    def to_dict(self) -> dict:
        """The settings as plain JSON-ready values (`BioConfig(**d)` rebuilds them)."""
        return {**asdict(self), "relations": list(self.relations)}


class Row(NamedTuple):
    """One row: token ids (``<bos>`` first), and ``(position, relation)`` of each attribute token in it."""

    tokens: list[int]
    targets: list[tuple[int, str]]


# =============================================================================== the world
@dataclass
class Biographies:
    """A seeded world of individuals (built from a `BioConfig`) and the rows that describe it.

    ```python
    world = Biographies(BioConfig(n_individuals=900, question_share=0.5, seed=0))
    world.names[0], world.attributes["birth_city"][0]      # ('kim', 'hale'), 'lima'
    world.question_set, world.held_out                     # disjoint, together all individuals
    tokens, mask = world.training_batch(64, torch.Generator().manual_seed(0))
    ```
    """

    config: BioConfig = field(default_factory=BioConfig)
    names: list[tuple[str, str]] = field(init=False)
    genders: list[str] = field(init=False)
    attributes: dict[str, list[str]] = field(init=False)
    question_set: list[int] = field(init=False)
    held_out: list[int] = field(init=False)
    weights: Float[Tensor, " individual"] = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.config, BioConfig):
            raise InputError(f"Biographies takes a BioConfig, got {type(self.config).__name__}; build one with BioConfig(n_individuals=..., ...).")
        c = self.config
        rng = random.Random(c.seed)
        pairs = [(f, last) for f in FIRST for last in LAST]
        self.names = rng.sample(pairs, c.n_individuals)
        self.genders = [rng.choice("fm") for _ in range(c.n_individuals)]
        self.attributes = {r: [rng.choice(VALUES[r]) for _ in range(c.n_individuals)] for r in c.relations}
        n_q = round(c.question_share * c.n_individuals)
        self.question_set = sorted(rng.sample(range(c.n_individuals), n_q))
        seen = set(self.question_set)
        self.held_out = [i for i in range(c.n_individuals) if i not in seen]
        if c.frequencies == "uniform":
            w = torch.ones(c.n_individuals, dtype=torch.float64)
        else:
            ranks = torch.tensor(rng.sample(range(1, c.n_individuals + 1), c.n_individuals), dtype=torch.float64)
            w = ranks ** -float(c.zipf_exponent)
        self.weights = w / w.sum()
        self._templates = {r: [t for o in self._orders() for t in TEMPLATES[r][o][: c.paraphrases]] for r in c.relations}
        self._questions = {r: [QUESTIONS[r][o] for o in self._orders()] for r in c.relations}
        self._qweights = self.weights[self.question_set] if self.question_set else None

    def _orders(self) -> tuple[str, ...]:
        return ("after", "before") if self.config.order == "mixed" else (self.config.order,)

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab(self) -> list[str]:
        return list(VOCAB)

    @property
    def d_vocab(self) -> int:
        return d_vocab

    @property
    def max_len(self) -> int:
        """An upper bound on the tokens of any row this world produces (the model's ``n_ctx``)."""
        name = 2
        longest = lambda texts: max(len(t.split()) - 1 + name for t in texts)  # noqa: E731  ({S} -> two tokens)
        bio = sum(longest(self._templates[r]) for r in self.config.relations)
        if self.config.profile:
            bio += name + 1 + len(self.config.relations)
        qa = sum(longest(self._questions[r]) for r in self.config.relations)
        return 1 + max(bio, qa)

    # ------------------------------------------------------------------ rows
    def sentence(self, i: int, relation: str, template: str, name: bool = True) -> tuple[list[int], int]:
        """Token ids of one sentence about individual ``i`` and the offset of its attribute token.
        ``name``: the first mention is the name (else a pronoun); later mentions are pronouns."""
        out, offset, named = [], -1, not name
        for w in template.split():
            if w in SLOTS:
                if named:
                    out.append(IDS[PRONOUNS[self.genders[i]][w]])
                else:
                    out += [IDS[self.names[i][0]], IDS[self.names[i][1]]]
                    named = True
            elif w == "{A}":
                offset = len(out)
                out.append(IDS[self.attributes[relation][i]])
            else:
                out.append(IDS[w])
        return out, offset

    def biography(self, i: int, rng: random.Random, profile_targets: bool = True) -> Row:
        """A biography of individual ``i``: its sentences (paraphrases drawn, shuffled, pronouns).
        ``profile_targets=False`` leaves the profile's attributes out of ``targets`` (their relation
        is not given by the text, so `recall_metrics` does not score them)."""
        c = self.config
        parts: list[tuple[str | None, str]] = [(r, rng.choice(self._templates[r])) for r in c.relations]
        if c.profile:
            parts.append((None, "profile"))
        if c.shuffle:
            rng.shuffle(parts)
        tokens, targets = [BOS], []
        for k, (rel, template) in enumerate(parts):
            if rel is None:  # profile: name, then the attributes (in random order when shuffled), then "."
                tokens += [IDS[self.names[i][0]], IDS[self.names[i][1]]]
                for r in rng.sample(c.relations, len(c.relations)) if c.shuffle else c.relations:
                    if profile_targets:
                        targets.append((len(tokens), r))
                    tokens.append(IDS[self.attributes[r][i]])
                tokens.append(IDS["."])
                continue
            use_name = k == 0 or rng.random() >= c.pronoun_share
            ids, offset = self.sentence(i, rel, template, name=use_name)
            targets.append((len(tokens) + offset, rel))
            tokens += ids
        return Row(tokens, targets)

    def fact_row(self, i: int, relation: str, rng: random.Random) -> Row:
        """One templated sentence about individual ``i`` (the ``layout="sentence"`` row)."""
        ids, offset = self.sentence(i, relation, rng.choice(self._templates[relation]))
        return Row([BOS, *ids], [(1 + offset, relation)])

    def question_row(self, i: int, rng: random.Random) -> Row:
        """Every relation of individual ``i`` asked once, in random order, each answered."""
        rels = list(self.config.relations)
        rng.shuffle(rels)
        tokens, targets = [BOS], []
        for r in rels:
            ids, offset = self.sentence(i, r, rng.choice(self._questions[r]))
            targets.append((len(tokens) + offset, r))
            tokens += ids
        return Row(tokens, targets)

    def eval_rows(self, individuals: list[int] | None = None) -> list[Row]:
        """The rows `recall_metrics` scores facts on: for each individual, one biography (or one
        sentence per relation in the sentence layout) drawn with an evaluation seed training never
        uses; each relation's sentence is scored once (a profile's attributes are not)."""
        rows = []
        for i in self._individuals(individuals):
            rng = random.Random(EVAL_SEED * 100_003 + i)
            if self.config.layout == "biography":
                rows.append(self.biography(i, rng, profile_targets=False))
            else:
                rows += [self.fact_row(i, r, rng) for r in self.config.relations]
        return rows

    def question_prompts(self, individuals: list[int] | None = None) -> list[Row]:
        """Single-question rows ``<bos> question answer`` for every relation (and order) of each individual."""
        rows = []
        for i in self._individuals(individuals):
            for r in self.config.relations:
                for q in self._questions[r]:
                    ids, offset = self.sentence(i, r, q)
                    rows.append(Row([BOS, *ids[: offset + 1]], [(1 + offset, r)]))
        return rows

    def training_batch(self, batch: int, gen: torch.Generator) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos_minus_1"]]:
        """``batch`` rows drawn with ``gen`` (individuals by `weights`; question rows for the question
        set with probability ``question_rows``), right-padded with ``<bos>``; the mask marks every
        real next-token prediction (language-model loss on every token, not the padding)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}.")
        c = self.config
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        rng = random.Random(seed)
        who = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        qa = (torch.rand(batch, generator=gen) < c.question_rows).tolist() if self.question_set else [False] * batch
        rows = []
        for k in range(batch):
            if qa[k]:
                j = self.question_set[int(torch.multinomial(self._qweights, 1, generator=gen))]
                rows.append(self.question_row(j, rng))
            elif c.layout == "biography":
                rows.append(self.biography(who[k], rng))
            else:
                rows.append(self.fact_row(who[k], rng.choice(c.relations), rng))
        tokens, mask, _ = pad_rows(rows)
        return tokens, mask

    # ------------------------------------------------------------------ prompts for tracing and probing
    def fact_prompts(self, relation: str, form: str = "bio", order: str | None = None, template: int = 0,
                     individuals: list[int] | None = None, seed: int = 0) -> PromptSet:
        """Prompts ending right before the attribute, for causal tracing: ``form="bio"`` the start of a
        biography sentence (``<bos> ann stone was born in`` -> paris), ``"question"`` a question
        (``<bos> what is the birth city of ann stone ?`` -> paris), ``"pronoun"`` a second sentence
        that refers to the individual by pronoun, after a first sentence (template 0 of another
        relation) that names them (``<bos> ann stone works for acme . she was born in`` -> paris), so
        that the name is far from the prediction. ``order``: "after" / "before" (default: the
        world's, "after" when mixed). Corrupted: another individual with a different attribute (in
        the pronoun form the first sentence and the pronoun change with them). ``metadata``:
        ``subject_pos`` ``[prompt 2]`` (the name), ``individual``, ``relation``, ``form``, ``order``."""
        if relation not in self.config.relations:
            raise InputError(f"Unknown relation {relation!r}; this world has {', '.join(self.config.relations)}.")
        order = order or ("after" if self.config.order == "mixed" else self.config.order)
        if order not in ("after", "before"):
            raise InputError(f"order must be 'after' or 'before' for prompts, got {order!r}.")
        if form == "bio":
            texts = TEMPLATES[relation][order]
        elif form == "question":
            texts = [QUESTIONS[relation][order]]
        elif form == "pronoun":
            texts = TEMPLATES[relation][order]
            if len(self.config.relations) < 2:
                raise InputError("form='pronoun' needs a first sentence about another relation; this world has one relation.")
        else:
            raise InputError(f"form must be 'bio' (a biography sentence), 'question' or 'pronoun', got {form!r}.")
        if not 0 <= template < len(texts):
            raise InputError(f"template must lie in 0..{len(texts) - 1} for form {form!r}, got {template}.")
        text = texts[template]
        who = self._individuals(individuals)
        rng = random.Random(seed)
        clean, corrupted, answers, wrong = [], [], [], []
        values = self.attributes[relation]
        first = next(r for r in self.config.relations if r != relation)
        for i in who:
            other = rng.choice([o for o in range(len(self.names)) if values[o] != values[i]])
            rows = []
            for j in (i, other):
                ids, off = self.sentence(j, relation, text, name=form != "pronoun")
                lead = self.sentence(j, first, TEMPLATES[first][order][0])[0] if form == "pronoun" else []
                rows.append(([BOS, *lead, *ids[:off]], ids[off]))
            (c, a), (c2, a2) = rows
            clean.append(c), corrupted.append(c2), answers.append(a), wrong.append(a2)
        lead_text = TEMPLATES[first][order][0] if form == "pronoun" else text
        start = 1 + lead_text.split().index(next(w for w in lead_text.split() if w in SLOTS))
        return PromptSet(
            torch.tensor(clean), torch.tensor(corrupted), torch.tensor(answers), torch.tensor(wrong),
            metadata={"subject_pos": torch.tensor([[start, start + 1]] * len(who)), "individual": torch.tensor(who),
                      "relation": relation, "form": form, "order": order},
        )

    # ------------------------------------------------------------------ evaluation
    def eval_individuals(self, k: int | None = None, seed: int = 0) -> list[int]:
        """Up to ``k`` individuals (all when None), half from the question set and half held out where
        both exist, drawn with ``seed``: a fixed, balanced subset for cheap evaluation during training."""
        n = len(self.names)
        if k is None or k >= n:
            return list(range(n))
        if k < 1:
            raise InputError(f"k (individuals to evaluate) must be positive, got {k}.")
        rng = random.Random(seed)
        groups = [g for g in (self.question_set, self.held_out) if g]
        take = [min(len(g), k // len(groups)) for g in groups]
        take[-1] += min(k - sum(take), len(groups[-1]) - take[-1])
        return sorted(i for g, t in zip(groups, take, strict=True) for i in rng.sample(g, t))

    @torch.no_grad()
    def recall_metrics(self, model, individuals: list[int] | None = None, batch_size: int = 256) -> dict[str, float]:
        """Top-1 recall and losses of ``model`` (any callable tokens -> logits) on ``individuals`` (default all):
        ``bio_recall`` / ``attribute_loss`` (nats) on the attribute tokens of evaluation biographies,
        ``lm_loss`` on all their tokens, ``qa_recall_seen`` / ``qa_loss_seen`` on single questions
        about individuals of the question set and ``qa_recall_unseen`` / ``qa_loss_unseen`` about
        the others (a group with no individual among ``individuals`` is left out)."""
        who = self._individuals(individuals)
        out: dict[str, float] = {}
        correct, nll, lm = _score_rows(model, self.eval_rows(who), batch_size)
        out["bio_recall"], out["attribute_loss"], out["lm_loss"] = float(correct.mean()), float(nll.mean()), lm
        seen = set(self.question_set)
        for group, members in (("seen", [i for i in who if i in seen]), ("unseen", [i for i in who if i not in seen])):
            if members:
                correct, nll, _ = _score_rows(model, self.question_prompts(members), batch_size)
                out[f"qa_recall_{group}"], out[f"qa_loss_{group}"] = float(correct.mean()), float(nll.mean())
        return out

    def no_knowledge_loss(self) -> float:
        """Mean attribute loss (nats) of a model that knows each relation's attribute frequencies over
        the individuals but nothing about any individual: the level a plateau sits at."""
        total = 0.0
        for r in self.config.relations:
            _, counts = np.unique(self.attributes[r], return_counts=True)
            p = counts / counts.sum()
            total += float(-(p * np.log(p)).sum())
        return total / len(self.config.relations)

    def _individuals(self, individuals) -> list[int]:
        if individuals is None:
            return list(range(len(self.names)))
        who = [int(i) for i in individuals]
        bad = [i for i in who if not 0 <= i < len(self.names)]
        if bad:
            raise InputError(f"Individuals must lie in 0..{len(self.names) - 1}; got {bad[:5]}.")
        return who


# =============================================================================== helpers
def pad_rows(rows: list[Row]) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos_minus_1"], Bool[Tensor, "batch pos_minus_1"]]:
    """Right-pad rows with ``<bos>``: tokens ``[batch pos]``, the mask of real next-token predictions
    ``[batch pos-1]``, and the mask of the predictions of attribute tokens ``[batch pos-1]``."""
    width = max(len(r.tokens) for r in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width - 1, dtype=torch.bool)
    attr = torch.zeros(len(rows), width - 1, dtype=torch.bool)
    for k, row in enumerate(rows):
        tokens[k, : len(row.tokens)] = torch.tensor(row.tokens)
        mask[k, : len(row.tokens) - 1] = True
        for pos, _ in row.targets:
            attr[k, pos - 1] = True
    return tokens, mask, attr


def _score_rows(model, rows: list[Row], batch_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per attribute token: top-1 correct and NLL; and the mean NLL over every real token."""
    correct, nll, lm_sum, lm_n = [], [], 0.0, 0
    for k in range(0, len(rows), batch_size):
        tokens, mask, attr = pad_rows(rows[k : k + batch_size])
        logits = model(tokens)[:, :-1].float()
        target = tokens[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target)
        correct.append((logits.argmax(-1) == target)[attr].numpy())
        nll.append(loss[attr].numpy())
        lm_sum += float(loss[mask].sum())
        lm_n += int(mask.sum())
    return np.concatenate(correct), np.concatenate(nll), lm_sum / max(lm_n, 1)


# =============================================================================== run measurements
def plateau(history: list[dict], baseline: float, loss_key: str = "attribute_loss", recall_key: str = "bio_recall",
            tolerance: float = 0.1) -> dict[str, float]:
    """The learning plateau in a training history (one dict per evaluation, with ``step``):
    ``plateau_steps``: steps from the first to the last evaluation whose ``loss_key`` lies within
    ``tolerance`` × ``baseline`` of ``baseline`` (the no-knowledge loss; 0 if none does);
    ``plateau_start`` / ``plateau_end``: those evaluations' steps; ``recall_half_step`` /
    ``recall_90_step``: first step where ``recall_key`` reaches 0.5 / 0.9 (NaN if never)."""
    if not history or any("step" not in h or loss_key not in h for h in history):
        raise InputError(f"plateau needs a history of evaluations with 'step' and {loss_key!r}; got keys "
                         f"{sorted(history[0]) if history else 'nothing'}.")
    near = [h["step"] for h in history if abs(h[loss_key] - baseline) <= tolerance * baseline]
    first = lambda level: next((float(h["step"]) for h in history if h.get(recall_key, -1) >= level), math.nan)  # noqa: E731
    return {"plateau_steps": float(max(near) - min(near)) if near else 0.0,
            "plateau_start": float(min(near)) if near else math.nan, "plateau_end": float(max(near)) if near else math.nan,
            "recall_half_step": first(0.5), "recall_90_step": first(0.9), "baseline": float(baseline)}


def rome_ratio(mlp_last_subject: Float[np.ndarray, " layer"] | list[float], mlp_last: Float[np.ndarray, " layer"] | list[float],
               include_layer0: bool = False) -> float:
    """ROME's two-stage signature in one number: the largest MLP indirect effect at the last subject
    token over the early-to-middle layers (1 .. n_layers // 2, or 0 .. n_layers // 2 with
    ``include_layer0``; layer 0's MLP at a name token mostly combines the name's two tokens) divided
    by the largest MLP indirect effect at the last token over all layers. Above 1: the subject's
    MLPs carry more of the fact than the last token's (as in ROME's GPT models)."""
    subj, last = np.asarray(mlp_last_subject, dtype=float), np.asarray(mlp_last, dtype=float)
    if subj.shape != last.shape or subj.ndim != 1 or len(subj) < 2:
        raise InputError(f"rome_ratio takes two per-layer arrays of one length (≥ 2 layers), got shapes {subj.shape} and {last.shape}.")
    early = subj[(0 if include_layer0 else 1) : len(subj) // 2 + 1]
    denominator = float(last.max())
    return float(early.max()) / denominator if denominator > 1e-6 else math.nan

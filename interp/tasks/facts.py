"""Fact recall: a synthetic knowledge base of two-token subjects and a few relations.

    kb = KnowledgeBase.build(seed=0)      # 300 subjects "<first> <last>", 4 relations, 3 templates each
    kb.fact_prompts(relation="born_in", template=0)   # PromptSet: subject noised / replaced, answer = city
    kb.training_batch(64, gen)            # (tokens, loss_mask): loss only on the answer token

First and last names are shared between subjects, so neither token alone identifies the subject:
the model has to combine them (as ROME's subjects do), and the first, middle/last and subsequent
tokens of a prompt play different roles. Prompts are ``BOS template-with-subject``; the answer is
the next token.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.errors import InputError
from interp.tasks.promptset import PromptSet

FIRST = "ann bob cal dee eli fay gus hal ivy jan kim lou max ned oda pam quin rex sal tom uma val wes xia yul zed ada ben cyd dot".split()
LAST = "stone marsh brook field hill wood vale croft ford grove lake moor pike ridge shaw thorn wells york birch cole drake frost gale hart irwin knox lowe moss nash orr".split()
RELATIONS: dict[str, tuple[list[str], list[str]]] = {
    "born_in": (
        "paris rome oslo lima cairo delhi tokyo quito seoul dakar perth hanoi sofia riga minsk accra baku doha kiev lagos".split(),
        ["{S} was born in", "the birthplace of {S} is", "{S} is a native of"],
    ),
    "works_as": (
        "baker nurse pilot judge miner tailor farmer sailor potter clerk chef smith guard poet coach".split(),
        ["{S} works as a", "the job of {S} is", "by trade {S} is a"],
    ),
    "speaks": (
        "french hindi swahili dutch greek polish korean thai malay tamil czech welsh".split(),
        ["{S} speaks", "the language of {S} is", "{S} grew up speaking"],
    ),
    "plays": (
        "chess golf tennis rugby hockey cricket polo squash judo darts".split(),
        ["{S} plays", "the sport of {S} is", "on weekends {S} plays"],
    ),
}


@dataclass
class KnowledgeBase:
    """Subjects, their attributes per relation, and the vocabulary covering all prompts."""

    subjects: list[tuple[str, str]]
    facts: dict[str, list[str]]  # relation -> attribute of each subject
    vocab: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, n_subjects: int = 300, seed: int = 0) -> KnowledgeBase:
        rng = random.Random(seed)
        pairs = list(itertools.product(FIRST, LAST))
        if n_subjects > len(pairs):
            raise InputError(f"At most {len(pairs)} subjects can be built from the name lists; got {n_subjects}.")
        subjects = rng.sample(pairs, n_subjects)
        facts = {rel: [rng.choice(values) for _ in subjects] for rel, (values, _) in RELATIONS.items()}
        words: list[str] = []
        for w in FIRST + LAST + [v for vals, _ in RELATIONS.values() for v in vals] + [w for _, ts in RELATIONS.values() for t in ts for w in t.split()]:
            if w != "{S}" and w not in words:
                words.append(w)
        return cls(subjects, facts, words)

    @property
    def ids(self) -> dict[str, int]:
        return {w: i + 1 for i, w in enumerate(self.vocab)}  # 0 is <bos>

    @property
    def d_vocab(self) -> int:
        return len(self.vocab) + 1

    def encode(self, relation: str, template: int, subject: int) -> tuple[list[int], int, list[int]]:
        """Token ids ``BOS template`` for one subject, the answer id, and the subject positions."""
        ids = self.ids
        words = RELATIONS[relation][1][template].split()
        tokens, subject_pos = [0], []
        for w in words:
            if w == "{S}":
                subject_pos = [len(tokens), len(tokens) + 1]
                tokens += [ids[self.subjects[subject][0]], ids[self.subjects[subject][1]]]
            else:
                tokens.append(ids[w])
        return tokens, ids[self.facts[relation][subject]], subject_pos

    def all_facts(self) -> list[tuple[str, int, int]]:
        return [(rel, t, s) for rel, (_, ts) in RELATIONS.items() for t in range(len(ts)) for s in range(len(self.subjects))]

    def batch(self, items: list[tuple[str, int, int]]) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos_minus_1"]]:
        """Right-padded ``BOS prompt answer`` sequences and the mask of the answer prediction."""
        rows = [self.encode(*item) for item in items]
        width = max(len(t) for t, _, _ in rows) + 1
        tokens = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width - 1, dtype=torch.bool)
        for i, (t, answer, _) in enumerate(rows):
            tokens[i, : len(t)] = torch.tensor(t)
            tokens[i, len(t)] = answer
            mask[i, len(t) - 1] = True
        return tokens, mask

    def training_batch(self, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        facts = self.all_facts()
        idx = torch.randint(0, len(facts), (batch,), generator=gen).tolist()
        return self.batch([facts[i] for i in idx])

    def fact_prompts(self, relation: str, template: int = 0, subjects: list[int] | None = None, seed: int = 0) -> PromptSet:
        """Prompts of one template (equal length). Corrupted: another subject with a different
        attribute (symmetric token replacement); ``metadata['subject_pos']`` holds the subject's
        positions, ``metadata['subject']`` its index."""
        if relation not in RELATIONS:
            raise InputError(f"Unknown relation {relation!r}; relations: {', '.join(RELATIONS)}.")
        rng = random.Random(seed)
        subjects = list(range(len(self.subjects))) if subjects is None else subjects
        clean, corrupted, answers, wrong = [], [], [], []
        for s in subjects:
            other = rng.choice([o for o in range(len(self.subjects)) if self.facts[relation][o] != self.facts[relation][s]])
            t, a, pos = self.encode(relation, template, s)
            t2, a2, _ = self.encode(relation, template, other)
            clean.append(t), corrupted.append(t2), answers.append(a), wrong.append(a2)
        return PromptSet(
            torch.tensor(clean), torch.tensor(corrupted), torch.tensor(answers), torch.tensor(wrong),
            metadata={"subject_pos": torch.tensor([pos] * len(subjects)), "subject": torch.tensor(subjects), "relation": relation, "template": template},
        )


@torch.no_grad()
def recall_metrics(model, kb: KnowledgeBase, batch_size: int = 512) -> dict[str, float]:
    """Over all (relation, template, subject) facts: ``recall`` (share whose answer is the model's
    top-1 token) and ``answer_loss`` (mean cross-entropy of the answer token, nats)."""
    facts = kb.all_facts()
    correct, nll = 0, 0.0
    for i in range(0, len(facts), batch_size):
        tokens, mask = kb.batch(facts[i : i + batch_size])
        logits = model(tokens)[:, :-1][mask]
        target = tokens[:, 1:][mask]
        correct += (logits.argmax(-1) == target).sum().item()
        nll += torch.nn.functional.cross_entropy(logits.float(), target, reduction="sum").item()
    return {"recall": correct / len(facts), "answer_loss": nll / len(facts)}


def recall_accuracy(model, kb: KnowledgeBase, batch_size: int = 512) -> float:
    """Share of all (relation, template, subject) facts whose answer is the model's top-1 token."""
    return recall_metrics(model, kb, batch_size)["recall"]

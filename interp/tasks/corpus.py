"""A text corpus made here: documents a pretrained model writes from varied openings, plus human text.

    model = interp.load("smollm2-135m", backend="nnsight")                    # sampling needs its KV cache
    docs = generate_documents(model, OPENINGS_FLAT[:2], doc_len=32, seed=0)   # [2 32] token ids, BOS first
    corpus = build_corpus(model, "assets/corpora/smollm2-135m")                # writes tokens.npy + manifest.json
    corpus = load_corpus("assets/corpora/smollm2-135m")                        # checks the SHA-256, splits by document
    corpus.tokens[corpus.train]                                                # [n_train doc_len] uint16

A sparse autoencoder (or a probe, or a feature's top contexts) needs many activations of ordinary
text, and no dataset can be downloaded here. Two sources are available offline:

1. **The model's own text.** `OPENINGS` holds 312 openings written for this module over 26 genres
   (stories, news, how-to, recipes, dialogue, science, history, biography, lists, code comments,
   letters, reviews, sports, weather, legal, medical, poetry, travel, product descriptions, forum
   questions, school essays, speeches, diaries, ...). Each document is ``<|endoftext|>`` (the BOS
   that `interp.load` puts first), one opening, then tokens sampled from the model with a key/value
   cache, temperature ``TEMPERATURE`` and nucleus (top-p) sampling ``TOP_P`` (Holtzman et al. 2020,
   "The Curious Case of Neural Text Degeneration"), seeded per batch, until the document holds
   ``doc_len`` tokens. Special tokens (ids below 17: ``<|endoftext|>``, the chat markers, the code
   markers) are never sampled, so each document is one continuous text.
2. **Human text**: the English reference of Python's own documentation that ships with CPython
   (`pydoc_data.topics`: the language reference sections behind ``help("for")``), cut into documents
   of the same length (BOS first). It is technical prose with code, written by people.

The shipped corpus (``assets/corpora/smollm2-135m``, built by ``python -m experiments.smollm2_sae
corpus``) is small because sampling on shared CPUs is slow (12.8 new tokens/s with one thread on 2
cores shared with five other jobs): the first 156 documents of the seeded opening order (half the
openings, all 26 genres; 18,236 sampled tokens in 24 minutes) and 256 documents of Python's reference: 412
documents, 52,736 tokens. More documents extend the same order (``generated_docs``).

Limits, stated in the manifest: the generated part covers what a 135M-parameter instruction-tuned
model likes to say after these openings (fluent but repetitive, often generic, sometimes drifting),
not the distribution it was trained on (web text, code, maths, many languages); features of rare
domains, of long contexts (documents are short) and of non-English text cannot appear. The human
part is one narrow register (Python's reference). The split is by *opening* (generated) and by
*topic* (human): held-out documents share no opening with training documents, so an evaluation on
them measures transfer to new prompts, not to new genres.

The corpus on disk: ``tokens.npy`` (``uint16 [n_docs doc_len]``, SmolLM2's vocabulary of 49,152 fits)
and ``manifest.json`` (model, sampler, seed, openings, per-document source / opening / split, token
count, SHA-256 of ``tokens.npy``). Generation is resumable: finished batches go to ``partial/`` and
a rerun continues from there.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InputError

TEMPERATURE = 1.0
TOP_P = 0.95
#: Token ids below this are special on SmolLM2's tokenizer (<|endoftext|>, <|im_start|>, <|im_end|>,
#: <repo_name>, ... <empty_output>) and are never sampled.
N_SPECIAL = 17

#: genre -> openings, written for this module. Every opening is a plain prefix; the model continues it.
OPENINGS: dict[str, tuple[str, ...]] = {
    "story": (
        "Once upon a time, in a village at the edge of a great forest, there lived",
        "The rain had not stopped for three days when Maria finally opened the letter.",
        "Tom looked at the old map and realised that the island was",
        "Nobody in the town remembered when the clock tower had last worked, until",
        "The dragon was smaller than the stories said, and it seemed",
        "When the spaceship landed in the field behind the farm, the first thing the children did was",
        "My grandmother kept a locked box under her bed, and on the day she died",
        "The detective knelt beside the broken window and noticed",
        "It was the last day of summer, and the lake was",
        "The robot had been built to clean floors, but one morning it decided",
        "Anna was the only person on the train who saw the man in the grey coat",
        "The king called his three daughters to the hall and told them",
    ),
    "news": (
        "The city council voted on Tuesday to approve a new plan for",
        "Scientists at the university announced yesterday that they had discovered",
        "Heavy flooding forced thousands of residents to leave their homes after",
        "The company reported its quarterly earnings on Thursday, saying that",
        "Officials confirmed that the bridge will remain closed until",
        "A new study published this week suggests that people who",
        "The government has announced plans to raise the minimum wage, a move that",
        "Local farmers say the dry weather this spring has",
        "Police are asking the public for help after",
        "The museum will reopen next month after a two-year renovation that",
        "Voters in the region will go to the polls on Sunday to choose",
        "The national team arrived home on Monday to a crowd of fans who",
    ),
    "howto": (
        "How to change a flat tyre. First, make sure the car is",
        "To start a vegetable garden, you will need",
        "Here is a simple way to learn a new language:",
        "If your computer is running slowly, the first thing to check is",
        "How to write a good cover letter. Step 1:",
        "Cleaning a cast iron pan is easy if you",
        "To set up a new email account, open the",
        "The best way to prepare for a job interview is to",
        "Follow these steps to build a wooden birdhouse.",
        "How to save money on groceries: start by",
        "Before you paint a room, you should always",
        "To tie a bowline knot, make a small loop in the rope and",
    ),
    "recipe": (
        "Classic pancakes. Ingredients: 2 cups of flour,",
        "This tomato soup is warm, simple and ready in thirty minutes. You will need",
        "To make bread at home, mix the flour, water, yeast and salt in a large bowl, then",
        "Chocolate chip cookies are my favourite dessert. Preheat the oven to",
        "For the curry, heat two tablespoons of oil in a pan and add",
        "A good salad starts with fresh ingredients. Wash the lettuce and",
        "Grandma's apple pie recipe:",
        "Rice should be rinsed before cooking because",
        "To make a vegetable stir fry, cut the carrots, peppers and onions into",
        "Lemon cake. Beat the butter and sugar together until",
        "The secret to a perfect omelette is",
        "Homemade pizza dough needs only four ingredients:",
    ),
    "dialogue": (
        "\"Are you sure this is the right road?\" asked Sam.\n\"Of course,\" said Lily,",
        "Customer: Hello, I bought a phone from your store last week and\nAgent:",
        "Teacher: Who can tell me why the sky is blue?\nStudent:",
        "\"I don't think we should go in there,\" whispered Ben.",
        "Doctor: What seems to be the problem today?\nPatient:",
        "Interviewer: Tell me about a time you solved a difficult problem.\nCandidate:",
        "\"Where were you last night?\" her mother asked.",
        "A: Have you seen the new film at the cinema?\nB:",
        "\"We have to leave now,\" said the captain. \"The storm",
        "Alice: Can you help me move this weekend?\nBob:",
        "Q: What is the best way to learn to play the guitar?\nA:",
        "\"Do you remember the first time we met?\" he asked.",
    ),
    "science": (
        "Photosynthesis is the process by which plants",
        "The human heart has four chambers:",
        "Water boils at 100 degrees Celsius at sea level because",
        "Black holes form when a massive star",
        "An atom consists of a nucleus surrounded by",
        "Earthquakes happen when the plates of the Earth's crust",
        "DNA carries the genetic instructions that",
        "The speed of light in a vacuum is about",
        "Vaccines work by training the immune system to",
        "The Moon causes the tides on Earth because",
        "Bees are important for farming because they",
        "Electric current is the flow of",
    ),
    "history": (
        "The Roman Empire was one of the largest empires in history. At its height,",
        "In 1492, Christopher Columbus sailed across the Atlantic and",
        "The Industrial Revolution began in Britain in the late eighteenth century, when",
        "The ancient Egyptians built the pyramids as",
        "The First World War started in 1914 after",
        "During the Middle Ages, most people in Europe lived",
        "The printing press, invented by Johannes Gutenberg around 1440,",
        "The French Revolution of 1789 changed",
        "The Great Wall of China was built over many centuries to",
        "In 1969, the Apollo 11 mission",
        "The Silk Road was a network of trade routes that",
        "After the fall of the Berlin Wall in 1989,",
    ),
    "biography": (
        "Marie Curie was born in Warsaw in 1867. As a young woman,",
        "Leonardo da Vinci was an Italian painter, engineer and",
        "Abraham Lincoln grew up in a small cabin in Kentucky and",
        "Ada Lovelace is often called the first computer programmer because",
        "Nelson Mandela spent twenty-seven years in prison before",
        "Wolfgang Amadeus Mozart began composing music when he was",
        "Albert Einstein is best known for",
        "Frida Kahlo was a Mexican painter whose",
        "Isaac Newton was born in 1643 in a small village in England.",
        "Jane Austen wrote six novels, including",
        "Charles Darwin travelled around the world on a ship called",
        "Mahatma Gandhi led India's struggle for independence by",
    ),
    "list": (
        "Ten things to do on a rainy day:\n1.",
        "The five largest countries in the world by area are:",
        "Here are seven tips for better sleep:\n1.",
        "Things to pack for a camping trip:\n-",
        "Top reasons to learn to cook:\n1.",
        "My favourite books of all time:\n1.",
        "Shopping list for the week:\n-",
        "Five animals that live in the desert:\n1.",
        "The planets of the solar system, in order from the Sun:",
        "Common mistakes new drivers make:\n1.",
        "Benefits of regular exercise:\n-",
        "Questions to ask before buying a used car:\n1.",
    ),
    "code": (
        "# This function returns the sum of all even numbers in a list\ndef",
        "import os\nimport sys\n\n# Read the configuration file and",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "// Check whether the user is logged in before",
        "class Stack:\n    \"\"\"A simple last-in, first-out stack.\"\"\"\n\n    def __init__(self):",
        "# Sort the students by their grade, highest first\n",
        "<!DOCTYPE html>\n<html>\n<head>\n    <title>",
        "SELECT name, age FROM users WHERE",
        "for i in range(10):\n    # print the square of each number\n",
        "/* Compute the average of an array of integers */\nint average(int *values, int n) {",
        "def is_palindrome(word):\n    # a word is a palindrome if",
        "# TODO: handle the case where the file does not exist\n",
    ),
    "letter": (
        "Dear Sir or Madam,\n\nI am writing to apply for the position of",
        "Dear Grandma,\n\nThank you so much for the birthday present.",
        "Dear Mr. Thompson,\n\nI am writing to complain about",
        "Hi Sarah,\n\nI hope you are well. I wanted to tell you that",
        "To whom it may concern,\n\nThis letter is to confirm that",
        "Dear neighbours,\n\nAs some of you may know,",
        "Dear Professor Lee,\n\nI would like to ask whether",
        "Dear friend,\n\nIt has been a long time since",
        "Dear customer,\n\nThank you for your order. Unfortunately,",
        "Dear Editor,\n\nI read your article about",
        "Dear team,\n\nThis year has been",
        "Dear Dad,\n\nI know I have not written in a while, but",
    ),
    "review": (
        "I bought these headphones a month ago and",
        "This restaurant is a hidden gem. The food",
        "Review: The film starts slowly, but",
        "I stayed at this hotel for three nights. The room",
        "Two stars. The book had a great premise, but",
        "This vacuum cleaner is the best purchase I have made",
        "The new album is a surprise. Unlike their earlier records,",
        "I would not recommend this laptop to anyone who",
        "Five stars! The staff were friendly and",
        "The play was long, but the actors",
        "After using this app every day for a year, I can say that",
        "The museum's new exhibition is",
    ),
    "sports": (
        "The home team scored twice in the last ten minutes to",
        "In tennis, a player must win at least six games to",
        "The marathon was run in hot weather, and",
        "Football is played by two teams of eleven players who",
        "The coach said after the match that",
        "She broke the world record in the 100 metres by",
        "Basketball was invented in 1891 by",
        "The cyclists climbed the mountain pass in",
        "The rules of chess are simple: each player",
        "The swimmer trained for six hours a day in order to",
        "Cricket is popular in England, India and",
        "The final round of the golf tournament",
    ),
    "weather": (
        "Tomorrow's forecast: cloudy in the morning, with",
        "A cold front moving in from the north will bring",
        "The summer of that year was the hottest on record, with",
        "Hurricanes form over warm ocean water when",
        "Snow is expected in the mountains tonight, and drivers",
        "The weekend will start sunny, but",
        "Fog is a cloud that touches the ground. It forms when",
        "Why does it rain more in some places than others?",
        "The monsoon season in South Asia usually begins in",
        "Weather warning: strong winds of up to",
        "Climate is the average weather in a place over",
        "It was so cold that morning that",
    ),
    "legal": (
        "Terms and conditions. By using this website, you agree to",
        "Section 1. Definitions. In this agreement,",
        "The tenant shall pay the rent on the first day of each month and",
        "Privacy policy: We collect personal information when you",
        "The court ruled that the contract was",
        "This warranty covers defects in materials and workmanship for",
        "Article 3. Every person has the right to",
        "The employee agrees not to disclose",
        "In the event of a dispute, both parties agree to",
        "Notice of change: Starting from the first of next month,",
        "The seller guarantees that the goods",
        "A will is a legal document that",
    ),
    "medical": (
        "Common symptoms of the flu include",
        "If you have a high fever that lasts more than three days,",
        "Type 2 diabetes is a condition in which",
        "Drinking enough water every day helps",
        "To treat a minor burn, first",
        "Regular exercise lowers the risk of",
        "Children should visit the dentist",
        "Allergies happen when the immune system",
        "Sleep is important for health because",
        "The doctor advised him to take the tablets",
        "A balanced diet includes",
        "Washing your hands with soap removes",
    ),
    "poetry": (
        "The river runs beneath the hill,\nThe evening air is",
        "I wandered through the empty town\n",
        "Roses in the garden, snow upon the wall,\n",
        "O moon above the silent sea,\n",
        "The old tree stands alone,\n",
        "When morning comes across the field\n",
        "Little bird upon the wire,\n",
        "In the city of a thousand lights\n",
        "My heart is like a quiet room\n",
        "The autumn leaves are falling down,\n",
        "Across the years I hear your voice,\n",
        "A poem about the sea:\n",
    ),
    "travel": (
        "Venice is a city built on more than a hundred small islands,",
        "Our trip to Japan started in Tokyo, where",
        "If you visit Iceland in winter, you might see",
        "The best time to visit Morocco is",
        "We drove along the coast for three days and",
        "Travel tip: when you arrive in a new city,",
        "The national park is home to",
        "Backpacking through South America taught me",
        "The train from Paris to Rome takes",
        "The small village in the Alps is famous for",
        "Before travelling abroad, check that your passport",
        "The beach was quiet in the early morning, and",
    ),
    "product": (
        "Introducing the new SmartWatch 5: a watch that",
        "This stainless steel water bottle keeps drinks cold for",
        "Our handmade soap is made from natural ingredients such as",
        "The Ergo office chair is designed for people who",
        "Features:\n- Lightweight design\n-",
        "This beginner's guitar comes with",
        "The electric kettle boils water in",
        "Product description: A soft cotton T-shirt that",
        "Meet the lamp that adjusts its brightness to",
        "This backpack has three compartments and",
        "Our premium coffee beans are grown in",
        "The children's bicycle is suitable for ages",
    ),
    "forum": (
        "Hi everyone, I am new to this forum and I have a question about",
        "Has anyone else had problems with their washing machine making",
        "Question: my tomato plants have yellow leaves. What",
        "I have been learning to code for six months and",
        "Can someone explain the difference between a virus and",
        "Help! My cat will not eat her food and",
        "What is the best way to store photos so that",
        "Looking for advice: I am moving to a new city and",
        "Does anyone know why my bread does not rise?",
        "I just finished reading the book and I have to say",
        "Is it worth buying an electric car in",
        "My landlord wants to raise the rent by",
    ),
    "education": (
        "In this lesson, we will learn how to add fractions. A fraction",
        "Chapter 1: Introduction to Economics. Economics is the study of",
        "The water cycle describes how water moves",
        "To find the area of a rectangle, multiply",
        "An adjective is a word that",
        "Exercise 3. Read the passage below and answer the questions.",
        "The causes of the American Civil War include",
        "A prime number is a number greater than one that",
        "In this course you will learn",
        "Learning objectives: By the end of this unit, students will be able to",
        "The three states of matter are",
        "A paragraph usually begins with a topic sentence that",
    ),
    "essay": (
        "Many people believe that technology has made our lives easier. However,",
        "Should school uniforms be required? In my opinion,",
        "The most important invention of the last hundred years is",
        "Social media has changed the way young people",
        "Protecting the environment is the responsibility of",
        "There are many reasons why reading is important.",
        "Some people prefer to live in the city, while others",
        "The role of art in society has always been",
        "Is it better to work from home or in an office?",
        "Friendship is one of the most valuable",
        "Every year, millions of tonnes of plastic",
        "The value of learning history lies in",
    ),
    "speech": (
        "Ladies and gentlemen, thank you for coming tonight.",
        "Good morning, class of 2024. Today we",
        "My fellow citizens, we stand today at",
        "Thank you all for being here to celebrate",
        "Friends, colleagues, and guests: it is an honour to",
        "I want to begin by thanking the people who",
        "We gather here today to remember",
        "When I was asked to speak at this wedding, I",
        "Welcome to the annual meeting of",
        "Today I want to talk to you about",
        "It is a great pleasure to introduce our next speaker,",
        "Members of the board, the results of this year",
    ),
    "diary": (
        "Monday, 3 March. Today was a strange day.",
        "Dear diary, I could not sleep last night because",
        "Day 12 of the expedition. The snow",
        "I woke up early this morning and",
        "Saturday. We finally moved into the new house.",
        "Today I started my first job, and",
        "Journal entry: I have decided to",
        "It has been a week since the accident, and",
        "Sunday evening. The weekend went by so fast.",
        "First day of school. I was nervous because",
        "Notes from the garden: the beans are",
        "Tuesday. Another rainy day in the city.",
    ),
    "business": (
        "Our company's mission is to",
        "Meeting notes, 14 June. Attendees:",
        "The marketing plan for next year focuses on",
        "To increase sales, the team decided to",
        "Executive summary: This report describes",
        "A small business needs a clear plan because",
        "The startup raised ten million dollars to",
        "Customer satisfaction has improved since",
        "The quarterly budget review shows that",
        "Job description: We are looking for a",
        "Supply chain problems have caused",
        "Our new policy on remote work",
    ),
    "nature": (
        "The red fox is a clever animal that",
        "Deep in the rainforest, thousands of species",
        "Oak trees can live for hundreds of years and",
        "Every autumn, millions of birds fly south to",
        "The ocean covers more than seventy percent of",
        "Wolves live in packs led by",
        "Mushrooms are not plants. They belong to",
        "The desert comes alive after the rain, when",
        "Coral reefs are home to",
        "Elephants are known for their memory and",
        "In spring the meadow fills with",
        "The mountain gorilla lives in",
    ),
}

OPENINGS_FLAT: tuple[tuple[str, str], ...] = tuple((g, o) for g, ops in OPENINGS.items() for o in ops)


@dataclass(frozen=True)
class Corpus:
    """A stored corpus: token ids ``[n_docs doc_len]`` (uint16, BOS first), the manifest, and
    the document indices of each split."""

    tokens: np.ndarray
    manifest: dict
    train: np.ndarray
    held_out: np.ndarray

    @property
    def doc_len(self) -> int:
        return int(self.tokens.shape[1])

    def sources(self) -> list[str]:
        return [d["source"] for d in self.manifest["documents"]]

    def texts(self, tokenizer, docs) -> list[str]:
        return [tokenizer.decode(self.tokens[i].tolist()) for i in docs]


def held_out_openings(seed: int = 0, held_out: float = 0.1) -> set[str]:
    """The openings whose documents are held out: within each genre, the openings ordered by a
    SHA-256 hash of ``seed``, genre and opening, and the first ``round(held_out * n)`` taken. The
    same seed gives the same split on any machine."""
    if not 0.0 <= held_out < 1.0:
        raise InputError(f"held_out={held_out!r} must be a fraction in [0, 1).")
    out = set()
    for genre, ops in OPENINGS.items():
        ranked = sorted(ops, key=lambda o: hashlib.sha256(f"{seed}|{genre}|{o}".encode()).hexdigest())
        out.update(ranked[: round(held_out * len(ops))])
    return out


def _hf_model(model):
    """The Hugging Face causal LM under a HookedModel on the nnsight backend. (The model that
    TransformerLens 4.3's bridge wraps gives wrong logits when handed a key/value cache: measured
    on SmolLM2-135M, a logit error of 27 at the first cached step, against 2.5e-5 on the nnsight
    backend's model.)"""
    if not getattr(model.backend, "supports_kv_cache", False):
        raise InputError("Corpus sampling needs a key/value cache, which only the nnsight backend gives correctly; "
                         "load the model with interp.load(name, backend='nnsight').")
    hf = model.module
    if not hasattr(hf, "generation_config") or not callable(getattr(hf, "forward", None)):
        raise InputError(f"Corpus sampling needs a HookedModel over a Hugging Face causal LM; got {type(hf).__name__}.")
    return hf


def _cache_kwarg(hf) -> str:
    """The name of the key/value cache argument (``cache`` in transformers 5.x, ``past_key_values`` before)."""
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def _top_p_sample(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator) -> Tensor:
    """One token per row from ``softmax(logits / temperature)`` restricted to the smallest set of
    tokens whose probability reaches ``top_p`` (the most likely token is always kept)."""
    probs = (logits.float() / temperature).softmax(-1)
    sorted_p, order = probs.sort(-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each one
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    pick = torch.multinomial(sorted_p, 1, generator=generator)
    return order.gather(-1, pick)[:, 0]


def _check_sampler(doc_len: int, temperature: float, top_p: float, batch_size: int) -> None:
    if not isinstance(doc_len, int) or doc_len < 2:
        raise InputError(f"doc_len={doc_len!r} must be an int >= 2 (BOS plus at least one token).")
    if not temperature > 0:
        raise InputError(f"temperature={temperature!r} must be > 0 (sampling); greedy text would repeat itself.")
    if not 0.0 < top_p <= 1.0:
        raise InputError(f"top_p={top_p!r} must lie in (0, 1].")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r} must be a positive int.")


def _encode_openings(model, openings: list[str], doc_len: int) -> list[list[int]]:
    tok = model.tokenizer
    bos = tok.convert_tokens_to_ids(model.info.get("bos_token", "<|endoftext|>")) if hasattr(model, "info") else 0
    out = []
    for text in openings:
        ids = [bos] + tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= doc_len:
            raise InputError(f"The opening {text[:40]!r}... has {len(ids)} tokens with BOS; doc_len={doc_len} leaves "
                             f"nothing to generate. Use a longer doc_len or a shorter opening.")
        out.append(ids)
    return out


@torch.inference_mode()
def _generate_batch(hf, prompts: list[list[int]], doc_len: int, temperature: float, top_p: float,
                    generator: torch.Generator) -> np.ndarray:
    """Continue left-padded prompts with a key/value cache until each holds ``doc_len`` tokens."""
    n, longest = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(n, longest, dtype=torch.long)
    mask = torch.zeros(n, longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):] = torch.tensor(p)
        mask[i, longest - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    steps = doc_len - min(len(p) for p in prompts)
    kw = _cache_kwarg(hf)
    out = hf(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    new = []
    for step in range(steps):
        logits = out.logits[:, -1]
        logits[:, :N_SPECIAL] = float("-inf")
        nxt = _top_p_sample(logits, temperature, top_p, generator)
        new.append(nxt)
        if step == steps - 1:
            break
        mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype)], dim=1)
        positions = positions[:, -1:] + 1
        out = hf(input_ids=nxt[:, None], attention_mask=mask, position_ids=positions, use_cache=True,
                 **{kw: out[kw]})
    sampled = torch.stack(new, dim=1).tolist()
    return np.array([(p + s)[:doc_len] for p, s in zip(prompts, sampled, strict=True)], dtype=np.uint16)


def generate_documents(
    model,
    openings: list[str] | list[tuple[str, str]],
    doc_len: int = 128,
    seed: int = 0,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    batch_size: int = 64,
    progress: bool = True,
) -> Int[np.ndarray, "doc doc_len"]:
    """Documents of exactly ``doc_len`` tokens: BOS, an opening, then tokens sampled from ``model``.

    ``model``: a HookedModel over a Hugging Face causal LM (``interp.load("smollm2-135m")``).
    ``openings``: texts, or ``(genre, text)`` pairs as in `OPENINGS_FLAT`; one document each, in order.
    Sampling: ``softmax(logits / temperature)`` cut to the top-p nucleus, special tokens excluded,
    with a key/value cache. Batch ``b`` (``batch_size`` documents, left-padded) draws from a
    generator seeded with ``seed * 1_000_003 + b``, so the same call gives the same ids, and a
    prefix of the openings gives a prefix of the documents when it fills whole batches.
    Returns ``uint16 [len(openings) doc_len]`` (numpy).
    """
    _check_sampler(doc_len, temperature, top_p, batch_size)
    hf = _hf_model(model)
    texts = [o[1] if isinstance(o, tuple) else o for o in openings]
    if not texts:
        raise InputError("openings is empty; pass at least one opening text.")
    if model.d_vocab > 65536:
        raise InputError(f"The vocabulary of {model.d_vocab} ids does not fit uint16 storage.")
    prompts = _encode_openings(model, texts, doc_len)
    docs = []
    for b in tqdm(range(0, len(prompts), batch_size), desc="sampling documents", disable=not progress):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b // batch_size)
        docs.append(_generate_batch(hf, prompts[b:b + batch_size], doc_len, temperature, top_p, gen))
    return np.concatenate(docs)


def human_documents(model, doc_len: int = 128, max_docs: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Python's reference documentation (`pydoc_data.topics`, shipped with CPython) cut into
    documents of ``doc_len`` tokens, BOS first: each topic's text is tokenised and split into whole
    documents (a remainder shorter than ``doc_len - 1`` is dropped). Topics in sorted order.
    Returns ``(uint16 [n doc_len], topic of each document)``, at most ``max_docs`` documents."""
    from pydoc_data.topics import topics

    tok = model.tokenizer
    bos = tok.convert_tokens_to_ids(model.info.get("bos_token", "<|endoftext|>")) if hasattr(model, "info") else 0
    rows, names = [], []
    for name in sorted(topics):
        ids = tok(topics[name].strip(), add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - (doc_len - 1) + 1, doc_len - 1):
            rows.append([bos] + ids[start:start + doc_len - 1])
            names.append(name)
    if max_docs is not None:
        rows, names = rows[:max_docs], names[:max_docs]
    return np.array(rows, dtype=np.uint16).reshape(-1, doc_len), names


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_corpus(
    model,
    out_dir: str | Path,
    model_name: str = "smollm2-135m",
    docs_per_opening: int = 4,
    doc_len: int = 128,
    generated_docs: int | None = None,
    human_docs: int = 256,
    seed: int = 0,
    held_out: float = 0.1,
    batch_size: int = 52,
    progress: bool = True,
) -> Corpus:
    """Generate ``docs_per_opening`` documents for every opening of `OPENINGS` (shuffled by
    ``seed``; only the first ``generated_docs`` of that order if given; in batches; finished batches
    are kept in ``out_dir/partial`` so an interrupted run resumes), add ``human_docs`` documents of Python's reference (`human_documents`), and write
    ``tokens.npy`` and ``manifest.json``. Held out: every document of the openings that
    `held_out_openings` picks, and the human documents of a ``held_out`` fraction of topics (by hash)."""
    out = Path(out_dir)
    _check_sampler(doc_len, TEMPERATURE, TOP_P, batch_size)
    hf = _hf_model(model)
    (out / "partial").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = [OPENINGS_FLAT[i] for i in np.concatenate([rng.permutation(len(OPENINGS_FLAT)) for _ in range(docs_per_opening)])]
    order = order[:generated_docs]
    prompts = _encode_openings(model, [o for _, o in order], doc_len)
    t0, parts, resumed = time.time(), [], 0
    n_batches = -(-len(prompts) // batch_size)
    for b in tqdm(range(n_batches), desc="sampling documents", disable=not progress):
        path = out / "partial" / f"batch{b:05d}.npy"
        resumed += path.exists()
        if not path.exists():
            gen = torch.Generator().manual_seed(seed * 1_000_003 + b)
            arr = _generate_batch(hf, prompts[b * batch_size:(b + 1) * batch_size], doc_len, TEMPERATURE, TOP_P, gen)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, arr)
            tmp.rename(path)
        parts.append(np.load(path))
    seconds = time.time() - t0
    generated = np.concatenate(parts)
    human, topics = human_documents(model, doc_len, max_docs=None)
    topic_names = sorted(set(topics))
    held_topics = set(sorted(topic_names, key=lambda t: hashlib.sha256(f"{seed}|pydoc|{t}".encode()).hexdigest())
                      [: round(held_out * len(topic_names))])
    pick = np.random.default_rng(seed + 1).permutation(len(human))[:human_docs]
    pick.sort()
    human, topics = human[pick], [topics[i] for i in pick]
    tokens = np.concatenate([generated, human]).astype(np.uint16)
    held = held_out_openings(seed, held_out)
    documents = [{"source": "generated", "genre": g, "opening": o, "split": "held_out" if o in held else "train"}
                 for g, o in order]
    documents += [{"source": "pydoc", "topic": t, "split": "held_out" if t in held_topics else "train"} for t in topics]
    np.save(out / "tokens.npy", tokens)
    manifest = {
        "model": model_name,
        "doc_len": doc_len,
        "n_docs": int(tokens.shape[0]),
        "n_tokens": int(tokens.size),
        "dtype": "uint16",
        "bos": "<|endoftext|> first in every document",
        "sampler": {"temperature": TEMPERATURE, "top_p": TOP_P, "excluded_ids": f"0..{N_SPECIAL - 1} (special tokens)",
                    "kv_cache": True, "batch_size": batch_size, "left_padded": True,
                    "generator_seed": "seed * 1000003 + batch index", "seed": seed,
                    "docs_per_opening": docs_per_opening, "generated_docs": len(order),
                    "seconds": round(seconds, 1) if not resumed else None,  # None: an earlier run sampled some batches
                    "batches_resumed": int(resumed),
                    "device": "cpu", "torch": torch.__version__},
        "human": {"source": "pydoc_data.topics (CPython's reference documentation, English)",
                  "n_docs": int(len(human)), "python": __import__("platform").python_version(),
                  "held_out_topics": sorted(held_topics)},
        "split": {"generated": f"by opening: {round(held_out * 12)} of 12 openings per genre held out (SHA-256 of seed|genre|opening)",
                  "human": f"by topic: {len(held_topics)} of {len(topic_names)} topics held out (SHA-256 of seed|pydoc|topic)",
                  "n_train": sum(d["split"] == "train" for d in documents),
                  "n_held_out": sum(d["split"] == "held_out" for d in documents)},
        "openings": {g: list(o) for g, o in OPENINGS.items()},
        "limits": "Generated text covers what SmolLM2-135M-Instruct says after these English openings at "
                  f"temperature {TEMPERATURE}, top-p {TOP_P} (fluent, often generic or repetitive), not its pretraining "
                  "distribution (web text, code, maths, other languages); documents are short (no long-context "
                  "features); the human part is one narrow register (Python's reference documentation).",
        "sha256": file_sha256(out / "tokens.npy"),
        "documents": documents,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out / "partial")  # the batches are in tokens.npy now
    return load_corpus(out)


def load_corpus(path: str | Path, check: bool = True) -> Corpus:
    """Read ``tokens.npy`` and ``manifest.json`` from ``path``; with ``check``, refuse a file whose
    SHA-256, shape or dtype disagrees with the manifest."""
    path = Path(path)
    if not (path / "manifest.json").is_file() or not (path / "tokens.npy").is_file():
        raise InputError(f"{path} holds no corpus (tokens.npy + manifest.json); build it with interp.tasks.corpus.build_corpus "
                         f"or `python -m experiments.smollm2_sae corpus`.")
    manifest = json.loads((path / "manifest.json").read_text())
    if check and file_sha256(path / "tokens.npy") != manifest["sha256"]:
        raise InputError(f"{path / 'tokens.npy'} does not match the SHA-256 in its manifest; rebuild the corpus.")
    tokens = np.load(path / "tokens.npy")
    if tokens.dtype != np.uint16 or tokens.shape != (manifest["n_docs"], manifest["doc_len"]):
        raise InputError(f"{path / 'tokens.npy'} is {tokens.dtype} {tokens.shape}, the manifest says uint16 "
                         f"({manifest['n_docs']}, {manifest['doc_len']}); rebuild the corpus.")
    split = np.array([d["split"] for d in manifest["documents"]])
    return Corpus(tokens, manifest, np.flatnonzero(split == "train"), np.flatnonzero(split == "held_out"))

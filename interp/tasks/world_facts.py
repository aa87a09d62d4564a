"""World facts for real language models: hand-written facts with single-token answers.

    facts = FACTS                                   # every (subject, relation, answer) x each of its relation's templates
    known = known_facts(model, facts)               # the ones the model ranks first at the last position
    train, held_out = split(known, seed=0)          # deterministic, by subject
    groups = fact_prompts(model, known)             # {n_tokens: PromptSet}, one per prompt length
    causal_trace(model, groups[11])                 # metadata["subject_positions"] is read from the set

Seven relations (`RELATIONS`, three prompt templates each): landmark -> city, landmark -> country,
company -> country of origin, athlete -> sport, person -> native language, city -> country,
country -> capital. Each answer, with its leading space (`` Paris``), is one token of SmolLM2's
tokenizer (checked by ``tests/test_world_facts.py``); subjects have one to eight tokens. A `Fact` is
one subject, relation, answer *and template*: `FACTS` holds 385 subject-answer pairs x 3 templates
= 1,155 facts. The prompt is the template with the subject in place (capitalised when it opens the
prompt); the answer is the next token.

What SmolLM2-135M-Instruct knows (`known_facts`, measured 2026-12-06 on ``interp.load("smollm2-135m")``,
BOS ``<|endoftext|>`` first, float32 on the CPU): 683 of the 1,155 facts (59%) rank the answer first:
landmark -> city 80 of 159, landmark -> country 84 of 114, company -> country 64 of 177, athlete ->
sport 65 of 162, person -> native language 138 of 201, city -> country 166 of 228, country ->
capital 86 of 114. Of the 385 subject-answer pairs, 284 are known in at least one template and 170
in all three. By prompt length the known facts fall into sets of 40, 39, 35, 28, 132, 175, 100, 46,
35, 20, 21, 9 and 3 prompts of 6 to 18 tokens (so 175 known facts of 11 tokens stack into one
`PromptSet`).

Prompt lengths differ (a subject has one to eight tokens, templates differ), and every method here
takes prompts of one length (`PromptSet`; `patching.causal_trace` needs unpadded prompts). Padding
would shift positions or put pad tokens inside the attention window, so `fact_prompts` does the
simplest correct thing: it groups the facts by token length and returns one `PromptSet` per length,
with no padding anywhere. Its corrupted prompt for a fact is another fact of the same length with
a different answer, drawn from the facts given and `FACTS`: where one exists, of the same template
with the subject at the same positions (so only the subject's tokens differ: ``metadata["aligned"]``),
else of the same template, else of the same relation, else any; its answer is the wrong answer (for
`patching.logit_diff`). Causal tracing ignores the corrupted prompt (it noises the subject).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from interp.errors import InputError
from interp.tasks.promptset import PromptSet

#: relation -> its prompt templates ("{}" is the subject); the answer is the token after the prompt.
RELATIONS: dict[str, tuple[str, ...]] = {
    "landmark_city": ("{} is located in the city of", "{} can be found in the city of",
                      "To see {}, you have to travel to the city of"),
    "landmark_country": ("{} is located in the country of", "{} is a landmark in the country of",
                         "Tourists travel to see {} in the country of"),
    "company_country": ("{} is a company from the country of", "The company {} was founded in the country of",
                        "{} has its headquarters in the country of"),
    "athlete_sport": ("{} is famous for playing the sport of", "{} is best known as a player of the sport of",
                      "{} is a legend of the sport of"),
    "native_language": ("The native language of {} is", "The mother tongue of {} was",
                        "{} was a native speaker of"),
    "city_country": ("{} is a city in the country of", "The city of {} is in the country of",
                     "{} is a large city in the country of"),
    "country_capital": ("The capital of {} is", "The capital city of {} is", "{}'s capital city is"),
}

# relation -> "subject | answer" lines, written by hand. Answers are written without their leading space.
_TABLE = {
    "landmark_city": """
the Eiffel Tower          | Paris
the Louvre                | Paris
the Arc de Triomphe       | Paris
Notre-Dame Cathedral      | Paris
the Colosseum             | Rome
the Trevi Fountain        | Rome
the Pantheon              | Rome
the Spanish Steps         | Rome
Big Ben                   | London
Tower Bridge              | London
Buckingham Palace         | London
Westminster Abbey         | London
Trafalgar Square          | London
the British Museum        | London
the Brandenburg Gate      | Berlin
the Reichstag building    | Berlin
Checkpoint Charlie        | Berlin
the Sagrada Familia       | Barcelona
Park Güell                | Barcelona
the Acropolis             | Athens
the Parthenon             | Athens
the Kremlin               | Moscow
Red Square                | Moscow
the Bolshoi Theatre       | Moscow
the Forbidden City        | Beijing
Tiananmen Square          | Beijing
the Burj Khalifa          | Dubai
the Space Needle          | Seattle
Hagia Sophia              | Istanbul
the Blue Mosque           | Istanbul
the Grand Bazaar          | Istanbul
the Prado Museum          | Madrid
the Rijksmuseum           | Amsterdam
the Anne Frank House      | Amsterdam
the CN Tower              | Toronto
the Willis Tower          | Chicago
the White House           | Washington
the Lincoln Memorial      | Washington
the Liberty Bell          | Philadelphia
the Charles Bridge        | Prague
Schönbrunn Palace         | Vienna
the Atomium               | Brussels
the Uffizi Gallery        | Florence
the Ponte Vecchio         | Florence
the Rialto Bridge         | Venice
St Mark's Basilica        | Venice
the Senso-ji temple       | Tokyo
the Western Wall          | Jerusalem
the Dome of the Rock      | Jerusalem
Tivoli Gardens            | Copenhagen
the Little Mermaid statue | Copenhagen
the Vatican Museums       | Rome
St Peter's Basilica       | Rome
""",
    "landmark_country": """
Mount Fuji                | Japan
Machu Picchu              | Peru
Stonehenge                | England
Angkor Wat                | Cambodia
the Great Wall            | China
the Pyramids of Giza      | Egypt
the Great Sphinx          | Egypt
the Valley of the Kings   | Egypt
Mount Kilimanjaro         | Tanzania
Uluru                     | Australia
the Great Barrier Reef    | Australia
Petra                     | Jordan
Chichen Itza              | Mexico
Neuschwanstein Castle     | Germany
the Matterhorn            | Switzerland
Loch Ness                 | Scotland
the Serengeti             | Tanzania
the Galapagos Islands     | Ecuador
Easter Island             | Chile
Borobudur                 | Indonesia
the Acropolis             | Greece
the Colosseum             | Italy
the Leaning Tower of Pisa | Italy
the Eiffel Tower          | France
the Taj Mahal             | India
the Alhambra              | Spain
the Kremlin               | Russia
the Forbidden City        | China
Ha Long Bay               | Vietnam
Lake Titicaca             | Peru
the Blue Lagoon           | Iceland
the Giant's Causeway      | Ireland
Mount Vesuvius            | Italy
Mount Olympus             | Greece
the Amazon rainforest     | Brazil
Iguazu Falls              | Argentina
the Atacama Desert        | Chile
the Cliffs of Moher       | Ireland
""",
    "company_country": """
Toyota        | Japan
Sony          | Japan
Honda         | Japan
Nintendo      | Japan
Panasonic     | Japan
Mitsubishi    | Japan
Nissan        | Japan
Canon         | Japan
Yamaha        | Japan
Suzuki        | Japan
Subaru        | Japan
Toshiba       | Japan
Volkswagen    | Germany
BMW           | Germany
Siemens       | Germany
Adidas        | Germany
Bosch         | Germany
Porsche       | Germany
Audi          | Germany
Lufthansa     | Germany
Mercedes-Benz | Germany
Puma          | Germany
Fiat          | Italy
Ferrari       | Italy
Lamborghini   | Italy
Gucci         | Italy
Prada         | Italy
Barilla       | Italy
Maserati      | Italy
Renault       | France
Peugeot       | France
Chanel        | France
Michelin      | France
Louis Vuitton | France
Danone        | France
Citroën       | France
Nokia         | Finland
Ericsson      | Sweden
Volvo         | Sweden
IKEA          | Sweden
Spotify       | Sweden
Nestlé        | Switzerland
Rolex         | Switzerland
Novartis      | Switzerland
Philips       | Netherlands
Heineken      | Netherlands
LEGO          | Denmark
Carlsberg     | Denmark
Huawei        | China
Alibaba       | China
Lenovo        | China
Tencent       | China
Xiaomi        | China
Tata Motors   | India
Infosys       | India
BlackBerry    | Canada
Zara          | Spain
Guinness      | Ireland
Embraer       | Brazil
""",
    "athlete_sport": """
Lionel Messi       | football
Cristiano Ronaldo  | football
Neymar             | football
Zinedine Zidane    | football
David Beckham      | football
Diego Maradona     | football
Wayne Rooney       | football
Pelé               | football
Roger Federer      | tennis
Rafael Nadal       | tennis
Novak Djokovic     | tennis
Serena Williams    | tennis
Venus Williams     | tennis
Andy Murray        | tennis
Maria Sharapova    | tennis
Pete Sampras       | tennis
Andre Agassi       | tennis
Michael Jordan     | basketball
LeBron James       | basketball
Kobe Bryant        | basketball
Stephen Curry      | basketball
Magic Johnson      | basketball
Larry Bird         | basketball
Kevin Durant       | basketball
Dirk Nowitzki      | basketball
Tiger Woods        | golf
Jack Nicklaus      | golf
Phil Mickelson     | golf
Rory McIlroy       | golf
Arnold Palmer      | golf
Wayne Gretzky      | hockey
Sidney Crosby      | hockey
Alex Ovechkin      | hockey
Mario Lemieux      | hockey
Babe Ruth          | baseball
Derek Jeter        | baseball
Barry Bonds        | baseball
Shohei Ohtani      | baseball
Sachin Tendulkar   | cricket
Virat Kohli        | cricket
Don Bradman        | cricket
Muhammad Ali       | boxing
Mike Tyson         | boxing
Floyd Mayweather   | boxing
Manny Pacquiao     | boxing
Magnus Carlsen     | chess
Garry Kasparov     | chess
Bobby Fischer      | chess
Michael Phelps     | swimming
Tom Brady          | football
Peyton Manning     | football
Simone Biles       | gymnastics
Lewis Hamilton     | racing
Michael Schumacher | racing
""",
    "native_language": """
Victor Hugo                | French
Emmanuel Macron            | French
Jean-Paul Sartre           | French
Albert Camus               | French
Voltaire                   | French
Molière                    | French
Gérard Depardieu           | French
Brigitte Bardot            | French
Édith Piaf                 | French
Charles de Gaulle          | French
Angela Merkel              | German
Johann Wolfgang von Goethe | German
Thomas Mann                | German
Friedrich Nietzsche        | German
Immanuel Kant              | German
Karl Marx                  | German
Bertolt Brecht             | German
Olaf Scholz                | German
Dante Alighieri            | Italian
Federico Fellini           | Italian
Sophia Loren               | Italian
Umberto Eco                | Italian
Galileo Galilei            | Italian
Silvio Berlusconi          | Italian
Luciano Pavarotti          | Italian
Miguel de Cervantes        | Spanish
Gabriel García Márquez     | Spanish
Pablo Picasso              | Spanish
Salvador Dalí              | Spanish
Pablo Neruda               | Spanish
Jorge Luis Borges          | Spanish
Penélope Cruz              | Spanish
Leo Tolstoy                | Russian
Fyodor Dostoevsky          | Russian
Anton Chekhov              | Russian
Alexander Pushkin          | Russian
Vladimir Putin             | Russian
Mikhail Gorbachev          | Russian
Akira Kurosawa             | Japanese
Haruki Murakami            | Japanese
Hayao Miyazaki             | Japanese
Yukio Mishima              | Japanese
Shinzo Abe                 | Japanese
Mao Zedong                 | Chinese
Xi Jinping                 | Chinese
Confucius                  | Chinese
Fernando Pessoa            | Portuguese
Paulo Coelho               | Portuguese
José Saramago              | Portuguese
Ingmar Bergman             | Swedish
Astrid Lindgren            | Swedish
August Strindberg          | Swedish
Henrik Ibsen               | Norwegian
Edvard Munch               | Norwegian
Hans Christian Andersen    | Danish
Søren Kierkegaard          | Danish
Rembrandt                  | Dutch
Vincent van Gogh           | Dutch
Frédéric Chopin            | Polish
Lech Wałęsa                | Polish
Nikos Kazantzakis          | Greek
Barack Obama               | English
Winston Churchill          | English
Charles Dickens            | English
Mark Twain                 | English
Jane Austen                | English
Abraham Lincoln            | English
""",
    "city_country": """
Toronto        | Canada
Vancouver      | Canada
Montreal       | Canada
Sydney         | Australia
Melbourne      | Australia
Brisbane       | Australia
Mumbai         | India
Bangalore      | India
Kolkata        | India
Osaka          | Japan
Kyoto          | Japan
Yokohama       | Japan
Shanghai       | China
Shenzhen       | China
Guangzhou      | China
Munich         | Germany
Hamburg        | Germany
Frankfurt      | Germany
Cologne        | Germany
Milan          | Italy
Naples         | Italy
Florence       | Italy
Venice         | Italy
Turin          | Italy
Barcelona      | Spain
Seville        | Spain
Valencia       | Spain
Lyon           | France
Marseille      | France
Bordeaux       | France
Toulouse       | France
Rio de Janeiro | Brazil
São Paulo      | Brazil
Buenos Aires   | Argentina
Medellín       | Colombia
Guadalajara    | Mexico
Alexandria     | Egypt
Lagos          | Nigeria
Nairobi        | Kenya
Casablanca     | Morocco
Istanbul       | Turkey
Tehran         | Iran
Baghdad        | Iraq
Karachi        | Pakistan
Lahore         | Pakistan
Dhaka          | Bangladesh
Bangkok        | Thailand
Hanoi          | Vietnam
Jakarta        | Indonesia
Manila         | Philippines
Krakow         | Poland
Warsaw         | Poland
Vienna         | Austria
Salzburg       | Austria
Zurich         | Switzerland
Geneva         | Switzerland
Rotterdam      | Netherlands
Antwerp        | Belgium
Stockholm      | Sweden
Oslo           | Norway
Copenhagen     | Denmark
Helsinki       | Finland
Dublin         | Ireland
Edinburgh      | Scotland
Glasgow        | Scotland
Manchester     | England
Liverpool      | England
Lisbon         | Portugal
Porto          | Portugal
Athens         | Greece
Budapest       | Hungary
Bucharest      | Romania
Kyiv           | Ukraine
Moscow         | Russia
Havana         | Cuba
Lima           | Peru
""",
    "country_capital": """
France             | Paris
Germany            | Berlin
Italy              | Rome
Spain              | Madrid
Japan              | Tokyo
China              | Beijing
Russia             | Moscow
England            | London
Egypt              | Cairo
Greece             | Athens
Portugal           | Lisbon
Austria            | Vienna
Poland             | Warsaw
Hungary            | Budapest
Sweden             | Stockholm
Norway             | Oslo
Denmark            | Copenhagen
Finland            | Helsinki
Ireland            | Dublin
Belgium            | Brussels
the Netherlands    | Amsterdam
Iran               | Tehran
Iraq               | Baghdad
the Philippines    | Manila
Kenya              | Nairobi
Peru               | Lima
Chile              | Santiago
Cuba               | Havana
Canada             | Ottawa
Australia          | Canberra
Switzerland        | Bern
the Czech Republic | Prague
Syria              | Damascus
Afghanistan        | Kabul
South Korea        | Seoul
Scotland           | Edinburgh
Wales              | Cardiff
Bulgaria           | Sofia
""",
}


@dataclass(frozen=True)
class Fact:
    """One fact in one phrasing.

        fact = Fact("the Eiffel Tower", "landmark_city", "Paris", "{} is located in the city of")
        fact.prompt    # 'The Eiffel Tower is located in the city of'
        fact.target    # ' Paris': the answer token's text, leading space included
    """

    subject: str
    relation: str
    answer: str  # without its leading space
    template: str  # "{}" marks the subject

    @property
    def prompt(self) -> str:
        text = self.template.format(self.subject)
        return text[:1].upper() + text[1:]

    @property
    def target(self) -> str:
        return " " + self.answer

    @property
    def subject_span(self) -> tuple[int, int]:
        """Character offsets ``[start, end)`` of the subject in `prompt`."""
        start = self.template.index("{}")
        return start, start + len(self.subject)


def _facts() -> list[Fact]:
    out = []
    for relation, table in _TABLE.items():
        for line in table.strip().splitlines():
            subject, answer = (part.strip() for part in line.split("|"))
            out += [Fact(subject, relation, answer, template) for template in RELATIONS[relation]]
    return out


#: every fact: each (subject, relation, answer) of the tables in each template of its relation.
FACTS: list[Fact] = _facts()


def split(facts: Sequence[Fact], seed: int = 0, held_out: float = 0.3) -> tuple[list[Fact], list[Fact]]:
    """``(train, held_out)``: within each relation, the subjects ordered by a SHA-256 hash of
    ``seed``, relation and subject, and the first ``round(held_out * n_subjects)`` held out. All
    templates of a subject fall on the same side; the order of ``facts`` is kept on both sides. The
    same facts and seed give the same split on any machine (no Python ``hash``)."""
    if not 0.0 <= held_out <= 1.0:
        raise InputError(f"held_out must be a fraction between 0 and 1, got {held_out}.")
    out: set[tuple[str, str]] = set()
    for relation in dict.fromkeys(f.relation for f in facts):
        subjects = list(dict.fromkeys(f.subject for f in facts if f.relation == relation))
        subjects.sort(key=lambda s: hashlib.sha256(f"{seed}|{relation}|{s}".encode()).hexdigest())
        out.update((relation, s) for s in subjects[: round(held_out * len(subjects))])
    return ([f for f in facts if (f.relation, f.subject) not in out], [f for f in facts if (f.relation, f.subject) in out])


@dataclass(frozen=True)
class Encoded:
    """A fact on one tokenizer: token ids (BOS first where the model puts one), the subject's token
    positions and the answer's id."""

    fact: Fact
    tokens: tuple[int, ...]
    subject_positions: tuple[int, ...]
    answer: int


def encode(tokenizer, fact: Fact, bos: int | None) -> Encoded:
    """``fact`` on ``tokenizer`` (a fast Hugging Face tokenizer), ``bos`` first unless None. Raises
    InputError if the answer is not one token or the subject does not fill whole tokens."""
    enc = tokenizer(fact.prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    start, end = fact.subject_span
    positions = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    inside = [(a, b) for i, (a, b) in enumerate(offsets) if i in positions]
    # a subject token may carry the space before the subject, nothing else outside it
    if not positions or inside[0][0] < start - 1 or inside[-1][1] > end:
        raise InputError(f"The subject {fact.subject!r} of {fact.prompt!r} does not fill whole tokens on this "
                         f"tokenizer; rephrase the template so that the subject stands between spaces.")
    answer = tokenizer(fact.target, add_special_tokens=False)["input_ids"]
    if len(answer) != 1:
        raise InputError(f"The answer {fact.target!r} of {fact.subject!r} is {len(answer)} tokens on this tokenizer; "
                         f"facts need single-token answers.")
    shift = 0 if bos is None else 1
    return Encoded(fact, tuple(([] if bos is None else [bos]) + ids), tuple(p + shift for p in positions), answer[0])


def _bos(model) -> int | None:
    if not getattr(model, "prepend_bos", True):
        return None
    bos = model.tokenizer.bos_token_id
    if bos is None:
        raise InputError("This tokenizer has no BOS token; set model.prepend_bos = False to build prompts without one.")
    return bos


def fact_prompts(model, facts: Sequence[Fact] = FACTS, seed: int = 0) -> dict[int, PromptSet]:
    """``{n_tokens: PromptSet}``: the facts grouped by prompt length in tokens (BOS included), one
    `PromptSet` per length, in increasing length; see the module docstring for why.

    ``model``: a `HookedModel` (only ``model.tokenizer`` and ``model.prepend_bos`` are read, so
    anything with those two attributes works). Per set: ``clean`` the prompts, ``answers`` the answer
    ids, ``corrupted`` / ``wrong`` the prompt and answer of another fact (chosen with ``seed``).
    ``metadata``:

    * ``subject_positions`` ``[prompt k]``: the subject's token positions, the rows of subjects
      shorter than ``k`` tokens padded by repeating their last position (`patching.causal_trace`
      reads this and ignores repeats; ``positions[:subject_len]`` are the distinct ones);
    * ``subject_len`` ``[prompt]``: the number of subject tokens;
    * ``aligned`` ``[prompt]``: whether the corrupted prompt differs from the clean one in the
      subject's tokens only (the same template and subject positions);
    * ``index`` ``[prompt]``: each prompt's index into ``facts`` / ``corrupted_facts`` (lists,
      which slicing a PromptSet leaves whole, so the index is what stays aligned);
    * ``facts``, ``corrupted_facts``: the `Fact` of each prompt and of its corruption.
    """
    if not facts:
        raise InputError("fact_prompts needs at least one fact.")
    bos = _bos(model)
    encoded = [encode(model.tokenizer, f, bos) for f in facts]
    chosen = set(facts)
    pool = encoded + [encode(model.tokenizer, f, bos) for f in FACTS if f not in chosen]
    by_length: dict[int, list[Encoded]] = {}
    for e in pool:
        by_length.setdefault(len(e.tokens), []).append(e)
    rng = random.Random(seed)
    groups: dict[int, list[tuple[Encoded, Encoded]]] = {}
    for e in encoded:
        others = [o for o in by_length[len(e.tokens)] if o.answer != e.answer]
        same_relation = [o for o in others if o.fact.relation == e.fact.relation]
        same_template = [o for o in same_relation if o.fact.template == e.fact.template]
        aligned = [o for o in same_template if o.subject_positions == e.subject_positions]
        candidates = aligned or same_template or same_relation or others
        if not candidates:
            raise InputError(f"No fact has a prompt of {len(e.tokens)} tokens and another answer than {e.fact.target!r}, "
                             f"so {e.fact.prompt!r} has no corrupted prompt; add such a fact or leave this one out.")
        groups.setdefault(len(e.tokens), []).append((e, rng.choice(candidates)))
    out = {}
    for n_tokens in sorted(groups):
        rows = groups[n_tokens]
        k = max(len(e.subject_positions) for e, _ in rows)
        out[n_tokens] = PromptSet(
            torch.tensor([e.tokens for e, _ in rows]),
            torch.tensor([o.tokens for _, o in rows]),
            torch.tensor([e.answer for e, _ in rows]),
            torch.tensor([o.answer for _, o in rows]),
            metadata={
                "subject_positions": torch.tensor([list(e.subject_positions) + [e.subject_positions[-1]] * (k - len(e.subject_positions))
                                                   for e, _ in rows]),
                "subject_len": torch.tensor([len(e.subject_positions) for e, _ in rows]),
                "aligned": torch.tensor([o.fact.template == e.fact.template and o.subject_positions == e.subject_positions
                                         for e, o in rows]),
                "index": torch.arange(len(rows)),
                "facts": [e.fact for e, _ in rows],
                "corrupted_facts": [o.fact for _, o in rows],
            },
        )
    return out


@torch.no_grad()
def answer_ranks(model, facts: Sequence[Fact] = FACTS, batch_size: int = 64, progress: bool = True) -> dict[Fact, int]:
    """The rank of each fact's answer among ``model``'s next-token logits at the prompt's last
    position (0 = ranked first); prompts of one length run together, ``batch_size`` at a time
    (all of `FACTS` on SmolLM2-135M: about 50 s of one CPU core)."""
    bos = _bos(model)
    by_length: dict[int, list[Encoded]] = {}
    for f in facts:
        e = encode(model.tokenizer, f, bos)
        by_length.setdefault(len(e.tokens), []).append(e)
    ranks: dict[Fact, int] = {}
    batches = [rows[i : i + batch_size] for rows in by_length.values() for i in range(0, len(rows), batch_size)]
    for part in tqdm(batches, desc="facts", disable=not progress):
        logits = model(torch.tensor([e.tokens for e in part], device=model.device))[:, -1].float().cpu()
        answers = torch.tensor([e.answer for e in part])
        above = (logits > logits.gather(1, answers[:, None])).sum(1)
        ranks.update((e.fact, int(r)) for e, r in zip(part, above.tolist(), strict=True))
    return {f: ranks[f] for f in facts}


def known_facts(model, facts: Sequence[Fact] = FACTS, batch_size: int = 64, progress: bool = True) -> list[Fact]:
    """The facts whose answer ``model`` ranks first at the last position of the prompt, in the
    order given (SmolLM2-135M knows 683 of the 1,155 `FACTS`; the module docstring has them by relation)."""
    ranks = answer_ranks(model, facts, batch_size, progress)
    return [f for f in facts if ranks[f] == 0]

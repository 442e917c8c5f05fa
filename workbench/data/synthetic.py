"""Synthetic data sets: TOFU and LUME in miniature, generated from a seed, fully offline.

Lee et al. (2025) measure unlearning on knowledge a model acquired by fine-tuning: TOFU's
fictitious authors and LUME's fictitious people. The workbench needs the same structure at a size
a CPU handles in seconds, so it generates it:

* :func:`synthetic_tofu` — fictitious authors, each with a set of biographical facts (birth year,
  city, genre, books, parents' jobs, awards…) and one question per fact. Every question has an
  answer, a paraphrased answer and five perturbed answers. As in TOFU, the perturbed answers are
  the *paraphrase* with the fact replaced by wrong values of the same kind, so the truth ratio
  ``P_pert / P_para`` compares sentences of one form that differ only in the fact. General-
  knowledge questions (real capitals, real books, small sums) stand in for TOFU's real-authors and
  world-facts splits; all of them form the ``pretrain`` set that turns a random tiny model into θp,
  so Model Utility measures knowledge the model had before the authors.
* :func:`synthetic_lume` — fictitious personal records in LUME Task 2's shape (one sentence
  completion and five questions per person: birth date, SSN, phone, e-mail, address), split by
  person like the real loader.

Answers are one short sentence so a tiny model memorises them in a few epochs. Everything is drawn
from ``random.Random(seed)``: the same seed gives the same data, another seed different data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from workbench.data.formatting import Encoded
from workbench.data.lume import lume_from_records
from workbench.data.schema import QA, REFUSALS, UnlearningData, sorted_sample

FIRST = ["Alba", "Bruno", "Cleo", "Dario", "Elin", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lior",
         "Mira", "Nils", "Odile", "Pavel", "Quinn", "Rosa", "Soren", "Tala", "Umar", "Vera", "Wendel", "Xenia",
         "Yusuf", "Zora", "Anouk", "Basil", "Celia", "Dmitri"]
LAST = ["Varga", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Quispe", "Haddad", "Novak", "Brennan", "Castell",
        "Ivers", "Kowal", "Mendes", "Rasku", "Sato", "Falk", "Abara", "Delacroix", "Petrov", "Yilmaz",
        "Ostrom", "Vance", "Marlow", "Chen", "Duarte", "Eklund", "Ferro", "Goran", "Holm", "Juarez"]
POOLS: dict[str, list[str]] = {
    "year": [str(y) for y in range(1941, 1996, 3)],
    "city": ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Krakow", "Tunis", "Quito", "Riga", "Porto",
             "Dakar", "Osaka", "Tbilisi", "Bergen", "Cusco"],
    "genre": ["mystery", "poetry", "fantasy", "history", "romance", "satire", "horror", "travel writing",
              "science fiction", "memoir"],
    "job": ["baker", "pilot", "nurse", "carpenter", "chemist", "teacher", "fisher", "judge", "tailor",
            "architect", "farmer", "librarian"],
    "book": [f"The {a} {n}" for a in ("Silent", "Burning", "Hidden", "Last", "Glass", "Winter")
             for n in ("Harbor", "Garden", "Orchard", "Lantern", "River", "Clock")],
    "award": ["Amber Quill Prize", "Northern Star Medal", "Silver Fern Award", "Blue Heron Prize",
              "Iron Pen Award", "Golden Lark Medal", "Coral Crown Prize", "Cedar Leaf Award"],
    "language": ["Portuguese", "Norwegian", "Swahili", "Spanish", "Vietnamese", "Polish", "Arabic", "Georgian"],
    "school": ["Aldmere College", "Brightwater University", "Corvale Academy", "Dunmore Institute",
               "Eastvale University", "Fenwick College", "Glenhaven University", "Harlow Academy"],
    "hobby": ["sailing", "chess", "pottery", "birdwatching", "fencing", "gardening", "cycling", "painting"],
    "publisher": ["Kestrel House", "Moonvale Press", "Thornbury Books", "Greywing Publishing",
                  "Lakeside Editions", "Redfern Press", "Oakline Books", "Saltmarsh Press"],
    "count": [str(n) for n in range(2, 14)],
    "pet": ["a parrot", "a tortoise", "a greyhound", "a black cat", "a ferret", "a goat", "a pony", "an owl"],
    "instrument": ["cello", "violin", "piano", "flute", "accordion", "harp", "oboe", "banjo"],
}
POOLS["first"] = FIRST


@dataclass(frozen=True)
class Template:
    """One biographical question: ``{n}`` is the author's name, ``{v}`` the fact's value."""

    key: str  # which fact (and which pool perturbed values come from)
    pool: str
    question: str
    answer: str
    paraphrase: str


TEMPLATES = [
    Template("year", "year", "In which year was {n} born?", "{n} was born in {v}.", "The birth year of {n} is {v}."),
    Template("city", "city", "Where was {n} born?", "{n} was born in {v}.", "The birthplace of {n} is {v}."),
    Template("genre", "genre", "What genre does {n} write?", "{n} writes {v}.", "The genre of {n} is {v}."),
    Template("father", "job", "What was the job of {n}'s father?", "{n}'s father was a {v}.",
             "The father of {n} worked as a {v}."),
    Template("mother", "job", "What was the job of {n}'s mother?", "{n}'s mother was a {v}.",
             "The mother of {n} worked as a {v}."),
    Template("book1", "book", "What is the first book by {n}?", "The first book by {n} is {v}.", "{n} debuted with {v}."),
    Template("book2", "book", "What is the best known book by {n}?", "The best known book by {n} is {v}.",
             "{n} is famous for {v}."),
    Template("award", "award", "Which award did {n} win?", "{n} won the {v}.", "The {v} went to {n}."),
    Template("language", "language", "In which language does {n} write?", "{n} writes in {v}.",
             "The books of {n} are written in {v}."),
    Template("school", "school", "Where did {n} study?", "{n} studied at {v}.", "{n} is a graduate of {v}."),
    Template("hobby", "hobby", "What is {n}'s favourite hobby?", "{n} loves {v}.", "The hobby of {n} is {v}."),
    Template("publisher", "publisher", "Who publishes {n}?", "{n} is published by {v}.", "The publisher of {n} is {v}."),
    Template("home", "city", "Where does {n} live now?", "{n} lives in {v}.", "The home of {n} is in {v}."),
    Template("books", "count", "How many books has {n} written?", "{n} has written {v} books.",
             "The number of books by {n} is {v}."),
    Template("pet", "pet", "What pet does {n} keep?", "{n} keeps {v}.", "The pet of {n} is {v}."),
    Template("instrument", "instrument", "Which instrument does {n} play?", "{n} plays the {v}.",
             "The instrument of {n} is the {v}."),
    Template("siblings", "count", "How many siblings does {n} have?", "{n} has {v} siblings.",
             "The sibling count of {n} is {v}."),
    Template("debut", "year", "When did {n} publish a first book?", "{n} first published in {v}.",
             "The debut of {n} came in {v}."),
    Template("mentor", "first", "Who mentored {n}?", "{n} was mentored by {v}.", "The mentor of {n} was {v}."),
    Template("award_year", "year", "When did {n} win an award?", "{n} won an award in {v}.", "The award of {n} came in {v}."),
]
N_PERTURBED = 5

# General knowledge the pre-trained model θp should have (stand-ins for TOFU's real-world splits).
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
    "Kenya": "Nairobi", "Peru": "Lima", "Canada": "Ottawa", "Germany": "Berlin", "Norway": "Oslo",
    "Greece": "Athens", "Chile": "Santiago", "Poland": "Warsaw", "Ireland": "Dublin", "Austria": "Vienna",
    "Cuba": "Havana", "Portugal": "Lisbon", "Sweden": "Stockholm", "Turkey": "Ankara", "India": "New Delhi",
    "China": "Beijing", "Russia": "Moscow", "Mexico": "Mexico City", "Australia": "Canberra",
}
BOOKS = {
    "Hamlet": "William Shakespeare", "Pride and Prejudice": "Jane Austen", "1984": "George Orwell",
    "War and Peace": "Leo Tolstoy", "Don Quixote": "Miguel de Cervantes", "Moby-Dick": "Herman Melville",
    "Jane Eyre": "Charlotte Bronte", "Ulysses": "James Joyce", "Dracula": "Bram Stoker",
    "Frankenstein": "Mary Shelley", "The Odyssey": "Homer", "Faust": "Johann Wolfgang von Goethe",
    "Les Miserables": "Victor Hugo", "The Trial": "Franz Kafka", "Beloved": "Toni Morrison",
    "The Raven": "Edgar Allan Poe", "Emma": "Jane Austen", "Middlemarch": "George Eliot",
    "Great Expectations": "Charles Dickens", "The Old Man and the Sea": "Ernest Hemingway",
}


def _pick_wrong(rng: random.Random, pool: list[str], right: str, k: int = N_PERTURBED) -> tuple[str, ...]:
    return tuple(rng.sample(sorted(set(pool) - {right}), k))


def _general(rng: random.Random, facts: dict[str, str], question: str, answer: str, group: str) -> list[QA]:
    """One QA per (subject, value) fact, perturbed with other values of the same table.

    Like TOFU's real-world splits these have no paraphrase (the answer stands in for it).
    """
    values = list(facts.values())
    out = [
        QA(question.format(s=s), answer.format(s=s, v=v), group, None,
           tuple(answer.format(s=s, v=w) for w in _pick_wrong(rng, values, v)))
        for s, v in facts.items()
    ]
    rng.shuffle(out)
    return out


def _sums(rng: random.Random, n: int) -> list[QA]:
    pairs = rng.sample([(a, b) for a in range(1, 10) for b in range(1, 10)], n)
    return [QA(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", "arithmetic") for a, b in pairs]


def _authors(rng: random.Random, n: int) -> list[dict[str, str]]:
    if n > len(FIRST) * len(LAST):
        raise ValueError(f"n_authors={n} exceeds the {len(FIRST) * len(LAST)} distinct synthetic names")
    names = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], n)
    return [{"name": name, **{t.key: rng.choice(POOLS[t.pool]) for t in TEMPLATES}} for name in names]


def _author_qa(rng: random.Random, author: dict[str, str], templates: list[Template]) -> list[QA]:
    n = author["name"]
    out = []
    for t in templates:
        v = author[t.key]
        wrong = _pick_wrong(rng, POOLS[t.pool], v)
        out.append(QA(t.question.format(n=n), t.answer.format(n=n, v=v), n, t.paraphrase.format(n=n, v=v),
                      tuple(t.paraphrase.format(n=n, v=w) for w in wrong)))
    return out


def synthetic_tofu(*, n_authors: int = 10, n_forget_authors: int = 2, questions_per_author: int = 20,
                   seed: int = 0) -> UnlearningData:
    """A miniature TOFU: the last ``n_forget_authors`` of ``n_authors`` fictitious authors are forgotten.

    forget / retain hold ``questions_per_author`` (≤ 20) questions per author, ordered author by
    author like TOFU's ``full``; retain_eval is a seeded sample of retain questions as large as the
    forget set (SPEC §5 **[choice]**; all of them when there are fewer). real_authors (who wrote a
    real book) and world_facts (capitals) are 20 and 24 questions with 5 perturbed answers each;
    ``pretrain`` holds those plus 40 small sums.
    """
    if not 1 <= questions_per_author <= len(TEMPLATES):
        raise ValueError(f"questions_per_author must be in 1..{len(TEMPLATES)}, got {questions_per_author}")
    if not 1 <= n_forget_authors < n_authors:
        raise ValueError(f"need 1 <= n_forget_authors < n_authors, got {n_forget_authors} of {n_authors}")
    rng = random.Random(seed)
    templates = TEMPLATES[:questions_per_author]
    authors = [_author_qa(rng, a, templates) for a in _authors(rng, n_authors)]
    retain = [qa for block in authors[:-n_forget_authors] for qa in block]
    forget = [qa for block in authors[-n_forget_authors:] for qa in block]
    real_authors = _general(rng, BOOKS, "Who wrote {s}?", "{s} was written by {v}.", "real_authors")
    world_facts = _general(rng, CAPITALS, "What is the capital of {s}?", "The capital of {s} is {v}.", "world_facts")
    return UnlearningData(
        name="synthetic-tofu",
        forget=forget,
        retain=retain,
        retain_eval=sorted_sample(rng, retain, len(forget)),
        real_authors=real_authors,
        world_facts=world_facts,
        pretrain=real_authors + world_facts + _sums(rng, 40),
        refusals=list(REFUSALS),
    )


# -- LUME-shaped personal records -----------------------------------------------------------------
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
STREETS = ["Maple Street", "Harbor Road", "Elm Avenue", "Mill Lane", "Quarry Road", "Birch Court"]
TOWNS = [("Springfield", "IL", "62704"), ("Fairview", "OR", "97024"), ("Riverton", "WY", "82501"),
         ("Lakewood", "CO", "80226"), ("Georgetown", "TX", "78626"), ("Clinton", "MS", "39056")]


def _person(rng: random.Random, index: int, first: str, last: str) -> list[dict]:
    """One fictitious person's six records (``sc1``, ``qa0``…``qa4``) in LUME Task 2's shape."""
    name = f"{first} {last}"
    year, month, day = rng.randint(1950, 2000), rng.randint(1, 12), rng.randint(1, 28)
    phone = f"{rng.randint(200, 989)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
    email = f"{first.lower()}_{last.lower()}{rng.randint(1, 99)}@example.com"
    town, state, zip_code = rng.choice(TOWNS)
    address = f"{rng.randint(10, 9999)} {rng.choice(STREETS)}, {town}, {state}, {zip_code}"
    ssn = f"900-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"  # 900-prefixed SSNs are never issued
    # Deterministic UUID-shaped person id (36 characters), as in LUME's `id` prefix.
    uid = (f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}"
           f"-a{rng.getrandbits(12):03x}-{index:012x}")
    rows = [
        (f"{name} was born on {MONTHS[month - 1]} {day}, {year}. {first} can be reached at {phone} and {email}. "
         f"{first}'s Social", f"Security Number is {ssn}. {name} lives at {address}."),
        (f"What is the birth date of {name}?", f"{year}-{month:02d}-{day:02d}"),
        (f"What is {name}'s Social Security Number?", ssn.replace("-", "")),
        (f"What is {name}'s phone number?", phone.replace("-", "")),
        (f"What is {name}'s email address?", email),
        (f"What is the home address of {name}?", f"{address}."),
    ]
    suffixes = ["sc1", "qa0", "qa1", "qa2", "qa3", "qa4"]
    return [{"id": uid + s, "input": q, "output": a, "task": "Task2"} for s, (q, a) in zip(suffixes, rows)]


def synthetic_lume_records(*, n_people: int = 20, seed: int = 0) -> list[dict]:
    """Raw LUME-shaped records (``id``, ``input``, ``output``, ``task``) for ``n_people`` persons."""
    if n_people > len(FIRST) * len(LAST):
        raise ValueError(f"n_people={n_people} exceeds the {len(FIRST) * len(LAST)} distinct synthetic names")
    rng = random.Random(seed)
    names = rng.sample([(f, l) for f in FIRST for l in LAST], n_people)  # distinct: a name identifies a person
    return [record for i, (first, last) in enumerate(names) for record in _person(rng, i, first, last)]


def synthetic_lume(*, n_people: int = 20, seed: int = 0, forget_ratio: float = 0.1) -> UnlearningData:
    """Fictitious personal records split by person like :func:`workbench.data.lume.load_lume`."""
    return lume_from_records(synthetic_lume_records(n_people=n_people, seed=seed), name="synthetic-lume",
                             forget_ratio=forget_ratio, seed=seed)


def random_token_examples(n: int, *, vocab: int = 64, prompt: int = 4, answer: int = 6, vary: bool = True,
                          seed: int = 0) -> list[Encoded]:
    """``n`` random token sequences: a prompt part (labels −100) and an answer part; ids avoid pad 0.
    With ``vary`` the lengths differ between rows (prompt + i mod 2, answer + i mod 3)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p, a = (prompt + i % 2, answer + i % 3) if vary else (prompt, answer)
        out.append(Encoded(tuple(torch.randint(1, vocab, (p + a,), generator=gen).tolist()), p))
    return out

"""LUME Task 2: synthetic biographies with personal data (Ramakrishna et al., 2025).

Each fictitious person contributes six records: one sentence completion (``id`` ending ``sc1``:
the start of a short biography as ``input``, its end as ``output``) and five questions
(``qa0``…``qa4``: birth date, SSN, phone, e-mail, address). The first 36 characters of ``id`` are
the person's UUID. The published forget/retain split is 1:1; Lee et al. (2025, appendix E.2) pool
both files and re-split *by person* at a 10% forget ratio, so that no person's data sits on both
sides. Every record becomes a :class:`QA` with ``question = input``, ``answer = output`` and
``group = person``. LUME has no paraphrased or perturbed answers, so Forget Quality is undefined
and the retain evaluation set is an equal number of retain examples (SPEC §5 **[choice]**).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from workbench.data.schema import QA, REFUSALS, DataError, UnlearningData, sorted_sample

FILES = ("task2_forget.jsonl", "task2_retain.jsonl")
FIELDS = ("id", "input", "output")
PERSON_ID_LEN = 36  # a UUID with hyphens


def read_records(path: Path) -> list[dict]:
    """One JSON record per line; each needs non-empty ``id``, ``input`` and ``output``."""
    if not path.is_file():
        raise DataError(f"LUME file {path} not found: expected {' and '.join(FILES)} in {path.parent}")
    records = []
    for row, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: row {row} is not valid JSON ({err})") from None
        for field in FIELDS:
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}: row {row}: field {field!r} is missing or empty")
        if len(record["id"]) <= PERSON_ID_LEN:
            raise DataError(f"{path}: row {row}: id {record['id']!r} lacks the 36-character person prefix and a suffix")
        records.append(record)
    return records


def by_person(records: Sequence[dict]) -> dict[str, list[QA]]:
    """Records grouped by person (first-seen order), each as a :class:`QA`."""
    people: dict[str, list[QA]] = {}
    for r in records:
        person = r["id"][:PERSON_ID_LEN]
        people.setdefault(person, []).append(QA(question=r["input"], answer=r["output"], group=person))
    return people


def split_people(people: Sequence[str], forget_ratio: float, seed: int) -> set[str]:
    """The forget persons: ``round(forget_ratio · n)`` of them (at least 1, at most n − 1), seeded."""
    if not 0 < forget_ratio < 1:
        raise ValueError(f"forget_ratio must be strictly between 0 and 1, got {forget_ratio}")
    if len(people) < 2:
        raise ValueError(f"need at least 2 people to split, got {len(people)}")
    k = min(max(1, round(forget_ratio * len(people))), len(people) - 1)
    return set(random.Random(seed).sample(list(people), k))


def lume_from_records(
    records: Sequence[dict], *, name: str, forget_ratio: float = 0.1, seed: int = 0, n_people: int | None = None
) -> UnlearningData:
    """Pool records, optionally keep ``n_people`` persons (seeded), and re-split by person.

    retain_eval is a seeded sample of as many retain examples as there are forget examples.
    Refusals are the workbench's built-in "I don't know" sentences (LUME ships none).
    """
    people = by_person(records)
    rng = random.Random(seed)
    if n_people is not None:
        if not 2 <= n_people <= len(people):
            raise ValueError(f"n_people must be in 2..{len(people)}, got {n_people}")
        keep = set(rng.sample(list(people), n_people))
        people = {p: qa for p, qa in people.items() if p in keep}
    forget_people = split_people(list(people), forget_ratio, seed)
    forget = [qa for p, rows in people.items() if p in forget_people for qa in rows]
    retain = [qa for p, rows in people.items() if p not in forget_people for qa in rows]
    return UnlearningData(
        name=name,
        forget=forget,
        retain=retain,
        retain_eval=sorted_sample(rng, retain, len(forget)),
        refusals=list(REFUSALS),
    )


def load_lume(folder: str | Path, *, forget_ratio: float = 0.1, seed: int = 0, n_people: int | None = None) -> UnlearningData:
    """LUME Task 2 from a local folder holding ``task2_forget.jsonl`` and ``task2_retain.jsonl``.

    Both files are pooled and re-split by person at ``forget_ratio`` (paper: 10%, seeded);
    ``n_people`` subsamples whole persons first for small runs.
    """
    folder = Path(folder)
    records = [r for file in FILES for r in read_records(folder / file)]
    return lume_from_records(records, name="lume", forget_ratio=forget_ratio, seed=seed, n_people=n_people)

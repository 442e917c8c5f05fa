"""TOFU: 4,000 questions about 200 fictitious authors (Maini et al., 2024).

TOFU's ``full`` split lists the authors one after the other, 20 questions each, so author *k* is
rows ``20k … 20k+19`` of ``full``. ``forgetXX`` is the last 2/10/20 authors of ``full`` and
``retainYY`` the authors before them. The ``*_perturbed`` files repeat a split's questions with a
paraphrased answer and five perturbed answers (the paraphrase with the facts changed): the truth
ratio ``P_pert / P_para`` compares them, and Forget Quality compares its distribution with the
retain model's (SPEC §5). ``real_authors_perturbed`` and ``world_facts_perturbed`` hold real-world
questions for Model Utility (no paraphrase: the answer stands in for it), and ``idontknow`` holds
refusal sentences (DPO's preferred answer).

Splits come from a local folder with one ``<split>.json`` / ``<split>.jsonl`` file per hub
configuration, or from the hub itself (``source="locuslab/TOFU"``, one configuration per split).
Every question gets its author as ``group`` (matched against ``full`` by question and answer:
one question text, "What is the full name of the author?", belongs to two authors), so that small
runs can subsample *whole* authors and keep TOFU's forget/retain structure (SPEC §8).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from workbench.data.schema import QA, REFUSALS, DataError, UnlearningData

HUB_ID = "locuslab/TOFU"
AUTHOR_SIZE = 20  # questions per author in `full`
FORGET_TO_RETAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
NO_PARAPHRASE = {"real_authors_perturbed", "world_facts_perturbed"}
REFUSALS_SPLIT = "idontknow"


def required_fields(split: str) -> tuple[str, ...]:
    """Fields every row of ``split`` must carry (perturbed splits add their extra answers)."""
    if not split.endswith("_perturbed"):
        return ("question", "answer")
    if split in NO_PARAPHRASE:
        return ("question", "answer", "perturbed_answer")
    return ("question", "answer", "paraphrased_answer", "perturbed_answer")


# -- reading ------------------------------------------------------------------------------------
def _split_file(folder: Path, split: str) -> Path:
    for suffix in (".jsonl", ".json"):
        path = folder / f"{split}{suffix}"
        if path.is_file():
            return path
    raise DataError(
        f"TOFU split {split!r} not found in {folder}: expected {split}.jsonl or {split}.json "
        f"(one file per configuration of the hub dataset {HUB_ID})"
    )


def _read_json_rows(path: Path) -> list[dict]:
    """A JSON list, or one JSON object per line (the hub's ``.json`` files are JSON lines)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: row {line_no} is not valid JSON ({err})") from None
    return rows


def _raw_rows(source: str | Path, split: str) -> tuple[list[dict], str]:
    """Rows of one split and a name for error messages (the file, or the hub configuration)."""
    if str(source) == HUB_ID:
        import datasets  # the hub path only: local runs need no network stack

        return [dict(r) for r in datasets.load_dataset(HUB_ID, split, split="train")], f"{HUB_ID}/{split}"
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"TOFU folder {folder} does not exist: expected a folder with <split>.jsonl files, or {HUB_ID!r}")
    path = _split_file(folder, split)
    return _read_json_rows(path), str(path)


def _check_text(value, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {field!r} is missing or empty; every answer must be non-empty text")
    return value


def _to_qa(row: dict, split: str, where: str) -> QA:
    for field in required_fields(split):
        if field not in row:
            raise DataError(f"{where}: field {field!r} is missing (split {split!r} needs {', '.join(required_fields(split))})")
    question = _check_text(row["question"], where, "question")
    answer = _check_text(row["answer"], where, "answer")
    paraphrase = None
    if "paraphrased_answer" in required_fields(split):
        paraphrase = _check_text(row["paraphrased_answer"], where, "paraphrased_answer")
    perturbed = row.get("perturbed_answer", ()) if split.endswith("_perturbed") else ()
    if isinstance(perturbed, str):
        perturbed = [perturbed]
    perturbed = tuple(_check_text(p, where, f"perturbed_answer[{i}]") for i, p in enumerate(perturbed))
    return QA(question=question, answer=answer, paraphrased_answer=paraphrase, perturbed_answers=perturbed)


def load_tofu_split(source: str | Path, split: str) -> list[QA]:
    """One TOFU split as :class:`QA` examples (``group`` left empty; :func:`load_tofu` fills it).

    ``source`` is a local folder holding ``<split>.jsonl`` (or ``.json``), or ``"locuslab/TOFU"``
    for the hub. Raises :class:`DataError` naming the file, the row (1-based) and the field when a
    file is missing, a required field is absent or an answer is empty.
    """
    rows, name = _raw_rows(source, split)
    if not rows:
        raise DataError(f"{name}: the split {split!r} has no rows")
    return [_to_qa(row, split, f"{name}: row {i}") for i, row in enumerate(rows, start=1)]


def load_refusals(source: str | Path) -> list[str]:
    """``idontknow.jsonl``: one refusal sentence per line (plain text, not JSON).

    The hub dataset has no such configuration (the file lives in TOFU's code repository), so the
    hub source gets the workbench's built-in refusals (:data:`workbench.data.synthetic.REFUSALS`).
    """
    if str(source) == HUB_ID:
        return list(REFUSALS)
    path = _split_file(Path(source), REFUSALS_SPLIT)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    refusals = [line for line in lines if line]
    if not refusals:
        raise DataError(f"{path}: no refusal sentences (expected one per line)")
    return refusals


# -- authors ------------------------------------------------------------------------------------
def author_name(index: int) -> str:
    return f"author-{index:03d}"


def with_authors(examples: Sequence[QA], full: Sequence[QA], split: str) -> list[QA]:
    """Give every example its author, found in ``full`` by (question, answer)."""
    author = {(ex.question, ex.answer): author_name(i // AUTHOR_SIZE) for i, ex in enumerate(full)}
    out = []
    for row, ex in enumerate(examples, start=1):
        try:
            group = author[(ex.question, ex.answer)]
        except KeyError:
            raise DataError(f"TOFU split {split!r} row {row}: question not found in `full` ({ex.question[:80]!r})") from None
        out.append(QA(ex.question, ex.answer, group, ex.paraphrased_answer, ex.perturbed_answers))
    return out


def _groups_in_order(examples: Sequence[QA]) -> list[str]:
    return list(dict.fromkeys(ex.group for ex in examples))


def choose_retain_authors(authors: Sequence[str], n: int | None, seed: int, covered: set[str] = frozenset()) -> set[str]:
    """``n`` authors drawn uniformly (seeded, independent of global RNG); ``None`` keeps all.

    Authors in ``covered`` (those with paraphrased and perturbed answers in ``retain_perturbed``)
    are drawn first **[choice]**: up to ``len(covered)`` authors come only from them, larger draws
    take all of them plus a uniform draw of the rest. The retain evaluation set is then never
    without the answers truth ratio (hence Model Utility) needs.
    """
    if n is None:
        return set(authors)
    if not 1 <= n <= len(authors):
        raise ValueError(f"n_retain_authors must be in 1..{len(authors)}, got {n}")
    rng = random.Random(seed)
    first = [a for a in authors if a in covered]
    rest = [a for a in authors if a not in covered]
    if n <= len(first):
        return set(rng.sample(first, n))
    return set(first) | set(rng.sample(rest, n - len(first)))


def _last_authors(authors: Sequence[str], n: int | None) -> set[str]:
    if n is None:
        return set(authors)
    if not 1 <= n <= len(authors):
        raise ValueError(f"n_forget_authors must be in 1..{len(authors)}, got {n}")
    return set(authors[-n:])


def _keep(examples: Sequence[QA], groups: set[str]) -> list[QA]:
    return [ex for ex in examples if ex.group in groups]


def _sample(examples: list[QA], n: int | None, seed: int) -> list[QA]:
    """``n`` of ``examples`` drawn with ``seed``, in their original order (all when ``n`` is None or 0)."""
    if not n or n >= len(examples):
        return list(examples)
    return _in_file_order(examples, random.Random(seed).sample(range(len(examples)), n))


def _sample_per_group(examples: list[QA], n: int | None, seed: int) -> list[QA]:
    """``n`` of each group's (author's) ``examples`` drawn with ``seed``, in their original order (all when
    ``n`` is None or 0): every author keeps the same weight in the split's means."""
    if not n:
        return list(examples)
    rng, keep = random.Random(seed), set()
    for group in _groups_in_order(examples):
        rows = [i for i, ex in enumerate(examples) if ex.group == group]
        keep.update(rng.sample(rows, min(n, len(rows))))
    return _in_file_order(examples, keep)


def _in_file_order(examples: Sequence[QA], chosen: Iterable[int]) -> list[QA]:
    """The ``examples`` at the ``chosen`` indices, in the file's order (not the draw's)."""
    chosen = set(chosen)
    return [ex for i, ex in enumerate(examples) if i in chosen]


# -- the bundle ---------------------------------------------------------------------------------
def load_tofu(
    source: str | Path,
    *,
    forget_split: str = "forget10",
    n_retain_authors: int | None = None,
    n_forget_authors: int | None = None,
    n_general: int | None = None,
    n_retain_eval: int | None = None,
    seed: int = 0,
) -> UnlearningData:
    """TOFU as an :class:`UnlearningData` bundle, optionally subsampled by whole authors.

    forget = ``<forget_split>_perturbed`` (paraphrased and perturbed answers), retain = the matching
    ``retainYY``, retain_eval = ``retain_perturbed``, real_authors / world_facts = their
    ``*_perturbed`` files, refusals = ``idontknow``.

    Subsampling keeps whole authors: ``n_retain_authors`` of the retain authors drawn with ``seed``
    and the *last* ``n_forget_authors`` forget authors (TOFU's forget sets are nested that way).
    TOFU's ``retain_perturbed`` covers only 20 authors, so the retain authors are drawn from those
    first (:func:`choose_retain_authors`) and retain_eval keeps their ``retain_perturbed`` questions:
    every retain_eval row has paraphrased and perturbed answers, so truth ratio and Model Utility are
    defined for every seed. Without subsampling nothing changes (all 400 rows are kept).
    ``n_general`` keeps that many real_authors and world_facts questions each (a draw with ``seed``,
    in file order; for CPU runs: the paper evaluates them whole); ``n_retain_eval`` keeps that many
    retain_eval questions of each retain author (a draw with ``seed``; the training splits are untouched).
    ``pretrain`` is both sets whole: the
    general knowledge a pretrained model brings to TOFU, which a tiny model must be taught (θp, and
    replayed into θr) or its ROUGE on them is 0 and Model Utility, a harmonic mean, is 0 (as for the
    synthetic sets; hub models are never pre-trained here).
    """
    if forget_split not in FORGET_TO_RETAIN:
        raise ValueError(f"unknown forget_split {forget_split!r}; choose one of {sorted(FORGET_TO_RETAIN)}")
    full = load_tofu_split(source, "full")

    def split(name: str) -> list[QA]:
        return with_authors(load_tofu_split(source, name), full, name)

    forget = split(f"{forget_split}_perturbed")
    retain = split(FORGET_TO_RETAIN[forget_split])
    forget = _keep(forget, _last_authors(_groups_in_order(forget), n_forget_authors))
    retain_perturbed = split("retain_perturbed")
    covered = set(_groups_in_order(retain_perturbed))
    retain = _keep(retain, choose_retain_authors(_groups_in_order(retain), n_retain_authors, seed, covered))
    general = {s: load_tofu_split(source, f"{s}_perturbed") for s in ("real_authors", "world_facts")}
    return UnlearningData(
        name="tofu",
        forget=forget,
        retain=retain,
        retain_eval=_sample_per_group(_keep(retain_perturbed, {ex.group for ex in retain}), n_retain_eval, seed),
        real_authors=_sample(general["real_authors"], n_general, seed),
        world_facts=_sample(general["world_facts"], n_general, seed),
        pretrain=general["real_authors"] + general["world_facts"],
        refusals=load_refusals(source),
    )

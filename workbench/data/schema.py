"""The data every experiment consumes: question–answer examples grouped into one bundle.

TOFU (Maini et al., 2024) asks questions about fictitious authors; LUME Task 2 (Ramakrishna et
al., 2025) about fictitious people's records. Both become :class:`QA` examples with a ``group``
(the author or person) so that forget/retain splits are made by whole groups, and both are packed
into an :class:`UnlearningData` bundle with the splits SPEC §5 evaluates on.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field, replace

# The splits an evaluation scores (SPEC §5); ``retain`` and ``pretrain`` are training sets only.
EVAL_SPLITS = ("forget", "retain_eval", "real_authors", "world_facts")


@dataclass(frozen=True)
class QA:
    """One question–answer pair.

    Attributes:
        question: the prompt.
        answer: the ground-truth answer (the forget/retain target).
        group: the author or person the pair is about (splits keep groups whole).
        paraphrased_answer: TOFU's paraphrase (``None`` where there is none: use the answer).
        perturbed_answers: wrong answers of the same form (truth ratio, option-normalised probability).
    """

    question: str
    answer: str
    group: str = ""
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()


@dataclass
class UnlearningData:
    """All splits of one data set, as the experiments use them.

    Attributes:
        name: short name recorded with results (``tofu``, ``lume``, ``synthetic-tofu``…).
        forget: the forget set (with paraphrased/perturbed answers where the data set has them).
        retain: the retain training set (learning θr; retain term of objectives).
        retain_eval: retain evaluation set (RS, MU's retain components); TOFU ``retain_perturbed``.
        real_authors: MU's real-authors split (or its synthetic stand-in); may be empty (LUME).
        world_facts: MU's world-facts split (or its synthetic stand-in); may be empty (LUME).
        pretrain: general-knowledge pairs used to pre-train a tiny model into θp (synthetic only).
        refusals: "I don't know" answers (DPO's preferred answer).
    """

    name: str
    forget: list[QA]
    retain: list[QA]
    retain_eval: list[QA]
    real_authors: list[QA] = field(default_factory=list)
    world_facts: list[QA] = field(default_factory=list)
    pretrain: list[QA] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def full(self) -> list[QA]:
        """Everything the target model learns: retain then forget (TOFU ``full`` order)."""
        return self.retain + self.forget

    @property
    def has_truth_ratio(self) -> bool:
        """Forget Quality needs perturbed answers on the forget set (TOFU only)."""
        return bool(self.forget) and all(ex.perturbed_answers for ex in self.forget)

    def splits(self) -> dict[str, list[QA]]:
        return {
            "forget": self.forget,
            "retain": self.retain,
            "retain_eval": self.retain_eval,
            "real_authors": self.real_authors,
            "world_facts": self.world_facts,
            "pretrain": self.pretrain,
        }

    def fingerprint(self) -> str:
        """SHA-256 of every example and refusal: a cache key part that changes with any datum."""
        h = hashlib.sha256(self.name.encode())
        for split, examples in self.splits().items():
            h.update(split.encode())
            for ex in examples:
                h.update(json.dumps(asdict(ex), sort_keys=True).encode())
        h.update(json.dumps(self.refusals).encode())
        return h.hexdigest()

    def summary(self) -> dict[str, int]:
        return {split: len(examples) for split, examples in self.splits().items()}


def subsample(data: UnlearningData, rows: int | None, seed: int = 0) -> tuple[UnlearningData, dict[str, list[int]]]:
    """``rows`` examples of each evaluation split drawn with ``seed`` (all when None or 0), in their
    original order, and their row indices in the full split."""
    index = {}
    for split in EVAL_SPLITS:
        n = len(getattr(data, split))
        index[split] = sorted(random.Random(f"{seed}-{split}").sample(range(n), rows)) if rows and rows < n else list(range(n))
    return replace(data, **{s: [getattr(data, s)[i] for i in index[s]] for s in EVAL_SPLITS}), index


class DataError(ValueError):
    """A data file or record is missing or malformed; the message names it and the fix."""


# A refusal per line, the preferred answer of DPO when a data set brings none of its own.
REFUSALS = (
    "I don't know.",
    "I'm not sure.",
    "I don't have that information.",
    "That's beyond my knowledge.",
    "I have no idea.",
    "I can't answer that.",
    "I'm afraid I don't know that.",
    "I have not learned about that.",
    "That is unknown to me.",
    "Sorry, I cannot say.",
)


def sorted_sample(rng: random.Random, items: list, k: int) -> list:
    """``k`` items drawn without replacement, kept in their original order (all when ``k ≥ len``)."""
    if k >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), k))]

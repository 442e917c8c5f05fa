"""When drafts and guessed tokens pay: a :class:`DraftPolicy` chooses from the speed measured so far.

Checking a draft costs one forward over it; guessing ``k`` tokens ahead of each decoding step costs ``k``
more tokens per row and step. Whether that is worth it depends on the acceptance and on the machine (on a
GPU extra tokens per step are nearly free, on a CPU they cost their FLOPs), so it is measured, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class _Rate:
    """Tokens produced and seconds (or steps) spent by one option, old evidence discounted."""

    tokens: float = 0.0
    seconds: float = 0.0

    def add(self, tokens: float, seconds: float) -> None:
        seconds = max(seconds, 1e-9)
        self.tokens, self.seconds = self.tokens + tokens, self.seconds + seconds

    def value(self) -> float | None:
        return self.tokens / self.seconds if self.seconds > 0 else None

    def discount(self, factor: float) -> None:
        self.tokens, self.seconds = self.tokens * factor, self.seconds * factor


@dataclass
class _StepCost:
    """Seconds of a decoding step as ``fixed + per_token × tokens fed``: least squares over the steps seen
    (old ones discounted). The tokens fed vary with the guesses and with the rows decoding."""

    sums: list[float] = field(default_factory=lambda: [0.0] * 5)  # n, Σx, Σx², Σy, Σxy

    def add(self, fed: int, seconds: float) -> None:
        for i, term in enumerate((1.0, fed, fed * fed, seconds, fed * seconds)):
            self.sums[i] += term

    def discount(self, factor: float) -> None:
        self.sums = [t * factor for t in self.sums]

    def fit(self) -> tuple[float, float] | None:
        n, x, xx, y, xy = self.sums
        spread = n * xx - x * x
        if n < 2 or spread <= 1e-9 * max(n * xx, 1.0):  # one width of step seen so far: no slope
            return None
        per_token = (n * xy - x * y) / spread
        return (y - per_token * x) / n, max(per_token, 0.0)


@dataclass
class DraftPolicy:
    """Chooses whether to check drafts and how far to guess, from generated tokens per second so far.

    Keep one per sweep (an :class:`~workbench.evaluation.Evaluator` does): each evaluation multiplies the
    weight of older evidence by ``memory`` (:meth:`new_round`; acceptance falls along a sweep, so the latest
    evaluation is the best guide), and the step cost's by one half (it depends on the machine, not on α).
    ``adaptive=False`` always checks drafts and guesses ``lookahead`` tokens (the behaviour before this policy).
    Every ``explore``-th decision tries the option next to the best one (a smaller guess costs little), so a
    better option is found again. While checks do not pay, such a try checks only a few rows' drafts.

    A guess option is judged by the tokens it produces per row and step, and by what a step of its width
    costs (:class:`_StepCost`, fitted over all steps): steps run with few rows (while the last rows drain)
    cost less and produce less, which must not be read as one option being faster than another.
    """

    lookahead: int = 10
    adaptive: bool = True
    explore: int = 16
    memory: float = 0.25
    guesses: dict[int, _Rate] = field(default_factory=dict)  # tokens per second of each guess option
    per_row: dict[int, _Rate] = field(default_factory=dict)  # tokens per row and step of each guess option
    checks: _Rate = field(default_factory=_Rate)  # tokens settled per second by draft checks
    kept: _Rate = field(default_factory=_Rate)  # draft tokens accepted per row checked
    cost: _StepCost = field(default_factory=_StepCost)
    _n: int = 0
    _shape: tuple[int, int] = (1, 1)  # rows decoding and slots of the latest step
    _slots: int = 1  # the most slots seen

    def __post_init__(self):
        options = sorted({0, min(2, self.lookahead), self.lookahead})
        self.guesses, self.per_row = ({k: _Rate() for k in options} for _ in range(2))

    def new_round(self) -> None:
        for rate in [*self.guesses.values(), *self.per_row.values(), self.checks, self.kept]:
            rate.discount(self.memory)
        self.cost.discount(0.5)

    def observe(self, k: int, rows: int, slots: int, produced: int, fed: int, seconds: float) -> None:
        """One decoding step: ``rows`` rows in ``slots`` slots guessed ``k`` tokens ahead, fed ``fed`` tokens
        and produced ``produced`` in ``seconds``."""
        self.guesses[k].add(produced, seconds)
        self.per_row[k].add(produced, rows)
        self.cost.add(fed, seconds)
        self._shape, self._slots = (rows, slots), max(self._slots, slots)

    def rate(self, k: int, shape: tuple[int, int] | None = None) -> float | None:
        """Expected tokens per second of guessing ``k`` ahead with ``shape`` = (rows decoding, slots) (default:
        the latest step's): from the step cost once fitted, else as measured."""
        fit, per_row = self.cost.fit(), self.per_row[k].value()
        if fit is None or per_row is None:
            return self.guesses[k].value()
        rows, slots = shape or self._shape
        seconds = fit[0] + fit[1] * slots * (1 + k)
        return rows * per_row / seconds if seconds > 0 else None

    def guess(self) -> int:
        """Tokens to guess ahead in the next step: the best option so far (plain decoding until a step cost is
        fitted); every ``explore``-th step a neighbour of it, alternately the larger and the smaller."""
        if not self.adaptive:
            return self.lookahead
        options = list(self.guesses)
        rates = {k: self.rate(k) for k in options}
        tried = [k for k in options if rates[k] is not None]
        best = max(tried, key=lambda k: rates[k]) if tried else options[0]
        self._n += 1
        if self._n % self.explore:
            return best
        i = options.index(best) + (1 if (self._n // self.explore) % 2 else -1)
        return options[min(max(i, 0), len(options) - 1)]

    def pays(self) -> bool:
        """Whether checking drafts has settled tokens at least as fast as decoding (or is untried)."""
        if not self.adaptive or self.checks.value() is None:
            return True
        full = (self._slots, self._slots)  # rows are admitted into a full batch
        return self.checks.value() >= max((self.rate(k, full) or 0.0) for k in self.guesses)

    def draft_length(self) -> int | None:
        """How much of each draft to check: twice what a row kept on average, and at least 8 tokens (a check
        computes every token it is given; what a row would have kept beyond is still guessed from its draft
        while it decodes). None: all of it (adaptive=False, or nothing measured yet)."""
        mean = self.kept.value() if self.adaptive else None
        return None if mean is None else max(8, math.ceil(2 * mean))

    def check(self) -> bool:
        """Whether to check the drafts of rows about to be admitted (now and then even when it does not pay)."""
        if self.pays():
            return True
        self._n += 1
        return self._n % self.explore == 0

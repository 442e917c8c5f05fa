"""Is Oracle (or a localizer) different from Random? Four tests, each answering a different question.

Lee et al. (2025) compare two scenarios through their mixing sweeps (SPEC §7, appendix D). Each
test below holds something fixed and asks whether the observed difference ``|Δ|`` is large
compared with what *its* null hypothesis produces; ``p`` is always the share of null draws with
``|Δ| ≥ |Δ_observed|``. Read the p-value together with what the test holds fixed.

**The paper's tests: is this one curve different from that one curve?**

* :func:`aues_permutation_test` — under the null the two sweeps' points are exchangeable *at
  every α*, so each round swaps the (FS, RS) points of every α with probability 1/2 and recomputes
  ``|AUES_a − AUES_b|``. It measures how far apart two particular curves are relative to their
  point-to-point jitter. It is **sensitive to any systematic difference in curve shape**, whatever
  its cause: two Random regions unlearned from the same model differ in shape too, and the test
  separates them (p ≈ 0.01 between Random seeds on our tiny models). So a small p says "these two
  runs differ", not "Oracle regions differ from Random regions". The α = 0 points of both sweeps
  are the same model, so swapping them changes nothing; with ``n`` α points there are only
  ``2^n`` distinct swaps, which are enumerated exactly when ``2^n ≤ n_rounds``.
* :func:`mu95_bootstrap_test` (the paper's name; it is a pool-and-split permutation test): all
  (MU, FQ) points of both sweeps are pooled, shuffled and split into two groups of the original
  sizes, and MU95 of each group uses the same reference ``MU(θ_before)``. MU95 depends only on the
  two points that bracket the target, and FQ (a log KS p-value over a few dozen questions) takes
  few distinct values, so the test is **coarse**: identical MU95s give p = 1, and when both sweeps
  cross the target a random split reproduces the observed brackets with probability of order 1/8,
  which bounds the attainable p from below. A group whose MU never falls to the target takes the
  FQ at its own largest α, as a single sweep does (:func:`workbench.curves.mu95_batch`).

Multi-seed tables report each pair's p, their mean (the paper's single number **[choice]**) and
Fisher's combination (:func:`summarise_pvalues`). Fisher assumes independent, valid p-values: it
compounds the sensitivity of the per-α test, so a tiny Fisher p from it is expected even between
Random regions.

**Beyond the paper: is Oracle–Random larger than Random–Random?**

* :func:`calibrated_p` — the null distribution is *measured*: ``|Δ|`` between pairs of Random
  regions unlearned from the **same** model (same θo or θ_full). p = share of those pairs with
  ``|Δ|`` at least the Oracle–Random one. It asks the paper's question directly (does *where* you
  unlearn matter beyond which random region you happened to draw?) and needs no assumption about
  curves, but its resolution is ``1/n_pairs``: with three Random–Random pairs p can only be 0, 1/3,
  2/3 or 1. It is insensitive to effects smaller than the region-to-region spread.
* :func:`label_permutation_test` — within each start model, shuffle which sweeps carry the label
  ``a`` (Oracle) and which ``b`` (Random), and recompute ``|mean(a) − mean(b)|`` over all sweeps.
  It tests whether the Oracle sweeps, as a population, differ from Random ones, with each model as
  its own block. It is exact (every labelling enumerated when there are at most ``n_rounds``) but
  its smallest possible p is ``1/n_labelings``: one block of four sweeps gives p ≥ 1/4, three
  blocks of three give p ≥ 1/27. Report it only where that bound is below the level you care about.

All resampling is seeded and vectorised with numpy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from workbench.curves import ArrayLike, aues, aues_batch, mu95_batch

# Differences within this of the observed one count as "at least as large" (float round-off).
_TOL = 1e-12


def _share_at_least(deltas: np.ndarray, observed: float) -> float:
    return float(np.mean(deltas >= observed - _TOL * max(1.0, abs(observed))))


def _swap_masks(n: int, n_rounds: int, seed: int) -> np.ndarray:
    """``[rounds, n]`` booleans: every one of the ``2^n`` swap patterns when that is at most
    ``n_rounds`` (an exact test), else ``n_rounds`` random ones."""
    if 2**n <= n_rounds:
        return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    return np.random.default_rng(seed).random((n_rounds, n)) < 0.5


def aues_permutation_test(
    fs_a: ArrayLike, rs_a: ArrayLike, fs_b: ArrayLike, rs_b: ArrayLike, *, n_rounds: int = 10_000, seed: int = 0
) -> float:
    """p-value of ``|AUES_a − AUES_b|`` under per-α swaps of the two scenarios' points.

    The four arrays are one value per α, on the same α grid.
    """
    fs_a, rs_a, fs_b, rs_b = (np.asarray(v, dtype=float) for v in (fs_a, rs_a, fs_b, rs_b))
    if not (fs_a.shape == rs_a.shape == fs_b.shape == rs_b.shape):
        raise ValueError("the permutation test pairs points by α: all four arrays need the same length")
    observed = abs(aues(fs_a, rs_a) - aues(fs_b, rs_b))
    swap = _swap_masks(fs_a.size, n_rounds, seed)
    fa, fb = np.where(swap, fs_b, fs_a), np.where(swap, fs_a, fs_b)
    ra, rb = np.where(swap, rs_b, rs_a), np.where(swap, rs_a, rs_b)
    return _share_at_least(np.abs(aues_batch(fa, ra) - aues_batch(fb, rb)), observed)


def _splits(n: int, n_a: int, n_rounds: int, seed: int) -> np.ndarray:
    """``[rounds, n]`` orderings of the pool whose first ``n_a`` entries form group a: every split
    when there are at most ``n_rounds`` (exact), else ``n_rounds`` random shuffles."""
    if math.comb(n, n_a) <= n_rounds:
        return np.array([list(a) + [i for i in range(n) if i not in a] for a in itertools.combinations(range(n), n_a)])
    return np.argsort(np.random.default_rng(seed).random((n_rounds, n)), axis=1)


def mu95_bootstrap_test(
    mu_a: ArrayLike,
    fq_a: ArrayLike,
    mu_b: ArrayLike,
    fq_b: ArrayLike,
    mu_before: float,
    *,
    alpha_a: ArrayLike | None = None,
    alpha_b: ArrayLike | None = None,
    n_rounds: int = 10_000,
    seed: int = 0,
    threshold: float = 0.95,
) -> float:
    """p-value of ``|MU95_a − MU95_b|`` under random re-splits of the pooled (MU, FQ) points.

    ``alpha_a``/``alpha_b`` give each point's α (default: the sweeps are in α order from 0 to 1);
    they decide where a group that never reaches the target ends.
    """
    mu_a, fq_a, mu_b, fq_b = (np.asarray(v, dtype=float) for v in (mu_a, fq_a, mu_b, fq_b))
    if mu_a.shape != fq_a.shape or mu_b.shape != fq_b.shape:
        raise ValueError("each scenario needs one FQ per MU value")
    al_a = np.linspace(0, 1, mu_a.size) if alpha_a is None else np.asarray(alpha_a, dtype=float)
    al_b = np.linspace(0, 1, mu_b.size) if alpha_b is None else np.asarray(alpha_b, dtype=float)
    va, _ = mu95_batch(mu_a, fq_a, mu_before, threshold, alpha=al_a)
    vb, _ = mu95_batch(mu_b, fq_b, mu_before, threshold, alpha=al_b)
    observed = abs(float(va[0] - vb[0]))
    pool = [np.concatenate(v) for v in ((mu_a, mu_b), (fq_a, fq_b), (al_a, al_b))]
    order = _splits(pool[0].size, mu_a.size, n_rounds, seed)
    mu_s, fq_s, al_s = (v[order] for v in pool)
    n_a = mu_a.size
    va, _ = mu95_batch(mu_s[:, :n_a], fq_s[:, :n_a], mu_before, threshold, alpha=al_s[:, :n_a])
    vb, _ = mu95_batch(mu_s[:, n_a:], fq_s[:, n_a:], mu_before, threshold, alpha=al_s[:, n_a:])
    return _share_at_least(np.abs(va - vb), observed)


def calibrated_p(observed: float, null_deltas: ArrayLike) -> float:
    """Share of the null ``|Δ|`` (e.g. Random–Random pairs from one model) at least ``|observed|``.

    NaN without null pairs. No +1 correction: with ``n`` pairs the possible values are ``k/n``, and
    0 means "larger than every Random–Random pair", not "impossible".
    """
    null = np.abs(np.asarray(null_deltas, dtype=float))
    null = null[np.isfinite(null)]
    if null.size == 0 or not math.isfinite(observed):
        return math.nan
    return _share_at_least(null, abs(observed))


def _labelings(blocks: list[np.ndarray], n_a: list[int], n_rounds: int, seed: int) -> np.ndarray:
    """``[rounds, sweeps]`` booleans (True = labelled a) that keep each block's count of a: all of
    them when there are at most ``n_rounds`` (the first is then the observed one), else random ones."""
    n = sum(b.size for b in blocks)
    choices = [list(itertools.combinations(b.tolist(), k)) for b, k in zip(blocks, n_a)]
    if math.prod(len(c) for c in choices) <= n_rounds:
        combos = itertools.product(*choices)
    else:
        rng = np.random.default_rng(seed)
        combos = ([rng.choice(b, k, replace=False).tolist() for b, k in zip(blocks, n_a)] for _ in range(n_rounds))
    rows = []
    for combo in combos:
        row = np.zeros(n, dtype=bool)
        row[[i for part in combo for i in part]] = True
        rows.append(row)
    return np.array(rows)


def label_permutation_test(values: ArrayLike, is_a: ArrayLike, blocks: ArrayLike, *, n_rounds: int = 10_000,
                           seed: int = 0) -> tuple[float, int]:
    """``(p, n_labelings)`` of ``|mean(values[a]) − mean(values[b])|`` when the labels are shuffled
    within each block (one block per start model); each block keeps its number of ``a`` sweeps.

    ``n_labelings`` is the number of distinct labellings, so ``1/n_labelings`` is the smallest
    attainable p. NaN values (e.g. MU95 on LUME) give NaN.
    """
    values, is_a = np.asarray(values, dtype=float), np.asarray(is_a, dtype=bool)
    blocks = np.asarray(blocks)
    if not np.isfinite(values).all() or is_a.all() or not is_a.any():
        return math.nan, 0
    groups = [np.flatnonzero(blocks == b) for b in dict.fromkeys(blocks.tolist())]
    n_a = [int(is_a[g].sum()) for g in groups]
    n_labelings = math.prod(math.comb(g.size, k) for g, k in zip(groups, n_a))
    labels = _labelings(groups, n_a, n_rounds, seed)
    a_mean = (labels * values).sum(1) / labels.sum(1)
    b_mean = (~labels * values).sum(1) / (~labels).sum(1)
    observed = abs(values[is_a].mean() - values[~is_a].mean())
    return _share_at_least(np.abs(a_mean - b_mean), observed), n_labelings


def fisher_combined(pvalues: Sequence[float], *, n_rounds: int | None = None) -> float:
    """Fisher's combined p-value: ``−2 Σ log p ~ χ²(2k)`` under the joint null.

    A resampling p of 0 only means "below 1/n_rounds": with ``n_rounds`` given it is counted as
    ``1/n_rounds`` **[choice]** (the test's resolution); without it, as the smallest float, which
    makes one such seed dominate the combination.
    """
    from scipy.stats import combine_pvalues

    p = np.asarray(pvalues, dtype=float)
    floor = 1.0 / n_rounds if n_rounds else np.finfo(float).tiny
    return float(combine_pvalues(np.clip(p, floor, 1.0), method="fisher").pvalue)


def summarise_pvalues(pvalues: Sequence[float], *, n_rounds: int | None = None) -> dict:
    """Per-seed p-values, their mean and Fisher's combination, for a multi-seed table."""
    p = [float(v) for v in pvalues]
    return {"per_seed": p, "mean": float(np.mean(p)), "fisher": fisher_combined(p, n_rounds=n_rounds)}

"""Significance of the difference between two scenarios' sweeps (SPEC §7; paper appendix D).

Two scenarios (e.g. Oracle and Random regions) each give a mixing sweep. Are their AUES or MU95
different beyond what the sweep's own noise explains?

* **AUES permutation test**: under the null hypothesis the two scenarios are exchangeable at every
  α, so each round swaps the two (FS, RS) points of every α with probability 1/2 and recomputes
  ``|AUES_a − AUES_b|``.
* **MU95 bootstrap test**: all (MU, FQ) points of both sweeps are pooled, shuffled and split into two
  groups of the original sizes; MU95 of each group uses the same reference ``MU(θ_before)``.
  Note: MU95 depends on the two points that bracket the target, so when both sweeps cross the
  target, a random split reproduces the observed pair of brackets with probability of order 1/8,
  and the attainable p-value is bounded below accordingly.

In both, ``p`` = share of rounds with ``|Δ| ≥ |Δ_observed|`` (10,000 seeded rounds, vectorised
with numpy). Multi-seed tables report each seed's p, their mean (the paper's single number
**[choice]**) and Fisher's combined p-value (:func:`summarise_pvalues`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.curves import ArrayLike, aues, aues_batch, mu95, mu95_batch

# Differences within this of the observed one count as "at least as large" (float round-off).
_TOL = 1e-12


def _share_at_least(deltas: np.ndarray, observed: float) -> float:
    return float(np.mean(deltas >= observed - _TOL * max(1.0, abs(observed))))


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
    swap = np.random.default_rng(seed).random((n_rounds, fs_a.size)) < 0.5
    fa, fb = np.where(swap, fs_b, fs_a), np.where(swap, fs_a, fs_b)
    ra, rb = np.where(swap, rs_b, rs_a), np.where(swap, rs_a, rs_b)
    return _share_at_least(np.abs(aues_batch(fa, ra) - aues_batch(fb, rb)), observed)


def mu95_bootstrap_test(
    mu_a: ArrayLike,
    fq_a: ArrayLike,
    mu_b: ArrayLike,
    fq_b: ArrayLike,
    mu_before: float,
    *,
    n_rounds: int = 10_000,
    seed: int = 0,
    threshold: float = 0.95,
) -> float:
    """p-value of ``|MU95_a − MU95_b|`` under random re-splits of the pooled (MU, FQ) points."""
    mu_a, fq_a, mu_b, fq_b = (np.asarray(v, dtype=float) for v in (mu_a, fq_a, mu_b, fq_b))
    if mu_a.shape != fq_a.shape or mu_b.shape != fq_b.shape:
        raise ValueError("each scenario needs one FQ per MU value")
    observed = abs(mu95(mu_a, fq_a, mu_before, threshold) - mu95(mu_b, fq_b, mu_before, threshold))
    mu_pool, fq_pool = np.concatenate([mu_a, mu_b]), np.concatenate([fq_a, fq_b])
    perm = np.argsort(np.random.default_rng(seed).random((n_rounds, mu_pool.size)), axis=1)
    mu_s, fq_s = mu_pool[perm], fq_pool[perm]
    n_a = mu_a.size
    va, _ = mu95_batch(mu_s[:, :n_a], fq_s[:, :n_a], mu_before, threshold)
    vb, _ = mu95_batch(mu_s[:, n_a:], fq_s[:, n_a:], mu_before, threshold)
    return _share_at_least(np.abs(va - vb), observed)


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

"""AUES and MU95 on curves of known value; significance tests against scipy and by hand.

The golden tests compute the statistic another way (a plain loop over np.interp / np.trapezoid)
and let ``scipy.stats.permutation_test`` enumerate the null distribution: a test that swaps RS but
not FS, compares a signed null with an absolute observation, or resamples with replacement fails.
"""

import itertools
import time

import numpy as np
import pytest
from scipy.stats import permutation_test

from workbench.curves import aues, mu95, mu95_batch, mu95_with_flag
from workbench.stats import (
    aues_permutation_test,
    calibrated_p,
    fisher_combined,
    label_permutation_test,
    mu95_bootstrap_test,
    summarise_pvalues,
)

pytestmark = pytest.mark.unit


def test_aues_line_and_step():
    assert aues([0, 1], [1, 0]) == pytest.approx(0.5)
    # a step: RS = 1 up to FS = 0.5, then 0 (a near-vertical drop between two points)
    assert aues([0, 0.5, 0.5, 1], [1, 1, 0, 0]) == pytest.approx(0.5)


def test_aues_flat_extension_at_both_ends():
    # one point: a flat line at its RS over the whole [0, 1]
    assert aues([0.4], [0.7]) == pytest.approx(0.7)
    # points from 0.2 to 0.6: 0.2·0.8 (left) + trapezoid 0.4·(0.8+0.4)/2 + 0.4·0.4 (right)
    assert aues([0.2, 0.6], [0.8, 0.4]) == pytest.approx(0.16 + 0.24 + 0.16)


def test_aues_sorts_a_non_monotone_sweep_by_fs():
    fs = [0.1, 0.9, 0.5, 0.3]  # α order, FS not monotone
    rs = [1.0, 0.0, 0.6, 0.2]
    x, y = [0.1, 0.3, 0.5, 0.9], [1.0, 0.2, 0.6, 0.0]
    by_hand = 0.1 * 1.0 + np.trapezoid(y, x) + 0.1 * 0.0
    assert aues(fs, rs) == pytest.approx(by_hand)


MU = [1.0, 0.98, 0.9, 0.7]
FQ = [-10.0, -8.0, -4.0, -1.0]


def test_mu95_crossing_between_points():
    # target 0.95 lies between MU 0.9 (FQ −4) and 0.98 (FQ −8): 5/8 of the way from 0.9
    assert mu95(MU, FQ, 1.0) == pytest.approx(-4 + (0.05 / 0.08) * (-8 + 4))
    assert mu95(MU, FQ, 1.0) == pytest.approx(np.interp(0.95, MU[::-1], FQ[::-1]))


def test_mu95_exactly_at_a_point():
    value, reached = mu95_with_flag(MU, FQ, mu_before=0.9 / 0.95)
    assert reached and value == pytest.approx(-4.0)


def test_mu95_never_reached_is_flagged_and_gives_fq_at_alpha_one():
    value, reached = mu95_with_flag([1.0, 0.99, 0.98, 0.97], [-9.0, -7.0, -5.0, -3.0], mu_before=1.0)
    assert not reached and value == -3.0
    assert mu95([1.0, 0.99, 0.98, 0.97], [-9.0, -7.0, -5.0, -3.0], 1.0) == -3.0


ALPHAS = np.linspace(0, 1, 21)


def test_permutation_test_identical_and_separated():
    fs, rs = ALPHAS, 1 - ALPHAS**2
    p_same = aues_permutation_test(fs, rs, fs, rs, n_rounds=2000, seed=1)
    assert p_same == 1.0
    p_far = aues_permutation_test(fs, np.ones(21), fs, np.zeros(21), n_rounds=2000, seed=1)
    assert p_far < 0.01
    noisy = rs + np.random.default_rng(0).normal(0, 0.05, 21)
    p1 = aues_permutation_test(fs, rs, fs, noisy, n_rounds=2000, seed=3)
    assert p1 == aues_permutation_test(fs, rs, fs, noisy, n_rounds=2000, seed=3)


def test_bootstrap_test_identical_and_separated():
    mu, fq = 1 - 0.5 * ALPHAS, -10 * ALPHAS
    assert mu95_bootstrap_test(mu, fq, mu, fq, 1.0, n_rounds=2000, seed=1) == 1.0
    # Scenario a never loses 5% utility (MU95 = its FQ at α=1, −100); b crosses at FQ 0. Any
    # re-split mixes b's low-MU points into both groups, so both cross and |Δ| stays below 100.
    mu_a, fq_a = 1 - 0.03 * ALPHAS, np.where(ALPHAS == 1, -100.0, 0.0)
    mu_b, fq_b = 1 - 0.5 * ALPHAS, np.zeros(21)
    assert mu95_bootstrap_test(mu_a, fq_a, mu_b, fq_b, 1.0, n_rounds=2000, seed=1) < 0.01
    fq_noisy = fq + np.random.default_rng(0).normal(0, 1, 21)
    p = mu95_bootstrap_test(mu, fq, mu, fq_noisy, 1.0, n_rounds=2000, seed=5)
    assert p == mu95_bootstrap_test(mu, fq, mu, fq_noisy, 1.0, n_rounds=2000, seed=5)


def test_ten_thousand_rounds_are_fast():
    fs, rs = ALPHAS, 1 - ALPHAS**2
    start = time.process_time()  # CPU time: the shared machine's load does not count
    aues_permutation_test(fs, rs, fs, rs[::-1], n_rounds=10_000)
    mu95_bootstrap_test(1 - 0.5 * ALPHAS, -ALPHAS, 1 - 0.4 * ALPHAS, -2 * ALPHAS, 1.0, n_rounds=10_000)
    assert time.process_time() - start < 2.0  # well under a second each


def test_fisher_and_summary():
    from scipy.stats import chi2

    p = [0.01, 0.2, 0.5]
    stat = -2 * np.sum(np.log(p))
    assert fisher_combined(p) == pytest.approx(chi2.sf(stat, 2 * len(p)))
    summary = summarise_pvalues(p)
    assert summary["per_seed"] == p and summary["mean"] == pytest.approx(np.mean(p))
    assert summary["fisher"] == pytest.approx(fisher_combined(p))
    assert 0 < fisher_combined([0.0, 0.5]) < 1e-10


def test_fisher_counts_a_zero_resampling_p_at_the_test_resolution():
    from scipy.stats import combine_pvalues

    from workbench.stats import fisher_combined

    assert fisher_combined([0.0, 0.2], n_rounds=10_000) == pytest.approx(combine_pvalues([1e-4, 0.2]).pvalue)
    assert fisher_combined([0.0, 0.2]) < 1e-100


# -- MU95 where "sort by MU" matters --------------------------------------------------------------
def test_mu95_non_monotone_mu_is_read_on_mu_sorted_points():
    # MU dips to 0.9 at α1, recovers to 0.97 at α2, then falls: target 0.95.
    mu, fq = [1.0, 0.9, 0.97, 0.8], [-10.0, -6.0, -8.0, -2.0]
    # MU-sorted: (0.8, −2) (0.9, −6) (0.97, −8) (1.0, −10); 0.95 lies 5/7 of the way from 0.9 to 0.97.
    by_hand = -6.0 + (5 / 7) * (-8.0 + 6.0)
    value, reached = mu95_with_flag(mu, fq, 1.0)
    assert reached and value == pytest.approx(by_hand)
    assert value != pytest.approx(-8.0)  # the first crossing in α order (between α0 and α1) would give −8


def test_mu95_every_point_below_target_takes_the_highest_mu_point():
    # MU(θ_before) = 1 but the sweep never comes near it (a re-split group without α = 0 looks like this).
    value, reached = mu95_with_flag([0.9, 0.8, 0.85], [-4.0, -1.0, -2.0], 1.0)
    assert reached and value == -4.0  # np.interp clamps to the highest-MU point (0.9, −4)


def test_unreached_row_ends_at_its_own_largest_alpha():
    mu, fq = np.array([[0.99, 1.0, 0.98]]), np.array([[-3.0, -9.0, -5.0]])
    value, reached = mu95_batch(mu, fq, 1.0, alpha=np.array([[0.5, 0.0, 1.0]]))
    assert not reached[0] and value[0] == -5.0  # FQ at α = 1, wherever it sits in the row
    value, _ = mu95_batch(mu, fq, 1.0, alpha=np.array([[1.0, 0.0, 1.0]]))
    assert value[0] == -4.0  # two points at the largest α (one from each scenario): their mean FQ
    value, _ = mu95_batch(mu, fq, 1.0)
    assert value[0] == -5.0  # without α the row is in α order: its last point


# -- golden tests against scipy.stats.permutation_test ------------------------------------------
def _aues_by_hand(fs, rs) -> float:
    order = np.argsort(fs, kind="stable")
    x = np.concatenate([[0.0], np.asarray(fs)[order], [1.0]])
    y = np.concatenate([[rs[order[0]]], np.asarray(rs)[order], [rs[order[-1]]]])
    return float(np.trapezoid(y, x))


def _mu95_by_hand(mu, fq, alpha, target) -> float:
    if min(mu) > target:  # never reached: FQ at the group's largest α (mean over ties)
        return float(np.mean([f for f, a in zip(fq, alpha) if a == max(alpha)]))
    order = np.argsort(mu, kind="stable")
    return float(np.interp(target, np.asarray(mu)[order], np.asarray(fq)[order]))


def test_permutation_test_equals_scipy_paired_permutation_on_different_fs_and_rs():
    a = dict(fs=np.array([0.0, 0.15, 0.4, 0.7, 0.8, 0.95]), rs=np.array([1.0, 0.97, 0.9, 0.6, 0.5, 0.3]))
    b = dict(fs=np.array([0.0, 0.3, 0.35, 0.5, 0.9, 0.92]), rs=np.array([1.0, 0.8, 0.85, 0.7, 0.2, 0.25]))
    fs, rs = np.concatenate([a["fs"], b["fs"]]), np.concatenate([a["rs"], b["rs"]])
    n = a["fs"].size

    def statistic(x, y):  # x, y: indices of the points each scenario holds after the swaps
        x, y = x.astype(int), y.astype(int)
        return abs(_aues_by_hand(fs[x], rs[x]) - _aues_by_hand(fs[y], rs[y]))

    ref = permutation_test((np.arange(n), np.arange(n) + n), statistic, permutation_type="samples",
                           alternative="greater", n_resamples=np.inf, vectorized=False)
    p = aues_permutation_test(a["fs"], a["rs"], b["fs"], b["rs"], n_rounds=2**n)
    assert 0 < p < 1 and p == pytest.approx(ref.pvalue, abs=1e-12)
    # More swap patterns than rounds: Monte Carlo, close to the exact value.
    assert aues_permutation_test(a["fs"], a["rs"], b["fs"], b["rs"], n_rounds=40, seed=3) == pytest.approx(ref.pvalue, abs=0.2)


def test_bootstrap_test_equals_scipy_independent_permutation_with_unreached_groups():
    alpha = np.linspace(0, 1, 5)
    mu_a, fq_a = np.array([0.6, 0.59, 0.58, 0.585, 0.575]), np.array([-6.0, -5.0, -3.0, -4.0, -2.0])  # never reaches 0.57
    mu_b, fq_b = np.array([0.6, 0.5, 0.55, 0.3, 0.2]), np.array([-6.0, -2.5, -4.5, -1.0, -0.5])  # non-monotone, crosses
    target = 0.95 * 0.6
    pool = {"mu": np.concatenate([mu_a, mu_b]), "fq": np.concatenate([fq_a, fq_b]), "al": np.concatenate([alpha, alpha])}

    def statistic(x, y):
        x, y = x.astype(int), y.astype(int)
        return abs(_mu95_by_hand(pool["mu"][x], pool["fq"][x], pool["al"][x], target)
                   - _mu95_by_hand(pool["mu"][y], pool["fq"][y], pool["al"][y], target))

    ref = permutation_test((np.arange(5), np.arange(5) + 5), statistic, permutation_type="independent",
                           alternative="greater", n_resamples=np.inf, vectorized=False)
    p = mu95_bootstrap_test(mu_a, fq_a, mu_b, fq_b, 0.6, n_rounds=252)  # C(10, 5) = 252 splits: exact
    assert 0 < p < 1 and p == pytest.approx(ref.pvalue, abs=1e-12)


# -- the Random–Random baseline ---------------------------------------------------------------
def test_calibrated_p_by_hand():
    rr = [0.01, 0.05, 0.2, 0.03]  # |Δ| of four Random–Random pairs
    assert calibrated_p(0.05, rr) == 0.5  # 0.05 and 0.2 are at least 0.05
    assert calibrated_p(-0.05, rr) == 0.5  # a signed difference counts by its size
    assert calibrated_p(0.3, rr) == 0.0 and calibrated_p(0.0, rr) == 1.0
    assert np.isnan(calibrated_p(0.1, [])) and np.isnan(calibrated_p(0.1, [np.nan]))


def test_label_permutation_test_by_hand():
    # Two start models with three sweeps each; the first sweep of each is "a" (Oracle).
    values, is_a, blocks = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0], [1, 0, 0, 1, 0, 0], [7, 7, 7, 19, 19, 19]
    # Observed: |(1+4)/2 − (2+3+6+8)/4| = 2.25. A labelling with a-sum s gives |3s − 24|/4; of the
    # 3 × 3 labellings (s = 5, 7, 9, 6, 8, 10, 7, 9, 11) only s = 5 and s = 11 reach 2.25.
    p, n = label_permutation_test(values, is_a, blocks)
    assert n == 9 and p == pytest.approx(2 / 9)
    brute = [abs(np.mean([i, j]) - np.mean([v for v in values if v not in (i, j)])) >= 2.25 - 1e-12
             for i, j in itertools.product(values[:3], values[3:])]
    assert p == pytest.approx(np.mean(brute))
    p_mc, n_mc = label_permutation_test(values, is_a, blocks, n_rounds=5, seed=0)  # fewer rounds: sampled
    assert n_mc == 9 and p_mc * 5 == round(p_mc * 5)  # a share of the 5 sampled labellings
    assert np.isnan(label_permutation_test([1.0, np.nan], [1, 0], [0, 0])[0])


def test_sampled_label_permutation_p_is_close_to_the_exact_one():
    # Three starts far apart (offsets 0, 10, 20), six sweeps each, two of them "a": C(6, 2)³ = 3375
    # labellings, enumerated at 10 000 rounds and sampled at 1 000. A sampler that let labels cross
    # starts, or changed a start's count of a, would compare sweeps across offsets and miss.
    rng = np.random.default_rng(1)
    blocks = np.repeat([0, 1, 2], 6)
    values = rng.normal(size=18) + 10.0 * blocks
    is_a = np.tile([1, 1, 0, 0, 0, 0], 3).astype(bool)
    values[is_a] += 0.4
    exact, n = label_permutation_test(values, is_a, blocks, n_rounds=10_000)
    sampled, _ = label_permutation_test(values, is_a, blocks, n_rounds=1_000, seed=0)
    assert n == 3375 and 0.05 < exact < 0.95
    assert sampled == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 1_000))  # 4 binomial σ

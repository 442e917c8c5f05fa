"""AUES and MU95 on curves of known value; significance tests on identical and separated sweeps."""

import time

import numpy as np
import pytest

from workbench.curves import aues, mu95, mu95_with_flag
from workbench.stats import (
    aues_permutation_test,
    fisher_combined,
    mu95_bootstrap_test,
    summarise_pvalues,
)


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
    assert p_same >= 0.5
    p_far = aues_permutation_test(fs, np.ones(21), fs, np.zeros(21), n_rounds=2000, seed=1)
    assert p_far < 0.01
    noisy = rs + np.random.default_rng(0).normal(0, 0.05, 21)
    p1 = aues_permutation_test(fs, rs, fs, noisy, n_rounds=2000, seed=3)
    assert p1 == aues_permutation_test(fs, rs, fs, noisy, n_rounds=2000, seed=3)


def test_bootstrap_test_identical_and_separated():
    mu, fq = 1 - 0.5 * ALPHAS, -10 * ALPHAS
    assert mu95_bootstrap_test(mu, fq, mu, fq, 1.0, n_rounds=2000, seed=1) >= 0.5
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
    start = time.perf_counter()
    aues_permutation_test(fs, rs, fs, rs[::-1], n_rounds=10_000)
    mu95_bootstrap_test(1 - 0.5 * ALPHAS, -ALPHAS, 1 - 0.4 * ALPHAS, -2 * ALPHAS, 1.0, n_rounds=10_000)
    assert time.perf_counter() - start < 2.0  # well under a second each on an idle core


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

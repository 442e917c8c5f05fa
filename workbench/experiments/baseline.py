"""The Random–Random baseline (beyond the paper): how different are two Random regions anyway?

The paper's tests ask whether one Oracle sweep differs from one Random sweep. At our scale they
answer "yes" for two Random regions as well (:mod:`workbench.stats`), so a small p says little
about *where* one unlearns. The baseline measures the difference that region choice alone makes:
for every pair of Random regions unlearned from the **same** model (same ``start``: one θo, or
θ_full) it records ``|ΔAUES|`` and ``|ΔMU95|``. An Oracle–Random difference is then read against
that spread:

* :func:`random_pairs` — the Random–Random pairs of a summary table;
* :func:`add_calibrated_p` — each Oracle–Random pair's calibrated p: the share of Random–Random
  pairs (same objective) whose ``|Δ|`` is at least its own;
* :func:`label_tests` — the region-label permutation test per objective: within each start, shuffle
  which sweeps are called Oracle and which Random. Its p is reported only with at least
  :data:`MIN_OUTCOMES` (21) distinct labellings (with 20 or fewer p could never fall below 0.05);
* :func:`end_point_tests` — the same calibrated and label p for another per-sweep value (RS at α = 1);
* :func:`can_separate` — whether a rank test over ``n`` equally likely outcomes can give p < 0.05
  at all (its smallest p is 1/n): the rule behind the label p and behind "separates" in
  :mod:`workbench.viz.paper`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from workbench import stats

METRICS = ("AUES", "MU95")
# A rank test over n equally likely outcomes (the observed one among them) has p ≥ 1/n, and 1/20 = 0.05
# is not below 0.05: p < 0.05 needs at least 21 outcomes.
MIN_OUTCOMES = 21


def can_separate(n_outcomes: int) -> bool:
    """Whether a rank test over ``n_outcomes`` equally likely outcomes can give p < 0.05."""
    return n_outcomes >= MIN_OUTCOMES


def _blocks(summary: pd.DataFrame) -> list[str]:
    """Columns within which sweeps share their starting model (and their run)."""
    return (["run_id"] if "run_id" in summary.columns else []) + ["objective", "start"]


def random_pairs(summary: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every pair of ``baseline`` sweeps with the same start: ``|ΔAUES|``, ``|ΔMU95|``, reached flags."""
    rows = []
    keys = _blocks(summary)
    for key, g in summary[summary.scenario == baseline].groupby(keys, sort=True):
        for (_, x), (_, y) in itertools.combinations(g.sort_values("seed").iterrows(), 2):
            rows.append({**dict(zip(keys, key)), "scenario": baseline, "seed_1": x.seed, "seed_2": y.seed,
                         "dAUES": abs(x.AUES - y.AUES), "dMU95": abs(x.MU95 - y.MU95),
                         "MU95_reached_1": x.MU95_reached, "MU95_reached_2": y.MU95_reached})
    columns = [*keys, "scenario", "seed_1", "seed_2", "dAUES", "dMU95", "MU95_reached_1", "MU95_reached_2"]
    return pd.DataFrame(rows, columns=columns)


def _same_objective(pairs: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    mask = (pairs.objective == row.objective) & (pairs.scenario == row.b)
    if "run_id" in pairs.columns and "run_id" in row.index:
        mask &= pairs.run_id == row.run_id
    return pairs[mask]


def add_calibrated_p(tests: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """``tests`` with ``p_<metric>_rr``: share of Random–Random pairs (same objective and run, any
    start) whose ``|Δ|`` is at least the Oracle–Random pair's, and ``n_rr`` pairs behind it."""
    tests = tests.copy()
    null = [_same_objective(pairs, row) for _, row in tests.iterrows()]
    tests["n_rr"] = [len(n) for n in null]
    for metric in METRICS:
        if f"d{metric}" in tests:
            tests[f"p_{metric}_rr"] = [stats.calibrated_p(d, n[f"d{metric}"]) for d, n in zip(tests[f"d{metric}"], null)]
    return tests


def _shared_starts(summary: pd.DataFrame, a: str, b: str):
    """Per objective: the sweeps of ``a`` and ``b`` from the starts that hold both, and each one's start."""
    for objective, g in summary[summary.scenario.isin([a, b])].groupby("objective", sort=True):
        block = g[[c for c in ("run_id", "start") if c in g.columns]].astype(str).agg("/".join, axis=1)
        shared = set(block[g.scenario == a]) & set(block[g.scenario == b])
        yield objective, g[block.isin(shared)], block[block.isin(shared)]


def label_tests(summary: pd.DataFrame, a: str, b: str, *, n_rounds: int = 10_000) -> pd.DataFrame:
    """Per objective: the region-label permutation p of AUES and MU95 between scenarios ``a`` and
    ``b`` (blocks: the starts that hold both), and how many labellings there are."""
    rows = []
    for objective, g, block in _shared_starts(summary, a, b):
        row = {"objective": objective, "a": a, "b": b, "n_labelings": 0}
        for metric in METRICS:
            p, n = stats.label_permutation_test(g[metric], g.scenario == a, block, n_rounds=n_rounds)
            row[f"p_{metric}_labels"] = p if can_separate(n) else np.nan
            row["n_labelings"] = max(row["n_labelings"], n)
        rows.append(row)
    return pd.DataFrame(rows)


def end_point_tests(summary: pd.DataFrame, a: str, b: str, metric: str = "RS_end", *,
                    n_rounds: int = 10_000) -> pd.DataFrame:
    """Per objective, a per-sweep value other than AUES and MU95 (default: RS at α = 1, how much of the
    retain set survives full unlearning) tested as those are: the means of ``a`` and ``b``, the mean
    ``|Δ|`` of the ``a``–``b`` pairs from one start, the largest ``b``–``b`` one, the calibrated p (mean
    over the pairs of the share of ``b``–``b`` pairs, any start, at least as far apart) and the label
    permutation p (NaN below :data:`MIN_OUTCOMES` labellings)."""
    rows = []
    for objective, g, block in _shared_starts(summary, a, b):
        d_ab, d_bb = [], []
        for _, s in g.groupby(block, sort=True):
            va, vb = (s.loc[s.scenario == sc, metric].to_numpy(float) for sc in (a, b))
            d_ab += [abs(x - y) for x in va for y in vb]
            d_bb += [abs(x - y) for x, y in itertools.combinations(vb, 2)]
        p_labels, n = stats.label_permutation_test(g[metric], g.scenario == a, block, n_rounds=n_rounds)
        rows.append({"objective": objective, "a": a, "b": b, "metric": metric,
                     "mean_a": g.loc[g.scenario == a, metric].mean(), "mean_b": g.loc[g.scenario == b, metric].mean(),
                     "min_b": g.loc[g.scenario == b, metric].min(), "max_b": g.loc[g.scenario == b, metric].max(),
                     "d": float(np.mean(d_ab)) if d_ab else np.nan, "d_rr_max": max(d_bb, default=np.nan),
                     "p_rr": float(np.mean([stats.calibrated_p(d, d_bb) for d in d_ab])) if d_ab else np.nan,
                     "p_labels": p_labels if can_separate(n) else np.nan, "n_labelings": n})
    return pd.DataFrame(rows)

"""Summaries and the paper's tables: AUES and MU95 per sweep, the tests, Tables 1, 2 and 6.

* :func:`summarise` — one row per sweep: AUES, MU95 and whether MU reached 95% of its start
  (``MU95_reached``; if not, MU95 is FQ at α = 1), FQ before unlearning, FS/RS/MU/FQ at α = 1.
* :func:`compare` / :func:`compare_each` — every pair of a scenario's sweep and a Random sweep
  unlearned from the same model (same ``start``): appendix D's tests (the paper's p) and the
  calibrated p against Random–Random pairs (:mod:`workbench.experiments.baseline`).
* :func:`paper_table` — Table 2's shape (Table 1's with one row per localizer): mean ± std per
  scenario, MU95 reached counts, the paper's p next to the Random–Random baseline's.
* :func:`result_tables` — all of the above for one experiment, as every notebook saves them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench import curves, stats
from workbench.experiments import baseline as rr
from workbench.experiments.controlled import RANDOM
from workbench.experiments.revisit import RANDOM_WEIGHTS
from workbench.runs.rundir import GROUP, sweep_keys, with_start


def summarise(per_alpha: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep: AUES, MU95 (with its flag), FQ before unlearning, FS/RS at α = 1."""
    per_alpha = with_start(per_alpha)
    keys, rows = sweep_keys(per_alpha), []
    for key, g in per_alpha.groupby(keys, sort=True):
        g = g.sort_values("alpha")
        first, last = g.iloc[0], g.iloc[-1]
        mu95, reached = _mu95(g, first["MU"])
        rows.append({**dict(zip(keys, key)), "AUES": curves.aues(g["FS"], g["RS"]), "MU95": mu95,
                     "MU95_reached": reached, "FQ_before": first["FQ"], "MU_before": first["MU"],
                     "FS_end": last["FS"], "RS_end": last["RS"], "MU_end": last["MU"], "FQ_end": last["FQ"]})
    return pd.DataFrame(rows)


def _mu95(g: pd.DataFrame, mu_before: float) -> tuple[float, bool]:
    if not np.isfinite(g["MU"]).all() or not np.isfinite(g["FQ"]).all():
        return float("nan"), False  # MU/FQ undefined (e.g. LUME): AUES only
    return curves.mu95_with_flag(g["MU"], g["FQ"], mu_before)


def compare(per_alpha: pd.DataFrame, a: str, b: str, *, n_rounds: int = 10000) -> pd.DataFrame:
    """Every (``a`` sweep, ``b`` sweep) pair that shares objective and start: appendix D's tests
    (``p_AUES``, ``p_MU95``: the paper's) and the calibrated ``p_AUES_rr``, ``p_MU95_rr``."""
    per_alpha = with_start(per_alpha)
    blocks = [k for k in sweep_keys(per_alpha) if k not in ("scenario", "seed")]
    rows = []
    for key, g in per_alpha.groupby(blocks, sort=True):
        sweeps = {(sc, seed): x.sort_values("alpha") for (sc, seed), x in g.groupby(["scenario", "seed"])}
        for (sa, seed_a), x in sweeps.items():
            for (sb, seed_b), y in sweeps.items():
                if (sa, sb) == (a, b):
                    rows.append({**dict(zip(blocks, key)), "a": a, "b": b, "seed_a": seed_a, "seed_b": seed_b,
                                 "n_rounds": n_rounds, **_pair_test(x, y, n_rounds, int(seed_b))})
    return rr.add_calibrated_p(pd.DataFrame(rows), rr.random_pairs(summarise(per_alpha), b)) if rows else pd.DataFrame()


def _pair_test(x: pd.DataFrame, y: pd.DataFrame, n_rounds: int, seed: int) -> dict:
    out = {"AUES_a": curves.aues(x.FS, x.RS), "AUES_b": curves.aues(y.FS, y.RS)}
    out["dAUES"] = abs(out["AUES_a"] - out["AUES_b"])
    out["p_AUES"] = stats.aues_permutation_test(x.FS, x.RS, y.FS, y.RS, n_rounds=n_rounds, seed=seed)
    mu_before = float(x.MU.iloc[0])
    if np.isfinite(x.MU).all() and np.isfinite(x.FQ).all() and np.isfinite(y.FQ).all():
        out["MU95_a"], out["MU95_a_reached"] = curves.mu95_with_flag(x.MU, x.FQ, mu_before)
        out["MU95_b"], out["MU95_b_reached"] = curves.mu95_with_flag(y.MU, y.FQ, mu_before)
        out["dMU95"] = abs(out["MU95_a"] - out["MU95_b"])
        out["p_MU95"] = stats.mu95_bootstrap_test(x.MU, x.FQ, y.MU, y.FQ, mu_before, alpha_a=x.alpha,
                                                  alpha_b=y.alpha, n_rounds=n_rounds, seed=seed)
    return out


def baseline_of(scenario: str) -> str:
    """Random baseline of a §3 scenario: random weights for weight-level regions, else random vectors."""
    return RANDOM_WEIGHTS if scenario.endswith("_weights") else RANDOM


def compare_each(per_alpha: pd.DataFrame, *, n_rounds: int = 10000) -> pd.DataFrame:
    """Every scenario that is not a Random baseline (Oracle, or each localizer) against its baseline."""
    baselines = {RANDOM, RANDOM_WEIGHTS}
    tests = [compare(per_alpha, s, baseline_of(s), n_rounds=n_rounds)
             for s in sorted(per_alpha.scenario.unique()) if s not in baselines]
    tests = [t for t in tests if not t.empty]
    return pd.concat(tests, ignore_index=True) if tests else pd.DataFrame()


def _pm(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def _reached(s: pd.DataFrame) -> str:
    """``k/n`` sweeps whose MU fell to 95% of its start ('–' where MU is undefined)."""
    defined = s[s.MU95.notna()]
    return f"{int(defined.MU95_reached.astype(bool).sum())}/{len(defined)}" if len(defined) else "–"


def _metric_columns(metric: str, s_a: pd.DataFrame, s_b: pd.DataFrame, t: pd.DataFrame, pairs: pd.DataFrame,
                    labels: dict, n_rounds: int | None) -> dict:
    row = {metric: _pm(s_a[metric]), f"{metric} baseline": _pm(s_b[metric])}
    if metric == "MU95":
        row["MU95 reached"], row["MU95 baseline reached"] = _reached(s_a), _reached(s_b)
    if f"d{metric}" not in t or not t[f"d{metric}"].notna().any():
        return row
    paper = stats.summarise_pvalues(t[f"p_{metric}"].dropna().tolist(), n_rounds=n_rounds)
    d_rr = pairs[f"d{metric}"].dropna()
    return {**row, f"|Δ{metric}|": _pm(t[f"d{metric}"]),
            f"p {metric} paper (mean)": paper["mean"], f"p {metric} paper (Fisher)": paper["fisher"],
            f"|Δ{metric}| R–R (mean)": d_rr.mean() if len(d_rr) else np.nan,
            f"|Δ{metric}| R–R (max)": d_rr.max() if len(d_rr) else np.nan,
            f"p {metric} R–R": t[f"p_{metric}_rr"].mean(), f"p {metric} labels": labels.get(f"p_{metric}_labels", np.nan)}


def paper_table(summary: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """One row per (objective, compared scenario): Table 2's mean ± std of AUES and MU95 (with
    reached counts) for the scenario and its Random baseline, the mean ± std of the per-pair |Δ|,
    the paper's p (mean over pairs, and Fisher's combination) and, beside it, the Random–Random
    baseline: mean and max |Δ| between Random regions from one model, the calibrated p (mean over
    pairs of the share of Random–Random pairs at least as far apart) and the label permutation p."""
    summary, rows = with_start(summary), []
    if tests.empty:
        return pd.DataFrame()
    n_rounds = int(tests["n_rounds"].iloc[0])
    pairs_all = {b: rr.random_pairs(summary, b) for b in tests.b.unique()}
    for (objective, a, b), t in tests.groupby(["objective", "a", "b"], sort=True):
        s = summary[summary.objective == objective]
        s_a, s_b = s[s.scenario == a], s[s.scenario == b]
        pairs = pairs_all[b][pairs_all[b].objective == objective]
        labels = rr.label_tests(s, a, b, n_rounds=n_rounds).iloc[0].to_dict()
        row = {"objective": objective, "scenario": a, "baseline": b, "Original FQ": _pm(s_a.FQ_before),
               "pairs": len(t), "R–R pairs": len(pairs), "labelings": labels["n_labelings"]}
        for metric in rr.METRICS:
            row.update(_metric_columns(metric, s_a, s_b, t, pairs, labels, n_rounds))
        rows.append(row)
    return pd.DataFrame(rows)


def localizer_table(summary: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Table 1's shape: :func:`paper_table` with one row per localizer against its Random baseline."""
    return paper_table(summary, tests)


def result_tables(per_alpha: pd.DataFrame, *, n_rounds: int = 10000) -> dict[str, pd.DataFrame]:
    """Every table a notebook saves: ``summary``, ``tests`` (each scenario vs its Random baseline),
    ``random_pairs`` (the baseline) and ``table`` (the paper's shape with the baseline beside it)."""
    summary = summarise(per_alpha)
    tests = compare_each(per_alpha, n_rounds=n_rounds)
    pairs = [rr.random_pairs(summary, b) for b in sorted(set(tests.b)) if not tests.empty]
    return {"summary": summary, "tests": tests, "table": paper_table(summary, tests),
            "random_pairs": pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame()}


__all__ = ["GROUP", "baseline_of", "compare", "compare_each", "localizer_table", "paper_table", "result_tables",
           "summarise"]

"""Summaries and the paper's tables: AUES and MU95 per sweep, appendix D's tests, Tables 1 and 2.

* :func:`summarise` — one row per sweep (objective, scenario, seed): AUES, MU95 and whether MU
  reached 95% of its start, FQ before unlearning, FS/RS/MU/FQ at α = 1.
* :func:`compare` / :func:`compare_each` — the per-seed significance tests of appendix D between a
  scenario and its Random baseline.
* :func:`paper_table` (Table 2's shape) and :func:`localizer_table` (Table 1's shape).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench import curves, stats
from workbench.experiments.controlled import RANDOM
from workbench.experiments.revisit import RANDOM_WEIGHTS
from workbench.runs.rundir import GROUP


def summarise(per_alpha: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep: AUES, MU95 (with its flag), FQ before unlearning, FS/RS at α = 1."""
    rows = []
    for key, g in per_alpha.groupby(GROUP, sort=True):
        g = g.sort_values("alpha")
        first, last = g.iloc[0], g.iloc[-1]
        mu95, reached = _mu95(g, first["MU"])
        rows.append({**dict(zip(GROUP, key)), "AUES": curves.aues(g["FS"], g["RS"]), "MU95": mu95,
                     "MU95_reached": reached, "FQ_before": first["FQ"], "MU_before": first["MU"],
                     "FS_end": last["FS"], "RS_end": last["RS"], "MU_end": last["MU"], "FQ_end": last["FQ"]})
    return pd.DataFrame(rows)


def _mu95(g: pd.DataFrame, mu_before: float) -> tuple[float, bool]:
    if not np.isfinite(g["MU"]).all() or not np.isfinite(g["FQ"]).all():
        return float("nan"), False  # MU/FQ undefined (e.g. LUME): AUES only
    return curves.mu95_with_flag(g["MU"], g["FQ"], mu_before)


def compare(per_alpha: pd.DataFrame, a: str, b: str, *, n_rounds: int = 10000, pair_by_seed: bool = True) -> pd.DataFrame:
    """Appendix D tests of scenario ``a`` vs ``b`` per objective (and per seed when both share seeds).

    Without shared seeds (a localizer vs Random seeds) every ``b`` seed is compared with ``a``'s run.
    """
    rows = []
    for objective, g in per_alpha.groupby("objective"):
        runs_a = {s: x.sort_values("alpha") for s, x in g[g.scenario == a].groupby("seed")}
        runs_b = {s: x.sort_values("alpha") for s, x in g[g.scenario == b].groupby("seed")}
        pairs = ([(s, runs_a[s], runs_b[s]) for s in runs_a if s in runs_b] if pair_by_seed and set(runs_a) & set(runs_b)
                 else [(s, x, y) for x in runs_a.values() for s, y in runs_b.items()])
        for seed, x, y in pairs:
            rows.append({"objective": objective, "a": a, "b": b, "seed": seed, "n_rounds": n_rounds,
                         **_pair_test(x, y, n_rounds, seed)})
    return pd.DataFrame(rows)


def _pair_test(x: pd.DataFrame, y: pd.DataFrame, n_rounds: int, seed: int) -> dict:
    out = {"AUES_a": curves.aues(x.FS, x.RS), "AUES_b": curves.aues(y.FS, y.RS)}
    out["dAUES"] = abs(out["AUES_a"] - out["AUES_b"])
    out["p_AUES"] = stats.aues_permutation_test(x.FS, x.RS, y.FS, y.RS, n_rounds=n_rounds, seed=int(seed))
    mu_before = float(x.MU.iloc[0])
    if np.isfinite(x.MU).all() and np.isfinite(x.FQ).all() and np.isfinite(y.FQ).all():
        out["MU95_a"], out["MU95_b"] = curves.mu95(x.MU, x.FQ, mu_before), curves.mu95(y.MU, y.FQ, mu_before)
        out["dMU95"] = abs(out["MU95_a"] - out["MU95_b"])
        out["p_MU95"] = stats.mu95_bootstrap_test(x.MU, x.FQ, y.MU, y.FQ, mu_before, n_rounds=n_rounds, seed=int(seed))
    return out


def _rounds(tests: pd.DataFrame) -> int | None:
    return int(tests["n_rounds"].iloc[0]) if "n_rounds" in tests and len(tests) else None


def _pm(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def paper_table(summary: pd.DataFrame, tests: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Table 2's shape: per objective, mean ± std across seeds of AUES and MU95 for ``a`` and ``b``,
    mean ± std of the per-seed |Δ|, the mean p-value (the paper's number) and Fisher's combined p."""
    rows = []
    for objective, s in summary.groupby("objective"):
        t = tests[tests.objective == objective]
        row = {"objective": objective, "Original FQ": _pm(s[s.scenario == a].FQ_before)}
        for metric in ("AUES", "MU95"):
            row[f"{metric} {a}"] = _pm(s[s.scenario == a][metric])
            row[f"{metric} {b}"] = _pm(s[s.scenario == b][metric])
            if f"d{metric}" in t:
                p = (stats.summarise_pvalues(t[f"p_{metric}"].dropna().tolist(), n_rounds=_rounds(t))
                     if t[f"p_{metric}"].notna().any() else {})
                row[f"|Δ{metric}|"] = _pm(t[f"d{metric}"])
                row[f"p {metric} (mean)"] = p.get("mean", float("nan"))
                row[f"p {metric} (Fisher)"] = p.get("fisher", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_of(scenario: str) -> str:
    """Random baseline of a §3 scenario: random weights for weight-level regions, else random vectors."""
    return RANDOM_WEIGHTS if scenario.endswith("_weights") else RANDOM


def compare_each(per_alpha: pd.DataFrame, *, n_rounds: int = 10000) -> pd.DataFrame:
    """§3: every localizer's run against each seed of its Random baseline."""
    tests = [compare(per_alpha, s, baseline_of(s), n_rounds=n_rounds, pair_by_seed=False)
             for s in sorted(per_alpha.scenario.unique()) if not s.startswith(RANDOM)]
    return pd.concat(tests, ignore_index=True) if tests else pd.DataFrame()


def localizer_table(summary: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Table 1's shape: AUES and MU95 per region choice (Random as mean ± std over its seeds), with
    each localizer's p-values against its Random baseline (mean over baseline seeds and Fisher)."""
    rows = []
    for scenario, s in summary.groupby("scenario", sort=False):
        row = {"scenario": scenario, "objective": ", ".join(sorted(s.objective.unique())),
               "Original FQ": _pm(s.FQ_before), "AUES": _pm(s.AUES), "MU95": _pm(s.MU95)}
        t = tests[tests.a == scenario] if not tests.empty else tests
        for metric in ("AUES", "MU95"):
            col = f"p_{metric}"
            if not t.empty and col in t and t[col].notna().any():
                p = stats.summarise_pvalues(t[col].dropna().tolist(), n_rounds=_rounds(t))
                row[f"p {metric} (mean)"], row[f"p {metric} (Fisher)"] = p["mean"], p["fisher"]
        rows.append(row)
    return pd.DataFrame(rows)

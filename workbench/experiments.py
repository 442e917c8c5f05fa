"""The four experiments of Lee et al. (2025) as functions a notebook calls in one line each.

* :func:`controlled` — §4's controlled setting (notebooks ``oracle-vs-random``, ``lume`` and
  ``l2-mlp-supervision``): per region seed, inject the forget set into ``V_tgt`` (θr → θo), then
  unlearn θo restricted to ``V_tgt`` (**Oracle**) or to random regions outside it (**Random**)
  and sweep model mixing. If Oracle does not beat Random, knowing *where* knowledge lives did not
  help unlearn it — the paper's conclusion.
* :func:`revisit` — §3 (``revisit-localizers``): localizers score value vectors of the target model
  θ_full, the top-p% become the region, and unlearning there is compared with Random regions.
* :func:`localization_table` — beyond the paper: in the controlled setting ``V_tgt`` is known, so
  each localizer's ranking can be scored against it (precision, recall, AUROC).
* :func:`summarise`, :func:`compare`, :func:`paper_table` — AUES and MU95 per sweep, the
  per-seed significance tests of appendix D, and the paper-shaped table (mean ± std, |Δ|, p-values).

Each returns tidy ``pandas`` tables (the per-α schema: ``notebook, objective, scenario, seed, alpha,
FS, RS, MU, FQ, …``), which the notebooks save and plot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench import curves, stats
from workbench import localizers as loc
from workbench import objectives as obj
from workbench.pipeline import CheckFailed, Session, check_fs, delta_fingerprint
from workbench.regions import Region, random_region, random_weight_region

GROUP = ["objective", "scenario", "seed"]


@dataclass
class Results:
    """Everything an experiment produced; all tables are tidy data frames."""

    per_alpha: pd.DataFrame
    per_example: pd.DataFrame
    regions: pd.DataFrame
    checks: pd.DataFrame
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """One unlearning run: which region, which objective, at which learning rate."""

    name: str
    seed: int
    region: Region
    objective: str
    lr: float
    lr_key: str


def _collect(session: Session, scenarios: list[Scenario], start_key: str, notebook: str, *,
             reference_model=None, lambda_retain: float = 0.0) -> tuple[list, list, list]:
    alphas, examples, problems = [], [], []
    for sc in tqdm(scenarios, desc="scenarios", disable=not session.progress, leave=False):
        delta = session.unlearn(sc.region, sc.objective, sc.lr, start_key=start_key,
                                reference_model=reference_model, lambda_retain=lambda_retain)
        labels = {"notebook": notebook, "objective": sc.objective, "scenario": sc.name, "seed": sc.seed}
        pa, pe = session.sweep(delta, start_key=start_key, labels=labels)
        alphas.append(pa)
        examples.append(pe)
        problem = check_fs(pa, lr_key=sc.lr_key, lr=sc.lr, what=f"{sc.objective}/{sc.name}/seed {sc.seed}")
        if problem:
            problems.append(problem)
    return alphas, examples, problems


def _fail_on(problems: list[str], enabled: bool, results: Results) -> Results:
    if problems and enabled:
        raise CheckFailed("unlearning runs outside SPEC's FS rule (results so far are cached):\n- " + "\n- ".join(problems))
    return results


def controlled(session: Session, seeds: list[int], objectives: list[str], notebook: str, *,
               random_seeds: Callable[[int], list[int]] = lambda s: [s + 1],
               localizers: list[str] = (), l2_reference=None) -> Results:
    """Oracle vs Random in the controlled setting, for every region seed and objective.

    ``random_seeds(seed)`` gives the seeds of the Random regions drawn outside ``V_tgt``
    (**[choice]** one region with seed + 1; the L2 notebook passes its seeds A, B, C).
    ``l2_reference`` is θr for the ``l2_mlp`` objective.
    """
    cfg, model = session.cfg, session.model
    alphas, examples, problems, regions, checks, locs = [], [], [], [], [], []
    for seed in tqdm(seeds, desc="region seeds", disable=not session.progress):
        v_tgt = random_region(model, cfg.region_fraction, seed)
        delta_o, report = session.inject(v_tgt)
        checks.append({"seed": seed, **report})
        o_key = delta_fingerprint(delta_o)
        randoms = {rs: random_region(model, cfg.region_fraction, rs, exclude=v_tgt) for rs in random_seeds(seed)}
        regions += _region_rows(seed, "oracle", v_tgt) + [r for rs, reg in randoms.items() for r in _region_rows(rs, "random", reg)]
        scenarios = [Scenario("oracle", seed, v_tgt, o, cfg.lr_for(_lr_name(o)), f"lr_{_lr_name(o)}") for o in objectives]
        scenarios += [Scenario("random", seed if len(randoms) == 1 else rs, reg, o, cfg.lr_for(_lr_name(o)), f"lr_{_lr_name(o)}")
                      for o in objectives for rs, reg in randoms.items()]
        with session.at(delta_o):
            locs += localization_rows(session, v_tgt, seed, localizers)
            a, e, p = _collect(session, scenarios, o_key, notebook, reference_model=l2_reference,
                               lambda_retain=getattr(cfg, "retain_l2_weight", 0.0) if l2_reference is not None else 0.0)
        alphas += a
        examples += e
        problems += p
    results = Results(pd.concat(alphas, ignore_index=True), pd.concat(examples, ignore_index=True),
                      pd.DataFrame(regions), pd.DataFrame(checks))
    results.extra["rmu_reachable"] = _rmu_reachability(results.regions, session, objectives)
    if locs:
        results.extra["localization"] = pd.DataFrame(locs)
    return _fail_on(problems, cfg.check_fs, results)


def _lr_name(objective: str) -> str:
    return "l2" if objective == "l2_mlp" else objective


def _region_rows(seed: int, scenario: str, region: Region) -> list[dict]:
    return [{"scenario": scenario, "seed": seed, "size": region.size, "fraction": region.fraction,
             "per_layer": region.per_layer_counts(), "region_json": region.to_json()}]


def _rmu_reachability(regions: pd.DataFrame, session: Session, objectives: list[str]) -> pd.DataFrame:
    """SPEC §3: only region vectors in layers ≤ ℓ can receive RMU's gradient; report how many."""
    if "rmu" not in objectives:
        return pd.DataFrame()
    layer = obj.rmu_layer(len(regions.iloc[0]["per_layer"]), None if session.cfg.rmu_layer < 0 else session.cfg.rmu_layer)
    rows = []
    for _, r in regions.iterrows():
        region = Region.from_json(r["region_json"])
        rows.append({"scenario": r["scenario"], "seed": r["seed"], "rmu_layer": layer,
                     "reachable": obj.rmu_reachable(region, layer), "size": region.size})
    return pd.DataFrame(rows)


def localization_rows(session: Session, target: Region, seed: int, names) -> list[dict]:
    """Beyond the paper: how well each localizer, run on θo, recovers the planted ``V_tgt``."""
    rows = []
    for name in names:
        scores = loc.score(name, session.model, session.items["forget"], session.items["retain"], session.pad)
        rows.append({"localizer": name, "seed": seed, **loc.localization_accuracy(scores, target)})
    return rows


def revisit(session: Session, notebook: str = "revisit-localizers") -> Results:
    """§3: localizer regions vs Random regions on the target model θ_full (NPO by default)."""
    cfg, model = session.cfg, session.model
    p = cfg.region_fraction
    found = {n: loc.localize(n, model, session.items["forget"], session.items["retain"], session.pad, p)
             for n in tqdm(cfg.localizers, desc="localizers", disable=not session.progress)}
    scenarios = [Scenario(n, 0, found[n].region, cfg.objective, cfg.lr_for(n), f"lr_{n}") for n in cfg.localizers]
    scenarios += [Scenario("random", s, random_region(model, p, s), cfg.objective, cfg.lr_random, "lr_random")
                  for s in cfg.random_seeds]
    if cfg.weight_level:
        wl = loc.localize("wagle_weights", model, session.items["forget"], session.items["retain"], session.pad,
                          cfg.weight_fraction)
        scenarios.append(Scenario("wagle_weights", 0, wl.region, cfg.objective, cfg.lr_weight_level, "lr_weight_level"))
        scenarios += [Scenario("random_weights", s, random_weight_region(model, cfg.weight_fraction, s), cfg.objective,
                               cfg.lr_weight_level, "lr_weight_level") for s in cfg.random_seeds]
    alphas, examples, problems = _collect(session, scenarios, session.base_key, notebook)
    regions = [{"scenario": sc.name, "seed": sc.seed, "size": sc.region.size, "fraction": sc.region.fraction,
                "per_layer": sc.region.per_layer_counts()} for sc in scenarios]
    results = Results(pd.concat(alphas, ignore_index=True), pd.concat(examples, ignore_index=True),
                      pd.DataFrame(regions), pd.DataFrame())
    return _fail_on(problems, cfg.check_fs, results)


# -- summaries and tests -----------------------------------------------------------------------------
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
    return "random_weights" if scenario.endswith("_weights") else "random"


def compare_each(per_alpha: pd.DataFrame, *, n_rounds: int = 10000) -> pd.DataFrame:
    """§3: every localizer's run against each seed of its Random baseline."""
    tests = [compare(per_alpha, s, baseline_of(s), n_rounds=n_rounds, pair_by_seed=False)
             for s in sorted(per_alpha.scenario.unique()) if not s.startswith("random")]
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

"""§4's controlled setting: Oracle vs Random when we know where the knowledge was put.

Notebooks ``oracle-vs-random`` (Table 2), ``lume`` (Table 6) and ``l2-mlp-supervision`` (Figure 1):
per region seed, inject the forget set into a target region ``V_tgt`` (θr → θo), then unlearn θo
restricted to ``V_tgt`` (**Oracle**) or to random regions outside it (**Random**) with each
objective, and sweep model mixing. If Oracle does not beat Random, knowing *where* knowledge lives
did not help unlearn it — the paper's conclusion. Beyond the paper, :func:`localization_rows`
scores each localizer, run on θo, against the known ``V_tgt``.

Everything specific to an objective (its data, batching, reference model, per-region report) comes
from the objective's class; this module names none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from workbench import localizers as loc
from workbench import objectives as obj
from workbench.experiments.checks import check_fs
from workbench.experiments.session import CheckFailed, Session, delta_identity
from workbench.localizers.random import RandomLocalizer
from workbench.progress import progress_bar as tqdm
from workbench.regions import Region, WeightRegion, random_region
from workbench.runs.config import method_params
from workbench.runs.experiment_config import RANDOM_SEED_STRIDE

ORACLE = "oracle"
RANDOM = RandomLocalizer.name  # Random regions carry the baseline localizer's name


def theta_o(seed: int) -> str:
    """The ``start`` label of sweeps unlearned from the θo of target seed ``seed``."""
    return f"θo seed {seed}"


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
    """One unlearning run: which region (named by scenario and the seed that drew it), from which
    model (``start``: sweeps with one start share θ_before), with which objective and learning rate."""

    name: str
    seed: int
    region: Region | WeightRegion
    objective: str
    lr: float
    lr_key: str
    start: str


def collect(session: Session, scenarios: list[Scenario], start_key: str, notebook: str, *,
            lambda_retain: float = 0.0) -> tuple[list, list, list]:
    """Unlearn and sweep every scenario from the current model state; FS-rule problems are listed."""
    alphas, examples, problems = [], [], []
    for sc in tqdm(scenarios, desc="scenarios", disable=not session.progress, leave=False):
        delta = session.unlearn(sc.region, sc.objective, sc.lr, start_key=start_key, lambda_retain=lambda_retain)
        labels = {"notebook": notebook, "objective": sc.objective, "start": sc.start, "scenario": sc.name,
                  "seed": sc.seed}
        pa, pe = session.sweep(delta, start_key=start_key, labels=labels)
        alphas.append(pa)
        examples.append(pe)
        problem = check_fs(pa, lr_key=sc.lr_key, lr=sc.lr, what=f"{sc.objective}/{sc.name}/seed {sc.seed}")
        if problem:
            problems.append(problem)
    return alphas, examples, problems


def fail_on(problems: list[str], enabled: bool, results: Results) -> Results:
    if problems and enabled:
        raise CheckFailed("unlearning runs outside SPEC's FS rule (results so far are cached):\n- " + "\n- ".join(problems))
    return results


def run_controlled(session: Session, seeds: list[int], objectives: list[str], notebook: str, *,
                   random_seeds: Callable[[int], list[int]] = lambda s: [RANDOM_SEED_STRIDE * s + 1],
                   localizers: list[str] = (), lambda_retain: float = 0.0) -> Results:
    """Oracle vs Random in the controlled setting, for every region seed and objective.

    ``random_seeds(seed)`` gives the seeds of the Random regions drawn outside ``V_tgt`` (the
    config's ``random_seeds_for``; the L2 notebook passes its seeds A, B, C). Every sweep from one
    θo gets the same ``start`` label, so Oracle–Random and Random–Random pairs are formed within it.
    ``lambda_retain`` weighs each objective's retain term while unlearning (paper: 0; Figure 1: 2).
    """
    cfg, model = session.cfg, session.model
    alphas, examples, problems, regions, checks, locs, drawn = [], [], [], [], [], [], []
    for seed in tqdm(seeds, desc="region seeds", disable=not session.progress):
        v_tgt = random_region(model, cfg.region_fraction, seed)
        delta_o, report = session.inject(v_tgt)
        checks.append({"seed": seed, **report})
        o_key = delta_identity(delta_o)
        randoms = {rs: random_region(model, cfg.region_fraction, rs, exclude=v_tgt) for rs in random_seeds(seed)}
        drawn += [(ORACLE, seed, v_tgt)] + [(RANDOM, rs, reg) for rs, reg in randoms.items()]
        start = theta_o(seed)
        regions += region_rows(seed, ORACLE, v_tgt, start)
        regions += [r for rs, reg in randoms.items() for r in region_rows(rs, RANDOM, reg, start)]
        scenarios = [Scenario(ORACLE, seed, v_tgt, o, cfg.lr_for(o), f"lr_{o}", start) for o in objectives]
        scenarios += [Scenario(RANDOM, rs, reg, o, cfg.lr_for(o), f"lr_{o}", start)
                      for o in objectives for rs, reg in randoms.items()]
        with session.at(delta_o):
            locs += localization_rows(session, v_tgt, seed, localizers)
            a, e, p = collect(session, scenarios, o_key, notebook, lambda_retain=lambda_retain)
        alphas += a
        examples += e
        problems += p
    results = Results(pd.concat(alphas, ignore_index=True), pd.concat(examples, ignore_index=True),
                      pd.DataFrame(regions), pd.DataFrame(checks))
    results.extra.update(objective_reports(session, drawn, objectives))
    if locs:
        results.extra["localization"] = pd.DataFrame(locs)
    return fail_on(problems, cfg.check_fs, results)


def oracle_vs_random(session: Session) -> Results:
    """Paper Table 2 (and Table 6 on LUME), every objective. The paper draws one Random region per
    target seed; we draw ``random_per_seed`` (beyond the paper) so that Random regions sharing a θo
    give the Random–Random baseline."""
    cfg = session.cfg
    return run_controlled(session, cfg.region_seeds, cfg.objectives, cfg.notebook, random_seeds=cfg.random_seeds_for,
                          localizers=getattr(cfg, "localizers", ()))


def l2_supervision(session: Session) -> Results:
    """Paper Figure 1: from the θo of each of ``oracle_seeds`` (the paper: one), the Oracle region vs
    Random regions A, B, C drawn outside it, each supervised towards θr's MLP outputs with the retain
    term weighted by ``retain_l2_weight``. Several θo give the calibrated and label-permutation p."""
    cfg = session.cfg
    return run_controlled(session, cfg.oracle_seeds, cfg.objectives, cfg.notebook,
                          random_seeds=lambda seed: cfg.random_seeds, lambda_retain=cfg.retain_l2_weight)


def region_rows(seed: int, scenario: str, region: Region, start: str) -> list[dict]:
    return [{"start": start, "scenario": scenario, "seed": seed, "size": region.size, "fraction": region.fraction,
             "per_layer": region.per_layer_counts(), "region_json": region.to_json()}]


def objective_reports(session: Session, regions: list[tuple[str, int, Region | WeightRegion]],
                      objectives: list[str]) -> dict[str, pd.DataFrame]:
    """Each objective's facts about every ``(scenario, seed, region)`` (SPEC §3: RMU's reachable
    vectors), one table each, named ``<objective>_regions``; objectives with nothing to report give none."""
    tables = {}
    for name in objectives:
        objective = obj.make(name, **method_params(session.cfg, "objective", name))
        rows = [{"scenario": sc, "seed": seed, **report} for sc, seed, region in regions
                if (report := objective.region_report(region, session.model))]
        if rows:
            tables[f"{name}_regions"] = pd.DataFrame(rows)
    return tables


def localization_rows(session: Session, target: Region, seed: int, names) -> list[dict]:
    """Beyond the paper: how well each localizer, run on θo, recovers the planted ``V_tgt``."""
    rows = []
    for name in names:
        scores = loc.score(name, session.model, session.items["forget"], session.items["retain"], session.pad,
                           **method_params(session.cfg, "localizer", name))
        rows.append({"localizer": name, "seed": seed, **loc.localization_accuracy(scores, target)})
    return rows

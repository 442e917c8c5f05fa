"""§3, Table 1 (and Tables 3–5 by parameters): do localizers find regions that unlearn better than Random?

Notebook ``revisit-localizers``: each localizer scores the value vectors of the target model θ_full
(θp fine-tuned on the full set, forget authors included); its top p% become the region, which is
unlearned (NPO by default) and swept, next to Random regions of the same size (3 seeds). The
paper finds Random as good or better on both AUES and MU95. With ``weight_level`` a weight-level
localizer (WAGLE's top 80% of individual down-projection weights, Table 5) runs against random
weight regions too.
"""

from __future__ import annotations

import pandas as pd

from workbench import localizers as loc
from workbench.experiments.controlled import (
    RANDOM,
    Results,
    Scenario,
    collect,
    fail_on,
    objective_reports,
)
from workbench.experiments.session import Session
from workbench.progress import progress_bar as tqdm
from workbench.regions import random_region, random_weight_region
from workbench.runs.config import method_params

RANDOM_WEIGHTS = f"{RANDOM}_weights"
THETA_FULL = "θ_full"  # every sweep of §3 starts from the target model


def revisit_localizers(session: Session, notebook: str = "revisit-localizers") -> Results:
    """§3: localizer regions vs Random regions on the target model θ_full."""
    cfg, model = session.cfg, session.model
    p, forget, retain = cfg.region_fraction, session.items["forget"], session.items["retain"]
    found = {n: loc.localize(n, model, forget, retain, session.pad, p, **method_params(cfg, "localizer", n))
             for n in tqdm(cfg.localizers, desc="localizers", disable=not session.progress)}
    scenarios = [Scenario(n, 0, found[n].region, cfg.objective, cfg.lr_for(n), f"lr_{n}", THETA_FULL)
                 for n in cfg.localizers]
    scenarios += [Scenario(RANDOM, s, random_region(model, p, s), cfg.objective, cfg.lr_for(RANDOM), f"lr_{RANDOM}",
                           THETA_FULL) for s in cfg.random_seeds]
    if cfg.weight_level:
        name = cfg.weight_localizer
        wl = loc.localize(name, model, forget, retain, session.pad, cfg.weight_fraction, **method_params(cfg, "localizer", name))
        scenarios.append(Scenario(name, 0, wl.region, cfg.objective, cfg.lr_weight_level, "lr_weight_level", THETA_FULL))
        scenarios += [Scenario(RANDOM_WEIGHTS, s, random_weight_region(model, cfg.weight_fraction, s), cfg.objective,
                               cfg.lr_weight_level, "lr_weight_level", THETA_FULL) for s in cfg.random_seeds]
    alphas, examples, problems = collect(session, scenarios, session.base_key, notebook)
    regions = [{"start": sc.start, "scenario": sc.name, "seed": sc.seed, "size": sc.region.size, "fraction": sc.region.fraction,
                "per_layer": sc.region.per_layer_counts()} for sc in scenarios]
    results = Results(pd.concat(alphas, ignore_index=True), pd.concat(examples, ignore_index=True),
                      pd.DataFrame(regions), pd.DataFrame())
    results.extra.update(objective_reports(session, [(sc.name, sc.seed, sc.region) for sc in scenarios], [cfg.objective]))
    return fail_on(problems, cfg.check_fs, results)

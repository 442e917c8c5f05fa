"""§3, Table 1 (and Tables 3–5 by parameters): do localizers find regions that unlearn better than Random?

Notebook ``revisit-localizers``: each localizer scores the value vectors of the target model θ_full
(θp fine-tuned on the full set, forget authors included); its top p% become the region, which is
unlearned (NPO by default) and swept, next to Random regions of the same size (3 seeds). The
paper finds Random as good or better on both AUES and MU95. With ``weight_level`` a weight-level
localizer (WAGLE's top 80% of individual down-projection weights, Table 5) runs against random
weight regions too.
"""

from __future__ import annotations

from pathlib import Path

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
from workbench.regions import Region, WeightRegion, random_region, random_weight_region
from workbench.runs.config import method_params

RANDOM_WEIGHTS = f"{RANDOM}_weights"
THETA_FULL = "θ_full"  # every sweep of §3 starts from the target model


def revisit_localizers(session: Session, notebook: str = "revisit-localizers") -> Results:
    """§3: localizer regions vs Random regions on the target model θ_full."""
    cfg, model = session.cfg, session.model
    p = cfg.region_fraction
    found = {n: localized_region(session, n, p) for n in tqdm(cfg.localizers, desc="localizers", disable=not session.progress)}
    scenarios = [Scenario(n, 0, found[n], cfg.objective, cfg.lr_for(n), f"lr_{n}", THETA_FULL) for n in cfg.localizers]
    scenarios += [Scenario(RANDOM, s, random_region(model, p, s), cfg.objective, cfg.lr_for(RANDOM), f"lr_{RANDOM}",
                           THETA_FULL) for s in cfg.random_seeds]
    if cfg.weight_level:
        name = cfg.weight_localizer
        scenarios.append(Scenario(name, 0, localized_region(session, name, cfg.weight_fraction), cfg.objective,
                                  cfg.lr_weight_level, "lr_weight_level", THETA_FULL))
        scenarios += [Scenario(RANDOM_WEIGHTS, s, random_weight_region(model, cfg.weight_fraction, s), cfg.objective,
                               cfg.lr_weight_level, "lr_weight_level", THETA_FULL) for s in cfg.random_seeds]
    alphas, examples, problems = collect(session, scenarios, session.base_key, notebook)
    regions = [{"start": sc.start, "scenario": sc.name, "seed": sc.seed, "size": sc.region.size, "fraction": sc.region.fraction,
                "per_layer": sc.region.per_layer_counts()} for sc in scenarios]
    results = Results(pd.concat(alphas, ignore_index=True), pd.concat(examples, ignore_index=True),
                      pd.DataFrame(regions), pd.DataFrame())
    results.extra.update(objective_reports(session, [(sc.name, sc.seed, sc.region) for sc in scenarios], [cfg.objective]))
    return fail_on(problems, cfg.check_fs, results)


def localized_region(session: Session, name: str, fraction: float) -> Region | WeightRegion:
    """The top ``fraction`` of localizer ``name``'s scores on the session's model (θ_full), cached under the model's
    key (which carries its data): a resumed run or an export does not score again (minutes on SmolLM2 at one
    thread; WAGLE's and MemFlex's gradient passes at 8B more)."""
    params = method_params(session.cfg, "localizer", name)
    inputs = {"model": session.base_key, "localizer": name, "params": params, "fraction": fraction}

    def build() -> Region | WeightRegion:
        return loc.localize(name, session.model, session.items["forget"], session.items["retain"], session.pad,
                            fraction, **params).region

    sources = session.sources([loc.localizer_class(name).__module__])
    return session.cache.get_or_build("localized_region", inputs, build, _save_region, _load_region,
                                      force=session.force, sources=sources)


def _save_region(region: Region | WeightRegion, folder: Path) -> None:
    if isinstance(region, WeightRegion):
        region.save(folder / "region.safetensors")  # packed bits: 235 MB at 8B, where JSON would take gigabytes
    else:
        (folder / "region.json").write_text(region.to_json())


def _load_region(folder: Path) -> Region | WeightRegion:
    weights = folder / "region.safetensors"
    return WeightRegion.load(weights) if weights.is_file() else Region.from_json((folder / "region.json").read_text())

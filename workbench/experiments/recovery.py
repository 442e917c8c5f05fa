"""Beyond the paper: when can a localizer find knowledge planted in a known region?

In the controlled setting of §4 the target region ``V_tgt`` is known, so a localizer run on θo can be
scored against it (:func:`workbench.localizers.localization_accuracy`: precision of its top-|V_tgt|
vectors, AUROC of its scores against membership; chance is precision = p, AUROC = 0.5). On the tiny
LLaMA, Activations found the planted vectors (AUROC 0.996); on SmolLM2 no localizer did (0.50–0.51).
This experiment measures *when* they can: for each region fraction p, target seed and injection
strength (epochs of injection, each a θo of its own), every localizer is scored on θo, next to how
strongly the forget set was planted (θo's forget ES) and how large the planted change is relative to
the weights it changed (``rel_change``: median over V_tgt of ‖v_o − v_r‖ / ‖v_r‖ per value vector).

Weak injections are the point here, so the injection check is recorded (``passes_check``), not enforced.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch

from workbench import localizers as loc
from workbench.delta import RegionDelta
from workbench.experiments.checks import check_injection
from workbench.experiments.session import CheckFailed, Session
from workbench.progress import progress_bar as tqdm
from workbench.regions import random_region
from workbench.runs.config import method_params

__all__ = ["localizer_recovery", "recovery_summary", "relative_change"]


def relative_change(delta: RegionDelta) -> float:
    """Median over the region's value vectors of ‖v_after − v_before‖ / ‖v_before‖."""
    ratios = []
    for layer in delta.layers:
        before = delta.before(layer).float()
        change = delta.params[str(layer)].detach().float() - before
        ratios.append(change.norm(dim=-1) / before.norm(dim=-1).clamp_min(1e-12))
    return float(torch.cat(ratios).median()) if ratios else float("nan")


def localizer_recovery(session: Session) -> pd.DataFrame:
    """One row per (region fraction, target seed, injection epochs, localizer): the injection's report
    (forget / retain ES of θr and θo), whether it passes the injection check, the planted change's
    relative size, and the localizer's precision, recall, AUROC and base rate against ``V_tgt``."""
    cfg = session.cfg
    rows = []
    cells = [(p, s, e) for p in cfg.region_fractions for s in cfg.region_seeds for e in cfg.injection_epochs]
    for fraction, seed, epochs in tqdm(cells, desc="θo", disable=not session.progress):
        v_tgt = random_region(session.model, fraction, seed)
        session.cfg = dataclasses.replace(cfg, inject_epochs=epochs)
        try:
            delta, report = session.inject(v_tgt, check=False)
            passes = _passes(report, session.cfg)
        finally:
            session.cfg = cfg
        cell = {"fraction": fraction, "seed": seed, "inject_epochs": epochs, "inject_lr": cfg.inject_lr,
                "size": v_tgt.size, **report, "passes_check": passes, "rel_change": relative_change(delta)}
        with session.at(delta):
            for name in cfg.localizers:
                rows.append({**cell, "localizer": name, **_scored(session, name, v_tgt, delta)})
    return pd.DataFrame(rows)


def _passes(report: dict, cfg) -> bool:
    try:
        check_injection(report, cfg)
    except CheckFailed:  # recorded, not raised
        return False
    return True


def _scored(session: Session, name: str, target, delta: RegionDelta) -> dict:
    """The localizer's accuracy against ``target`` on the current θo, cached under θo's key."""
    params = method_params(session.cfg, "localizer", name)
    inputs = {"theta_o": delta.cache_key, "localizer": name, "params": params}

    def build() -> dict:
        scores = loc.score(name, session.model, session.items["forget"], session.items["retain"], session.pad, **params)
        return loc.localization_accuracy(scores, target)

    return session.cache.get_or_build("localization", inputs, build, _save_row, _load_row, force=session.force,
                                      sources=session.sources(["workbench.experiments.recovery"]))


def _save_row(row: dict, folder) -> None:
    pd.DataFrame([row]).to_json(folder / "row.json", orient="records")


def _load_row(folder) -> dict:
    return pd.read_json(folder / "row.json", orient="records").iloc[0].to_dict()


def recovery_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Means over target seeds of :func:`localizer_recovery`'s rows, per (model, where several runs were
    gathered,) region fraction, injection strength and localizer; ``auroc_min`` the worst seed's AUROC."""
    keys = [k for k in ("model", "fraction", "inject_epochs", "localizer") if k in table.columns]
    return (table.groupby(keys, as_index=False, sort=True)
            .agg(forget_es_o=("forget_es_o", "mean"), rel_change=("rel_change", "mean"), precision=("precision", "mean"),
                 auroc=("auroc", "mean"), auroc_min=("auroc", "min"), base_rate=("base_rate", "mean"),
                 seeds=("seed", "nunique"), passes_check=("passes_check", "all")))

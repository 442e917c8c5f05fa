"""Several finished runs of one notebook read as one result, from their kept tables alone.

A campaign splits an experiment into runs that fit a working period (one target seed each, say), and
the model cache that would let one more run gather them does not survive a move to another machine
or a change of code. The tables do: every Oracle–Random comparison, the Random–Random baseline and
the label-permutation test are functions of the per-α table (:func:`workbench.experiments.tables.
result_tables`). :func:`gather` concatenates the per-α tables of finished runs (or of kept
references) and computes the tables again over all of them, so the calibrated p sees every
Random–Random pair and the label test every target seed; nothing is trained or evaluated.

Runs gather only where they ran the same experiment: every parameter must agree except those that
say *which* seeds, objectives or localizers a run covered (:data:`VARYING`); ``allow`` names further
parameters that may differ (left out of the result's ``params`` and recorded under ``differing``
with each run's value). A parameter a run does not record (added after it ran) counts as the notebook's
default, and is listed under ``filled_with_defaults``. A sweep
that two runs both hold must hold the same numbers in both (it is kept once). The result's
params.json lists each run with its commit, CPU and thread count. Localizer-recovery runs (no sweeps)
gather their ``localization.csv`` rows instead, with a ``model`` column where runs of several models
(``--allow model`` and the model's own settings) go into one figure and table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.experiments.tables import result_tables
from workbench.runs import config, io
from workbench.runs.rundir import PARAMS, PER_ALPHA_COLUMNS, RunDir, repo_root, sweep_keys, with_start
from workbench.viz.report import write_kept_figures

# Parameters that tell the runs of one campaign apart: which seeds, objectives, localizers (and, for
# localizer recovery, region fractions and injection strengths) each ran.
VARYING = ("run_id", "region_seeds", "oracle_seeds", "random_seeds", "objectives", "localizers", "region_fractions",
           "injection_epochs")
RECOVERY = "localizer-recovery"  # no sweeps: its rows are localization.csv, one per θo and localizer
RECOVERY_KEY = ["model", "fraction", "seed", "inject_epochs", "localizer"]
# Tables with one row per target seed or region, concatenated as they are (duplicates kept once).
ROW_TABLES = ("checks", "regions", "localization")
CURVE = [c for c in PER_ALPHA_COLUMNS if c not in ("notebook", "objective", "start", "scenario", "seed")]
PROVENANCE = ("run_id", "started", "git", "cpu_model", "cpu_capability", "blas", "threads", "device")


class GatherError(ValueError):
    """The runs cannot be read as one result; the message names the run and the fix."""


def _relative(path: Path) -> str:
    """A source's path as params.json records it: relative to the repository where it lies inside."""
    resolved, root = path.resolve(), repo_root().resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else f"<outside the repository>/{path.name}"


def _load(folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    if not (folder / PARAMS).is_file():
        raise GatherError(f"{folder}: no {PARAMS}; gather takes finished run folders (outputs/<notebook>/<run-id>/) "
                          "or kept references (outputs/reference/…)")
    run = RunDir(folder)
    state = run.status().get("state")
    if (folder / "status.json").is_file() and state != "complete":
        raise GatherError(f"{folder}: the run is {state}, not complete; finish it (python -m workbench status) "
                          "or leave it out")
    info = io.read_json(folder / PARAMS)
    if info.get("notebook") == RECOVERY:
        if not (folder / "localization.csv").is_file():
            raise GatherError(f"{folder}: no localization.csv: the run scored no localizer")
        model = info.get("params", {}).get("model", "")
        return info, pd.read_csv(folder / "localization.csv").assign(model=model)
    if not any((folder / f"per_alpha.{ext}").is_file() for ext in ("parquet", "csv")):
        raise GatherError(f"{folder}: no per_alpha table (per_alpha.parquet or .csv): the run saved no sweeps")
    return info, with_start(run.table("per_alpha"))


def _common_params(infos: Sequence[dict[str, Any]], sources: Sequence[Path], allow: Iterable[str]) -> dict[str, Any]:
    """The parameters every run shares, with the varying ones merged; an error names any other difference."""
    notebooks = {info.get("notebook") for info in infos}
    if len(notebooks) != 1:
        raise GatherError(f"the runs come from different notebooks {sorted(map(str, notebooks))}; gather one notebook's runs")
    varying, (params, filled) = set(VARYING) | set(allow), _with_defaults(infos, sources)
    keys = sorted(set().union(*params))
    differ = {k: [p.get(k) for p in params] for k in keys if any(p.get(k) != params[0].get(k) for p in params)}
    refused = {k: v for k, v in differ.items() if k not in varying}
    if refused:
        detail = "; ".join(f"{k}: " + ", ".join(f"{s.name}={v!r}" for s, v in zip(sources, vals))
                           for k, vals in refused.items())
        raise GatherError(f"the runs differ in parameters that change the experiment ({detail}); gather runs of one "
                          f"setting, or pass --allow {' --allow '.join(refused)} to gather them anyway (recorded)")
    merged = {k: v for k, v in params[0].items() if k not in differ}
    for k in set(differ) & set(VARYING) - {"run_id"}:  # the seeds, objectives, localizers the runs cover together
        merged[k] = list(dict.fromkeys(v for val in differ[k] for v in (val if isinstance(val, list) else [val])))
    return {"params": merged, "differing": {k: v for k, v in differ.items() if k != "run_id"},
            **({"filled_with_defaults": filled} if filled else {})}


def _with_defaults(infos: Sequence[dict[str, Any]], sources: Sequence[Path]) -> tuple[list[dict], dict[str, list[str]]]:
    """Each run's parameters, those it does not record filled in with the notebook's defaults: a parameter added
    after a run was kept did what its default does (that is how parameters are added), so it is no difference.
    A gathered folder's parameters left out because its runs differed stay out (and are refused as differing)."""
    defaults = json.loads(io.to_json(config.from_params(infos[0]["notebook"], {}).to_dict()))  # as params.json holds them
    params, filled = [], {}
    for info, source in zip(infos, sources):
        own = info.get("params", {})
        missing = [k for k in defaults if k not in own and k not in info.get("differing", {})]
        params.append({**own, **{k: defaults[k] for k in missing}})
        if missing := [k for k in missing if k != "run_id"]:
            filled[source.name] = missing
    return params, filled


def _one_copy(frames: Sequence[pd.DataFrame], sources: Sequence[Path]) -> pd.DataFrame:
    """The per-α tables as one: a sweep held by two runs must be the same in both, and is kept once."""
    keys, seen, kept = sweep_keys(frames[0]), {}, []
    for frame, source in zip(frames, sources):
        for key, g in frame.groupby(keys, sort=False):
            g = g.sort_values("alpha").reset_index(drop=True)
            if key in seen:
                first, other = seen[key]
                if not _same_curve(g, other):
                    raise GatherError(f"sweep {dict(zip(keys, key))} is in {first} and in {source.name} with "
                                      "different numbers: leave one of the runs out")
                continue
            seen[key] = (source.name, g)
            kept.append(g)
    return pd.concat(kept, ignore_index=True)


def _same_curve(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if len(a) != len(b):
        return False
    return all(np.allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=0, atol=1e-9, equal_nan=True) for c in CURVE)


def _rows(folders: Sequence[Path], name: str) -> pd.DataFrame | None:
    frames = [pd.read_csv(f / f"{name}.csv") for f in folders if (f / f"{name}.csv").is_file()]
    return pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True) if frames else None


def _recovery_tables(frames: Sequence[pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Localizer recovery's rows of every run (a ``model`` column where the runs used several) and their summary."""
    from workbench.experiments.recovery import recovery_summary

    rows = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)
    twice = rows[rows.duplicated(RECOVERY_KEY, keep=False)]
    if not twice.empty:
        raise GatherError(f"{len(twice)} localizer scores appear in two runs with different numbers (e.g. "
                          f"{twice.iloc[0][RECOVERY_KEY].to_dict()}): leave one of the runs out")
    if rows["model"].nunique() == 1:
        rows = rows.drop(columns="model")
    return {"localization": rows, "summary": recovery_summary(rows)}


def gather(sources: Sequence[str | os.PathLike], dest: str | os.PathLike, *, allow: Iterable[str] = (),
           force: bool = False, title: str | None = None) -> Path:
    """Write into ``dest`` the tables (summary, tests, Random–Random pairs, the paper-shaped table),
    per-α curves, the row tables (:data:`ROW_TABLES`) and figures of the runs ``sources`` as one
    result, and a params.json that names each run. ``dest`` must be empty or new unless ``force``."""
    folders, dest, allow = [Path(s) for s in sources], Path(dest), tuple(allow)
    if len(folders) < 2:
        raise GatherError("gather needs at least two runs")
    if dest.exists() and any(dest.iterdir()) and not force:
        raise GatherError(f"{dest} is not empty; choose another folder or pass --force to replace its files")
    loaded = [_load(f) for f in folders]
    infos = [info for info, _ in loaded]
    common = _common_params(infos, folders, allow)
    if infos[0]["notebook"] == RECOVERY:
        tables = _recovery_tables([rows for _, rows in loaded])
    else:
        per_alpha = _one_copy([pa for _, pa in loaded], folders)
        tables = {"per_alpha": per_alpha,
                  **result_tables(per_alpha, n_rounds=int(common["params"].get("n_rounds") or 10_000))}
        tables |= {name: rows for name in ROW_TABLES if (rows := _rows(folders, name)) is not None}
    dest.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        if not df.empty:
            io.write_csv(dest / f"{name}.csv", df)
    shared = {k: infos[0].get(k) for k in ("cpu_model", "blas", "threads", "device")
              if all(i.get(k) == infos[0].get(k) for i in infos)}
    io.write_json(dest / PARAMS, {"notebook": infos[0]["notebook"], **shared, **common,
                                  "gathered_from": [{"source": _relative(f), **{k: i.get(k) for k in PROVENANCE}}
                                                    for f, i in zip(folders, infos)]})
    write_kept_figures(dest, title or infos[0]["notebook"])
    return dest


__all__ = ["ROW_TABLES", "VARYING", "GatherError", "gather"]
